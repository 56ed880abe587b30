//! Tenants: created by the operator; each gets one API key, shown once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::crypto;
use crate::http::extract::{JsonBody, OperatorAuth};
use crate::http::AppError;
use crate::store::{new_id, now_ms, NewTenant, Store};

pub fn router() -> Router<App> {
    Router::new().route("/api/v1/tenants", post(create_tenant))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    domain: String,
}

/// A tenant just created, with its only copy of the API key.
pub struct CreatedTenant {
    pub id: String,
    pub api_key: SecretString,
}

/// Creates a tenant and its first API key.
pub async fn create(
    store: &dyn Store,
    name: &str,
    domain: &str,
) -> Result<CreatedTenant, AppError> {
    let name = name.trim();
    let domain = domain.trim().to_ascii_lowercase();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AppError::Unprocessable(
            "name must be 1 to 200 characters".into(),
        ));
    }
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !domain_ok {
        return Err(AppError::Unprocessable(
            "domain must be a host name such as example.com".into(),
        ));
    }
    let key = crypto::new_api_key();
    let tenant = NewTenant {
        id: new_id(),
        name: name.to_string(),
        domain,
        key_id: new_id(),
        key_hash: key.hash,
        key_prefix: key.prefix,
        created_at: now_ms(),
    };
    store.create_tenant(&tenant).await?;
    // privacy: the new API key is a credential change, audited in the tenant's log.
    crate::audit::record(
        store,
        &crate::audit::Audit::new(&tenant.id, "operator", "credentials.create")
            .target(&tenant.key_id)
            .detail(serde_json::json!({"kind": "api_key", "prefix": tenant.key_prefix})),
    )
    .await?;
    Ok(CreatedTenant {
        id: tenant.id,
        api_key: key.key,
    })
}

async fn create_tenant(
    State(app): State<App>,
    _operator: OperatorAuth,
    JsonBody(body): JsonBody<CreateTenant>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let created = create(app.store.as_ref(), &body.name, &body.domain).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": created.id, "api_key": created.api_key.expose_secret()})),
    ))
}
