#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Black-box tests of the gateway: real HTTP, real signatures, real SQLite (and
//! PostgreSQL when `OMNIGATE_TEST_POSTGRES_URL` is set), fake platform APIs.

mod admin;
mod assistant;
mod bad_input;
mod browser;
mod cli;
mod config;
mod console;
mod crash;
mod crawl;
mod data_deletion;
mod fake_llm;
mod fake_slack;
mod helpers;
mod ingress;
mod llm_storm;
mod meta;
mod ops;
mod pg_restart;
mod pipeline;
mod policy;
mod privacy;
mod process;
mod retention;
mod slack;
mod slowloris;
mod store;
// -- telegram, discord --
mod discord;
mod fake_discord;
mod storm;
mod telegram;
