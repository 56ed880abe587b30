//! Outbound step for Messenger and Instagram: sends one text message through the
//! Send API (`POST {graph_url}/{api_version}/{page_id | account_id}/messages`) and
//! classifies Graph API failures for the dispatcher.
//!
//! Neither the token nor the message text is ever logged or put into an error.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde::{Deserialize, Serialize};

use crate::error::{redact, request_failed};
use crate::model::{OutboundReply, SendReceipt};
use crate::SendError;

/// Marks the messages omnigate sends, so their echoes are recognised (Messenger
/// returns a send's `metadata` in its echo).
pub const OWN_METADATA: &str = "omnigate";

/// Codes meaning "slow down or try later": API too many calls (4), user request limit
/// (17), Page rate limit (32), app/page throttling (613, 80006), temporary (1, 2).
const RETRYABLE_CODES: [i64; 7] = [1, 2, 4, 17, 32, 613, 80006];
/// Access token expired, revoked or invalid (also: the user changed password,
/// removed the app).
const INVALID_TOKEN: i64 = 190;
/// `(#10) This message is sent outside of allowed window`.
const OUTSIDE_WINDOW_SUBCODES: [i64; 2] = [2018278, 2534022];

/// One Send API request: where, with which token, and what.
pub(crate) struct SendRequest<'a> {
    pub http: &'a reqwest::Client,
    pub url: String,
    pub token: &'a str,
    pub reply: &'a OutboundReply,
    pub tag: Option<&'a str>,
    pub metadata: Option<&'a str>,
}

pub(crate) async fn send_text(request: SendRequest<'_>) -> Result<SendReceipt, SendError> {
    let SendRequest {
        http,
        url,
        token,
        reply,
        tag,
        metadata,
    } = request;
    let body = TextMessage {
        recipient: Recipient { id: &reply.to },
        messaging_type: if tag.is_some() {
            "MESSAGE_TAG"
        } else {
            "RESPONSE"
        },
        tag,
        message: MessageBody {
            text: &reply.text,
            metadata,
        },
        reply_to: reply.reply_to.as_deref().map(|mid| ReplyTo { mid }),
    };
    let response = http
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
            .and_then(|a| a.message_id)
            .filter(|id| !id.is_empty());
        return id
            .map(|external_id| SendReceipt { external_id })
            .ok_or_else(|| SendError::Permanent {
                code: None,
                subcode: None,
                detail: "accepted without a message id".into(),
                outside_window: false,
            });
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = response.bytes().await.unwrap_or_default();
    let error = classify_error(status.as_u16(), retry_after, &bytes);
    tracing::debug!(
        http_status = status.as_u16(),
        code = error.code(),
        "meta send rejected"
    );
    Err(redact(error, token))
}

/// Classifies a Send API error answer by Meta's `code`/`error_subcode` first and the
/// HTTP status second.
pub fn classify_error(http_status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
    let error = serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.error)
        .unwrap_or_default();
    let (code, subcode) = (error.code, error.error_subcode);
    let mut detail = error
        .message
        .unwrap_or_else(|| format!("HTTP {http_status}"));
    if let Some(subcode) = subcode {
        detail = format!("{detail} (subcode {subcode})");
    }
    match code {
        Some(INVALID_TOKEN) => SendError::Unauthorized { code, detail },
        Some(c) if RETRYABLE_CODES.contains(&c) => SendError::Retryable {
            retry_after,
            code,
            detail,
        },
        Some(_) if (400..500).contains(&http_status) => SendError::Permanent {
            code,
            subcode,
            outside_window: subcode.is_some_and(|s| OUTSIDE_WINDOW_SUBCODES.contains(&s)),
            detail,
        },
        _ if http_status == 429 || (500..600).contains(&http_status) => SendError::Retryable {
            retry_after,
            code,
            detail,
        },
        _ => SendError::Permanent {
            code,
            subcode,
            detail,
            outside_window: false,
        },
    }
}

#[derive(Serialize)]
struct TextMessage<'a> {
    recipient: Recipient<'a>,
    messaging_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    message: MessageBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<ReplyTo<'a>>,
}

#[derive(Serialize)]
struct Recipient<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a str>,
}

#[derive(Serialize)]
struct ReplyTo<'a> {
    mid: &'a str,
}

/// `{"recipient_id": "<PSID>", "message_id": "<mid>"}`.
#[derive(Deserialize)]
struct Accepted {
    #[serde(default)]
    message_id: Option<String>,
}

/// `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_codes_are_classified() {
        let body = |code: i64, sub: i64| {
            format!(
                r#"{{"error":{{"message":"m","type":"OAuthException","code":{code},"error_subcode":{sub},"fbtrace_id":"x"}}}}"#
            )
        };
        assert!(matches!(
            classify_error(400, None, body(190, 463).as_bytes()),
            SendError::Unauthorized {
                code: Some(190),
                ..
            }
        ));
        assert!(matches!(
            classify_error(400, None, body(10, 2018278).as_bytes()),
            SendError::Permanent {
                code: Some(10),
                subcode: Some(2018278),
                outside_window: true,
                ..
            }
        ));
        assert!(matches!(
            classify_error(400, None, body(551, 1545041).as_bytes()),
            SendError::Permanent {
                code: Some(551),
                subcode: Some(1545041),
                outside_window: false,
                ..
            }
        ));
        assert!(matches!(
            classify_error(400, None, body(613, 0).as_bytes()),
            SendError::Retryable {
                code: Some(613),
                ..
            }
        ));
        assert!(matches!(
            classify_error(503, None, b"oops"),
            SendError::Retryable { code: None, .. }
        ));
    }
}
