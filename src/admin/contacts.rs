//! Contacts and the data-subject rights exercised through the admin API.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::delete;
use axum::Router;

use super::audit::Caller;
use crate::app::App;
use crate::http::AppError;
use crate::privacy::erasure;

pub fn router() -> Router<App> {
    Router::new().route("/api/v1/contacts/{id}", delete(erase))
}

/// Erasure of the person everywhere; 404 for an unknown or another tenant's contact.
async fn erase(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    match erasure::erase_contact(
        app.store.as_ref(),
        &caller.tenant_id,
        &id,
        &caller.actor,
        "admin_api",
    )
    .await?
    {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(AppError::NotFound),
    }
}
