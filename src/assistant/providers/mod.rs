//! LLM provider clients: one module per provider, each speaking that provider's own
//! wire format against the base URL and key from the config. The router
//! ([`super::router`]) decides which one is asked.

mod anthropic;
mod gemini;
mod openai;

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

pub use anthropic::Anthropic;
pub use gemini::Gemini;
pub use openai::OpenAi;

use crate::config::{self, ProviderName};

impl ProviderName {
    pub const ALL: [ProviderName; 3] = [Self::OpenAi, Self::Anthropic, Self::Gemini];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// Who wrote a turn of the conversation, as the providers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

/// One question to a provider: fixed instructions and the conversation, ending with
/// the customer's message.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub system: String,
    pub turns: Vec<Turn>,
    pub max_tokens: u32,
}

/// A provider's answer with the usage it reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// Longest `Retry-After` a provider can impose: a larger one (or a hostile one) is
/// cut to this, after which one probe call decides again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why a provider gave no usable answer. Every kind fails over to the next provider;
/// `cools_down` ones also open the provider's circuit at once, and one with a
/// `retry_after` keeps it open at least that long.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("no answer within the timeout")]
    Timeout,
    #[error("rate limited (HTTP {status})")]
    RateLimited {
        status: u16,
        quota: bool,
        retry_after: Option<Duration>,
    },
    #[error("server error (HTTP {status})")]
    Server {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("request rejected (HTTP {0})")]
    Rejected(u16),
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    #[error("transport error")]
    Transport(#[source] reqwest::Error),
}

impl ProviderError {
    /// Short label for accounting and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server_error",
            Self::Rejected(_) => "rejected",
            Self::Malformed(_) => "malformed",
            Self::Transport(_) => "transport",
        }
    }

    /// Errors that will not go away by themselves soon (bad key, spent quota): the
    /// provider is skipped for a cool-down straight away.
    pub fn cools_down(&self) -> bool {
        matches!(
            self,
            Self::Rejected(401 | 403) | Self::RateLimited { quota: true, .. }
        )
    }

    /// How long the provider asked not to be called again (its `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> ProviderName;
    fn model(&self) -> &str;
    /// Asks for one answer. Dropping the future abandons the request.
    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError>;
}

/// The turns as the Anthropic and Gemini APIs accept them: alternating roles,
/// starting with the user. Neighbours of one role are joined; a conversation the
/// business opened keeps its first words as context in a user turn.
pub fn alternating(turns: &[Turn]) -> Vec<Turn> {
    let mut out: Vec<Turn> = Vec::new();
    for turn in turns {
        if out.is_empty() && turn.role == Role::Assistant {
            out.push(Turn {
                role: Role::User,
                text: format!("(earlier, the business wrote:) {}", turn.text),
            });
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == turn.role => {
                last.text.push_str("\n\n");
                last.text.push_str(&turn.text);
            }
            _ => out.push(turn.clone()),
        }
    }
    out
}

/// Client settings shared by the three providers.
#[derive(Clone)]
pub struct Endpoint {
    pub http: reqwest::Client,
    pub base_url: String,
    pub api_key: SecretString,
    pub model: String,
}

impl Endpoint {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }
}

/// The model used when the config names none.
fn default_model(name: ProviderName) -> &'static str {
    match name {
        ProviderName::OpenAi => "gpt-4o-mini",
        ProviderName::Anthropic => "claude-3-5-haiku-latest",
        ProviderName::Gemini => "gemini-2.0-flash",
    }
}

/// The providers that have an API key in the config, by name.
pub fn from_config(ai: &config::Ai) -> anyhow::Result<Vec<std::sync::Arc<dyn Provider>>> {
    // The router enforces the per-call timeout; this one only bounds a stuck socket.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(ai.timeout_ms.saturating_mul(2)))
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut out: Vec<std::sync::Arc<dyn Provider>> = Vec::new();
    for name in ProviderName::ALL {
        let settings = settings(ai, name);
        let Some(key) = &settings.api_key else {
            continue;
        };
        let endpoint = Endpoint {
            http: http.clone(),
            base_url: settings.base_url.clone(),
            api_key: key.clone(),
            model: settings
                .model
                .clone()
                .unwrap_or_else(|| default_model(name).to_string()),
        };
        out.push(match name {
            ProviderName::OpenAi => std::sync::Arc::new(OpenAi(endpoint)),
            ProviderName::Anthropic => std::sync::Arc::new(Anthropic(endpoint)),
            ProviderName::Gemini => std::sync::Arc::new(Gemini(endpoint)),
        });
    }
    Ok(out)
}

pub fn settings(ai: &config::Ai, name: ProviderName) -> &config::Provider {
    match name {
        ProviderName::OpenAi => &ai.openai,
        ProviderName::Anthropic => &ai.anthropic,
        ProviderName::Gemini => &ai.gemini,
    }
}

/// Sends `body` and maps the HTTP outcome to a provider error; returns the JSON
/// answer of a 2xx.
async fn post_json(
    request: reqwest::RequestBuilder,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ProviderError> {
    let response = request
        .json(body)
        .send()
        .await
        .map_err(ProviderError::Transport)?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    if response.status().is_success() {
        let bytes = response.bytes().await.map_err(ProviderError::Transport)?;
        return serde_json::from_slice(&bytes).map_err(|_| ProviderError::Malformed("not JSON"));
    }
    // The error body says whether a 429 is a spent quota (not worth retrying soon).
    let text = response.text().await.unwrap_or_default();
    Err(match status {
        429 => ProviderError::RateLimited {
            status,
            quota: text.contains("insufficient_quota") || text.contains("billing"),
            retry_after,
        },
        529 => ProviderError::RateLimited {
            status,
            quota: false,
            retry_after,
        },
        500..=599 => ProviderError::Server {
            status,
            retry_after,
        },
        _ => ProviderError::Rejected(status),
    })
}

/// `Retry-After` in seconds (the form the providers send), at most
/// [`MAX_RETRY_AFTER`]; an HTTP date or garbage counts as absent.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .map(|wait| wait.min(MAX_RETRY_AFTER))
}

/// A token count from a usage field (missing counts as zero).
fn count(value: &serde_json::Value) -> i64 {
    value.as_i64().unwrap_or(0).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, text: &str) -> Turn {
        Turn {
            role,
            text: text.into(),
        }
    }

    #[test]
    fn turns_alternate_from_the_user() {
        let turns = [
            turn(Role::Assistant, "Your order shipped."),
            turn(Role::User, "Thanks"),
            turn(Role::User, "When will it arrive?"),
        ];
        let out = alternating(&turns);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].role, Role::User);
        assert!(
            out[0].text.contains("Your order shipped.")
                && out[0].text.ends_with("When will it arrive?")
        );
        let request = ChatRequest {
            system: "rules".into(),
            turns: turns.to_vec(),
            max_tokens: 10,
        };
        let a = anthropic::body("m", &request);
        assert_eq!(a["system"], "rules");
        assert_eq!(a["messages"][0]["role"], "user");
        let g = gemini::body(&request);
        assert_eq!(g["contents"][0]["role"], "user");
        assert_eq!(g["systemInstruction"]["parts"][0]["text"], "rules");
        let o = openai::body("m", &request);
        assert_eq!(o["messages"][0]["role"], "system");
        assert_eq!(o["messages"][1]["role"], "assistant");
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let headers = |value: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                reqwest::header::RETRY_AFTER,
                value.parse().expect("header value"),
            );
            h
        };
        assert_eq!(retry_after(&headers("2")), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after(&headers(" 1.5 ")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(&headers("99999999")), Some(MAX_RETRY_AFTER));
        for bad in ["-1", "soon", "NaN", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(retry_after(&headers(bad)), None, "{bad}");
        }
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
    }

    #[test]
    fn answers_are_read_from_each_wire_format() {
        let o = serde_json::json!({"model": "gpt-x", "choices": [{"message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2}});
        let c = openai::parse("m", &o).expect("openai");
        assert_eq!(
            (
                c.text.as_str(),
                c.model.as_str(),
                c.input_tokens,
                c.output_tokens
            ),
            ("hi", "gpt-x", 7, 2)
        );
        let a = serde_json::json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "usage": {"input_tokens": 5, "output_tokens": 1}});
        assert_eq!(
            anthropic::parse("claude", &a).expect("anthropic").text,
            "ab"
        );
        let g = serde_json::json!({"candidates": [{"finishReason": "SAFETY"}]});
        assert!(matches!(
            gemini::parse("g", &g),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            openai::parse("m", &serde_json::json!({"choices": []})),
            Err(ProviderError::Malformed(_))
        ));
    }
}
