//! The sandbox (`serve --sandbox`): a demo tenant with one channel per platform,
//! stand-in platform send APIs served by the gateway itself under `/sandbox/...`,
//! and a page at `/sandbox` to write as a customer.
//!
//! Everything goes the real way: a customer's text becomes the platform's exact
//! webhook, signed with the channel's secret and POSTed over HTTP to the gateway's
//! own webhook route; the dispatcher's send reaches the fake API here (the config's
//! platform base URLs point at it), which shows it on the page; once the page has
//! shown a reply, the platform's delivery and read receipts are POSTed back.

mod page;
pub mod platform;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::app::App;
use crate::store::{now_ms, ConversationFilter};
pub use platform::Platform;

/// The demo tenant, made on start.
pub struct Demo {
    pub tenant_id: String,
    /// The demo tenant's API key: shown on the sandbox page to sign in to the console.
    pub api_key: String,
    /// Per-run digits in the demo accounts.
    pub tag: String,
    pub channels: HashMap<&'static str, String>,
}

/// One line of the page's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: u64,
    pub platform: &'static str,
    /// `customer` (written on the page) or `business` (reached the fake send API).
    pub side: &'static str,
    pub text: String,
    /// What the gateway answered the webhook (customer lines).
    pub webhook_status: Option<u16>,
    /// The platform id the fake API gave a reply.
    pub external_id: Option<String>,
    /// The gateway's record of the reply: author (assistant/agent/system), which
    /// assistant produced it, delivery status.
    pub author: Option<String>,
    pub produced_by: Option<String>,
    pub status: Option<String>,
    #[serde(skip)]
    receipts_sent: bool,
}

pub struct Sandbox {
    app: App,
    /// The gateway's own address, for the webhooks.
    self_url: String,
    http: reqwest::Client,
    pub demo: Demo,
    feed: Mutex<Vec<Entry>>,
}

const FEED_KEEP: usize = 500;

/// Points the platform base URLs of `config` at the sandbox's fake APIs on
/// `self_url` and gives the process an operator token if it has none.
pub fn configure(config: &mut crate::config::Config, self_url: &str) {
    config.platforms.meta.graph_url = format!("{self_url}/sandbox/meta");
    config.platforms.slack.api_url = format!("{self_url}/sandbox/slack");
    if config.admin_token.is_none() {
        let token = hex::encode(rand::random::<[u8; 24]>());
        config.admin_token = Some(token.into());
    }
}

/// Creates the demo tenant, its channels and knowledge base through the admin API
/// (`api` is the gateway's router, called in-process).
pub async fn start(app: App, api: Router, self_url: String) -> anyhow::Result<Arc<Sandbox>> {
    use secrecy::ExposeSecret as _;
    let admin = app
        .config
        .admin_token
        .as_ref()
        .context("sandbox needs an operator token")?
        .expose_secret()
        .to_string();
    let tag = format!("{:09}", rand::random::<u32>() % 1_000_000_000);
    let tenant = call(
        &api,
        "POST",
        "/api/v1/tenants",
        &admin,
        Some(json!({"name": "Demo Coffee Roasters", "domain": format!("demo-{tag}.sandbox.example")})),
    )
    .await?;
    let tenant_id = field(&tenant, "id")?;
    let api_key = field(&tenant, "api_key")?;
    let mut channels = HashMap::new();
    for platform in Platform::ALL {
        let channel = call(
            &api,
            "POST",
            "/api/v1/channels",
            &api_key,
            Some(platform.channel_body(&tag)),
        )
        .await?;
        channels.insert(platform.name(), field(&channel, "id")?);
    }
    for (title, text) in KNOWLEDGE {
        call(
            &api,
            "POST",
            "/api/v1/knowledge/documents",
            &api_key,
            Some(json!({"title": title, "url": format!("https://demo.example/{}", title.to_lowercase().replace(' ', "-")), "text": text})),
        )
        .await?;
    }
    tracing::info!(tenant = %tenant_id, "sandbox ready: open {self_url}/sandbox");
    Ok(Arc::new(Sandbox {
        app,
        self_url,
        http: reqwest::Client::new(),
        demo: Demo {
            tenant_id,
            api_key,
            tag,
            channels,
        },
        feed: Mutex::new(Vec::new()),
    }))
}

/// The demo tenant's knowledge base, so the offline answerer has something to say.
const KNOWLEDGE: [(&str, &str); 4] = [
    (
        "Opening hours",
        "Our shop and café are open Monday to Friday from 8:00 to 18:00 and Saturday from 9:00 to 14:00. We are closed on Sundays and public holidays.",
    ),
    (
        "Shipping",
        "We ship coffee beans within 24 hours of roasting. Shipping is free for orders over 30 euros; otherwise it costs 4.90 euros. Delivery takes two to three working days.",
    ),
    (
        "Returns and refunds",
        "Unopened bags can be returned within 30 days for a full refund. Write to us with your order number and we send a prepaid return label.",
    ),
    (
        "Coffee subscription",
        "The coffee subscription sends a fresh 250 g bag every two or four weeks. You can pause or cancel the subscription at any time from your account page.",
    ),
];

async fn call(
    api: &Router,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))?;
    let response = api.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await?;
    anyhow::ensure!(
        status.is_success(),
        "sandbox set-up: {method} {path} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn field(value: &Value, key: &str) -> anyhow::Result<String> {
    value[key]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("sandbox set-up: no `{key}` in the answer"))
}

/// The sandbox's routes: the page, its JSON endpoints and the fake platform APIs.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/sandbox", get(page::page))
        .route("/sandbox/feed", get(feed))
        .route("/sandbox/send", post(send))
        .route("/sandbox/demo", get(demo))
        // Fake platform send APIs (the config's base URLs point here).
        .route(
            "/sandbox/meta/{version}/{account}/messages",
            post(meta_send),
        )
        .route("/sandbox/slack/chat.postMessage", post(slack_send))
        .with_state(sandbox)
}

impl Entry {
    /// A reply whose record may still change: not yet found, or its receipts are
    /// still on their way (Slack has none).
    fn settling(&self) -> bool {
        match self.status.as_deref() {
            None => true,
            Some("read" | "failed") => false,
            Some(_) => self.platform != "slack",
        }
    }
}

impl Sandbox {
    fn push(&self, mut entry: Entry) -> u64 {
        let Ok(mut feed) = self.feed.lock() else {
            return 0;
        };
        entry.seq = feed.last().map_or(1, |e| e.seq + 1);
        let seq = entry.seq;
        feed.push(entry);
        if feed.len() > FEED_KEEP {
            let drop = feed.len() - FEED_KEEP;
            feed.drain(..drop);
        }
        seq
    }

    async fn post_webhook(&self, webhook: platform::Webhook) -> anyhow::Result<u16> {
        let mut request = self
            .http
            .post(format!("{}{}", self.self_url, webhook.path))
            .header("content-type", "application/json")
            .body(webhook.body);
        for (name, value) in webhook.headers {
            request = request.header(name, value);
        }
        Ok(request.send().await?.status().as_u16())
    }

    /// Fills in what the gateway recorded about replies the page has not seen
    /// settle, and sends the receipts of replies the page has now shown.
    async fn annotate(self: &Arc<Self>) -> anyhow::Result<()> {
        let pending: Vec<(u64, &'static str, String)> = match self.feed.lock() {
            Ok(feed) => feed
                .iter()
                .filter(|e| e.side == "business" && e.settling())
                .filter_map(|e| Some((e.seq, e.platform, e.external_id.clone()?)))
                .collect(),
            Err(_) => return Ok(()),
        };
        if pending.is_empty() {
            return Ok(());
        }
        let tenant = &self.demo.tenant_id;
        let mut known = HashMap::new();
        for platform in pending
            .iter()
            .map(|p| p.1)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let filter = ConversationFilter {
                platform: Some(platform.to_string()),
                status: None,
                after: None,
                limit: 50,
            };
            for conversation in self.app.store.list_conversations(tenant, &filter).await? {
                for message in self.app.store.messages(tenant, &conversation.id).await? {
                    if let Some(external) = message.external_id.clone() {
                        known.insert(external, message);
                    }
                }
            }
        }
        let mut receipts = Vec::new();
        if let Ok(mut feed) = self.feed.lock() {
            for entry in feed.iter_mut() {
                let Some(message) = entry
                    .external_id
                    .as_ref()
                    .filter(|_| pending.iter().any(|p| p.0 == entry.seq))
                    .and_then(|id| known.get(id))
                else {
                    continue;
                };
                entry.author = Some(message.author.clone());
                entry.produced_by = message.produced_by.clone();
                entry.status = Some(message.status.clone());
                if !entry.receipts_sent {
                    entry.receipts_sent = true;
                    if let (Some(platform), Some(id)) = (
                        Platform::from_name(entry.platform),
                        entry.external_id.clone(),
                    ) {
                        receipts.push((platform, id));
                    }
                }
            }
        }
        for (platform, external_id) in receipts {
            let Some(channel) = self.demo.channels.get(platform.name()) else {
                continue;
            };
            for webhook in platform.receipts(&self.demo.tag, channel, now_ms(), &external_id) {
                let status = self.post_webhook(webhook).await?;
                if status != 200 {
                    tracing::warn!(
                        status,
                        platform = platform.name(),
                        "sandbox receipt refused"
                    );
                }
            }
        }
        Ok(())
    }
}

async fn feed(State(sandbox): State<Arc<Sandbox>>) -> Response {
    if let Err(e) = sandbox.annotate().await {
        tracing::warn!(error = %e, "sandbox: reading the gateway's records failed");
    }
    let entries = sandbox.feed.lock().map(|f| f.clone()).unwrap_or_default();
    Json(json!({"entries": entries})).into_response()
}

async fn demo(State(sandbox): State<Arc<Sandbox>>) -> Json<Value> {
    Json(json!({
        "tenant_id": sandbox.demo.tenant_id,
        "api_key": sandbox.demo.api_key,
        "channels": sandbox.demo.channels,
        "console_url": format!("{}/console", sandbox.self_url),
    }))
}

#[derive(Deserialize)]
struct SendForm {
    platform: String,
    text: String,
}

/// The page's "send as the customer": the platform's signed webhook to the gateway.
async fn send(State(sandbox): State<Arc<Sandbox>>, Json(form): Json<SendForm>) -> Response {
    let text = form.text.trim();
    let (Some(platform), false) = (Platform::from_name(&form.platform), text.is_empty()) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"code": "invalid_value", "message": "a known platform and a non-empty text are required"}})),
        )
            .into_response();
    };
    let Some(channel) = sandbox.demo.channels.get(platform.name()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // On the timeline before the webhook goes out: the reply may arrive before the
    // gateway's answer to the webhook does.
    let seq = sandbox.push(Entry {
        seq: 0,
        platform: platform.name(),
        side: "customer",
        text: text.to_string(),
        webhook_status: None,
        external_id: None,
        author: None,
        produced_by: None,
        status: None,
        receipts_sent: false,
    });
    let webhook = platform.inbound(&sandbox.demo.tag, channel, seq, now_ms(), text);
    let status = match sandbox.post_webhook(webhook).await {
        Ok(status) => status,
        Err(e) => {
            tracing::warn!(error = %e, "sandbox: webhook to the gateway failed");
            0
        }
    };
    if let Ok(mut feed) = sandbox.feed.lock() {
        if let Some(entry) = feed.iter_mut().find(|e| e.seq == seq) {
            entry.webhook_status = Some(status);
        }
    }
    if status == 0 {
        return (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": {"code": "webhook_failed", "message": "the gateway did not answer the webhook"}})),
        )
            .into_response();
    }
    Json(json!({"webhook_status": status})).into_response()
}

fn business(sandbox: &Sandbox, platform: Platform, text: String, external_id: String) {
    sandbox.push(Entry {
        seq: 0,
        platform: platform.name(),
        side: "business",
        text,
        webhook_status: None,
        external_id: Some(external_id),
        author: None,
        produced_by: None,
        status: None,
        receipts_sent: false,
    });
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Fake Graph API send (WhatsApp Cloud API, Messenger and Instagram Send API).
async fn meta_send(
    State(sandbox): State<Arc<Sandbox>>,
    Path((_version, account)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let platform =
        Platform::by_account(&sandbox.demo.tag, &account).filter(|p| *p != Platform::Slack);
    let (Some(platform), Some(_token)) = (platform, bearer(&headers)) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}})),
        )
            .into_response();
    };
    let seq = rand::random::<u64>();
    if platform == Platform::WhatsApp {
        let text = body
            .pointer("/text/body")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let to = body.get("to").cloned().unwrap_or(Value::Null);
        let id = format!("wamid.sandbox.out.{seq:016x}");
        business(&sandbox, platform, text.to_string(), id.clone());
        return Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}], "messages": [{"id": id}]}))
            .into_response();
    }
    let text = body
        .pointer("/message/text")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let to = body
        .pointer("/recipient/id")
        .cloned()
        .unwrap_or(Value::Null);
    let id = format!("m_sandbox.out.{seq:016x}");
    business(&sandbox, platform, text.to_string(), id.clone());
    Json(json!({"recipient_id": to, "message_id": id})).into_response()
}

/// Fake Slack Web API `chat.postMessage`.
async fn slack_send(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if bearer(&headers).is_none() {
        return Json(json!({"ok": false, "error": "not_authed"})).into_response();
    }
    let channel = body.get("channel").cloned().unwrap_or(Value::Null);
    let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
    let now = now_ms();
    let ts = format!("{}.{:06}", now / 1000, rand::random::<u32>() % 1_000_000);
    // The gateway keeps a Slack message's id as `channel:ts`.
    let external_id = format!("{}:{ts}", channel.as_str().unwrap_or_default());
    business(&sandbox, Platform::Slack, text.to_string(), external_id);
    Json(json!({"ok": true, "channel": channel, "ts": ts,
                "message": {"type": "message", "text": text, "ts": ts, "bot_id": "B0SANDBOX"}}))
    .into_response()
}
