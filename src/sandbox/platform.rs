//! The platforms the sandbox stands in for. Each one knows how to connect its demo
//! channel (the admin API body), how to turn a customer's text into its exact signed
//! webhook, how its fake send API answers, and which receipts it sends back.
//!
//! A new platform (Telegram, Discord) is one more variant here plus its fake send
//! route in `mod.rs`.

use serde_json::{json, Value};

/// The customer as each platform identifies them.
pub const CUSTOMER_WA: &str = "15550001111";
pub const CUSTOMER_PSID: &str = "2000000000000001";
pub const CUSTOMER_IGSID: &str = "3000000000000001";
pub const CUSTOMER_SLACK: &str = "U0CUSTOMER";
pub const SLACK_DM: &str = "D0SANDBOX";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    WhatsApp,
    Messenger,
    Instagram,
    Slack,
}

/// A webhook ready to POST: path on the gateway, headers, raw body.
pub struct Webhook {
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Platform {
    pub const ALL: [Platform; 4] = [
        Platform::WhatsApp,
        Platform::Messenger,
        Platform::Instagram,
        Platform::Slack,
    ];

    /// The platform's name in routes and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Platform::WhatsApp => "whatsapp",
            Platform::Messenger => "messenger",
            Platform::Instagram => "instagram",
            Platform::Slack => "slack",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Platform::WhatsApp => "WhatsApp",
            Platform::Messenger => "Messenger",
            Platform::Instagram => "Instagram",
            Platform::Slack => "Slack",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The demo channel's secret (app secret / signing secret).
    pub fn secret(self) -> String {
        format!("sandbox-{}-secret", self.name())
    }

    /// The demo channel's platform account (phone number id, page id, Instagram
    /// account id, Slack team). `tag` (digits) is new on every start, so demo
    /// channels of earlier runs in the same database never claim the same account.
    pub fn account(self, tag: &str) -> String {
        match self {
            Platform::WhatsApp => format!("10{tag}01"),
            Platform::Messenger => format!("10{tag}02"),
            Platform::Instagram => format!("178{tag}03"),
            Platform::Slack => format!("T0SB{tag}"),
        }
    }

    /// The platform whose demo account `account` is.
    pub fn by_account(tag: &str, account: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.account(tag) == account)
    }

    /// `POST /api/v1/channels` body for the demo channel.
    pub fn channel_body(self, tag: &str) -> Value {
        let secret = self.secret();
        let account = self.account(tag);
        match self {
            Platform::WhatsApp => json!({
                "platform": "whatsapp", "app_secret": secret, "verify_token": "sandbox-verify",
                "access_token": "sandbox-whatsapp-token", "phone_number_id": account,
                "waba_id": "100000000000000",
            }),
            Platform::Messenger => json!({
                "platform": "messenger", "app_secret": secret, "verify_token": "sandbox-verify",
                "page_id": account, "page_access_token": "sandbox-messenger-token",
            }),
            Platform::Instagram => json!({
                "platform": "instagram", "app_secret": secret, "verify_token": "sandbox-verify",
                "account_id": account, "access_token": "sandbox-instagram-token",
            }),
            Platform::Slack => json!({
                "platform": "slack", "signing_secret": secret,
                "bot_token": "xoxb-sandbox-token", "team_id": account,
            }),
        }
    }

    /// The customer's message `text` as the platform's signed webhook; `seq` makes
    /// the platform's message id unique.
    pub fn inbound(
        self,
        tag: &str,
        channel_id: &str,
        seq: u64,
        now_ms: i64,
        text: &str,
    ) -> Webhook {
        let now_s = now_ms / 1000;
        let account = self.account(tag);
        let body = match self {
            Platform::WhatsApp => json!({
                "object": "whatsapp_business_account",
                "entry": [{"id": "100000000000000", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550000000", "phone_number_id": account},
                    "contacts": [{"profile": {"name": "Sandbox customer"}, "wa_id": CUSTOMER_WA}],
                    "messages": [{"from": CUSTOMER_WA, "id": format!("wamid.sandbox.in.{now_ms}.{seq}"),
                                  "timestamp": now_s.to_string(), "type": "text", "text": {"body": text}}]
                }}]}]
            }),
            Platform::Messenger | Platform::Instagram => {
                let (object, customer) = if self == Platform::Messenger {
                    ("page", CUSTOMER_PSID)
                } else {
                    ("instagram", CUSTOMER_IGSID)
                };
                json!({
                    "object": object,
                    "entry": [{"id": account, "time": now_ms, "messaging": [{
                        "sender": {"id": customer}, "recipient": {"id": account},
                        "timestamp": now_ms,
                        "message": {"mid": format!("m_sandbox.in.{now_ms}.{seq}"), "text": text}
                    }]}]
                })
            }
            Platform::Slack => {
                let ts = format!("{now_s}.{:06}", seq % 1_000_000);
                json!({
                    "token": "unused", "team_id": account, "api_app_id": "A0SANDBOX",
                    "event": {"type": "message", "channel": SLACK_DM, "channel_type": "im",
                              "user": CUSTOMER_SLACK, "text": text, "ts": ts, "event_ts": ts},
                    "type": "event_callback", "event_id": format!("Ev0SANDBOX{now_ms}{seq}"),
                    "event_time": now_s,
                })
            }
        }
        .to_string();
        self.signed(channel_id, now_s, body)
    }

    /// The receipts the platform sends once the customer's device showed a reply
    /// (`external_id` is the id its send API gave the reply). Slack has none.
    pub fn receipts(
        self,
        tag: &str,
        channel_id: &str,
        now_ms: i64,
        external_id: &str,
    ) -> Vec<Webhook> {
        let now_s = now_ms / 1000;
        let account = self.account(tag);
        let bodies: Vec<Value> = match self {
            Platform::WhatsApp => ["delivered", "read"]
                .into_iter()
                .map(|status| {
                    json!({
                        "object": "whatsapp_business_account",
                        "entry": [{"id": "100000000000000", "changes": [{"field": "messages", "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550000000", "phone_number_id": account},
                            "statuses": [{"id": external_id, "status": status,
                                          "timestamp": now_s.to_string(), "recipient_id": CUSTOMER_WA}]
                        }}]}]
                    })
                })
                .collect(),
            Platform::Messenger | Platform::Instagram => {
                let (object, customer) = if self == Platform::Messenger {
                    ("page", CUSTOMER_PSID)
                } else {
                    ("instagram", CUSTOMER_IGSID)
                };
                let mut events = Vec::new();
                if self == Platform::Messenger {
                    events.push(json!({"delivery": {"mids": [external_id], "watermark": now_ms}}));
                }
                events.push(json!({"read": {"mid": external_id, "watermark": now_ms}}));
                events
                    .into_iter()
                    .map(|mut event| {
                        event["sender"] = json!({"id": customer});
                        event["recipient"] = json!({"id": account});
                        event["timestamp"] = json!(now_ms);
                        json!({"object": object, "entry": [{"id": account, "time": now_ms, "messaging": [event]}]})
                    })
                    .collect()
            }
            Platform::Slack => Vec::new(),
        };
        bodies
            .into_iter()
            .map(|body| self.signed(channel_id, now_s, body.to_string()))
            .collect()
    }

    fn signed(self, channel_id: &str, now_s: i64, body: String) -> Webhook {
        let secret = self.secret();
        let headers = match self {
            Platform::Slack => {
                let ts = now_s.to_string();
                vec![
                    (
                        "x-slack-signature",
                        webhooks::slack::sign(secret.as_bytes(), &ts, body.as_bytes()),
                    ),
                    ("x-slack-request-timestamp", ts),
                ]
            }
            _ => vec![(
                "x-hub-signature-256",
                webhooks::meta::sign(secret.as_bytes(), body.as_bytes()),
            )],
        };
        Webhook {
            path: format!("/webhooks/{}/{channel_id}", self.name()),
            headers,
            body,
        }
    }
}
