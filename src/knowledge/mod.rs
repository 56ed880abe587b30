//! The tenant's knowledge base beyond documents posted through the API: a website
//! crawler with an SSRF-safe client, HTML-to-text and robots.txt handling.
//!
//! Retrieval is the store's full-text search over passages
//! ([`Store::search_passages`](crate::store::Store::search_passages)); a vector index
//! would add an embedding column to `knowledge_passages` and a second ranked list
//! merged with it, without changing the crawler or the callers.

pub mod crawl;
pub mod fetch;
mod html;
mod robots;
