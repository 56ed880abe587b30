//! Router assembly: every feature module exposes `router()`, merged only here.

pub mod error;
pub mod extract;
pub mod serve; // -- fault tolerance: bounded header reads ----

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;

pub use error::AppError;

/// The whole HTTP surface: webhooks, admin API, health.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(crate::inbound::router())
        .merge(crate::install::router())
        .merge(
            crate::admin::router().layer(axum::middleware::from_fn_with_state(
                app.clone(),
                crate::admin::audit::record_access, // privacy: audit of admin access
            )),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // The path only: query strings may carry verify tokens.
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
        .with_state(app)
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
