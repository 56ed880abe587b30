//! Outbound step for WhatsApp: sends one text reply through the Cloud API
//! (`POST {graph_url}/{api_version}/{phone_number_id}/messages`) and classifies Graph
//! API failures for the dispatcher's retry policy.
//!
//! Neither the access token nor the message text is ever logged or put into an error.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::WhatsApp;
use crate::error::{redact, request_failed};
use crate::model::{OutboundReply, SendReceipt, WhatsAppCredentials};
use crate::SendError;

/// Meta codes meaning "too many requests, slow down": app (4) and account (80007)
/// call limits, throughput (130429), spam (131048) and per-recipient pair (131056)
/// rate limits. They may come back with HTTP 400, not 429.
const RATE_LIMIT_CODES: [i64; 5] = [4, 80007, 130429, 131048, 131056];
/// Meta codes for temporary failures on Meta's side: unknown (1), service (2),
/// generic user error (131000), service unavailable (131016), server temporarily
/// unavailable (133004).
const TRANSIENT_CODES: [i64; 5] = [1, 2, 131000, 131016, 133004];
/// Access token expired, revoked or invalid.
const INVALID_TOKEN: i64 = 190;
/// Re-engagement: more than 24 hours since the customer last wrote.
const OUTSIDE_WINDOW: i64 = 131047;

impl WhatsApp {
    pub(super) async fn send_text(
        &self,
        credentials: &WhatsAppCredentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        let url = format!(
            "{}/{}/{}/messages",
            self.graph_url, self.api_version, credentials.phone_number_id
        );
        let body = TextMessage {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to: &reply.to,
            kind: "text",
            text: TextBody {
                preview_url: false,
                body: &reply.text,
            },
            context: reply
                .reply_to
                .as_deref()
                .map(|message_id| ReplyContext { message_id }),
        };
        let token = credentials.access_token.expose_secret();
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(request_failed)?;

        let status = response.status();
        if status.is_success() {
            // The message may be on its way: never retry from here.
            let bytes = response.bytes().await.unwrap_or_default();
            let id = serde_json::from_slice::<Accepted>(&bytes)
                .ok()
                .and_then(|a| a.messages.into_iter().next())
                .and_then(|m| m.id)
                .filter(|id| !id.is_empty());
            return match id {
                Some(external_id) => Ok(SendReceipt { external_id }),
                None => Err(SendError::Permanent {
                    code: None,
                    subcode: None,
                    detail: "accepted without a message id".into(),
                    outside_window: false,
                }),
            };
        }

        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.unwrap_or_default();
        let error = redact(classify_error(status.as_u16(), retry_after, &bytes), token);
        tracing::debug!(
            http_status = status.as_u16(),
            code = error.code(),
            phone_number_id = %credentials.phone_number_id,
            "whatsapp send rejected"
        );
        Err(error)
    }
}

/// Classifies a Graph API error answer: by Meta's `error.code` first, the HTTP status
/// second. `retry_after` (from the `Retry-After` header) is kept for retryable errors.
pub fn classify_error(http_status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
    let error = serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.error)
        .unwrap_or_default();
    let detail = match (error.message, error.error_data.and_then(|d| d.details)) {
        (Some(message), Some(details)) if message != details => format!("{message}: {details}"),
        (Some(message), _) => message,
        (None, Some(details)) => details,
        (None, None) => format!("HTTP {http_status}"),
    };
    let code = error.code;
    let retryable = |detail| SendError::Retryable {
        retry_after,
        code,
        detail,
    };
    let permanent = |detail, outside_window| SendError::Permanent {
        code,
        subcode: error.error_subcode,
        detail,
        outside_window,
    };
    match code {
        Some(INVALID_TOKEN) => SendError::Unauthorized { code, detail },
        Some(c) if RATE_LIMIT_CODES.contains(&c) || TRANSIENT_CODES.contains(&c) => {
            retryable(detail)
        }
        Some(OUTSIDE_WINDOW) => permanent(detail, true),
        Some(_) if (400..500).contains(&http_status) => permanent(detail, false),
        _ if http_status == 429 || (500..600).contains(&http_status) => retryable(detail),
        _ => permanent(detail, false),
    }
}

/// Request body of a text message.
#[derive(Serialize)]
struct TextMessage<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    to: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    text: TextBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<ReplyContext<'a>>,
}

#[derive(Serialize)]
struct TextBody<'a> {
    preview_url: bool,
    body: &'a str,
}

/// Quotes the message being answered.
#[derive(Serialize)]
struct ReplyContext<'a> {
    message_id: &'a str,
}

/// The 2xx answer: acceptance only; delivery comes later as status webhooks.
#[derive(Deserialize)]
struct Accepted {
    #[serde(default)]
    messages: Vec<AcceptedMessage>,
}

#[derive(Deserialize)]
struct AcceptedMessage {
    #[serde(default)]
    id: Option<String>,
}

/// Meta's error envelope: `{"error": {"message", "type", "code", "error_subcode",
/// "error_data": {"details"}, "fbtrace_id"}}`.
#[derive(Default, Deserialize)]
struct Envelope {
    #[serde(default)]
    error: Option<GraphError>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct GraphError {
    message: Option<String>,
    code: Option<i64>,
    error_subcode: Option<i64>,
    error_data: Option<ErrorData>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ErrorData {
    details: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_the_token() {
        let error = SendError::Unauthorized {
            code: Some(190),
            detail: "bad token EAAGxyz".into(),
        };
        assert_eq!(
            redact(error, "EAAGxyz"),
            SendError::Unauthorized {
                code: Some(190),
                detail: "bad token [redacted]".into()
            }
        );
    }

    #[test]
    fn unreadable_body_falls_back_to_the_http_status() {
        assert_eq!(
            classify_error(502, None, b"<html>bad gateway</html>"),
            SendError::Retryable {
                retry_after: None,
                code: None,
                detail: "HTTP 502".into()
            }
        );
        assert!(matches!(
            classify_error(404, None, b""),
            SendError::Permanent {
                code: None,
                outside_window: false,
                ..
            }
        ));
    }
}
