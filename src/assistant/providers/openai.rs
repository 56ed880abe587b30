//! OpenAI Chat Completions: `POST {base_url}/chat/completions` with a bearer key.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::{count, post_json, ChatRequest, Completion, Endpoint, Provider, ProviderError, Role};
use crate::config::ProviderName;

pub struct OpenAi(pub Endpoint);

/// The request body of a chat completion.
pub fn body(model: &str, request: &ChatRequest) -> Value {
    let mut messages = vec![json!({"role": "system", "content": request.system})];
    messages.extend(request.turns.iter().map(|t| {
        let role = match t.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        json!({"role": role, "content": t.text})
    }));
    json!({
        "model": model,
        "messages": messages,
        "max_tokens": request.max_tokens,
    })
}

/// The answer text and usage of a chat completion response.
pub fn parse(model: &str, answer: &Value) -> Result<Completion, ProviderError> {
    let choice = answer["choices"]
        .get(0)
        .ok_or(ProviderError::Malformed("no choices"))?;
    let text = choice["message"]["content"]
        .as_str()
        .filter(|t| !t.trim().is_empty())
        .ok_or(ProviderError::Malformed("no message content"))?;
    Ok(Completion {
        text: text.to_string(),
        model: answer["model"].as_str().unwrap_or(model).to_string(),
        input_tokens: count(&answer["usage"]["prompt_tokens"]),
        output_tokens: count(&answer["usage"]["completion_tokens"]),
    })
}

#[async_trait]
impl Provider for OpenAi {
    fn name(&self) -> ProviderName {
        ProviderName::OpenAi
    }

    fn model(&self) -> &str {
        &self.0.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        let http = self
            .0
            .http
            .post(self.0.url("/chat/completions"))
            .bearer_auth(self.0.api_key.expose_secret());
        let answer = post_json(http, &body(&self.0.model, request)).await?;
        parse(&self.0.model, &answer)
    }
}
