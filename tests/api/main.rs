#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Black-box tests of the gateway: real HTTP, real signatures, real SQLite (and
//! PostgreSQL when `OMNIGATE_TEST_POSTGRES_URL` is set), fake platform APIs.

mod admin;
mod browser;
mod cli;
mod config;
mod console;
mod crash;
mod data_deletion;
mod fake_slack;
mod helpers;
mod ingress;
mod meta;
mod pipeline;
mod policy;
mod privacy;
mod process;
mod retention;
mod slack;
mod store;
