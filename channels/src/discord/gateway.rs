//! Discord Gateway session of one bot, through serenity: connects with only the
//! intents the channel needs (direct messages, guild messages, message content),
//! heartbeats and resumes after disconnects (serenity's shard runner), and turns
//! `MESSAGE_CREATE` / `MESSAGE_UPDATE` / `MESSAGE_DELETE` into events of the
//! common model handed to an [`EventSink`] (the gateway's durable inbox).
//!
//! Resume may replay events: the inbox dedupes on the message id.
//!
//! Where the session connects is asked of `{api_url}/gateway/bot` through the
//! channel's own client, so `platforms.discord.api_url` moves the REST API and the
//! gateway together (serenity's client would ask `/gateway` and fall back to
//! `wss://gateway.discord.gg` on any failure). Discovery also checks the token and
//! the session starts left before anything connects.
//!
//! The serenity client runs on a runtime of its own, hosted by a plain thread: when
//! the session ends, shutting that runtime down ends every task serenity spawned and
//! closes the socket, so a stopped session is gone before [`run`] returns (and the
//! caller hands its lease back), even where serenity's own shutdown falls short.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use serenity::all::{
    ChannelId, Context, EventHandler, GatewayIntents, GuildId, HttpBuilder, Message, MessageId,
    MessageUpdateEvent, Ready, User,
};
use tokio::sync::{mpsc, oneshot};

use super::Discord;
use crate::model::{
    Content, Delete, Edit, EventBody, InboundEvent, InboundMessage, Normalized, Participant,
};
use crate::SendError;

/// Where the events of a session go. `deliver` returns once they are stored
/// durably, or an error when they could not be.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn deliver(&self, events: Normalized) -> Result<(), String>;
}

/// The intents the channel needs, and no more.
pub fn intents() -> GatewayIntents {
    GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
}

/// Who the bot is and where it answers.
#[derive(Debug, Clone, Default)]
pub struct BotScope {
    pub application_id: String,
    /// The bot's own user id (from READY).
    pub user_id: Option<u64>,
    /// Guild channels where every message is for the bot.
    pub support_channels: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Discord refused the bot token (401 at discovery, or close code 4004).
    #[error("the bot token was rejected")]
    Rejected,
    #[error("gateway session failed: {0}")]
    Session(String),
}

/// Events a session's handler passes to the sink, in the order they were read.
const EVENT_QUEUE: usize = 256;
/// How long serenity's tasks may take to end after the session was told to stop,
/// before its runtime is dropped under them.
const SHUTDOWN: Duration = Duration::from_secs(10);

/// Runs one bot's gateway session until `stop` completes (or the session fails for
/// good, e.g. a rejected token or intents). When it returns, the session's socket is
/// closed and every event it read has been handed to `sink`.
pub async fn run(
    discord: &Discord,
    token: &SecretString,
    scope: BotScope,
    sink: Arc<dyn EventSink>,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    let mut stop = std::pin::pin!(stop);
    let gateway = discord.gateway_bot(token).await.map_err(|e| match e {
        SendError::Unauthorized { .. } => GatewayError::Rejected,
        other => GatewayError::Session(format!("gateway/bot: {other}")),
    })?;
    let limit = &gateway.session_start_limit;
    if limit.remaining == 0 {
        // Every IDENTIFY past the daily limit gets the token reset by Discord.
        tracing::warn!(application_id = %scope.application_id, reset_after_ms = limit.reset_after, "no gateway session starts left; waiting for the limit to reset");
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(limit.reset_after)) => {}
            () = &mut stop => return Ok(()),
        }
    }
    if gateway.shards > 1 {
        tracing::warn!(application_id = %scope.application_id, shards = gateway.shards, "Discord recommends sharding this bot; one shard is run");
    }

    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let (signals_tx, signals) = std::sync::mpsc::channel();
    let (ended_tx, mut ended) = oneshot::channel();
    let handler = Handler {
        scope: scope.clone(),
        user_id: OnceLock::new(),
        events: events_tx,
    };
    let http = serenity_http(discord.api_url(), token);
    let url = gateway.url;
    let session_signals = signals_tx.clone();
    std::thread::Builder::new()
        .name("discord-gateway".into())
        .spawn(move || {
            let result = host(http, url, handler, session_signals, signals);
            let _ = ended_tx.send(result);
        })
        .map_err(|e| GatewayError::Session(format!("thread: {e}")))?;

    // Also sent when this future is dropped: the session never outlives its caller.
    let mut stopper = Some(StopOnDrop(signals_tx));
    let application_id = scope.application_id;
    loop {
        tokio::select! {
            Some(normalized) = events.recv() => deliver(&*sink, &application_id, normalized).await,
            result = &mut ended => {
                // The session's runtime is gone: what its handler queued is all there is.
                while let Ok(normalized) = events.try_recv() {
                    deliver(&*sink, &application_id, normalized).await;
                }
                return result.unwrap_or_else(|_| Err(GatewayError::Session("session thread ended".into())));
            }
            () = &mut stop, if stopper.is_some() => drop(stopper.take()),
        }
    }
}

/// What the thread hosting a session waits for.
enum Signal {
    /// The caller wants the session to end (or went away).
    Stop,
    /// The serenity client returned.
    Ended(Result<(), GatewayError>),
}

struct StopOnDrop(std::sync::mpsc::Sender<Signal>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Signal::Stop);
    }
}

/// Runs a session's serenity client on a runtime of its own, on the calling (plain)
/// thread, until it ends or is told to stop; a stop gets [`SHUTDOWN`] for a clean
/// close, then the runtime is shut down under whatever serenity still runs (a shard
/// queuer retrying a connection, a runner that never saw its close answered). The
/// wait does not depend on that runtime making progress.
fn host(
    http: serenity::http::Http,
    url: String,
    handler: Handler,
    session_signals: std::sync::mpsc::Sender<Signal>,
    signals: std::sync::mpsc::Receiver<Signal>,
) -> Result<(), GatewayError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("discord-gateway-session")
        .enable_all()
        .build()
        .map_err(|e| GatewayError::Session(format!("runtime: {e}")))?;
    let (shutdown_tx, shutdown) = oneshot::channel();
    runtime.spawn(async move {
        let result = session(http, url, handler, shutdown).await;
        let _ = session_signals.send(Signal::Ended(result));
    });
    let result = match signals.recv() {
        Ok(Signal::Ended(result)) => result,
        Ok(Signal::Stop) | Err(_) => {
            let _ = shutdown_tx.send(());
            let deadline = std::time::Instant::now() + SHUTDOWN + Duration::from_secs(2);
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match signals.recv_timeout(left) {
                    Ok(Signal::Ended(result)) => break result,
                    Ok(Signal::Stop) => {}
                    Err(_) => {
                        tracing::warn!(
                            "discord gateway session did not close in time; dropping it"
                        );
                        break Ok(());
                    }
                }
            }
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// serenity's HTTP client. Its only call is the `GET /gateway` its client builder
/// makes (the answer is replaced by the discovered URL); it goes where the REST API
/// is configured: serenity's "proxy" replaces `https://discord.com` in its
/// `https://discord.com/api/v10/...` paths.
fn serenity_http(api_url: &str, token: &SecretString) -> serenity::http::Http {
    let mut http = HttpBuilder::new(token.expose_secret());
    let base = api_url.trim_end_matches('/');
    let origin = base.strip_suffix("/api/v10").unwrap_or(base);
    if origin != "https://discord.com" {
        // serenity's rate limiter ignores the proxy and would call discord.com.
        http = http.proxy(origin).ratelimiter_disabled(true);
    }
    http.build()
}

/// The serenity client of one session, on the session's own runtime, until it
/// fails or `stop` fires.
async fn session(
    http: serenity::http::Http,
    ws_url: String,
    handler: Handler,
    stop: oneshot::Receiver<()>,
) -> Result<(), GatewayError> {
    let mut client = serenity::all::ClientBuilder::new_with_http(http, intents())
        .event_handler(handler)
        .await
        .map_err(session_error)?;
    *client.ws_url.lock().await = ws_url;
    let shards = client.shard_manager.clone();
    tokio::select! {
        result = client.start() => {
            let _ = tokio::time::timeout(SHUTDOWN, shards.shutdown_all()).await;
            result.map_err(session_error)
        }
        _ = stop => {
            // Closes the socket with 1000: Discord ends the session.
            let _ = tokio::time::timeout(SHUTDOWN, shards.shutdown_all()).await;
            Ok(())
        }
    }
}

fn session_error(error: serenity::Error) -> GatewayError {
    use serenity::gateway::GatewayError as Gateway;
    match error {
        serenity::Error::Gateway(Gateway::InvalidAuthentication) => GatewayError::Rejected,
        other => GatewayError::Session(other.to_string()),
    }
}

/// Hands a session's events to the sink. A gateway event cannot be refused back to
/// Discord: try a few times.
async fn deliver(sink: &dyn EventSink, application_id: &str, normalized: Normalized) {
    for attempt in 1..=5u32 {
        match sink.deliver(normalized.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(application_id, attempt, error = %e, "gateway event not stored");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
}

struct Handler {
    scope: BotScope,
    user_id: OnceLock<u64>,
    events: mpsc::Sender<Normalized>,
}

impl Handler {
    fn scope(&self) -> BotScope {
        BotScope {
            user_id: self.user_id.get().copied().or(self.scope.user_id),
            ..self.scope.clone()
        }
    }

    async fn pass(&self, normalized: Normalized) {
        if normalized.events.is_empty() && normalized.unhandled.is_empty() {
            return;
        }
        // Closed only when the session is being torn down.
        let _ = self.events.send(normalized).await;
    }
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        let _ = self.user_id.set(ready.user.id.get());
        tracing::info!(application_id = %self.scope.application_id, "discord gateway session ready");
    }

    async fn message(&self, _ctx: Context, message: Message) {
        self.pass(normalize_create(&self.scope(), &message)).await;
    }

    async fn message_update(
        &self,
        _ctx: Context,
        _old: Option<Message>,
        _new: Option<Message>,
        event: MessageUpdateEvent,
    ) {
        self.pass(normalize_update(&self.scope(), &event)).await;
    }

    async fn message_delete(
        &self,
        _ctx: Context,
        channel_id: ChannelId,
        message_id: MessageId,
        _guild_id: Option<GuildId>,
    ) {
        self.pass(normalize_delete(&self.scope(), channel_id, &[message_id]))
            .await;
    }

    async fn message_delete_bulk(
        &self,
        _ctx: Context,
        channel_id: ChannelId,
        message_ids: Vec<MessageId>,
        _guild_id: Option<GuildId>,
    ) {
        self.pass(normalize_delete(&self.scope(), channel_id, &message_ids))
            .await;
    }
}

/// Whether the bot takes a message: never from a bot (itself included); always in
/// DMs; in guilds when it is mentioned or the channel is a support channel.
fn addressed(
    scope: &BotScope,
    author: &User,
    guild: Option<GuildId>,
    channel: ChannelId,
    mentions: &[User],
) -> bool {
    if author.bot || scope.user_id == Some(author.id.get()) {
        return false;
    }
    if guild.is_none() {
        return true;
    }
    scope
        .support_channels
        .iter()
        .any(|c| *c == channel.to_string())
        || scope
            .user_id
            .is_some_and(|me| mentions.iter().any(|u| u.id.get() == me))
}

fn participant(user: &User) -> Participant {
    Participant {
        id: user.id.to_string(),
        phone: None,
        name: user.global_name.clone().or_else(|| Some(user.name.clone())),
        username: Some(user.name.clone()),
    }
}

/// The text without the bot's own mention (`<@id>` / `<@!id>`).
fn text_for_bot(scope: &BotScope, content: &str) -> String {
    let mut text = content.to_string();
    if let Some(me) = scope.user_id {
        text = text
            .replace(&format!("<@{me}>"), "")
            .replace(&format!("<@!{me}>"), "");
    }
    text.trim().to_string()
}

/// `MESSAGE_CREATE` → a message event (keyed by the message id), or nothing when
/// the message is not for the bot.
pub fn normalize_create(scope: &BotScope, message: &Message) -> Normalized {
    let mut out = Normalized::default();
    if !addressed(
        scope,
        &message.author,
        message.guild_id,
        message.channel_id,
        &message.mentions,
    ) {
        return out;
    }
    let text = text_for_bot(scope, &message.content);
    let content = if text.is_empty() && !message.attachments.is_empty() {
        Content::Unsupported {
            reason: "attachment".into(),
            code: None,
            raw: json!({"attachments": message.attachments.len()}),
        }
    } else {
        Content::Text { body: text }
    };
    out.events.push(InboundEvent {
        external_id: message.id.to_string(),
        account_id: scope.application_id.clone(),
        timestamp: message.timestamp.unix_timestamp(),
        body: EventBody::Message(InboundMessage {
            chat: message.channel_id.to_string(),
            sender: participant(&message.author),
            content,
            reply_to: message
                .message_reference
                .as_ref()
                .and_then(|r| r.message_id)
                .map(|id| id.to_string()),
            forwarded: false,
        }),
    });
    out
}

/// `MESSAGE_UPDATE` with new content → an edit of the customer's message.
pub fn normalize_update(scope: &BotScope, event: &MessageUpdateEvent) -> Normalized {
    let mut out = Normalized::default();
    let (Some(author), Some(content)) = (&event.author, &event.content) else {
        return out;
    };
    let mentions = event.mentions.clone().unwrap_or_default();
    if !addressed(scope, author, event.guild_id, event.channel_id, &mentions) {
        return out;
    }
    let at = event.edited_timestamp.map_or(0, |t| t.unix_timestamp());
    out.events.push(InboundEvent {
        external_id: format!("{}:edit:{at}", event.id),
        account_id: scope.application_id.clone(),
        timestamp: at,
        body: EventBody::Edit(Edit {
            chat: event.channel_id.to_string(),
            sender: participant(author),
            target: event.id.to_string(),
            content: Content::Text {
                body: text_for_bot(scope, content),
            },
        }),
    });
    out
}

/// `MESSAGE_DELETE` (and `MESSAGE_DELETE_BULK`) → a deletion of each message. The
/// event names no author: the stored message is found by its id within the channel.
/// Guild channels count too, since a message that mentioned the bot was stored.
pub fn normalize_delete(
    scope: &BotScope,
    channel: ChannelId,
    messages: &[MessageId],
) -> Normalized {
    let mut out = Normalized::default();
    for message in messages {
        out.events.push(InboundEvent {
            external_id: format!("delete:{message}"),
            account_id: scope.application_id.clone(),
            timestamp: 0,
            body: EventBody::Delete(Delete {
                chat: channel.to_string(),
                sender: None,
                target: message.to_string(),
            }),
        });
    }
    out
}
