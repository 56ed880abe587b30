//! Events kept raw because they were not understood.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::app::App;
use crate::http::extract::TenantAuth;
use crate::http::AppError;

pub fn router() -> Router<App> {
    Router::new().route("/api/v1/events/unhandled", get(list))
}

async fn list(
    State(app): State<App>,
    TenantAuth(tenant_id): TenantAuth,
) -> Result<Json<Value>, AppError> {
    let items: Vec<Value> = app
        .store
        .unhandled(&tenant_id, 200)
        .await?
        .into_iter()
        .map(|u| {
            json!({
                "id": u.id,
                "channel_id": u.channel_id,
                "platform": u.platform,
                "reason": u.reason,
                "raw": serde_json::from_str::<Value>(&u.raw).unwrap_or(Value::String(u.raw.clone())),
                "received_at": u.received_at,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}
