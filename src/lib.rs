//! omnigate: a messaging-channel bot gateway.
//!
//! ingress (verify, normalize, durable inbox) → worker (conversation, assistant,
//! outbox) → dispatcher (send, retry, status). See ARCHITECTURE in the README.

pub mod admin;
pub mod app;
pub mod assistant;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod http;
pub mod inbound;
pub mod install;
pub mod knowledge;
pub mod metrics;
pub mod ops;
pub mod outbound;
pub mod pipeline;
pub mod privacy;
pub mod queue;
// -- web: sandbox and operator console ----
pub mod console;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod web;

pub use app::run;
