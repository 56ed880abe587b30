//! Telegram Bot API channel: webhook updates in (`normalize`, parsed with
//! teloxide's types), Bot API calls out (`client`: `sendMessage`, `setWebhook`,
//! `deleteWebhook`, `getMe`), paced per chat and per bot.
//!
//! Chats: a private chat is the conversation with the user (chat id = user id). In
//! a group the conversation is the group, or the forum topic (`{chat}:{thread}`),
//! and the bot only takes messages addressed to it: a command, a reply to one of its
//! messages, or a mention.

mod client;
mod normalize;

use async_trait::async_trait;
use webhooks::Verified;

pub use client::{is_blocked, BotInfo, SetupError};
pub use normalize::{callback_answer, normalize_update, BotIdentity};

use crate::model::{ChannelKind, Credentials, Normalized, OutboundReply, SendReceipt};
use crate::pace::Pacer;
use crate::{Channel, NormalizeError, SendError};

/// Longest `sendMessage` text, in characters.
const TEXT_LIMIT: usize = 4096;

/// The update types the gateway handles, passed to `setWebhook` as `allowed_updates`.
pub const ALLOWED_UPDATES: [&str; 4] = [
    "message",
    "edited_message",
    "callback_query",
    "my_chat_member",
];

/// The Bot API at a configurable base URL (`https://api.telegram.org`).
#[derive(Debug)]
pub struct Telegram {
    http: reqwest::Client,
    api_url: String,
    pacer: Pacer,
}

impl Telegram {
    pub fn new(http: reqwest::Client, api_url: impl Into<String>) -> Self {
        let mut api_url = api_url.into();
        while api_url.ends_with('/') {
            api_url.pop();
        }
        Self {
            http,
            api_url,
            pacer: Pacer::default(),
        }
    }
}

#[async_trait]
impl Channel for Telegram {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Telegram
    }

    fn text_limit(&self) -> usize {
        TEXT_LIMIT
    }

    /// Normalizes without knowing the bot's own identity: group messages count as
    /// addressed only when they are commands. The gateway's ingress uses
    /// [`normalize_update`] with the channel's bot instead.
    fn normalize(&self, body: Verified<&[u8]>) -> Result<Normalized, NormalizeError> {
        normalize_update(&BotIdentity::default(), body.into_inner())
    }

    async fn send(
        &self,
        credentials: &Credentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        let Credentials::Telegram(credentials) = credentials else {
            return Err(SendError::Permanent {
                code: None,
                subcode: None,
                detail: format!("credentials for {} given to Telegram", credentials.kind()),
                outside_window: false,
            });
        };
        self.send_text(credentials, reply).await
    }
}
