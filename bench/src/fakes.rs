//! The platform and provider APIs the gateway calls, played on loopback inside the
//! benchmark process in each one's wire format: the WhatsApp Graph API
//! (`POST /{version}/{phone_number_id}/messages`), Slack's `chat.postMessage`, and an
//! Anthropic Messages API (`POST /v1/messages`) that answers at once.
//!
//! For the end-to-end section the Graph API fake records when the first reply to
//! each recipient arrived, and the LLM fake how long it spent on each request (found
//! by the `(ref N)` the customer's text carries).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

pub struct Fakes {
    pub graph_url: String,
    pub slack_api_url: String,
    pub llm_url: String,
    pub seen: Arc<Seen>,
}

/// What the fakes observed while recording is on.
#[derive(Default)]
pub struct Seen {
    recording: AtomicBool,
    /// WhatsApp recipient → when the first reply to it arrived.
    replies: Mutex<HashMap<String, Instant>>,
    /// Customer message ref → time the fake LLM spent answering it.
    llm: Mutex<HashMap<u64, Duration>>,
    counter: AtomicU64,
}

impl Seen {
    /// Clears what was recorded and starts recording.
    pub fn record(&self) {
        lock(&self.replies).clear();
        lock(&self.llm).clear();
        self.recording.store(true, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.recording.store(false, Ordering::SeqCst);
    }

    pub fn reply_at(&self, recipient: &str) -> Option<Instant> {
        lock(&self.replies).get(recipient).copied()
    }

    pub fn replies(&self) -> usize {
        lock(&self.replies).len()
    }

    pub fn llm_time(&self, reference: u64) -> Option<Duration> {
        lock(&self.llm).get(&reference).copied()
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fakes {
    pub async fn start() -> anyhow::Result<Self> {
        let seen = Arc::new(Seen::default());
        let graph = Router::new()
            .route("/{version}/{phone}/messages", post(graph_message))
            .with_state(seen.clone());
        let slack = Router::new()
            .route("/api/chat.postMessage", post(slack_post))
            .with_state(seen.clone());
        let llm = Router::new()
            .route("/v1/messages", post(anthropic_message))
            .with_state(seen.clone());
        Ok(Self {
            graph_url: serve(graph).await?,
            slack_api_url: format!("{}/api", serve(slack).await?),
            llm_url: serve(llm).await?,
            seen,
        })
    }
}

async fn serve(router: Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

async fn graph_message(State(seen): State<Arc<Seen>>, Json(body): Json<Value>) -> Json<Value> {
    let arrived = Instant::now();
    if seen.recording.load(Ordering::Relaxed) {
        if let Some(to) = body["to"].as_str() {
            lock(&seen.replies).entry(to.to_string()).or_insert(arrived);
        }
    }
    let n = seen.next();
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": body["to"], "wa_id": body["to"]}],
        "messages": [{"id": format!("wamid.reply.{n}")}]
    }))
}

async fn slack_post(State(seen): State<Arc<Seen>>, Json(body): Json<Value>) -> Json<Value> {
    let n = seen.next();
    let ts = format!("1800000000.{:06}", n % 1_000_000);
    Json(json!({
        "ok": true,
        "channel": body["channel"],
        "ts": ts,
        "message": {"type": "message", "text": body["text"], "ts": ts, "bot_id": "B0BENCH"}
    }))
}

/// Answers at once; the time from entering the handler (body read) to the answer
/// being built is recorded against the customer message's `(ref N)`.
async fn anthropic_message(State(seen): State<Arc<Seen>>, body: Bytes) -> Json<Value> {
    let entered = Instant::now();
    let reference = customer_ref(&body);
    let answer = Json(json!({
        "id": format!("msg_bench_{}", seen.next()),
        "type": "message",
        "role": "assistant",
        "model": "claude-bench",
        "content": [{"type": "text", "text": "We are open 9:00 to 17:00, Monday to Friday."}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 600, "output_tokens": 20}
    }));
    if let Some(reference) = reference.filter(|_| seen.recording.load(Ordering::Relaxed)) {
        lock(&seen.llm).insert(reference, entered.elapsed());
    }
    answer
}

/// The last `(ref N)` in a request body.
fn customer_ref(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.rfind("(ref ")? + "(ref ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_customer_ref_in_a_request_is_found() {
        let body = br#"{"messages":[{"role":"user","content":"<customer_message>Hello (ref 41) and (ref 42)</customer_message>"}]}"#;
        assert_eq!(customer_ref(body), Some(42));
        assert_eq!(customer_ref(b"no reference here"), None);
        assert_eq!(customer_ref(b"(ref )"), None);
    }
}
