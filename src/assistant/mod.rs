//! The assistant seam: who writes the reply to a customer's message.
//!
//! Today there is one implementation, the offline knowledge answerer ([`KbAnswerer`]);
//! LLM providers plug in behind the same trait.

mod kb;

use async_trait::async_trait;

pub use kb::{passages, terms, KbAnswerer};

/// What the assistant is asked.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    pub tenant_id: &'a str,
    pub conversation_id: &'a str,
    /// The customer's text (never logged).
    pub text: &'a str,
}

/// What it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    /// Which answerer produced it (`kb` for the offline answerer, or `provider/model`).
    pub produced_by: String,
    /// The assistant could not help: the conversation goes to a human.
    pub handoff: bool,
}

#[async_trait]
pub trait Assistant: Send + Sync {
    async fn answer(&self, question: &Question<'_>) -> anyhow::Result<Answer>;
}
