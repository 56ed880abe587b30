//! Shared extractors: bearer authentication and JSON bodies with JSON errors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::AppError;
use crate::app::App;
use crate::crypto;

/// The tenant whose API key authenticated the request.
#[derive(Debug, Clone)]
pub struct TenantAuth(pub String);

/// The operator (the configured `admin_token`).
#[derive(Debug, Clone, Copy)]
pub struct OperatorAuth;

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<App> for TenantAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(AppError::Unauthorized)?;
        let hash = crypto::hash_api_key(token);
        let tenant = app
            .store
            .tenant_by_key_hash(&hash)
            .await?
            .ok_or(AppError::Unauthorized)?;
        // -- operations: per-tenant rate limit
        if let Err(wait) = app.admin_limiter.check(&tenant) {
            crate::metrics::inc(crate::metrics::RATE_LIMITED, &[]);
            return Err(AppError::RateLimited(wait));
        }
        Ok(Self(tenant))
    }
}

impl FromRequestParts<App> for OperatorAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(AppError::Unauthorized)?;
        match &app.config.admin_token {
            Some(expected) if crypto::token_matches(token, expected) => Ok(Self),
            _ => Err(AppError::Unauthorized),
        }
    }
}

/// `Json<T>` whose rejections are our JSON errors (400 for malformed JSON, 422 for
/// missing or mistyped fields).
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonDataError(e)) => Err(AppError::Unprocessable(e.body_text())),
            // -- operations: body over `limits.admin_body_bytes`
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(AppError::TooLarge)
            }
            Err(e) => Err(AppError::BadRequest(e.body_text())),
        }
    }
}
