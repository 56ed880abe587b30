//! The assistant seam: who writes the reply to a customer's message.
//!
//! [`Pipeline`] asks the LLM providers through the [`router`] with a context built by
//! [`prompt`]; the offline knowledge answerer ([`KbAnswerer`]) answers when the tenant
//! has no provider, and is the last resort when every provider fails.

pub mod hold;
mod kb;
pub mod prompt;
pub mod providers;
pub mod router;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use kb::{passages, terms, KbAnswerer, HANDOFF_TEXT};

use crate::config::{self, ProviderName};
use crate::store::{now_ms, AiCall, AssistantSettings, Store};
use router::{Routed, Router};
use usage::Usage;

/// What the customer is told, once, when no provider can answer now.
pub const HOLDING_TEXT: &str = "Thanks for your message. We can't answer right away, so a person \
     from our team will get back to you here as soon as possible.";

/// What the assistant is asked.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    pub tenant_id: &'a str,
    pub conversation_id: &'a str,
    /// The platform id of the message being answered (left out of the history).
    pub message_id: &'a str,
    /// The customer's text (never logged).
    pub text: &'a str,
    /// The conversation was created for this message: it has no history to read.
    pub fresh: bool,
    /// The tenant's assistant settings and whether it has knowledge, read with the
    /// policy's state (see [`PolicyState::answer`](crate::store::PolicyState)).
    pub settings: (AssistantSettings, bool),
}

/// What it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    /// Which answerer produced it: `kb` for the offline answerer, else
    /// `provider/model`.
    pub produced_by: String,
    /// The assistant could not help: the conversation goes to a human.
    pub handoff: bool,
    /// The tenant reviews answers: this one waits for an agent's approval.
    pub draft: bool,
    /// The provider calls made for this answer, already counted in the metrics: the
    /// caller records them with the answer (the calls of a question that got no
    /// answer are recorded by the assistant itself).
    pub usage: Vec<AiCall>,
}

#[async_trait]
pub trait Assistant: Send + Sync {
    /// `None` when nobody can answer now (every provider failed and the knowledge
    /// base has nothing): the caller holds the conversation and retries later.
    async fn answer(&self, question: &Question<'_>) -> anyhow::Result<Option<Answer>>;
}

/// The assistant of a running gateway.
pub struct Pipeline {
    store: Arc<dyn Store>,
    router: Router,
    kb: KbAnswerer,
    usage: Usage,
    ai: config::Ai,
    /// Time all provider calls for one message may take together (inside the
    /// worker's lease, so a slow message is never picked up twice).
    budget: Duration,
}

impl Pipeline {
    pub fn new(store: Arc<dyn Store>, config: &config::Config) -> anyhow::Result<Self> {
        let ai = config.ai.clone();
        let router = Router::new(
            providers::from_config(&ai)?,
            Duration::from_millis(ai.timeout_ms),
            ai.breaker_failures,
            Duration::from_millis(ai.breaker_cooldown_ms),
        );
        let budget = Duration::from_millis(config.worker.lease_ms.saturating_sub(2_000).max(1_000));
        Ok(Self {
            kb: KbAnswerer::new(store.clone()),
            store,
            router,
            usage: Usage::default(),
            ai,
            budget,
        })
    }

    /// Prometheus text of the AI metrics.
    pub fn metrics(&self) -> String {
        self.usage.render(&self.router.open_circuits())
    }

    /// The accounting rows of the calls made for one question, counted in the
    /// metrics at once.
    fn usage(&self, question: &Question<'_>, calls: &[router::Call]) -> Vec<AiCall> {
        let now = now_ms();
        let rows: Vec<AiCall> = calls
            .iter()
            .map(|c| {
                let price = providers::settings(&self.ai, c.provider);
                let cost = c.input_tokens as f64 * price.input_usd_per_mtok
                    + c.output_tokens as f64 * price.output_usd_per_mtok;
                AiCall {
                    provider: c.provider.as_str().to_string(),
                    model: c.model.clone(),
                    outcome: c.outcome.to_string(),
                    input_tokens: c.input_tokens,
                    output_tokens: c.output_tokens,
                    cost_micros: cost.round() as i64,
                    created_at: now,
                }
            })
            .collect();
        for row in &rows {
            self.usage.add(question.tenant_id, row);
        }
        rows
    }

    /// Writes the rows of a question that got no provider's answer. Losing an
    /// accounting row must not lose the customer's answer: failures are logged.
    async fn record(&self, question: &Question<'_>, rows: &[AiCall]) {
        if let Err(e) = self
            .store
            .record_ai_calls(question.tenant_id, Some(question.conversation_id), rows)
            .await
        {
            tracing::warn!(error = %e, "could not record provider usage");
        }
    }

    /// The knowledge base's best passage for `q`; no search where the tenant has no
    /// knowledge document (`knowledge`, read with its settings).
    async fn kb_best(&self, q: &Question<'_>, knowledge: bool) -> anyhow::Result<Option<String>> {
        if !knowledge {
            return Ok(None);
        }
        self.kb.best(q.tenant_id, q.text).await
    }
}

fn names(list: &[String]) -> Vec<ProviderName> {
    list.iter().filter_map(|n| ProviderName::parse(n)).collect()
}

#[async_trait]
impl Assistant for Pipeline {
    async fn answer(&self, q: &Question<'_>) -> anyhow::Result<Option<Answer>> {
        let (settings, knowledge) = (&q.settings.0, q.settings.1);
        let review = settings.review_required;
        let order = settings
            .providers
            .as_deref()
            .map(names)
            .unwrap_or_else(|| self.ai.providers.clone());
        let allowed = settings.allowed_providers.as_deref().map(names);
        let candidates = self.router.eligible(&order, allowed.as_deref());
        if candidates.is_empty() {
            let best = self.kb_best(q, knowledge).await?;
            return Ok(Some(Answer {
                draft: review,
                ..KbAnswerer::reply(best)
            }));
        }

        let passages = if knowledge {
            self.store
                .search_passages(q.tenant_id, &terms(q.text), 4)
                .await?
        } else {
            Vec::new()
        };
        let history = if q.fresh {
            Vec::new()
        } else {
            self.store
                .history(q.tenant_id, q.conversation_id, q.message_id, 40)
                .await?
        };
        let request = prompt::build(
            settings,
            &passages,
            &history,
            q.text,
            self.ai.context_tokens,
            self.ai.max_output_tokens,
        );
        let mut calls = Vec::new();
        let routed = self
            .router
            .ask(&candidates, &request, self.budget, &mut |c| calls.push(c))
            .await;
        let usage = self.usage(q, &calls);
        match routed {
            Routed::Answered {
                provider,
                completion,
            } => {
                let screened = prompt::screen(&completion.text, HANDOFF_TEXT);
                Ok(Some(Answer {
                    text: screened.text,
                    produced_by: format!("{}/{}", provider.as_str(), completion.model),
                    handoff: screened.handoff,
                    draft: review,
                    usage,
                }))
            }
            // Last resort: the knowledge base, if it has a good passage.
            Routed::Failed => {
                self.record(q, &usage).await;
                Ok(self.kb_best(q, knowledge).await?.map(|text| Answer {
                    text,
                    produced_by: "kb".into(),
                    handoff: false,
                    draft: review,
                    usage: Vec::new(),
                }))
            }
        }
    }
}
