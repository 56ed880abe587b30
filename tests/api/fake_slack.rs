//! A stand-in for Slack's Web API on loopback, speaking its wire format:
//! `chat.postMessage` (bearer bot token, JSON body, `{"ok", "channel", "ts"}` or
//! `{"ok": false, "error"}`, 429 + `Retry-After` when a channel is posted to faster
//! than Slack allows) and `oauth.v2.access` (HTTP Basic client credentials, form body).
//! Also signs Events API requests the way Slack does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::helpers::{Scripted, TestApp};

pub const SLACK_OPERATOR_SECRET: &str = "slack-operator-signing-secret";
pub const SLACK_CLIENT_ID: &str = "1234567890.0987654321";
pub const SLACK_CLIENT_SECRET: &str = "slack-client-secret";
/// The code the fake `oauth.v2.access` accepts.
pub const GOOD_CODE: &str = "good-oauth-code";
/// From fixtures/slack/oauth-v2-access-response.json.
pub const INSTALLED_TEAM: &str = "T9TK3CUKW";
pub const INSTALLED_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
pub const INSTALLED_BOT_USER: &str = "U0KRQLJ9H";

/// Slack's per-channel posting limit as this fake enforces it: a bucket of this many
/// messages, refilled at one a second.
const CHANNEL_BURST: f64 = 4.0;

/// A `chat.postMessage` the fake received.
#[derive(Debug, Clone)]
pub struct Post {
    pub authorization: Option<String>,
    pub body: Value,
    pub answered: u16,
    pub ts: Option<String>,
}

#[derive(Default)]
struct SlackState {
    script: Vec<Scripted>,
    posts: Vec<Post>,
    exchanges: Vec<HashMap<String, String>>,
    buckets: HashMap<String, (f64, Option<Instant>)>,
    sent: u64,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub url: String,
    state: Arc<Mutex<SlackState>>,
}

impl FakeSlack {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake slack");
        let url = format!("http://{}/api", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(SlackState::default()));
        let router = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/oauth.v2.access", post(oauth_access))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state }
    }

    /// Answers used (in order) before the default behaviour.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.lock().expect("lock").script.extend(answers);
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().expect("lock").posts.clone()
    }

    /// Posts Slack accepted.
    pub fn delivered(&self) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| p.answered == 200 && p.ts.is_some())
            .collect()
    }

    /// The form bodies `oauth.v2.access` received.
    pub fn exchanges(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().expect("lock").exchanges.clone()
    }

    /// The TOML section aiming the gateway's operator Slack app at this fake.
    pub fn config(&self) -> String {
        format!(
            "[platforms.slack]\napi_url = \"{}\"\nsigning_secret = \"{SLACK_OPERATOR_SECRET}\"\n\
             client_id = \"{SLACK_CLIENT_ID}\"\nclient_secret = \"{SLACK_CLIENT_SECRET}\"\n\
             authorize_url = \"https://slack.example.test/oauth/v2/authorize\"\n",
            self.url
        )
    }
}

async fn post_message(
    State(state): State<Arc<Mutex<SlackState>>>,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    let mut state = state.lock().expect("lock");
    let channel = body.0["channel"].as_str().unwrap_or_default().to_string();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let scripted = (!state.script.is_empty()).then(|| state.script.remove(0));
    // Slack's limit: about one message a second per channel, short bursts allowed.
    let now = Instant::now();
    let bucket = state
        .buckets
        .entry(channel.clone())
        .or_insert((CHANNEL_BURST, None));
    let tokens = match bucket.1 {
        Some(at) => (bucket.0 + now.duration_since(at).as_secs_f64()).min(CHANNEL_BURST),
        None => bucket.0,
    };
    let (status, extra, reply, ts) = match scripted {
        Some(s) => (s.status, s.headers, s.body, None),
        None if tokens < 1.0 => {
            *bucket = (tokens, Some(now));
            (
                429,
                vec![("retry-after", "1".to_string())],
                json!({"ok": false, "error": "ratelimited"}),
                None,
            )
        }
        None => {
            *bucket = (tokens - 1.0, Some(now));
            state.sent += 1;
            let ts = format!("1700000000.{:06}", state.sent);
            (
                200,
                vec![],
                json!({"ok": true, "channel": channel, "ts": ts,
                       "message": {"type": "message", "text": body.0["text"], "ts": ts, "bot_id": "B0FAKE"}}),
                Some(ts),
            )
        }
    };
    state.posts.push(Post {
        authorization,
        body: body.0,
        answered: status,
        ts,
    });
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        Json(reply),
    )
        .into_response();
    for (name, value) in extra {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

async fn oauth_access(
    State(state): State<Arc<Mutex<SlackState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let form: HashMap<String, String> = url_decode(&body);
    state.lock().expect("lock").exchanges.push(form.clone());
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{SLACK_CLIENT_ID}:{SLACK_CLIENT_SECRET}"))
    );
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        return Json(json!({"ok": false, "error": "invalid_client_id"}));
    }
    if form.get("code").map(String::as_str) != Some(GOOD_CODE) {
        return Json(json!({"ok": false, "error": "invalid_code"}));
    }
    let fixture = include_str!("../../channels/tests/fixtures/slack/oauth-v2-access-response.json");
    Json(serde_json::from_str(fixture).expect("fixture"))
}

fn url_decode(body: &[u8]) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TestApp {
    /// POSTs a Slack-signed request (timestamp `now + skew_secs`) to `path`;
    /// `retry` adds Slack's redelivery headers.
    pub async fn slack_post(
        &self,
        path: &str,
        secret: &str,
        body: &str,
        skew_secs: i64,
        retry: Option<u32>,
    ) -> (u16, String) {
        let ts = (unix_now() + skew_secs).to_string();
        let signature = webhooks::slack::sign(secret.as_bytes(), &ts, body.as_bytes());
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", signature)
            .body(body.to_string());
        if let Some(n) = retry {
            req = req
                .header("x-slack-retry-num", n.to_string())
                .header("x-slack-retry-reason", "http_timeout");
        }
        let res = req.send().await.expect("slack post");
        let status = res.status().as_u16();
        (status, res.text().await.unwrap_or_default())
    }
}

/// An `event_callback` envelope around `event`.
pub fn callback(team: &str, event_id: &str, bot_user: Option<&str>, event: Value) -> String {
    let mut envelope = json!({
        "token": "verification-token-unused",
        "team_id": team,
        "api_app_id": "A0KRD7HC3",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
    });
    if let Some(bot) = bot_user {
        envelope["authorizations"] = json!([
            {"enterprise_id": null, "team_id": team, "user_id": bot, "is_bot": true, "is_enterprise_install": false}
        ]);
    }
    envelope.to_string()
}

/// A person's message; `thread_ts` makes it a thread reply.
pub fn slack_message(
    channel: &str,
    user: &str,
    ts: &str,
    text: &str,
    thread_ts: Option<&str>,
) -> Value {
    let mut event = json!({
        "type": "message",
        "channel": channel,
        "channel_type": if channel.starts_with('D') { "im" } else { "channel" },
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
    });
    if let Some(thread) = thread_ts {
        event["thread_ts"] = json!(thread);
    }
    event
}
