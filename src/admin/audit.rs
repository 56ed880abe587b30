//! `GET /api/v1/audit`: the tenant's audit log, newest first, and whether its hash
//! chain verifies. Also the [`Caller`] extractor (the tenant and the audit actor of a
//! request) and [`record_access`], the layer that audits admin API access to
//! personal data and credential changes.

use axum::extract::{FromRequestParts, MatchedPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::audit::Audit;
use crate::crypto;
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

/// What an admin request does to personal data or credentials, as an audit action;
/// `None` for requests not audited here (their handlers record richer entries in the
/// same transaction as the change, or they touch no personal data).
fn access_action(method: &Method, route: &str) -> Option<&'static str> {
    let read = *method == Method::GET;
    Some(match route {
        "/api/v1/conversations" | "/api/v1/conversations/{id}/messages" if read => "data.read",
        "/api/v1/conversations/{id}" if read => "data.read", // -- web: console transcript
        "/api/v1/conversations/{id}/messages" => "conversation.agent_reply",
        "/api/v1/conversations/{id}/handoff" => "conversation.handoff",
        "/api/v1/conversations/{id}/release" => "conversation.release",
        "/api/v1/contacts/{id}" if read => "data.read",
        "/api/v1/events/unhandled" if read => "data.read",
        "/api/v1/channels" if *method == Method::POST => "credentials.create",
        "/api/v1/channels/{id}" if *method == Method::DELETE => "credentials.delete",
        _ => return None,
    })
}

/// The `{id}` of `route` in `path`.
fn path_id(route: &str, path: &str) -> Option<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| *r == "{id}")
        .map(|(_, p)| p.to_string())
}

/// Audits successful admin requests that read personal data, act on a conversation
/// or change channel credentials: who (API key prefix), which route and object, and
/// the contact concerned, never bodies.
pub async fn record_access(State(app): State<App>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let path = req.uri().path().to_string();
    let key = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string());
    let response = next.run(req).await;
    let (Some(route), Some(key)) = (route, key) else {
        return response;
    };
    if !response.status().is_success() {
        return response;
    }
    let Some(action) = access_action(&method, &route) else {
        return response;
    };
    if let Err(e) = record(&app, action, &method, &route, &path, &key).await {
        tracing::error!(error = %e, route, "could not audit an admin request");
    }
    response
}

async fn record(
    app: &App,
    action: &str,
    method: &Method,
    route: &str,
    path: &str,
    key: &str,
) -> anyhow::Result<()> {
    let Some(tenant_id) = app
        .store
        .tenant_by_key_hash(&crypto::hash_api_key(key))
        .await?
    else {
        return Ok(());
    };
    let actor = format!("api_key:{}", key.chars().take(8).collect::<String>());
    let mut entry = Audit::new(&tenant_id, &actor, action)
        .detail(serde_json::json!({"method": method.as_str(), "route": route}));
    if let Some(id) = path_id(route, path) {
        entry = entry.target(&id);
        if route.starts_with("/api/v1/contacts/") {
            entry = entry.contact(&id);
        } else if route.starts_with("/api/v1/conversations/") {
            if let Some(c) = app.store.conversation(&tenant_id, &id).await? {
                entry = entry.contact(&c.contact_id);
            }
        }
    }
    app.store.append_audit(&entry).await?;
    Ok(())
}
