//! Errors of the channel layer.

use std::time::Duration;

use thiserror::Error;

/// The body of an authenticated delivery could not be read at all.
#[derive(Debug, Error)]
pub enum NormalizeError {
    #[error("body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unexpected envelope: {0}")]
    Envelope(String),
}

/// Why a send did not succeed, classified for the dispatcher.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SendError {
    /// Try again later: network errors, timeouts, 5xx, rate limits.
    #[error("transient failure (code {code:?}): {detail}")]
    Retryable {
        /// When the platform said to come back (`Retry-After`, `retry_after`).
        retry_after: Option<Duration>,
        /// The platform's own error code, when it gave one.
        code: Option<i64>,
        detail: String,
    },
    /// The message can never be sent as is.
    #[error("permanent failure (code {code:?}): {detail}")]
    Permanent {
        code: Option<i64>,
        subcode: Option<i64>,
        detail: String,
        /// The platform's messaging window has closed (WhatsApp 131047).
        outside_window: bool,
    },
    /// The credentials are expired or revoked: stop sending on this channel until a
    /// person re-authorizes it.
    #[error("credentials rejected (code {code:?}): {detail}")]
    Unauthorized { code: Option<i64>, detail: String },
}

impl SendError {
    /// The platform's error code, for recording on the message.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Retryable { code, .. }
            | Self::Permanent { code, .. }
            | Self::Unauthorized { code, .. } => *code,
        }
    }
}
