//! The privacy engine: the promises a business makes to its customers, kept the same
//! way on every channel. [`policy`] is consulted by the worker before any assistant
//! sees a message; [`retention`] deletes what expired. Erasure (here) serves the admin API, Meta's data-deletion
//! callback and the platforms' revocation signals alike; every change is recorded in
//! the [`audit`](crate::audit) log.

pub mod erasure;
pub mod policy;
pub mod retention;
