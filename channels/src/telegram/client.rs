//! Outbound step for Telegram: Bot API calls (`POST {api_url}/bot{token}/{method}`)
//! and the classification of their failures. `sendMessage` is paced per chat
//! (about one message a second, one every three seconds in groups) and per bot (30
//! a second), and a chat answered with 429 waits `parameters.retry_after`.
//!
//! The bot token is part of every URL: no URL, token or message text is ever
//! logged or put into an error.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use teloxide_core::ApiError;

use super::{Telegram, ALLOWED_UPDATES};
use crate::error::request_failed;
use crate::model::{OutboundReply, SendReceipt, TelegramCredentials};
use crate::pace::MAX_PAUSE;
use crate::SendError;

const PRIVATE_EVERY: Duration = Duration::from_secs(1);
const GROUP_EVERY: Duration = Duration::from_secs(3);
const BOT_EVERY: Duration = Duration::from_millis(34);

/// The bot's own account, from `getMe`.
#[derive(Debug, Clone, Deserialize)]
pub struct BotInfo {
    pub id: u64,
    pub username: Option<String>,
}

/// A Bot API call made while connecting or removing a channel failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SetupError {
    #[error("Telegram rejected {method}: {description}")]
    Rejected {
        method: &'static str,
        description: String,
    },
    #[error("Telegram could not be reached for {method}: {detail}")]
    Unreachable {
        method: &'static str,
        detail: String,
    },
}

impl Telegram {
    /// `getMe`: checks the token and tells the bot's id and username.
    pub async fn get_me(&self, token: &str) -> Result<BotInfo, SetupError> {
        let result = self
            .setup_call(token, "getMe", &serde_json::json!({}))
            .await?;
        serde_json::from_value(result).map_err(|_| SetupError::Rejected {
            method: "getMe",
            description: "unexpected answer".into(),
        })
    }

    /// `setWebhook`: Telegram delivers updates of [`ALLOWED_UPDATES`] to `url`,
    /// each with `secret_token` in `X-Telegram-Bot-Api-Secret-Token`.
    pub async fn set_webhook(
        &self,
        token: &str,
        url: &str,
        secret_token: &str,
    ) -> Result<(), SetupError> {
        let body = serde_json::json!({
            "url": url,
            "secret_token": secret_token,
            "allowed_updates": ALLOWED_UPDATES,
        });
        self.setup_call(token, "setWebhook", &body).await.map(drop)
    }

    /// `deleteWebhook`: Telegram stops delivering to the gateway.
    pub async fn delete_webhook(&self, token: &str) -> Result<(), SetupError> {
        self.setup_call(token, "deleteWebhook", &serde_json::json!({}))
            .await
            .map(drop)
    }

    async fn setup_call(
        &self,
        token: &str,
        method: &'static str,
        body: &Value,
    ) -> Result<Value, SetupError> {
        let response = self
            .http
            .post(format!("{}/bot{token}/{method}", self.api_url))
            .json(body)
            .send()
            .await
            .map_err(|e| SetupError::Unreachable {
                method,
                detail: e.without_url().to_string(),
            })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        match answer {
            Answer {
                ok: true, result, ..
            } => Ok(result.unwrap_or(Value::Null)),
            Answer { description, .. } => Err(SetupError::Rejected {
                method,
                description: description
                    .unwrap_or_else(|| format!("HTTP {status}"))
                    .replace(token, "[redacted]"),
            }),
        }
    }

    pub(super) async fn send_text(
        &self,
        credentials: &TelegramCredentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        let (chat, thread) = match reply.to.split_once(':') {
            Some((chat, thread)) => (chat, thread.parse::<i64>().ok()),
            None => (reply.to.as_str(), None),
        };
        let Ok(chat_id) = chat.parse::<i64>() else {
            return Err(permanent(
                None,
                "recipient is not a Telegram chat id".into(),
            ));
        };
        // Pace: groups (negative ids) get fewer messages a minute than private chats.
        let every = if chat_id < 0 {
            GROUP_EVERY
        } else {
            PRIVATE_EVERY
        };
        let key = format!("{}:{chat_id}", credentials.bot_id);
        let wait = self.pacer.reserve(&key, every, BOT_EVERY);
        if wait > MAX_PAUSE {
            return Err(SendError::Retryable {
                retry_after: Some(wait),
                code: None,
                detail: "held back by the chat's send pacing".into(),
            });
        }
        tokio::time::sleep(wait).await;

        let body = SendMessage {
            chat_id,
            text: &reply.text,
            message_thread_id: thread,
            reply_parameters: reply
                .reply_to
                .as_deref()
                .and_then(|id| id.rsplit_once(':'))
                .and_then(|(_, id)| id.parse().ok())
                .map(|message_id| ReplyParameters {
                    message_id,
                    allow_sending_without_reply: true,
                }),
        };
        let token = credentials.bot_token.expose_secret();
        let response = self
            .http
            .post(format!("{}/bot{token}/sendMessage", self.api_url))
            .json(&body)
            .send()
            .await
            .map_err(request_failed)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        if (200..300).contains(&status) && answer.ok {
            let id = answer
                .result
                .as_ref()
                .and_then(|r| r.get("message_id"))
                .and_then(Value::as_i64);
            return match id {
                Some(id) => Ok(SendReceipt {
                    external_id: format!("{chat_id}:{id}"),
                }),
                None => Err(permanent(None, "accepted without a message id".into())),
            };
        }
        let error = classify_error(status, &answer, token);
        if let SendError::Retryable {
            retry_after: Some(wait),
            ..
        } = &error
        {
            self.pacer.hold(&key, *wait);
        }
        tracing::debug!(
            http_status = status,
            code = error.code(),
            bot_id = %credentials.bot_id,
            "telegram send rejected"
        );
        Err(error)
    }
}

/// Classifies a Bot API error answer: 429 with `retry_after` is retryable after that
/// wait; 401 and 404 mean the token is dead; 403 (bot blocked, kicked, deactivated
/// user) and other 4xx are permanent; 5xx and unreadable answers are retryable.
fn classify_error(http_status: u16, answer: &Answer, token: &str) -> SendError {
    let code = answer.error_code.unwrap_or(i64::from(http_status));
    let description = answer
        .description
        .clone()
        .unwrap_or_else(|| format!("HTTP {http_status}"))
        .replace(token, "[redacted]");
    let parameters = answer.parameters.clone().unwrap_or_default();
    // teloxide knows the Bot API's error texts.
    let known: Option<ApiError> = serde_json::from_value(Value::String(description.clone())).ok();
    match code {
        429 => SendError::Retryable {
            retry_after: Some(Duration::from_secs(parameters.retry_after.unwrap_or(1))),
            code: Some(code),
            detail: description,
        },
        401 | 404 if !matches!(known, Some(ApiError::ChatNotFound)) => SendError::Unauthorized {
            code: Some(code),
            detail: description,
        },
        _ if parameters.migrate_to_chat_id.is_some() => permanent(
            Some(code),
            format!("{description} (the group became a supergroup)"),
        ),
        c if (500..600).contains(&c) => SendError::Retryable {
            retry_after: None,
            code: Some(code),
            detail: description,
        },
        _ => permanent(Some(code), description),
    }
}

/// Whether a send failed because the user blocked the bot (or deleted their account).
pub fn is_blocked(error: &SendError) -> bool {
    matches!(
        error,
        SendError::Permanent {
            code: Some(403),
            ..
        }
    )
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
struct SendMessage<'a> {
    chat_id: i64,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_thread_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_parameters: Option<ReplyParameters>,
}

#[derive(Serialize)]
struct ReplyParameters {
    message_id: i64,
    allow_sending_without_reply: bool,
}

/// The Bot API's answer envelope.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Answer {
    ok: bool,
    result: Option<Value>,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Parameters {
    retry_after: Option<u64>,
    migrate_to_chat_id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Answer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn flood_control_waits_retry_after() {
        // fixtures/telegram/error-429.json
        let a = answer(
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 35","parameters":{"retry_after":35}}"#,
        );
        assert_eq!(
            classify_error(429, &a, "123:tok"),
            SendError::Retryable {
                retry_after: Some(Duration::from_secs(35)),
                code: Some(429),
                detail: "Too Many Requests: retry after 35".into()
            }
        );
    }

    #[test]
    fn blocked_bad_token_and_outage() {
        let blocked = classify_error(
            403,
            &answer(
                r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#,
            ),
            "t",
        );
        assert!(is_blocked(&blocked));
        let dead = classify_error(
            401,
            &answer(r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#),
            "t",
        );
        assert!(matches!(dead, SendError::Unauthorized { .. }));
        assert!(matches!(
            classify_error(502, &Answer::default(), "t"),
            SendError::Retryable { .. }
        ));
        let echoed = classify_error(
            400,
            &answer(r#"{"ok":false,"error_code":400,"description":"bad bot123:secret"}"#),
            "123:secret",
        );
        assert!(!format!("{echoed}").contains("123:secret"));
    }
}
