//! WhatsApp Cloud API channel: webhook deliveries in (`normalize`), text replies
//! out (`client`).
//!
//! The gateway verifies `X-Hub-Signature-256` (see `webhooks::meta`), hands the raw
//! body to [`Channel::normalize`], stores the events, and later calls
//! [`Channel::send`] from its outbound worker with the channel's credentials.

mod client;
mod normalize;
mod wire;

use async_trait::async_trait;
use webhooks::Verified;

pub use client::classify_error;

use crate::model::{ChannelKind, Credentials, Normalized, OutboundReply, SendReceipt};
use crate::{Channel, NormalizeError, SendError};

/// Longest `text.body` the Cloud API accepts, in characters.
const TEXT_LIMIT: usize = 4096;

/// The WhatsApp Cloud API, reached at a configurable Graph API base URL.
#[derive(Debug, Clone)]
pub struct WhatsApp {
    http: reqwest::Client,
    /// Base URL without a trailing `/`, e.g. `https://graph.facebook.com`.
    graph_url: String,
    /// Graph API version path segment, e.g. `v23.0`.
    api_version: String,
}

impl WhatsApp {
    /// A client sending through `http` (whose timeouts apply) to
    /// `{graph_url}/{api_version}/...`.
    pub fn new(
        http: reqwest::Client,
        graph_url: impl Into<String>,
        api_version: impl Into<String>,
    ) -> Self {
        let mut graph_url = graph_url.into();
        while graph_url.ends_with('/') {
            graph_url.pop();
        }
        Self {
            http,
            graph_url,
            api_version: api_version.into(),
        }
    }
}

#[async_trait]
impl Channel for WhatsApp {
    fn kind(&self) -> ChannelKind {
        ChannelKind::WhatsApp
    }

    fn text_limit(&self) -> usize {
        TEXT_LIMIT
    }

    fn normalize(&self, body: Verified<&[u8]>) -> Result<Normalized, NormalizeError> {
        normalize::normalize(body.into_inner())
    }

    async fn send(
        &self,
        credentials: &Credentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        // Other platforms' variants will join `Credentials`; this arm keeps that additive.
        #[allow(unreachable_patterns)]
        let credentials = match credentials {
            Credentials::WhatsApp(c) => c,
            _ => {
                return Err(SendError::Permanent {
                    code: None,
                    subcode: None,
                    detail: format!("credentials for {} given to WhatsApp", credentials.kind()),
                    outside_window: false,
                })
            }
        };
        self.send_text(credentials, reply).await
    }
}
