//! The privacy engine: the promises a business makes to its customers, kept the same
//! way on every channel. [`policy`] is consulted by the worker before any assistant
//! sees a message; [`retention`] deletes what expired. Erasure (here) serves the admin API, Meta's data-deletion
//! callback and the platforms' revocation signals alike; every change is recorded in
//! the [`audit`](crate::audit) log.

//! Entry points for the platforms' own privacy signals:
//! - a person's consent changing on the platform (WhatsApp `user_preferences`, a
//!   Telegram bot blocked/unblocked, ...): normalize it as
//!   `channels::EventBody::Consent`; the worker records it in the ledger
//!   ([`policy::signal_effects`]);
//! - a deletion request or revocation naming a person (Meta's data-deletion callback):
//!   [`erasure::erase_identity`];
//! - an account-level event (Slack `app_uninstalled`/`tokens_revoked`):
//!   [`crate::audit::record`].

pub mod erasure;
pub mod policy;
pub mod retention;
