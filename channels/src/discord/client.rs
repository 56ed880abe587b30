//! Outbound step for Discord: `POST {api_url}/channels/{channel_id}/messages` with
//! `Authorization: Bot {token}`. Rate limits: a bucket whose
//! `X-RateLimit-Remaining` reached 0 is held until `X-RateLimit-Reset-After`; a 429
//! holds the channel (or, when `global`, every channel) for `retry_after`.
//!
//! Also the gateway discovery a session starts with: `GET {api_url}/gateway/bot`.

use std::time::Duration;

use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Discord;
use crate::error::{redact, request_failed};
use crate::model::{DiscordCredentials, OutboundReply, SendReceipt};
use crate::pace::MAX_PAUSE;
use crate::SendError;

/// Where a bot's gateway session connects (`GET /gateway/bot`).
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayBot {
    /// The WebSocket URL (`wss://gateway.discord.gg`).
    pub url: String,
    /// Shards Discord recommends for the bot.
    #[serde(default = "one")]
    pub shards: u32,
    pub session_start_limit: SessionStartLimit,
}

/// How many gateway sessions the bot may still start (IDENTIFYs, 1000 a day).
#[derive(Debug, Clone, Deserialize)]
pub struct SessionStartLimit {
    pub total: u64,
    pub remaining: u64,
    /// Milliseconds until `remaining` is reset.
    pub reset_after: u64,
    #[serde(default = "one_u64")]
    pub max_concurrency: u64,
}

fn one() -> u32 {
    1
}

fn one_u64() -> u64 {
    1
}

impl Discord {
    /// `GET /gateway/bot`: the gateway URL and the session starts left. A 401 means
    /// the token is dead ([`SendError::Unauthorized`]).
    pub async fn gateway_bot(&self, token: &SecretString) -> Result<GatewayBot, SendError> {
        let token = token.expose_secret();
        let response = self
            .http
            .get(format!("{}/gateway/bot", self.api_url))
            .header("authorization", format!("Bot {token}"))
            .send()
            .await
            .map_err(request_failed)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes)
                .map_err(|e| permanent(None, format!("unreadable gateway/bot answer: {e}")));
        }
        Err(redact(classify_error(status, &headers, &bytes), token))
    }
}

/// Global limit: 50 requests a second per bot.
const BOT_EVERY: Duration = Duration::from_millis(20);

impl Discord {
    pub(super) async fn send_text(
        &self,
        credentials: &DiscordCredentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        let channel_id = reply.to.as_str();
        if channel_id.is_empty() || !channel_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(permanent(
                None,
                "recipient is not a Discord channel id".into(),
            ));
        }
        let key = format!("{}:{channel_id}", credentials.application_id);
        let wait = self.pacer.reserve(&key, Duration::ZERO, BOT_EVERY);
        if wait > MAX_PAUSE {
            return Err(SendError::Retryable {
                retry_after: Some(wait),
                code: None,
                detail: "held back by the channel's rate limit".into(),
            });
        }
        tokio::time::sleep(wait).await;

        let body = CreateMessage {
            content: &reply.text,
            message_reference: reply.reply_to.as_deref().map(|message_id| Reference {
                message_id,
                fail_if_not_exists: false,
            }),
            allowed_mentions: AllowedMentions { parse: [] },
        };
        let token = credentials.bot_token.expose_secret();
        let response = self
            .http
            .post(format!("{}/channels/{channel_id}/messages", self.api_url))
            .header("authorization", format!("Bot {token}"))
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::Retryable {
                retry_after: None,
                code: None,
                detail: format!("request failed: {}", e.without_url()),
            })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        if let Some(reset) = exhausted_bucket(&headers) {
            self.pacer.hold(&key, reset);
        }
        if (200..300).contains(&status) {
            let id = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string));
            return match id {
                Some(external_id) => Ok(SendReceipt { external_id }),
                None => Err(permanent(None, "accepted without a message id".into())),
            };
        }
        let error = classify_error(status, &headers, &bytes);
        if let SendError::Retryable {
            retry_after: Some(wait),
            ..
        } = &error
        {
            if is_global(&headers, &bytes) {
                self.pacer.hold_all(*wait);
            } else {
                self.pacer.hold(&key, *wait);
            }
        }
        tracing::debug!(http_status = status, code = error.code(), application_id = %credentials.application_id, "discord send rejected");
        Err(error)
    }
}

/// How long the route's bucket is empty for, when the answer says it is.
fn exhausted_bucket(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-ratelimit-remaining")?.trim() != "0" {
        return None;
    }
    let secs: f64 = header("x-ratelimit-reset-after")?.trim().parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

fn is_global(headers: &HeaderMap, body: &[u8]) -> bool {
    headers.contains_key("x-ratelimit-global")
        || serde_json::from_slice::<RateLimited>(body).is_ok_and(|r| r.global)
}

/// Classifies an error answer: 429 is retryable after `retry_after` (body, seconds
/// as a float) or `Retry-After`; 401 means the token is dead; other 4xx are
/// permanent; 5xx retryable.
pub fn classify_error(status: u16, headers: &HeaderMap, body: &[u8]) -> SendError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let detail = parsed
        .message
        .clone()
        .unwrap_or_else(|| format!("HTTP {status}"));
    let code = parsed.code.or(Some(i64::from(status)));
    match status {
        429 => {
            let retry_after = serde_json::from_slice::<RateLimited>(body)
                .ok()
                .and_then(|r| Duration::try_from_secs_f64(r.retry_after).ok())
                .or_else(|| {
                    headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                });
            SendError::Retryable {
                retry_after,
                code,
                detail,
            }
        }
        401 => SendError::Unauthorized { code, detail },
        s if (500..600).contains(&s) => SendError::Retryable {
            retry_after: None,
            code,
            detail,
        },
        _ => permanent(code, detail),
    }
}

fn permanent(code: Option<i64>, detail: String) -> SendError {
    SendError::Permanent {
        code,
        subcode: None,
        detail,
        outside_window: false,
    }
}

#[derive(Serialize)]
struct CreateMessage<'a> {
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_reference: Option<Reference<'a>>,
    /// Replies never ping anyone.
    allowed_mentions: AllowedMentions,
}

#[derive(Serialize)]
struct Reference<'a> {
    message_id: &'a str,
    fail_if_not_exists: bool,
}

#[derive(Serialize)]
struct AllowedMentions {
    parse: [&'static str; 0],
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    message: Option<String>,
    code: Option<i64>,
}

#[derive(Deserialize)]
struct RateLimited {
    retry_after: f64,
    #[serde(default)]
    global: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_429_uses_the_body_retry_after() {
        // fixtures/discord/rate-limit-429.json
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "65".parse().unwrap());
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset-after", "64.57".parse().unwrap());
        let body =
            br#"{"message":"You are being rate limited.","retry_after":64.57,"global":false}"#;
        match classify_error(429, &headers, body) {
            SendError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs_f64(64.57)))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            exhausted_bucket(&headers),
            Some(Duration::from_secs_f64(64.57))
        );
        assert!(!is_global(&headers, body));
    }

    #[test]
    fn other_errors() {
        let h = HeaderMap::new();
        assert!(matches!(
            classify_error(401, &h, b"{}"),
            SendError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify_error(
                403,
                &h,
                br#"{"message":"Missing Permissions","code":50013}"#
            ),
            SendError::Permanent {
                code: Some(50013),
                ..
            }
        ));
        assert!(matches!(
            classify_error(503, &h, b""),
            SendError::Retryable { .. }
        ));
    }
}
