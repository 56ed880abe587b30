//! Router assembly: every feature module exposes `router()`, merged only here.

pub mod error;
pub mod extract;
// -- operations
pub mod openapi;
pub mod serve; // -- fault tolerance: bounded header reads ----

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;

pub use error::AppError;

/// The request id header: taken from the caller when well-formed, else generated;
/// echoed on the response and recorded on every log line of the request.
pub const REQUEST_ID: &str = "x-request-id";

/// The whole HTTP surface: webhooks, admin API, health and metrics. A worker-only
/// instance serves health and metrics alone.
pub fn router(app: App) -> Router {
    let limits = app.config.limits.clone();
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::endpoint));
    if app.config.role.serves_api() {
        router = router
            .merge(
                crate::inbound::router().layer(middleware::from_fn(crate::metrics::track_webhooks)),
            )
            .merge(crate::install::router())
            .merge(
                api_router()
                    .layer(middleware::from_fn_with_state(
                        app.clone(),
                        crate::admin::audit::record_access, // privacy: audit of admin access
                    ))
                    .layer(DefaultBodyLimit::max(limits.admin_body_bytes)),
            );
    }
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(limits.request_timeout_ms),
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // The path only: query strings may carry verify tokens.
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

/// The admin API with its OpenAPI document (generated from this router's route
/// table, see [`openapi`]).
pub fn api_router() -> Router<App> {
    crate::admin::router().route("/api/v1/openapi.json", get(openapi::endpoint))
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_string);
    // 128 random bits from the thread's generator: no system call per request.
    let id = given.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let Ok(value) = HeaderValue::from_str(&id) else {
        return next.run(req).await;
    };
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let mut response = next.run(req).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    if app.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    match app.store.ready().await {
        Ok(true) => (StatusCode::OK, "ready"),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}
