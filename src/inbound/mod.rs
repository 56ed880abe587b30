//! Ingress: verify → normalize → durable inbox → 2xx.
//!
//! Handlers never call the assistant or a platform API; they only store what arrived
//! and acknowledge it once it is committed.

mod commit;
pub mod data_deletion;
mod meta;
mod slack;
// -- telegram, discord ----------------------------------------------------------
mod discord;
pub mod discord_gateway;
mod telegram;

use axum::Router;

pub use commit::{
    spawn_committer, CommitFailed, Committer, POSTGRES_FLOOD_RATE, SQLITE_FLOOD_RATE,
};

use crate::app::App;

/// Largest webhook body accepted (Meta batches up to 1000 updates).
pub const MAX_BODY: usize = 1024 * 1024;

pub fn router() -> Router<App> {
    meta::router()
        .merge(data_deletion::router())
        .merge(slack::router())
        .merge(telegram::router())
        .merge(discord::router())
}
