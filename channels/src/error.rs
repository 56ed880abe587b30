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

/// A transport failure of a send: nothing (or nothing readable) came back. The URL is
/// dropped from the message (some platforms put the token in it); a request that could
/// not even be built is permanent, anything else is worth another attempt.
pub(crate) fn request_failed(error: reqwest::Error) -> SendError {
    let error = error.without_url();
    if error.is_builder() {
        return SendError::Permanent {
            code: None,
            subcode: None,
            detail: format!("invalid request: {error}"),
            outside_window: false,
        };
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    SendError::Retryable {
        retry_after: None,
        code: None,
        detail: format!("{what}: {error}"),
    }
}

/// Defence in depth: platform error texts do not echo the token, but never let one
/// through into a stored or logged detail.
pub(crate) fn redact(error: SendError, token: &str) -> SendError {
    if token.is_empty() {
        return error;
    }
    let clean = |detail: String| detail.replace(token, "[redacted]");
    match error {
        SendError::Retryable {
            retry_after,
            code,
            detail,
        } => SendError::Retryable {
            retry_after,
            code,
            detail: clean(detail),
        },
        SendError::Permanent {
            code,
            subcode,
            detail,
            outside_window,
        } => SendError::Permanent {
            code,
            subcode,
            detail: clean(detail),
            outside_window,
        },
        SendError::Unauthorized { code, detail } => SendError::Unauthorized {
            code,
            detail: clean(detail),
        },
    }
}
