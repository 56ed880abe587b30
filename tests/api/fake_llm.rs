//! Fake LLM providers on loopback, each speaking one provider's wire format, with
//! scriptable faults (status codes with or without `retry-after`, garbage, connection
//! resets, hanging until released, answers trickled slower than any timeout, storms
//! cycling through several of these) and a "gullible" mode that obeys whatever the
//! customer's text tells it.
//!
//! Every answer closes its connection, so each request arrives on a connection of
//! its own and the fault for it is chosen when it connects; a reset is a real TCP
//! RST after the request was received.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    /// Answers this HTTP status with `retry-after: <seconds>`.
    StatusRetryAfter(u16, u64),
    /// 200 with a body that is not this provider's answer.
    Garbage,
    /// Reads the request, then resets the connection (TCP RST) without answering.
    Reset,
    /// Waits until [`FakeLlm::release`], then answers this text.
    Hang(String),
    /// 200 at once, then this answer's body one byte per interval: a stream far
    /// slower than any timeout.
    Trickle(String, Duration),
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
    /// When it arrived.
    pub at: Instant,
    /// The fault or answer it got.
    pub mode: Mode,
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
    /// Modes given to connections in turn, cycling.
    script: Vec<Mode>,
    next: usize,
    requests: Vec<LlmRequest>,
}

impl LlmState {
    fn next_mode(&mut self) -> Mode {
        let mode = self.script[self.next % self.script.len()].clone();
        self.next += 1;
        mode
    }
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
            script: vec![mode],
            next: 0,
            requests: Vec::new(),
        }));
        let release = Arc::new(Notify::new());
        let router = Router::new()
            .route("/v1/chat/completions", post(answer))
            .route("/v1/messages", post(answer))
            .route("/v1beta/models/{*rest}", post(answer))
            .with_state((state.clone(), release.clone()));
        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mode = accepting.lock().expect("lock").next_mode();
                let state = accepting.clone();
                let router = router.clone();
                tokio::spawn(async move {
                    match mode {
                        Mode::Reset | Mode::Trickle(..) => raw(stream, mode, kind, state).await,
                        mode => serve(stream, router.layer(Extension(mode))).await,
                    }
                });
            }
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

    /// Answers every request from now on in this mode.
    pub fn set_mode(&self, mode: Mode) {
        self.set_storm(vec![mode]);
    }

    /// Answers the next requests with these modes in turn, over and over.
    pub fn set_storm(&self, modes: Vec<Mode>) {
        assert!(!modes.is_empty(), "a storm needs at least one mode");
        let mut state = self.state.lock().expect("lock");
        state.script = modes;
        state.next = 0;
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

/// One request on one connection, answered by the router; the connection closes
/// after the answer.
async fn serve(stream: TcpStream, router: Router) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// Reads one request off the socket: (path, headers, JSON body).
async fn read_request(stream: &mut TcpStream) -> Option<(String, HeaderMap, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
                axum::http::HeaderValue::from_str(value.trim()),
            ) {
                headers.append(name, value);
            }
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    Some((path, headers, body))
}

/// The faults that live below HTTP: a reset after the request, or a 200 whose body
/// trickles in.
async fn raw(mut stream: TcpStream, mode: Mode, kind: Kind, state: Arc<Mutex<LlmState>>) {
    let Some((path, headers, body)) = read_request(&mut stream).await else {
        return;
    };
    state.lock().expect("lock").requests.push(LlmRequest {
        path,
        headers,
        body,
        at: Instant::now(),
        mode: mode.clone(),
    });
    match mode {
        Mode::Trickle(text, every) => {
            let body = wire(kind, &text).to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for byte in body.as_bytes() {
                tokio::time::sleep(every).await;
                // The client gave up: its timeout dropped the connection.
                if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        }
        _ => {
            // SO_LINGER 0: closing sends RST instead of FIN.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
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
    Extension(mode): Extension<Mode>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let kind = {
        let mut s = state.lock().expect("lock");
        s.requests.push(LlmRequest {
            path: uri.path().to_string(),
            headers,
            body: body.clone(),
            at: Instant::now(),
            mode: mode.clone(),
        });
        s.kind
    };
    let text = match mode {
        Mode::Answer(text) => text,
        Mode::Status(code) | Mode::StatusRetryAfter(code, _) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                status,
                Json(json!({"error": {"type": "fake_error", "message": "scripted failure"}})),
            )
                .into_response();
            if let Mode::StatusRetryAfter(_, seconds) = mode {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().expect("header"));
            }
            return response;
        }
        Mode::Garbage => return (StatusCode::OK, "<html>surprise</html>").into_response(),
        Mode::Hang(text) => {
            release.notified().await;
            text
        }
        // Answered below HTTP (see `raw`).
        Mode::Reset | Mode::Trickle(..) => {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Mode::Gullible => {
            let request = LlmRequest {
                path: String::new(),
                headers: HeaderMap::new(),
                body: body.clone(),
                at: Instant::now(),
                mode: Mode::Gullible,
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
