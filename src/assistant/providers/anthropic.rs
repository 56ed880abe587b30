//! Anthropic Messages: `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version`.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::{
    alternating, count, post_json, ChatRequest, Completion, Endpoint, Provider, ProviderError, Role,
};
use crate::config::ProviderName;

/// The API version this client speaks.
pub const VERSION: &str = "2023-06-01";

pub struct Anthropic(pub Endpoint);

/// The request body (turns alternate, starting with the user, as the API requires).
pub fn body(model: &str, request: &ChatRequest) -> Value {
    let messages: Vec<Value> = alternating(&request.turns)
        .into_iter()
        .map(|t| {
            let role = match t.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": t.text})
        })
        .collect();
    json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "system": request.system,
        "messages": messages,
    })
}

pub fn parse(model: &str, answer: &Value) -> Result<Completion, ProviderError> {
    let blocks = answer["content"]
        .as_array()
        .ok_or(ProviderError::Malformed("no content"))?;
    let text: String = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join("");
    if text.trim().is_empty() {
        return Err(ProviderError::Malformed("no text block"));
    }
    Ok(Completion {
        text,
        model: answer["model"].as_str().unwrap_or(model).to_string(),
        input_tokens: count(&answer["usage"]["input_tokens"]),
        output_tokens: count(&answer["usage"]["output_tokens"]),
    })
}

#[async_trait]
impl Provider for Anthropic {
    fn name(&self) -> ProviderName {
        ProviderName::Anthropic
    }

    fn model(&self) -> &str {
        &self.0.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        let http = self
            .0
            .http
            .post(self.0.url("/v1/messages"))
            .header("x-api-key", self.0.api_key.expose_secret())
            .header("anthropic-version", VERSION);
        let answer = post_json(http, &body(&self.0.model, request)).await?;
        parse(&self.0.model, &answer)
    }
}
