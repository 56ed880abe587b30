//! Outbound step for Slack: `chat.postMessage` with the bot token, in the thread the
//! customer wrote in, and the classification of Slack's answers for the dispatcher.
//! Also the OAuth v2 code exchange (`oauth.v2.access`) used by the install flow.
//!
//! Slack answers HTTP 200 with `{"ok": false, "error": "..."}` for most failures, and
//! HTTP 429 with `Retry-After` when rate limited. Neither tokens nor message text are
//! logged or put into errors.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::format::to_slack;
use super::Slack;
use crate::error::request_failed;
use crate::model::{OutboundReply, SendReceipt, SlackCredentials};
use crate::SendError;

/// Errors after which the same request can succeed later.
const TRANSIENT: [&str; 5] = [
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
];

impl Slack {
    pub(super) async fn post_message(
        &self,
        credentials: &SlackCredentials,
        reply: &OutboundReply,
    ) -> Result<SendReceipt, SendError> {
        let Some(token) = credentials.bot_token.as_ref() else {
            return Err(SendError::Permanent {
                code: None,
                subcode: None,
                detail: "token_revoked: the app was uninstalled from the workspace".into(),
                outside_window: false,
            });
        };
        let (channel, thread_ts) = destination(&reply.to);
        let text = to_slack(&reply.text);
        let body = PostMessage {
            channel,
            text: &text,
            thread_ts,
        };
        let token = token.expose_secret();
        let response = self
            .http
            .post(format!("{}/chat.postMessage", self.api_url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(request_failed)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.unwrap_or_default();
        let answer = serde_json::from_slice::<Answer>(&bytes).ok();
        if status.is_success() {
            if let Some(Answer { ok: true, ts, .. }) = &answer {
                return match ts.as_deref().filter(|ts| !ts.is_empty()) {
                    // Keyed like inbound messages (`channel:ts`), so the echo of this
                    // message finds it.
                    Some(ts) => Ok(SendReceipt {
                        external_id: format!("{channel}:{ts}"),
                    }),
                    None => Err(SendError::Permanent {
                        code: None,
                        subcode: None,
                        detail: "accepted without a message ts".into(),
                        outside_window: false,
                    }),
                };
            }
        }
        let error = answer.and_then(|a| a.error);
        let error = classify(status.as_u16(), retry_after, error.as_deref());
        tracing::debug!(
            http_status = status.as_u16(),
            team_id = %credentials.team_id,
            error = %error,
            "slack send rejected"
        );
        Err(error)
    }

    /// Exchanges an OAuth `code` for the workspace's bot token at `oauth.v2.access`,
    /// authenticating with the client id and secret (HTTP Basic).
    pub async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Installation, InstallError> {
        let response = self
            .http
            .post(format!("{}/oauth.v2.access", self.api_url))
            .basic_auth(client_id, Some(client_secret.expose_secret()))
            .form(&[("code", code), ("redirect_uri", redirect_uri)])
            .send()
            .await
            .map_err(|e| InstallError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let access: Access = serde_json::from_slice(&bytes)
            .map_err(|_| InstallError::Refused(format!("unreadable answer (HTTP {status})")))?;
        if !access.ok {
            return Err(InstallError::Refused(
                access.error.unwrap_or_else(|| format!("HTTP {status}")),
            ));
        }
        let (Some(token), Some(team)) = (access.access_token, access.team) else {
            return Err(InstallError::Refused(
                "no bot token or workspace in the answer (enterprise-wide installs are not supported)"
                    .into(),
            ));
        };
        if access.token_type.as_deref().is_some_and(|t| t != "bot") {
            return Err(InstallError::Refused("the token is not a bot token".into()));
        }
        Ok(Installation {
            credentials: SlackCredentials {
                team_id: team.id,
                team_name: team.name,
                app_id: access.app_id,
                bot_user_id: access.bot_user_id,
                bot_token: Some(SecretString::from(token)),
                signing_secret: None,
            },
        })
    }
}

/// A completed OAuth install.
#[derive(Debug)]
pub struct Installation {
    pub credentials: SlackCredentials,
}

/// Why an install could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("Slack could not be reached: {0}")]
    Unreachable(String),
    #[error("Slack refused the install: {0}")]
    Refused(String),
}

/// `channel` or `channel:thread_ts` (the chat id the inbound side builds).
fn destination(to: &str) -> (&str, Option<&str>) {
    match to.split_once(':') {
        Some((channel, thread)) if !thread.is_empty() => (channel, Some(thread)),
        _ => (to, None),
    }
}

/// Classifies a failed `chat.postMessage`: by Slack's `error` first, HTTP second.
pub fn classify(http_status: u16, retry_after: Option<Duration>, error: Option<&str>) -> SendError {
    let detail = error.map_or_else(|| format!("HTTP {http_status}"), str::to_string);
    let retryable = SendError::Retryable {
        retry_after,
        code: None,
        detail: detail.clone(),
    };
    match error {
        Some(e) if TRANSIENT.contains(&e) => retryable,
        // `channel_not_found`, `not_in_channel`, `is_archived`, `msg_too_long`,
        // `invalid_auth`, `account_inactive`, `token_revoked`, ...: the same request
        // fails the same way; recorded on the message.
        Some(_) => SendError::Permanent {
            code: None,
            subcode: None,
            detail,
            outside_window: false,
        },
        None if http_status == 429 || (500..600).contains(&http_status) => retryable,
        None => SendError::Permanent {
            code: None,
            subcode: None,
            detail,
            outside_window: false,
        },
    }
}

#[derive(Serialize)]
struct PostMessage<'a> {
    channel: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_ts: Option<&'a str>,
}

/// `{"ok": true, "channel", "ts", "message"}` or `{"ok": false, "error"}`.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The `oauth.v2.access` answer (the fields the install uses).
#[derive(Deserialize)]
struct Access {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    bot_user_id: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    team: Option<Team>,
}

#[derive(Deserialize)]
struct Team {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_carries_the_thread() {
        assert_eq!(destination("D024BE91L"), ("D024BE91L", None));
        assert_eq!(
            destination("C0LAN2Q65:1515449483.000108"),
            ("C0LAN2Q65", Some("1515449483.000108"))
        );
    }

    #[test]
    fn slack_errors_are_classified() {
        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            classify(429, wait, Some("ratelimited")),
            SendError::Retryable {
                retry_after: wait,
                code: None,
                detail: "ratelimited".into()
            }
        );
        for permanent in [
            "channel_not_found",
            "not_in_channel",
            "invalid_auth",
            "account_inactive",
            "is_archived",
        ] {
            assert!(
                matches!(classify(200, None, Some(permanent)), SendError::Permanent { ref detail, .. } if detail == permanent),
                "{permanent}"
            );
        }
        assert!(matches!(
            classify(503, None, None),
            SendError::Retryable { .. }
        ));
        assert!(matches!(
            classify(404, None, None),
            SendError::Permanent { .. }
        ));
    }
}
