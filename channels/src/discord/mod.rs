//! Discord channel: messages arrive over the Gateway (`gateway`, through serenity),
//! interactions at the HTTP endpoint (verified in `webhooks::discord`), replies go
//! out through the REST API (`client`).
//!
//! The bot answers direct messages, and in guilds only when mentioned or in one of
//! the channel's support channels; it never answers bots, itself included. A
//! conversation is the Discord channel (the DM channel, or the guild channel).

mod client;
pub mod gateway;

use async_trait::async_trait;
use serde_json::Value;
use webhooks::Verified;

use crate::model::{ChannelKind, Credentials, Normalized, OutboundReply, SendReceipt, Unhandled};
use crate::pace::Pacer;
use crate::{Channel, NormalizeError, SendError};

/// Longest message `content`, in characters.
const TEXT_LIMIT: usize = 2000;

/// The REST API at a configurable base URL (`https://discord.com/api/v10`).
#[derive(Debug)]
pub struct Discord {
    http: reqwest::Client,
    api_url: String,
    pacer: Pacer,
}

impl Discord {
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

    pub fn api_url(&self) -> &str {
        &self.api_url
    }
}

#[async_trait]
impl Channel for Discord {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Discord
    }

    fn text_limit(&self) -> usize {
        TEXT_LIMIT
    }

    /// Interactions other than PING (which ingress answers itself): application
    /// commands and components are not modelled yet and are kept raw.
    fn normalize(&self, body: Verified<&[u8]>) -> Result<Normalized, NormalizeError> {
        let raw: Value = serde_json::from_slice(body.into_inner())?;
        let kind = raw
            .get("type")
            .and_then(Value::as_u64)
            .ok_or_else(|| NormalizeError::Envelope("no interaction `type`".into()))?;
        let mut out = Normalized::default();
        if kind != webhooks::discord::PING {
            out.unhandled.push(Unhandled {
                account_id: raw
                    .get("application_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                reason: format!("interaction:{kind}"),
                raw,
            });
        }
        Ok(out)
    }

    async fn send(
        &self,
        credentials: &Credentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        let Credentials::Discord(credentials) = credentials else {
            return Err(SendError::Permanent {
                code: None,
                subcode: None,
                detail: format!("credentials for {} given to Discord", credentials.kind()),
                outside_window: false,
            });
        };
        self.send_text(credentials, reply).await
    }
}
