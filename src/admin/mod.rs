//! The admin API (`/api/v1`): tenants, channels, conversations, knowledge and
//! unhandled events. The tenant always comes from the API key, never from the path
//! or body; another tenant's ids are answered 404 like ids that do not exist.

mod assistant;
// -- privacy -------------------------------------------------------------------------
pub mod audit;
mod contacts;
mod settings;
// ----------------------------------------------------------------------------------
// -- telegram, discord ----------------------------------------------------------------
mod bots;
// ----------------------------------------------------------------------------------
mod channels;
mod conversations;
mod events;
mod knowledge;
pub mod tenants;

use axum::Router;

use crate::app::App;

pub fn router() -> Router<App> {
    Router::new()
        .merge(tenants::router())
        .merge(channels::router())
        .merge(conversations::router())
        .merge(knowledge::router())
        .merge(events::router())
        .merge(assistant::router())
        // -- privacy
        .merge(audit::router())
        .merge(contacts::router())
        .merge(settings::router())
}
