//! `GET /api/v1/audit`: the tenant's audit log, newest first, and whether its hash
//! chain verifies. Also the [`Caller`] extractor: the tenant and the audit actor of a
//! request.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::http::extract::TenantAuth;
use crate::http::AppError;
use crate::store::AuditRecord;

pub fn router() -> Router<App> {
    Router::new().route("/api/v1/audit", get(list))
}

/// The authenticated tenant and how audit entries name the caller: the API key's
/// public prefix (`api_key:og_xxxxx`), never the key.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    pub actor: String,
}

impl FromRequestParts<App> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let TenantAuth(tenant_id) = TenantAuth::from_request_parts(parts, app).await?;
        let prefix: String = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|k| k.trim().chars().take(8).collect())
            .unwrap_or_default();
        Ok(Self {
            tenant_id,
            actor: format!("api_key:{prefix}"),
        })
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    contact_id: Option<String>,
    limit: Option<i64>,
}

pub fn entry_json(e: &AuditRecord) -> Value {
    json!({
        "id": e.id,
        "n": e.n,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "contact_id": e.contact_id,
        "target": e.target,
        "detail": e.detail.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}

async fn list(
    State(app): State<App>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::Unprocessable(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let report = crate::audit::verify(app.store.as_ref(), &caller.tenant_id).await?;
    let items = app
        .store
        .audit_entries(
            &caller.tenant_id,
            q.contact_id.as_deref().filter(|c| !c.is_empty()),
            limit,
        )
        .await?;
    Ok(Json(json!({
        "items": items.iter().map(entry_json).collect::<Vec<_>>(),
        "chain_ok": report.ok,
        "entries": report.entries,
        "first_bad": report.first_bad,
    })))
}
