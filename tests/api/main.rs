#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Black-box tests of the gateway: real HTTP, real signatures, real SQLite (and
//! PostgreSQL when `OMNIGATE_TEST_POSTGRES_URL` is set), fake platform APIs.

mod admin;
mod cli;
mod config;
mod crash;
mod helpers;
mod ingress;
mod pipeline;
mod privacy;
mod process;
mod store;
// -- telegram, discord --
mod discord;
mod telegram;
