//! Discord Gateway session of one bot, through serenity: connects with only the
//! intents the channel needs (direct messages, guild messages, message content),
//! heartbeats and resumes after disconnects (serenity's shard runner), and turns
//! `MESSAGE_CREATE` / `MESSAGE_UPDATE` / `MESSAGE_DELETE` into events of the
//! common model handed to an [`EventSink`] (the gateway's durable inbox).
//!
//! Resume may replay events: the inbox dedupes on the message id.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use serenity::all::{
    ChannelId, Context, EventHandler, GatewayIntents, GuildId, HttpBuilder, Message, MessageId,
    MessageUpdateEvent, Ready, User,
};

use crate::model::{
    Content, Edit, EventBody, InboundEvent, InboundMessage, Normalized, Participant, Unhandled,
};

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
    #[error("gateway session failed: {0}")]
    Session(String),
}

/// Runs one bot's gateway session until `stop` completes (or the session fails for
/// good, e.g. a rejected token or intents). `api_url` is the REST base
/// (`https://discord.com/api/v10`), from which serenity also learns the gateway URL.
pub async fn run(
    api_url: &str,
    token: &SecretString,
    scope: BotScope,
    sink: Arc<dyn EventSink>,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    let mut http = HttpBuilder::new(token.expose_secret());
    let base = api_url.trim_end_matches('/');
    let origin = base.strip_suffix("/api/v10").unwrap_or(base);
    if origin != "https://discord.com" {
        // serenity's own rate limiter ignores the proxy; the session only asks
        // `GET /gateway/bot`, and replies go through our own client.
        http = http.proxy(origin).ratelimiter_disabled(true);
    }
    let handler = Handler {
        scope: scope.clone(),
        user_id: OnceLock::new(),
        sink,
    };
    let mut client = serenity::all::ClientBuilder::new_with_http(http.build(), intents())
        .event_handler(handler)
        .await
        .map_err(|e| GatewayError::Session(e.to_string()))?;
    let shards = client.shard_manager.clone();
    tokio::select! {
        result = client.start() => result.map_err(|e| GatewayError::Session(e.to_string())),
        () = stop => {
            shards.shutdown_all().await;
            Ok(())
        }
    }
}

struct Handler {
    scope: BotScope,
    user_id: OnceLock<u64>,
    sink: Arc<dyn EventSink>,
}

impl Handler {
    fn scope(&self) -> BotScope {
        BotScope {
            user_id: self.user_id.get().copied().or(self.scope.user_id),
            ..self.scope.clone()
        }
    }

    async fn deliver(&self, normalized: Normalized) {
        if normalized.events.is_empty() && normalized.unhandled.is_empty() {
            return;
        }
        // A gateway event cannot be refused back to Discord: try a few times.
        for attempt in 1..=5u32 {
            match self.sink.deliver(normalized.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(application_id = %self.scope.application_id, attempt, error = %e, "gateway event not stored");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                        .await;
                }
            }
        }
    }
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        let _ = self.user_id.set(ready.user.id.get());
        tracing::info!(application_id = %self.scope.application_id, "discord gateway session ready");
    }

    async fn message(&self, _ctx: Context, message: Message) {
        self.deliver(normalize_create(&self.scope(), &message))
            .await;
    }

    async fn message_update(
        &self,
        _ctx: Context,
        _old: Option<Message>,
        _new: Option<Message>,
        event: MessageUpdateEvent,
    ) {
        self.deliver(normalize_update(&self.scope(), &event)).await;
    }

    async fn message_delete(
        &self,
        _ctx: Context,
        channel_id: ChannelId,
        message_id: MessageId,
        guild_id: Option<GuildId>,
    ) {
        self.deliver(normalize_delete(
            &self.scope(),
            channel_id,
            message_id,
            guild_id,
        ))
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

/// `MESSAGE_DELETE` carries no author, and conversations are resolved by author:
/// the deletion is kept (ids only) for the operator rather than applied.
pub fn normalize_delete(
    scope: &BotScope,
    channel: ChannelId,
    message: MessageId,
    guild: Option<GuildId>,
) -> Normalized {
    let mut out = Normalized::default();
    if guild.is_some()
        && !scope
            .support_channels
            .iter()
            .any(|c| *c == channel.to_string())
    {
        return out;
    }
    out.unhandled.push(Unhandled {
        account_id: Some(scope.application_id.clone()),
        reason: "message_delete".into(),
        raw: json!({"id": message.to_string(), "channel_id": channel.to_string(),
                    "guild_id": guild.map(|g| g.to_string())}),
    });
    out
}
