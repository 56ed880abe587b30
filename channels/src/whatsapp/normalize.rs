//! Inbound step for WhatsApp: turns a verified Cloud API webhook delivery into events
//! of the common model. Pure: no I/O, no logging of content.
//!
//! A delivery may batch many entries, changes, messages and statuses. Each item is
//! mapped on its own; an item that cannot be read is returned as [`Unhandled`] with
//! its raw JSON, and its siblings still come out, in delivery order.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::wire;
use crate::model::{
    ConsentSignal, Content, Delete, DeliveryStatus, Edit, EventBody, InboundEvent, InboundMessage,
    Location, Media, MediaKind, Normalized, Participant, PlatformError, Reaction, SharedContact,
    StatusUpdate, Unhandled,
};
use crate::NormalizeError;

/// The `object` of WhatsApp Business Account deliveries.
const OBJECT: &str = "whatsapp_business_account";
/// The only change `field` that carries messages, statuses and errors.
const FIELD: &str = "messages";

const MALFORMED_MESSAGE: &str = "malformed_message";
const MALFORMED_STATUS: &str = "malformed_status";
const MALFORMED_ERROR: &str = "malformed_error";
/// The change `field` of marketing preference updates.
const PREFERENCES: &str = "user_preferences";
const MALFORMED_PREFERENCE: &str = "malformed_preference";

/// Normalizes one delivery body (already authenticated by the caller).
pub(super) fn normalize(body: &[u8]) -> Result<Normalized, NormalizeError> {
    let root: Value = serde_json::from_slice(body)?;
    let Some(entries) = root.get("entry").and_then(Value::as_array) else {
        return Err(NormalizeError::Envelope("no `entry` array".into()));
    };
    let mut out = Normalized::default();
    match root.get("object").and_then(Value::as_str) {
        Some(OBJECT) => {}
        Some(other) => {
            out.unhandled.push(Unhandled {
                account_id: None,
                reason: format!("unknown_object:{other}"),
                raw: root.clone(),
            });
            return Ok(out);
        }
        None => return Err(NormalizeError::Envelope("no `object` string".into())),
    }
    for entry in entries {
        let entry_id = entry.get("id").and_then(Value::as_str).unwrap_or_default();
        let Some(changes) = entry.get("changes").and_then(Value::as_array) else {
            out.unhandled
                .push(unhandled(None, "malformed_entry", entry));
            continue;
        };
        for change in changes {
            normalize_change(entry_id, change, &mut out);
        }
    }
    Ok(out)
}

/// Maps one `entry[].changes[]` item, appending to `out`.
fn normalize_change(entry_id: &str, change: &Value, out: &mut Normalized) {
    let value = change.get("value").filter(|v| v.is_object());
    let account_id = value
        .and_then(|v| v.pointer("/metadata/phone_number_id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match change.get("field").and_then(Value::as_str) {
        Some(FIELD) => {}
        Some(PREFERENCES) => return preferences(entry_id, account_id, value, change, out),
        Some(other) => {
            out.unhandled.push(unhandled(
                account_id,
                &format!("unknown_field:{other}"),
                change,
            ));
            return;
        }
        None => {
            out.unhandled
                .push(unhandled(account_id, "malformed_change", change));
            return;
        }
    }
    let Some(value) = value else {
        out.unhandled
            .push(unhandled(account_id, "malformed_change", change));
        return;
    };
    // Events are routed by phone number id; without one they cannot reach a channel.
    let Some(account_id) = account_id else {
        out.unhandled
            .push(unhandled(None, "missing_phone_number_id", change));
        return;
    };

    let messages = items(value, "messages");
    let statuses = items(value, "statuses");
    let errors = items(value, "errors");
    if messages.is_empty() && statuses.is_empty() && errors.is_empty() {
        out.unhandled
            .push(unhandled(Some(account_id), "empty_change", change));
        return;
    }
    let contacts: Vec<wire::Contact> = items(value, "contacts")
        .iter()
        .filter_map(|c| wire::Contact::deserialize(c).ok())
        .collect();
    let scope = Scope {
        account_id,
        entry_id,
        contacts: &contacts,
    };

    let mapped = messages
        .iter()
        .map(|m| (m, scope.message(m)))
        .chain(statuses.iter().map(|s| (s, scope.status(s))))
        .chain(errors.iter().map(|e| (e, scope.account_error(e))));
    for (raw, result) in mapped {
        match result {
            Ok(event) => out.events.push(event),
            Err(reason) => out
                .unhandled
                .push(unhandled(Some(account_id), &reason, raw)),
        }
    }
}

/// Maps a `user_preferences` change: one consent signal per item.
fn preferences(
    entry_id: &str,
    account_id: Option<&str>,
    value: Option<&Value>,
    change: &Value,
    out: &mut Normalized,
) {
    let (Some(account_id), Some(value)) = (account_id, value) else {
        out.unhandled
            .push(unhandled(account_id, "malformed_change", change));
        return;
    };
    let prefs = items(value, PREFERENCES);
    if prefs.is_empty() {
        out.unhandled
            .push(unhandled(Some(account_id), "empty_change", change));
        return;
    }
    let contacts: Vec<wire::Contact> = items(value, "contacts")
        .iter()
        .filter_map(|c| wire::Contact::deserialize(c).ok())
        .collect();
    let scope = Scope {
        account_id,
        entry_id,
        contacts: &contacts,
    };
    for raw in prefs {
        match scope.preference(raw) {
            Ok(event) => out.events.push(event),
            Err(reason) => out
                .unhandled
                .push(unhandled(Some(account_id), &reason, raw)),
        }
    }
}

/// What the items of one change share.
struct Scope<'a> {
    /// `value.metadata.phone_number_id`.
    account_id: &'a str,
    /// `entry[].id` (the WABA id).
    entry_id: &'a str,
    /// `value.contacts[]`: the senders' profiles.
    contacts: &'a [wire::Contact],
}

impl Scope<'_> {
    /// Maps one `messages[]` item; `Err` holds the `Unhandled` reason.
    fn message(&self, raw: &Value) -> Result<InboundEvent, String> {
        let head = wire::MessageHead::deserialize(raw).map_err(|_| MALFORMED_MESSAGE)?;
        let id = non_empty(head.id.as_deref()).ok_or(MALFORMED_MESSAGE)?;
        let (chat, sender) = self.sender(&head).ok_or(MALFORMED_MESSAGE)?;
        let body = match head.kind.as_deref() {
            Some("reaction") => {
                let reaction: wire::Reaction = part(raw, "reaction")?;
                EventBody::Reaction(Reaction {
                    chat,
                    sender,
                    target: reaction.message_id,
                    emoji: reaction.emoji.filter(|e| !e.is_empty()),
                })
            }
            Some("edit") => {
                let edit: wire::Edit = part(raw, "edit")?;
                EventBody::Edit(Edit {
                    chat,
                    sender,
                    target: edit.original_message_id,
                    content: content(&edit.message)?,
                })
            }
            Some("revoke") => {
                let revoke: wire::Revoke = part(raw, "revoke")?;
                EventBody::Delete(Delete {
                    chat,
                    sender: Some(sender),
                    target: revoke.original_message_id,
                })
            }
            _ => {
                let context = head.context.unwrap_or_default();
                EventBody::Message(InboundMessage {
                    chat,
                    sender,
                    content: content(raw)?,
                    reply_to: context.id.filter(|id| !id.is_empty()),
                    forwarded: context.forwarded || context.frequently_forwarded,
                })
            }
        };
        Ok(InboundEvent {
            external_id: id.to_owned(),
            account_id: self.account_id.to_owned(),
            timestamp: head.timestamp,
            body,
        })
    }

    /// The chat id (where replies go) and the sender of a message, from the matching
    /// `value.contacts[]` profile and the message's own ids. `None` when the message
    /// names nobody.
    fn sender(&self, head: &wire::MessageHead) -> Option<(String, Participant)> {
        let from = non_empty(head.from.as_deref());
        let from_user_id = non_empty(head.from_user_id.as_deref());
        let contact = self
            .contacts
            .iter()
            .find(|c| {
                (from.is_some() && non_empty(c.wa_id.as_deref()) == from)
                    || (from_user_id.is_some() && non_empty(c.user_id.as_deref()) == from_user_id)
            })
            .or(match self.contacts {
                [only] => Some(only),
                _ => None,
            });
        let wa_id = contact.and_then(|c| non_empty(c.wa_id.as_deref()));
        let user_id = contact
            .and_then(|c| non_empty(c.user_id.as_deref()))
            .or(from_user_id);
        let profile = contact.and_then(|c| c.profile.as_ref());

        let id = user_id.or(wa_id).or(from)?;
        let chat = wa_id.or(from).or(user_id)?;
        let sender = Participant {
            id: id.to_owned(),
            phone: wa_id.or(from).map(str::to_owned),
            name: profile.and_then(|p| p.name.clone()),
            username: profile.and_then(|p| p.username.clone()),
        };
        Some((chat.to_owned(), sender))
    }

    /// Maps one `user_preferences[]` item.
    fn preference(&self, raw: &Value) -> Result<InboundEvent, String> {
        let pref = wire::Preference::deserialize(raw).map_err(|_| MALFORMED_PREFERENCE)?;
        let granted = match pref.value.as_deref() {
            Some("stop") => false,
            Some("resume") => true,
            Some(other) => return Err(format!("unknown_preference:{other}")),
            None => return Err(MALFORMED_PREFERENCE.into()),
        };
        match pref.category.as_deref() {
            Some("marketing_messages") | None => {}
            Some(other) => return Err(format!("unknown_preference_category:{other}")),
        }
        let head = wire::MessageHead {
            from: pref.wa_id.clone(),
            from_user_id: pref.user_id.clone(),
            ..wire::MessageHead::default()
        };
        let (chat, sender) = self.sender(&head).ok_or(MALFORMED_PREFERENCE)?;
        let value = if granted { "resume" } else { "stop" };
        Ok(InboundEvent {
            // No id of its own: who, when and which way is unique enough to dedupe.
            external_id: format!("{PREFERENCES}:{}:{}:{value}", sender.id, pref.timestamp),
            account_id: self.account_id.to_owned(),
            timestamp: pref.timestamp,
            body: EventBody::Consent(ConsentSignal {
                chat,
                sender,
                purpose: "marketing".into(),
                granted,
                signal: PREFERENCES.into(),
            }),
        })
    }

    /// Maps one `statuses[]` item.
    fn status(&self, raw: &Value) -> Result<InboundEvent, String> {
        let status = wire::Status::deserialize(raw).map_err(|_| MALFORMED_STATUS)?;
        let id = non_empty(status.id.as_deref()).ok_or(MALFORMED_STATUS)?;
        let name = status.status.as_deref().ok_or(MALFORMED_STATUS)?;
        let delivery = match name {
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            // `played`: a voice message was listened to, which implies read.
            "read" | "played" => DeliveryStatus::Read,
            "failed" => DeliveryStatus::Failed,
            other => return Err(format!("unknown_status:{other}")),
        };
        let recipient = non_empty(status.recipient_id.as_deref())
            .or(non_empty(status.recipient_user_id.as_deref()))
            .map(str::to_owned);
        Ok(InboundEvent {
            external_id: format!("{id}:{name}"),
            account_id: self.account_id.to_owned(),
            timestamp: status.timestamp,
            body: EventBody::Status(StatusUpdate {
                message_id: id.to_owned(),
                status: delivery,
                recipient,
                error: status.errors.into_iter().next().map(platform_error),
            }),
        })
    }

    /// Maps one account-level `value.errors[]` item. It has no id of its own, so the
    /// dedupe key is a digest of its content and the entry id, stable across
    /// redeliveries of the same notification.
    fn account_error(&self, raw: &Value) -> Result<InboundEvent, String> {
        let error = wire::Error::deserialize(raw).map_err(|_| MALFORMED_ERROR)?;
        let mut json = String::new();
        write_canonical(raw, &mut json);
        let digest = Sha256::new()
            .chain_update(json.as_bytes())
            .chain_update(self.entry_id.as_bytes())
            .finalize();
        let mut external_id = String::from("error:");
        for byte in digest.iter().take(16) {
            let _ = write!(external_id, "{byte:02x}");
        }
        Ok(InboundEvent {
            external_id,
            account_id: self.account_id.to_owned(),
            timestamp: 0,
            body: EventBody::AccountError(platform_error(error)),
        })
    }
}

/// Maps the content of a message (or of `edit.message`) by its `type`.
fn content(message: &Value) -> Result<Content, String> {
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .ok_or(MALFORMED_MESSAGE)?;
    let media = |kind: MediaKind| -> Result<Content, String> {
        let m: wire::Media = part(message, kind.as_str())?;
        Ok(Content::Media(Media {
            kind,
            media_id: m.id,
            url: m.url,
            mime_type: m.mime_type,
            sha256: m.sha256,
            caption: m.caption,
            filename: m.filename,
            voice: m.voice,
            animated: m.animated,
        }))
    };
    Ok(match kind {
        "text" => Content::Text {
            body: part::<wire::Text>(message, "text")?.body,
        },
        "image" => media(MediaKind::Image)?,
        "audio" => media(MediaKind::Audio)?,
        "video" => media(MediaKind::Video)?,
        "document" => media(MediaKind::Document)?,
        "sticker" => media(MediaKind::Sticker)?,
        "location" => {
            let l: wire::Location = part(message, "location")?;
            Content::Location(Location {
                latitude: l.latitude,
                longitude: l.longitude,
                name: l.name,
                address: l.address,
                url: l.url,
            })
        }
        "contacts" => {
            let cards: Vec<wire::SharedContact> = part(message, "contacts")?;
            Content::Contacts {
                contacts: cards.into_iter().map(shared_contact).collect(),
            }
        }
        "interactive" => {
            let i: wire::Interactive = part(message, "interactive")?;
            let reply = match i.kind.as_str() {
                "button_reply" => i.button_reply,
                "list_reply" => i.list_reply,
                other => {
                    return Ok(Content::Unsupported {
                        reason: format!("interactive:{other}"),
                        code: None,
                        raw: message.clone(),
                    })
                }
            };
            let reply = reply.ok_or(MALFORMED_MESSAGE)?;
            Content::InteractiveReply {
                id: reply.id,
                title: reply.title,
                description: reply.description,
            }
        }
        "button" => {
            let b: wire::Button = part(message, "button")?;
            Content::Button {
                text: b.text,
                payload: b.payload,
            }
        }
        "system" => {
            let s: wire::System = part(message, "system")?;
            Content::System {
                body: s.body.unwrap_or_default(),
            }
        }
        // Meta could not deliver the content (e.g. 131051, a type it does not support).
        "unsupported" | "unknown" => Content::Unsupported {
            reason: "unsupported".into(),
            code: message.pointer("/errors/0/code").and_then(Value::as_i64),
            raw: message.clone(),
        },
        other => Content::Unsupported {
            reason: format!("type:{other}"),
            code: None,
            raw: message.clone(),
        },
    })
}

fn shared_contact(card: wire::SharedContact) -> SharedContact {
    let name = card.name.map(|n| {
        n.formatted_name
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| {
                [n.first_name, n.last_name]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
    });
    SharedContact {
        name: name.unwrap_or_default(),
        phones: card.phones.into_iter().filter_map(|p| p.phone).collect(),
        emails: card.emails.into_iter().filter_map(|e| e.email).collect(),
    }
}

fn platform_error(error: wire::Error) -> PlatformError {
    PlatformError {
        code: error.code,
        title: error.title,
        detail: error.error_data.and_then(|d| d.details).or(error.message),
    }
}

/// Reads the object `key` of a message as `T`; a missing or mis-shaped object makes the
/// message malformed.
fn part<'a, T>(message: &'a Value, key: &str) -> Result<T, String>
where
    T: Deserialize<'a>,
{
    let object = message.get(key).ok_or(MALFORMED_MESSAGE)?;
    T::deserialize(object).map_err(|_| MALFORMED_MESSAGE.to_owned())
}

/// The array `key` of a change value; empty when absent or not an array.
fn items<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn unhandled(account_id: Option<&str>, reason: &str, raw: &Value) -> Unhandled {
    Unhandled {
        account_id: account_id.map(str::to_owned),
        reason: reason.to_owned(),
        raw: raw.clone(),
    }
}

/// Compact JSON with object keys sorted, so the digest does not depend on whether
/// serde_json was built with `preserve_order`.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(values) => {
            out.push('[');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(value, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_is_compact() {
        let value: Value =
            serde_json::from_str(r#"{ "b": [1, {"d": "x", "c": null}], "a": "é\"" }"#)
                .unwrap_or_default();
        let mut out = String::new();
        write_canonical(&value, &mut out);
        assert_eq!(out, r#"{"a":"é\"","b":[1,{"c":null,"d":"x"}]}"#);
    }
}
