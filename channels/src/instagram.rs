//! Instagram Direct channel (Messenger API for Instagram, or Instagram API with
//! Instagram Login): the same webhook and Send API wire format as Messenger, with
//! `object = "instagram"`, the Instagram account id in place of the Page id, and a
//! shorter text limit.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use webhooks::Verified;

use crate::messenger::{normalize, send_text, wrong_credentials, Graph, SendRequest};
use crate::model::{ChannelKind, Credentials, Normalized, OutboundReply, SendReceipt};
use crate::{Channel, NormalizeError, SendError};

/// Longest Instagram text, in characters.
const TEXT_LIMIT: usize = 1000;

/// Instagram messaging through the Graph API at a configurable base URL
/// (`graph.facebook.com`, or `graph.instagram.com` for Instagram Login).
#[derive(Debug, Clone)]
pub struct Instagram {
    graph: Graph,
}

impl Instagram {
    /// A client sending to `{graph_url}/{api_version}/{account_id}/messages`.
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

#[async_trait]
impl Channel for Instagram {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Instagram
    }

    fn text_limit(&self) -> usize {
        TEXT_LIMIT
    }

    fn normalize(&self, body: Verified<&[u8]>) -> Result<Normalized, NormalizeError> {
        normalize::normalize(body.into_inner(), ChannelKind::Instagram)
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
        let Credentials::Instagram(c) = credentials else {
            return Err(wrong_credentials(ChannelKind::Instagram, credentials));
        };
        // Instagram's Send API documents no `metadata`; echoes of our sends are
        // recognised by their message id instead.
        send_text(SendRequest {
            http: &self.graph.http,
            url: self.graph.messages_url(&c.account_id),
            token: c.access_token.expose_secret(),
            reply,
            tag,
            metadata: None,
        })
        .await
    }
}
