//! The one error type of the HTTP layer: JSON `{"error": {"code", "message"}}` with
//! the right status; internal causes are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("the database is unavailable")]
    Unavailable,
    /// 422 with its own stable code (e.g. `outside_messaging_window`).
    #[error("{1}")]
    Refused(&'static str, String),
    #[error("request body too large")]
    TooLarge,
    /// Too many requests; retry after this many seconds.
    #[error("too many requests")]
    RateLimited(u64),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    // -- telegram, discord ---------------------------------------------------------
    /// A platform call the request depends on failed (e.g. Telegram `setWebhook`).
    #[error("{0}")]
    Platform(String),
}

impl AppError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Refused(code, _) => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::Platform(_) => (StatusCode::BAD_GATEWAY, "platform_error"),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::Conflict(what.to_string()),
            StoreError::Database(e) if is_unavailable(&e) => Self::Unavailable,
            other => Self::Internal(other.into()),
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        // -- fault tolerance: a database outage reached through a context chain is
        // still a 503, so platforms deliver again.
        let unavailable = e.chain().any(|cause| {
            let sqlx = cause.downcast_ref::<sqlx::Error>().or_else(|| {
                match cause.downcast_ref::<StoreError>() {
                    Some(StoreError::Database(e)) => Some(e),
                    _ => None,
                }
            });
            sqlx.is_some_and(is_unavailable)
        });
        if unavailable {
            return Self::Unavailable;
        }
        Self::Internal(e)
    }
}

/// Connection-level failures: the database is away, the caller should retry.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        // -- fault tolerance: a Postgres server shutting down or restarting ends its
        // sessions with class 57 (operator intervention, e.g. 57P01
        // admin_shutdown) or class 08 (connection exception).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("57") || code.starts_with("08")),
        _ => false,
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let body = Json(json!({"error": {"code": code, "message": self.to_string()}}));
        let mut response = (status, body).into_response();
        if let Self::RateLimited(seconds) = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}
