//! Messenger (Facebook Pages) channel: webhook deliveries in (`normalize`), text
//! replies out (`client`). Instagram messaging shares the wire format and reuses both
//! halves (see [`crate::instagram`]).
//!
//! The gateway verifies `X-Hub-Signature-256` (see `webhooks::meta`), hands the raw
//! body to [`Channel::normalize`], stores the events, and later calls
//! [`Channel::send`] from its outbound worker with the channel's credentials.

mod client;
pub(crate) mod normalize;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use webhooks::Verified;

pub use client::{classify_error, OWN_METADATA};
pub(crate) use client::{send_text, SendRequest};

use crate::model::{ChannelKind, Credentials, Normalized, OutboundReply, SendReceipt};
use crate::{Channel, NormalizeError, SendError};

/// Longest Messenger text, in characters.
const TEXT_LIMIT: usize = 2000;

/// The Messenger Platform Send API, reached at a configurable Graph API base URL.
#[derive(Debug, Clone)]
pub struct Messenger {
    pub(crate) graph: Graph,
}

/// Where Graph API calls go.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    pub http: reqwest::Client,
    /// Base URL without a trailing `/`.
    pub url: String,
    pub api_version: String,
}

impl Graph {
    pub fn new(http: reqwest::Client, url: String, api_version: String) -> Self {
        let mut url = url;
        while url.ends_with('/') {
            url.pop();
        }
        Self {
            http,
            url,
            api_version,
        }
    }

    /// `{graph_url}/{api_version}/{account}/messages`.
    pub fn messages_url(&self, account: &str) -> String {
        format!("{}/{}/{account}/messages", self.url, self.api_version)
    }
}

impl Messenger {
    /// A client sending through `http` (whose timeouts apply) to
    /// `{graph_url}/{api_version}/{page_id}/messages`.
    pub fn new(
        http: reqwest::Client,
        graph_url: impl Into<String>,
        api_version: impl Into<String>,
    ) -> Self {
        Self {
            graph: Graph::new(http, graph_url.into(), api_version.into()),
        }
    }
}

/// The error for credentials of another platform.
pub(crate) fn wrong_credentials(kind: ChannelKind, credentials: &Credentials) -> SendError {
    SendError::Permanent {
        code: None,
        subcode: None,
        detail: format!("credentials for {} given to {kind}", credentials.kind()),
        outside_window: false,
    }
}

#[async_trait]
impl Channel for Messenger {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Messenger
    }

    fn text_limit(&self) -> usize {
        TEXT_LIMIT
    }

    fn normalize(&self, body: Verified<&[u8]>) -> Result<Normalized, NormalizeError> {
        normalize::normalize(body.into_inner(), ChannelKind::Messenger)
    }

    async fn send(
        &self,
        credentials: &Credentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        self.send_tagged(credentials, reply, None).await
    }

    async fn send_tagged(
        &self,
        credentials: &Credentials,
        reply: &OutboundReply,
        tag: Option<&str>,
    ) -> Result<SendReceipt, SendError> {
        let Credentials::Messenger(c) = credentials else {
            return Err(wrong_credentials(ChannelKind::Messenger, credentials));
        };
        send_text(SendRequest {
            http: &self.graph.http,
            url: self.graph.messages_url(&c.page_id),
            token: c.page_access_token.expose_secret(),
            reply,
            tag,
            metadata: Some(OWN_METADATA),
        })
        .await
    }
}
