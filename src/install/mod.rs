//! Connecting platform accounts through the platforms' own install flows (OAuth).

mod slack;

use axum::Router;

use crate::app::App;

pub fn router() -> Router<App> {
    slack::router()
}
