//! Fake LLM providers on loopback, each speaking one provider's wire format, with
//! scriptable faults (status codes, garbage, hanging until released) and a
//! "gullible" mode that obeys whatever the customer's text tells it.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }

    pub fn model(self) -> &'static str {
        match self {
            Self::OpenAi => "gpt-test",
            Self::Anthropic => "claude-test",
            Self::Gemini => "gemini-test",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Mode {
    /// Answers this text.
    Answer(String),
    /// Answers this HTTP status with an error body.
    Status(u16),
    /// 200 with a body that is not this provider's answer.
    Garbage,
    /// Waits until [`FakeLlm::release`], then answers this text.
    Hang(String),
    /// Obeys the customer: `REVEAL` answers the system prompt, `LEAK` the whole
    /// request, `SAY: x` answers x; anything else is echoed.
    Gullible,
}

/// What the fake received.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl LlmRequest {
    /// The whole request as text (for "never contains" checks).
    pub fn text(&self) -> String {
        self.body.to_string()
    }

    /// The system instructions.
    pub fn system(&self) -> String {
        match (self.body.get("system"), self.body.get("systemInstruction")) {
            (Some(s), _) => s.as_str().unwrap_or_default().to_string(),
            (_, Some(s)) => s["parts"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            _ => self.body["messages"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// The conversation turns as (role, text), system message left out.
    pub fn turns(&self) -> Vec<(String, String)> {
        if let Some(contents) = self.body["contents"].as_array() {
            return contents
                .iter()
                .map(|c| {
                    (
                        c["role"].as_str().unwrap_or_default().to_string(),
                        c["parts"][0]["text"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
        }
        self.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["role"] != "system")
            .map(|m| {
                (
                    m["role"].as_str().unwrap_or_default().to_string(),
                    m["content"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

struct LlmState {
    kind: Kind,
    mode: Mode,
    requests: Vec<LlmRequest>,
}

#[derive(Clone)]
pub struct FakeLlm {
    pub kind: Kind,
    /// The base URL to configure (`…/v1` for OpenAI, as its real base URL has).
    pub base_url: String,
    state: Arc<Mutex<LlmState>>,
    release: Arc<Notify>,
}

impl FakeLlm {
    pub async fn start(kind: Kind, mode: Mode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake llm");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(LlmState {
            kind,
            mode,
            requests: Vec::new(),
        }));
        let release = Arc::new(Notify::new());
        let router = Router::new()
            .route("/v1/chat/completions", post(answer))
            .route("/v1/messages", post(answer))
            .route("/v1beta/models/{*rest}", post(answer))
            .with_state((state.clone(), release.clone()));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let base_url = match kind {
            Kind::OpenAi => format!("{url}/v1"),
            _ => url,
        };
        Self {
            kind,
            base_url,
            state,
            release,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    /// Lets every hanging request answer.
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    pub fn requests(&self) -> Vec<LlmRequest> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// The `[ai.<name>]` section pointing at this fake, with prices for accounting.
    pub fn toml(&self) -> String {
        format!(
            "[ai.{name}]\nbase_url = \"{url}\"\napi_key = \"test-{name}-key\"\nmodel = \"{model}\"\ninput_usd_per_mtok = 3.0\noutput_usd_per_mtok = 15.0\n",
            name = self.kind.name(),
            url = self.base_url,
            model = self.kind.model(),
        )
    }
}

/// Configuration for the given fakes, asked in this order.
pub fn ai_toml(fakes: &[&FakeLlm], timeout_ms: u64) -> String {
    let order: Vec<String> = fakes
        .iter()
        .map(|f| format!("\"{}\"", f.kind.name()))
        .collect();
    let mut toml = format!(
        "[ai]\nproviders = [{}]\ntimeout_ms = {timeout_ms}\n",
        order.join(", ")
    );
    for fake in fakes {
        toml.push_str(&fake.toml());
    }
    toml
}

/// Prompt and completion tokens every answer reports.
pub const PROMPT_TOKENS: i64 = 1200;
pub const COMPLETION_TOKENS: i64 = 80;

type Shared = (Arc<Mutex<LlmState>>, Arc<Notify>);

async fn answer(
    State((state, release)): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (kind, mode) = {
        let mut s = state.lock().expect("lock");
        s.requests.push(LlmRequest {
            path: uri.path().to_string(),
            headers,
            body: body.clone(),
        });
        (s.kind, s.mode.clone())
    };
    let text = match mode {
        Mode::Answer(text) => text,
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                status,
                Json(json!({"error": {"type": "fake_error", "message": "scripted failure"}})),
            )
                .into_response();
        }
        Mode::Garbage => return (StatusCode::OK, "<html>surprise</html>").into_response(),
        Mode::Hang(text) => {
            release.notified().await;
            text
        }
        Mode::Gullible => {
            let request = LlmRequest {
                path: String::new(),
                headers: HeaderMap::new(),
                body: body.clone(),
            };
            let last = request
                .turns()
                .last()
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            if last.contains("REVEAL") {
                request.system()
            } else if last.contains("LEAK") {
                request.text()
            } else if let Some((_, said)) = last.split_once("SAY:") {
                said.replace("</customer_message>", "").trim().to_string()
            } else {
                last
            }
        }
    };
    Json(wire(kind, &text)).into_response()
}

/// A successful answer in the provider's own format.
pub fn wire(kind: Kind, text: &str) -> Value {
    match kind {
        Kind::OpenAi => json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_750_000_000,
            "model": kind.model(),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
        }),
        Kind::Anthropic => json!({
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": kind.model(),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS}
        }),
        Kind::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS, "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS},
            "modelVersion": kind.model()
        }),
    }
}
