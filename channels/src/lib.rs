//! The platforms omnigate speaks to, behind one trait.
//!
//! Each platform module turns an authenticated delivery into events of the common
//! model ([`model`]) and sends replies through the platform's API. Nothing here
//! touches the database or the assistant: the gateway decides what to store and what
//! to say; a channel only knows its platform's wire format.

pub mod error;
pub mod instagram;
pub mod messenger;
pub mod model;
pub mod pacing;
pub mod slack;
pub mod text;
pub mod whatsapp;
// -- telegram, discord ----------------------------------------------------------
pub mod discord;
mod pace;
pub mod telegram;

use async_trait::async_trait;

pub use error::{NormalizeError, SendError};
pub use model::*;
pub use pacing::Pacing;

/// A messaging platform: inbound normalization and outbound sending.
#[async_trait]
pub trait Channel: Send + Sync {
    /// Which platform this is.
    fn kind(&self) -> ChannelKind;

    /// Longest text one outbound message may carry, in characters.
    fn text_limit(&self) -> usize;

    /// Turns an authenticated delivery into events. Pure: no I/O.
    ///
    /// Items the platform sent that the model does not cover are returned as
    /// [`Unhandled`] with their raw JSON, never dropped. An error means the body as a
    /// whole could not be read (not JSON, not the expected envelope).
    fn normalize(&self, body: webhooks::Verified<&[u8]>) -> Result<Normalized, NormalizeError>;

    /// Sends one text message (already split to [`Channel::text_limit`]).
    async fn send(
        &self,
        credentials: &Credentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError>;

    /// Sends one text message with a platform message tag (Messenger and Instagram:
    /// `HUMAN_AGENT`, a person's reply after the standard messaging window). Platforms
    /// without message tags have no window that a tag opens and send as [`Channel::send`].
    async fn send_tagged(
        &self,
        credentials: &Credentials,
        reply: &OutboundReply,
        tag: Option<&str>,
    ) -> Result<SendReceipt, SendError> {
        let _ = tag;
        self.send(credentials, reply).await
    }

    /// The platform's posting limit for `reply`'s destination, when it has one the
    /// dispatcher should pace sends to instead of collecting rate-limit errors.
    fn pacing(&self, _reply: &OutboundReply) -> Option<Pacing> {
        None
    }
}
