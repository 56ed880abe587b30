//! Inbound step for Slack: reads a verified Events API request and turns its event
//! into events of the common model. Pure: no I/O, no logging of content.
//!
//! One request carries one event. Conversations: a direct message channel (`D...`)
//! is one conversation; in other channels every thread is one, and a top-level
//! message starts a thread (the reply goes under it). The chat id is `channel` or
//! `channel:thread_ts`, which is also where the reply is posted. Messages are keyed
//! `channel:ts`, Slack's own unique key, so the same message delivered as both
//! `app_mention` and `message` is stored (and answered) once.

use serde::Deserialize;
use serde_json::Value;

use super::format::to_plain;
use crate::model::{
    Content, Delete, DeliveryStatus, Edit, EventBody, InboundEvent, InboundMessage, Media,
    MediaKind, Normalized, Participant, StatusUpdate, Unhandled,
};
use crate::NormalizeError;

/// What one Slack request is.
#[derive(Debug)]
pub enum Delivery {
    /// The Request URL check: answer with the challenge.
    UrlVerification { challenge: String },
    /// An `event_callback`.
    Callback(Callback),
    /// Another envelope (`app_rate_limited`, ...), kept raw.
    Other(Unhandled),
}

/// An `event_callback` envelope, read from a verified body.
#[derive(Debug)]
pub struct Callback {
    /// The workspace the event belongs to; routes it to a channel.
    pub team_id: String,
    /// The app the event was delivered for.
    pub api_app_id: Option<String>,
    /// Slack's globally unique event id (the same on every retry).
    pub event_id: String,
    /// The event's `type`.
    pub event_type: String,
    /// User ids of the bots the event was delivered to (`authorizations[]`).
    bot_users: Vec<String>,
    event: Value,
    raw: Value,
}

/// The app lost its access to the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// `app_uninstalled`.
    Uninstalled,
    /// `tokens_revoked` naming bot users: the bot token is gone.
    TokensRevoked { bot_users: Vec<String> },
}

impl Revocation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Uninstalled => "app_uninstalled",
            Self::TokensRevoked { .. } => "tokens_revoked",
        }
    }
}

/// Message subtypes that are a person writing (others are channel notices).
const PERSON_SUBTYPES: [&str; 3] = ["file_share", "thread_broadcast", "me_message"];

/// Reads a request body (already authenticated by the caller).
pub fn read(body: &[u8]) -> Result<Delivery, NormalizeError> {
    let raw: Value = serde_json::from_slice(body)?;
    let kind = raw
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| NormalizeError::Envelope("no `type` string".into()))?;
    match kind {
        "url_verification" => {
            let challenge = raw
                .get("challenge")
                .and_then(Value::as_str)
                .ok_or_else(|| NormalizeError::Envelope("no `challenge` string".into()))?;
            Ok(Delivery::UrlVerification {
                challenge: challenge.to_string(),
            })
        }
        "event_callback" => {
            let text = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_string);
            let (Some(team_id), Some(event_id)) = (text("team_id"), text("event_id")) else {
                return Err(NormalizeError::Envelope(
                    "event_callback without `team_id` or `event_id`".into(),
                ));
            };
            let event = raw.get("event").cloned().unwrap_or(Value::Null);
            let event_type = event
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let bot_users = raw
                .get("authorizations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|a| a.get("is_bot").and_then(Value::as_bool) == Some(true))
                .filter_map(|a| a.get("user_id").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            Ok(Delivery::Callback(Callback {
                team_id,
                api_app_id: text("api_app_id"),
                event_id,
                event_type,
                bot_users,
                event,
                raw,
            }))
        }
        other => Ok(Delivery::Other(Unhandled {
            account_id: raw
                .get("team_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            reason: format!("unknown_envelope:{other}"),
            raw,
        })),
    }
}

impl Callback {
    /// Whether this event takes the app's access away.
    pub fn revocation(&self) -> Option<Revocation> {
        match self.event_type.as_str() {
            "app_uninstalled" => Some(Revocation::Uninstalled),
            "tokens_revoked" => {
                let bot_users: Vec<String> = self
                    .event
                    .pointer("/tokens/bot")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                // Only user tokens revoked: the bot token (all we hold) still works.
                (!bot_users.is_empty()).then_some(Revocation::TokensRevoked { bot_users })
            }
            _ => None,
        }
    }

    /// The raw envelope (for keeping what is not modelled).
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The event as common-model events. `own_bot` is the bot's user id when the
    /// gateway knows it (besides the ids Slack lists in `authorizations`); messages
    /// by bots are never turned into customer messages.
    pub fn normalize(&self, own_bot: Option<&str>) -> Normalized {
        let mut out = Normalized::default();
        let bots: Vec<&str> = self
            .bot_users
            .iter()
            .map(String::as_str)
            .chain(own_bot)
            .collect();
        let scope = Scope {
            team_id: &self.team_id,
            bots: &bots,
        };
        let mapped = match self.event_type.as_str() {
            "message" | "app_mention" => scope.message(&self.event),
            "app_uninstalled" | "tokens_revoked" => {
                // Acted on by the gateway (see `revocation`); nothing to converse about.
                Mapped::Keep(format!("revocation:{}", self.event_type))
            }
            "" => Mapped::Keep("malformed_event".into()),
            other => Mapped::Keep(format!("unknown_event:{other}")),
        };
        match mapped {
            Mapped::Events(events) => out.events = events,
            Mapped::Keep(reason) => out.unhandled.push(Unhandled {
                account_id: Some(self.team_id.clone()),
                reason,
                raw: self.raw.clone(),
            }),
        }
        out
    }
}

enum Mapped {
    Events(Vec<InboundEvent>),
    Keep(String),
}

struct Scope<'a> {
    team_id: &'a str,
    /// The bot users of this installation: their messages are echoes of our sends.
    bots: &'a [&'a str],
}

/// The fields of a `message` / `app_mention` event (and of the `message` inside
/// `message_changed`) that the mapping reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireMessage {
    subtype: Option<String>,
    channel: Option<String>,
    channel_type: Option<String>,
    user: Option<String>,
    bot_id: Option<String>,
    text: Option<String>,
    ts: Option<String>,
    thread_ts: Option<String>,
    deleted_ts: Option<String>,
    files: Vec<WireFile>,
    user_profile: Option<WireProfile>,
    message: Option<Box<WireMessage>>,
    previous_message: Option<Box<WireMessage>>,
    edited: Option<WireEdited>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireFile {
    id: Option<String>,
    name: Option<String>,
    mimetype: Option<String>,
    url_private: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireProfile {
    real_name: Option<String>,
    display_name: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireEdited {
    ts: Option<String>,
}

impl Scope<'_> {
    fn message(&self, event: &Value) -> Mapped {
        let Ok(m) = WireMessage::deserialize(event) else {
            return Mapped::Keep("malformed_message".into());
        };
        let Some(channel) = m.channel.as_deref().filter(|c| !c.is_empty()) else {
            return Mapped::Keep("malformed_message".into());
        };
        match m.subtype.as_deref() {
            Some("message_changed") => return self.changed(channel, &m),
            Some("message_deleted") => return self.deleted(channel, &m),
            Some("bot_message") => return Mapped::Keep("bot_message".into()),
            Some(s) if !PERSON_SUBTYPES.contains(&s) => {
                return Mapped::Keep(format!("message_subtype:{s}"))
            }
            _ => {}
        }
        let Some(ts) = m.ts.as_deref().filter(|t| !t.is_empty()) else {
            return Mapped::Keep("malformed_message".into());
        };
        if let Some(echo) = self.echo(channel, ts, &m) {
            return echo;
        }
        let Some(user) = m.user.as_deref().filter(|u| !u.is_empty()) else {
            return Mapped::Keep("malformed_message".into());
        };
        let im = is_im(channel, m.channel_type.as_deref());
        let chat = chat_of(channel, im, ts, m.thread_ts.as_deref());
        let sender = participant(user, m.user_profile.as_ref());
        let text = m
            .text
            .as_deref()
            .map(|t| to_plain(t, self.bots.first().copied()))
            .filter(|t| !t.trim().is_empty());
        let reply_to = m
            .thread_ts
            .as_deref()
            .filter(|parent| *parent != ts)
            .map(|parent| key(channel, parent));
        let timestamp = seconds(ts);
        let make = |external_id: String, content: Content| InboundEvent {
            external_id,
            account_id: self.team_id.to_string(),
            timestamp,
            body: EventBody::Message(InboundMessage {
                chat: chat.clone(),
                sender: sender.clone(),
                content,
                reply_to: reply_to.clone(),
                forwarded: false,
            }),
        };
        let mut files = m.files.iter().filter(|f| f.id.is_some());
        let first = match files.next() {
            Some(file) => Content::Media(media(file, text)),
            None => match text {
                Some(body) => Content::Text { body },
                // Nothing we can read (blocks only, an empty message): keep it as such.
                None => Content::Unsupported {
                    reason: "slack_empty_message".into(),
                    code: None,
                    raw: event.clone(),
                },
            },
        };
        let mut events = vec![make(key(channel, ts), first)];
        // Further files of the same message become messages of their own.
        for file in files {
            let id = file.id.as_deref().unwrap_or_default();
            events.push(make(
                format!("{}#{id}", key(channel, ts)),
                Content::Media(media(file, None)),
            ));
        }
        Mapped::Events(events)
    }

    /// A message by a bot: our own sends coming back are a delivery confirmation;
    /// other bots' messages are kept but never answered.
    fn echo(&self, channel: &str, ts: &str, m: &WireMessage) -> Option<Mapped> {
        let by_us = m.user.as_deref().is_some_and(|u| self.bots.contains(&u));
        if by_us {
            return Some(Mapped::Events(vec![InboundEvent {
                external_id: format!("echo:{}", key(channel, ts)),
                account_id: self.team_id.to_string(),
                timestamp: seconds(ts),
                body: EventBody::Status(StatusUpdate {
                    message_id: key(channel, ts),
                    status: DeliveryStatus::Delivered,
                    recipient: None,
                    error: None,
                }),
            }]));
        }
        m.bot_id
            .as_ref()
            .map(|_| Mapped::Keep("bot_message".into()))
    }

    fn changed(&self, channel: &str, m: &WireMessage) -> Mapped {
        let Some(new) = m.message.as_deref() else {
            return Mapped::Keep("malformed_message_changed".into());
        };
        let (Some(ts), Some(user)) = (new.ts.as_deref(), new.user.as_deref()) else {
            return Mapped::Keep("malformed_message_changed".into());
        };
        if new.bot_id.is_some() || self.bots.contains(&user) {
            return Mapped::Keep("bot_message_changed".into());
        }
        let im = is_im(channel, m.channel_type.as_deref());
        let version = new
            .edited
            .as_ref()
            .and_then(|e| e.ts.as_deref())
            .or(m.ts.as_deref())
            .unwrap_or(ts);
        let text = new
            .text
            .as_deref()
            .map(|t| to_plain(t, self.bots.first().copied()))
            .unwrap_or_default();
        Mapped::Events(vec![InboundEvent {
            external_id: format!("edit:{}:{version}", key(channel, ts)),
            account_id: self.team_id.to_string(),
            timestamp: seconds(m.ts.as_deref().unwrap_or(version)),
            body: EventBody::Edit(Edit {
                chat: chat_of(channel, im, ts, new.thread_ts.as_deref()),
                sender: participant(user, new.user_profile.as_ref()),
                target: key(channel, ts),
                content: Content::Text { body: text },
            }),
        }])
    }

    fn deleted(&self, channel: &str, m: &WireMessage) -> Mapped {
        let Some(deleted) = m.deleted_ts.as_deref() else {
            return Mapped::Keep("malformed_message_deleted".into());
        };
        let previous = m.previous_message.as_deref();
        let user = previous.and_then(|p| p.user.as_deref());
        if previous.is_some_and(|p| p.bot_id.is_some())
            || user.is_some_and(|u| self.bots.contains(&u))
        {
            return Mapped::Keep("bot_message_deleted".into());
        }
        let im = is_im(channel, m.channel_type.as_deref());
        let thread = previous.and_then(|p| p.thread_ts.as_deref());
        Mapped::Events(vec![InboundEvent {
            external_id: format!("delete:{}", key(channel, deleted)),
            account_id: self.team_id.to_string(),
            timestamp: seconds(m.ts.as_deref().unwrap_or(deleted)),
            body: EventBody::Delete(Delete {
                chat: chat_of(channel, im, deleted, thread),
                // Slack does not always say who wrote it; then the message is found by
                // its key within the workspace.
                sender: user.map(|user| participant(user, None)),
                target: key(channel, deleted),
            }),
        }])
    }
}

/// Slack's unique key of a message: channel and timestamp.
fn key(channel: &str, ts: &str) -> String {
    format!("{channel}:{ts}")
}

/// Direct messages are one conversation; elsewhere each thread is one.
fn chat_of(channel: &str, im: bool, ts: &str, thread_ts: Option<&str>) -> String {
    match (thread_ts, im) {
        (Some(thread), _) => key(channel, thread),
        (None, true) => channel.to_string(),
        (None, false) => key(channel, ts),
    }
}

fn is_im(channel: &str, channel_type: Option<&str>) -> bool {
    match channel_type {
        Some(kind) => kind == "im",
        // `app_mention` carries no channel_type; DM channel ids start with `D`.
        None => channel.starts_with('D'),
    }
}

fn participant(user: &str, profile: Option<&WireProfile>) -> Participant {
    let name = profile.and_then(|p| {
        p.real_name
            .clone()
            .or_else(|| p.display_name.clone())
            .filter(|n| !n.is_empty())
    });
    Participant {
        id: user.to_string(),
        phone: None,
        name,
        username: profile
            .and_then(|p| p.name.clone())
            .filter(|n| !n.is_empty()),
    }
}

fn media(file: &WireFile, caption: Option<String>) -> Media {
    let mime = file.mimetype.clone();
    let kind = match mime.as_deref().and_then(|m| m.split('/').next()) {
        Some("image") => MediaKind::Image,
        Some("audio") => MediaKind::Audio,
        Some("video") => MediaKind::Video,
        _ => MediaKind::Document,
    };
    Media {
        kind,
        media_id: file.id.clone(),
        url: file.url_private.clone(),
        mime_type: mime,
        sha256: None,
        caption,
        filename: file.name.clone(),
        voice: false,
        animated: false,
    }
}

/// Whole seconds of a Slack timestamp (`"1355517523.000005"`).
fn seconds(ts: &str) -> i64 {
    ts.split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
