//! The privacy engine: the promises a business makes to its customers, kept the same
//! way on every channel. Erasure (here) serves the admin API, Meta's data-deletion
//! callback and the platforms' revocation signals alike; every change is recorded in
//! the [`audit`](crate::audit) log.

pub mod erasure;
