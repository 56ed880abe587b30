//! Gemini: `POST {base_url}/v1beta/models/{model}:generateContent` with
//! `x-goog-api-key`.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::{
    alternating, count, post_json, ChatRequest, Completion, Endpoint, Provider, ProviderError, Role,
};
use crate::config::ProviderName;

pub struct Gemini(pub Endpoint);

pub fn body(request: &ChatRequest) -> Value {
    let contents: Vec<Value> = alternating(&request.turns)
        .iter()
        .map(|t| {
            let role = match t.role {
                Role::User => "user",
                Role::Assistant => "model",
            };
            json!({"role": role, "parts": [{"text": t.text}]})
        })
        .collect();
    json!({
        "systemInstruction": {"parts": [{"text": request.system}]},
        "contents": contents,
        "generationConfig": {"maxOutputTokens": request.max_tokens},
    })
}

pub fn parse(model: &str, answer: &Value) -> Result<Completion, ProviderError> {
    let candidate = answer["candidates"]
        .get(0)
        .ok_or(ProviderError::Malformed("no candidates"))?;
    let text: String = candidate["content"]["parts"]
        .as_array()
        .ok_or(ProviderError::Malformed("no content parts"))?
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("");
    if text.trim().is_empty() {
        return Err(ProviderError::Malformed("no text part"));
    }
    Ok(Completion {
        text,
        model: answer["modelVersion"].as_str().unwrap_or(model).to_string(),
        input_tokens: count(&answer["usageMetadata"]["promptTokenCount"]),
        output_tokens: count(&answer["usageMetadata"]["candidatesTokenCount"]),
    })
}

#[async_trait]
impl Provider for Gemini {
    fn name(&self) -> ProviderName {
        ProviderName::Gemini
    }

    fn model(&self) -> &str {
        &self.0.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, ProviderError> {
        let path = format!("/v1beta/models/{}:generateContent", self.0.model);
        let http = self
            .0
            .http
            .post(self.0.url(&path))
            .header("x-goog-api-key", self.0.api_key.expose_secret());
        let answer = post_json(http, &body(request)).await?;
        parse(&self.0.model, &answer)
    }
}
