//! Slack channel (Events API): verified requests in (`normalize`), `chat.postMessage`
//! out (`client`), Slack's markup to plain text and back (`format`), and the OAuth v2
//! code exchange of the install flow.
//!
//! The gateway verifies the `v0` signature (see `webhooks::slack`), calls [`read`] to
//! learn what the request is (a URL check, an event, an uninstall), stores the
//! normalized events, and later calls [`Channel::send`] from its dispatcher.

mod client;
pub mod format;
mod normalize;

use std::time::Duration;

use async_trait::async_trait;
use webhooks::Verified;

pub use client::{classify, InstallError, Installation};
pub use normalize::{Callback, Delivery, Revocation};

use crate::model::{ChannelKind, Credentials, Normalized, OutboundReply, SendReceipt};
use crate::{Channel, NormalizeError, Pacing, SendError};

/// Longest text sent in one message, in characters. Slack truncates at 40,000 and
/// asks to keep messages to 4,000; escaping `&<>` can grow a part, at most fivefold,
/// which stays under the hard limit.
const TEXT_LIMIT: usize = 4000;
/// `chat.postMessage` allows about one message a second per channel, with short
/// bursts.
const POST_INTERVAL: Duration = Duration::from_secs(1);
const POST_BURST: u32 = 3;

/// Reads a verified Slack request.
pub fn read(body: Verified<&[u8]>) -> Result<Delivery, NormalizeError> {
    normalize::read(body.into_inner())
}

/// The Slack Web API, reached at a configurable base URL.
#[derive(Debug, Clone)]
pub struct Slack {
    http: reqwest::Client,
    /// Base URL without a trailing `/`, e.g. `https://slack.com/api`.
    api_url: String,
}

impl Slack {
    /// A client sending through `http` (whose timeouts apply) to `{api_url}/{method}`.
    pub fn new(http: reqwest::Client, api_url: impl Into<String>) -> Self {
        let mut api_url = api_url.into();
        while api_url.ends_with('/') {
            api_url.pop();
        }
        Self { http, api_url }
    }
}

#[async_trait]
impl Channel for Slack {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Slack
    }

    fn text_limit(&self) -> usize {
        TEXT_LIMIT
    }

    fn normalize(&self, body: Verified<&[u8]>) -> Result<Normalized, NormalizeError> {
        Ok(match read(body)? {
            Delivery::Callback(callback) => callback.normalize(None),
            Delivery::UrlVerification { .. } => Normalized::default(),
            Delivery::Other(unhandled) => Normalized {
                events: vec![],
                unhandled: vec![unhandled],
            },
        })
    }

    async fn send(
        &self,
        credentials: &Credentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        match credentials {
            Credentials::Slack(c) => self.post_message(c, reply).await,
            #[allow(unreachable_patterns)]
            other => Err(SendError::Permanent {
                code: None,
                subcode: None,
                detail: format!("credentials for {} given to Slack", other.kind()),
                outside_window: false,
            }),
        }
    }

    fn pacing(&self, reply: &OutboundReply) -> Option<Pacing> {
        let channel = reply.to.split(':').next().unwrap_or(&reply.to);
        Some(Pacing {
            key: channel.to_string(),
            interval: POST_INTERVAL,
            burst: POST_BURST,
        })
    }
}
