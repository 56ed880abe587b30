//! Inbound step for Messenger and Instagram: turns a verified Meta messaging webhook
//! delivery (`{"object": "page" | "instagram", "entry": [{"id", "time", "messaging":
//! [...], "standby": [...]}]}`) into events of the common model. Pure: no I/O, no
//! logging of content.
//!
//! Every `entry[]` and every item of its `messaging[]` / `standby[]` arrays is mapped
//! on its own; an item that cannot be read is returned as [`Unhandled`] with its raw
//! JSON, and its siblings still come out, in delivery order.

use serde_json::Value;

use crate::model::{
    ChannelKind, Content, Delete, DeliveryStatus, Echo, Edit, EventBody, Handover, InboundEvent,
    InboundMessage, Media, MediaKind, Normalized, Participant, Reaction, Receipt, Referral,
    Standby, Unhandled,
};
use crate::NormalizeError;

const MALFORMED: &str = "malformed_event";

/// Handover-protocol events: another app passed, took or asked for thread control.
const HANDOVER: [&str; 4] = [
    "pass_thread_control",
    "take_thread_control",
    "request_thread_control",
    "app_roles",
];

/// Normalizes one delivery body (already authenticated by the caller) of `kind`
/// (Messenger: `object = "page"`, Instagram: `object = "instagram"`).
pub(crate) fn normalize(body: &[u8], kind: ChannelKind) -> Result<Normalized, NormalizeError> {
    let root: Value = serde_json::from_slice(body)?;
    let Some(entries) = root.get("entry").and_then(Value::as_array) else {
        return Err(NormalizeError::Envelope("no `entry` array".into()));
    };
    let expected = object_of(kind);
    let mut out = Normalized::default();
    match root.get("object").and_then(Value::as_str) {
        Some(object) if object == expected => {}
        Some(other) => {
            out.unhandled
                .push(unhandled(None, &format!("unknown_object:{other}"), &root));
            return Ok(out);
        }
        None => return Err(NormalizeError::Envelope("no `object` string".into())),
    }
    for entry in entries {
        let Some(account) = id_of(entry.get("id")) else {
            out.unhandled
                .push(unhandled(None, "malformed_entry", entry));
            continue;
        };
        let mut known = false;
        for (key, standby) in [("messaging", false), ("standby", true)] {
            let Some(items) = entry.get(key).and_then(Value::as_array) else {
                continue;
            };
            known = true;
            for item in items {
                match event(&account, item) {
                    Ok(mut event) => {
                        if standby {
                            event.body = EventBody::Standby(Standby {
                                body: Box::new(event.body),
                            });
                        }
                        out.events.push(event);
                    }
                    Err(reason) => out.unhandled.push(unhandled(Some(&account), &reason, item)),
                }
            }
        }
        // Comments, mentions and other `changes[]` fields are not conversations.
        if let Some(changes) = entry.get("changes").and_then(Value::as_array) {
            known = true;
            for change in changes {
                let field = change.get("field").and_then(Value::as_str).unwrap_or("?");
                out.unhandled.push(unhandled(
                    Some(&account),
                    &format!("unknown_field:{field}"),
                    change,
                ));
            }
        }
        if !known {
            out.unhandled
                .push(unhandled(Some(&account), "malformed_entry", entry));
        }
    }
    Ok(out)
}

/// The webhook `object` of a platform's deliveries.
pub(crate) fn object_of(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Instagram => "instagram",
        _ => "page",
    }
}

/// Maps one `messaging[]` item addressed to `account`; `Err` holds the reason.
fn event(account: &str, item: &Value) -> Result<InboundEvent, String> {
    let sender = participant(item.get("sender")).ok_or(MALFORMED)?;
    let recipient = participant(item.get("recipient"));
    // Milliseconds on Meta's messaging webhooks; the model keeps seconds.
    let millis = item.get("timestamp").and_then(as_i64).unwrap_or(0);
    let timestamp = millis / 1000;
    let event = |external_id: String, body: EventBody| InboundEvent {
        external_id,
        account_id: account.to_owned(),
        timestamp,
        body,
    };
    let chat = sender.id.clone();

    if let Some(message) = item.get("message").filter(|m| m.is_object()) {
        let mid = text_of(message.get("mid")).ok_or(MALFORMED)?;
        if flag(message, "is_echo") {
            // Sent by the business: sender is the account, recipient the customer.
            let recipient = recipient.ok_or(MALFORMED)?;
            return Ok(event(
                mid.clone(),
                EventBody::Echo(Echo {
                    chat: recipient.id.clone(),
                    recipient,
                    content: content(message)?,
                    app_id: id_of(message.get("app_id")),
                    metadata: text_of(message.get("metadata")),
                }),
            ));
        }
        if flag(message, "is_deleted") {
            return Ok(event(
                format!("deleted:{mid}"),
                EventBody::Delete(Delete {
                    chat,
                    sender: Some(sender),
                    target: mid,
                }),
            ));
        }
        let reply_to = message
            .pointer("/reply_to/mid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        return Ok(event(
            mid,
            EventBody::Message(InboundMessage {
                chat,
                sender,
                content: content(message)?,
                reply_to,
                forwarded: false,
            }),
        ));
    }

    if let Some(postback) = item.get("postback").filter(|p| p.is_object()) {
        let id = text_of(postback.get("mid"))
            .unwrap_or_else(|| format!("postback:{}:{millis}", sender.id));
        return Ok(event(
            id,
            EventBody::Message(InboundMessage {
                chat,
                sender,
                content: Content::Postback {
                    title: text_of(postback.get("title")),
                    payload: text_of(postback.get("payload")),
                    referral: postback.get("referral").map(referral),
                },
                reply_to: None,
                forwarded: false,
            }),
        ));
    }

    if let Some(reaction) = item.get("reaction").filter(|r| r.is_object()) {
        let target = text_of(reaction.get("mid")).ok_or(MALFORMED)?;
        let action = text_of(reaction.get("action")).unwrap_or_else(|| "react".into());
        let emoji = (action != "unreact")
            .then(|| text_of(reaction.get("emoji")).or_else(|| text_of(reaction.get("reaction"))))
            .flatten();
        return Ok(event(
            format!("reaction:{target}:{}:{action}:{millis}", sender.id),
            EventBody::Reaction(Reaction {
                chat,
                sender,
                target,
                emoji,
            }),
        ));
    }

    if let Some(edit) = item.get("message_edit").filter(|e| e.is_object()) {
        let target = text_of(edit.get("mid")).ok_or(MALFORMED)?;
        let count = edit.get("num_edit").and_then(as_i64).unwrap_or(millis);
        return Ok(event(
            format!("edit:{target}:{count}"),
            EventBody::Edit(Edit {
                chat,
                sender,
                target,
                content: Content::Text {
                    body: text_of(edit.get("text")).unwrap_or_default(),
                },
            }),
        ));
    }

    for (key, status) in [
        ("read", DeliveryStatus::Read),
        ("delivery", DeliveryStatus::Delivered),
    ] {
        let Some(receipt) = item.get(key).filter(|r| r.is_object()) else {
            continue;
        };
        let watermark = receipt.get("watermark").and_then(as_i64);
        let mut message_ids: Vec<String> = receipt
            .get("mids")
            .and_then(Value::as_array)
            .map(|mids| mids.iter().filter_map(|m| text_of(Some(m))).collect())
            .unwrap_or_default();
        message_ids.extend(text_of(receipt.get("mid")));
        let mark = match (watermark, message_ids.first()) {
            (Some(w), _) => w.to_string(),
            (None, Some(first)) => first.clone(),
            (None, None) => return Err(MALFORMED.into()),
        };
        return Ok(event(
            format!("{key}:{}:{mark}", sender.id),
            EventBody::Receipt(Receipt {
                chat,
                status,
                watermark,
                message_ids,
            }),
        ));
    }

    if let Some(found) = item.get("referral").filter(|r| r.is_object()) {
        return Ok(event(
            format!("referral:{}:{millis}", sender.id),
            EventBody::Message(InboundMessage {
                chat,
                sender,
                content: Content::Referral(referral(found)),
                reply_to: None,
                forwarded: false,
            }),
        ));
    }

    if let Some(action) = HANDOVER.iter().find(|a| item.get(**a).is_some()) {
        return Ok(event(
            format!("{action}:{}:{millis}", sender.id),
            EventBody::Handover(Handover {
                chat,
                sender,
                action: (*action).to_owned(),
                raw: item.get(*action).cloned().unwrap_or_default(),
            }),
        ));
    }

    let kind = item
        .as_object()
        .and_then(|o| {
            o.keys()
                .find(|k| !["sender", "recipient", "timestamp"].contains(&k.as_str()))
        })
        .map_or("empty", String::as_str);
    Err(format!("unknown_event:{kind}"))
}

/// The content of a `message` object (also of an echo).
fn content(message: &Value) -> Result<Content, String> {
    let text = text_of(message.get("text"));
    if flag(message, "is_unsupported") {
        return Ok(Content::Unsupported {
            reason: "unsupported".into(),
            code: None,
            raw: message.clone(),
        });
    }
    if let Some(payload) = message
        .pointer("/quick_reply/payload")
        .and_then(Value::as_str)
    {
        return Ok(Content::QuickReply {
            text: text.unwrap_or_default(),
            payload: payload.to_owned(),
        });
    }
    if let Some(story) = message.pointer("/reply_to/story").filter(|s| s.is_object()) {
        return Ok(Content::StoryReply {
            body: text.unwrap_or_default(),
            story_id: id_of(story.get("id")),
            url: text_of(story.get("url")),
        });
    }
    let attachments = message
        .get("attachments")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !attachments.is_empty() {
        let mut items: Vec<Media> = attachments.iter().map(media).collect();
        if let (Some(text), Some(first)) = (text, items.first_mut()) {
            first.caption.get_or_insert(text);
        }
        return Ok(match items.len() {
            1 => Content::Media(items.remove(0)),
            _ => Content::Attachments { items },
        });
    }
    match text {
        Some(body) => Ok(Content::Text { body }),
        None => Ok(Content::Unsupported {
            reason: "empty_message".into(),
            code: None,
            raw: message.clone(),
        }),
    }
}

fn media(attachment: &Value) -> Media {
    let kind = match attachment.get("type").and_then(Value::as_str) {
        Some("image") => MediaKind::Image,
        Some("video") => MediaKind::Video,
        Some("audio") => MediaKind::Audio,
        Some("file") => MediaKind::Document,
        Some("sticker") => MediaKind::Sticker,
        Some("share" | "ig_post" | "post") => MediaKind::Share,
        Some("reel" | "ig_reel") => MediaKind::Reel,
        Some("story_mention") => MediaKind::StoryMention,
        Some("story" | "ig_story") => MediaKind::Story,
        _ => MediaKind::Fallback,
    };
    let payload = attachment.get("payload");
    let url = payload
        .and_then(|p| text_of(p.get("url")))
        .or_else(|| text_of(attachment.get("url")));
    Media {
        kind,
        media_id: payload.and_then(|p| {
            id_of(p.get("attachment_id"))
                .or_else(|| id_of(p.get("reel_video_id")))
                .or_else(|| id_of(p.get("sticker_id")))
        }),
        url,
        mime_type: None,
        sha256: None,
        caption: payload
            .and_then(|p| text_of(p.get("title")))
            .or_else(|| text_of(attachment.get("title"))),
        filename: None,
        voice: false,
        animated: false,
    }
}

fn referral(value: &Value) -> Referral {
    Referral {
        reference: text_of(value.get("ref")),
        source: text_of(value.get("source")),
        kind: text_of(value.get("type")),
        ad_id: id_of(value.get("ad_id")),
    }
}

/// `sender` / `recipient`: `{"id"}`, or `{"user_ref"}` for the chat plugin.
fn participant(value: Option<&Value>) -> Option<Participant> {
    let value = value?;
    let id = id_of(value.get("id")).or_else(|| text_of(value.get("user_ref")))?;
    Some(Participant {
        id,
        phone: None,
        name: None,
        username: None,
    })
}

fn flag(object: &Value, key: &str) -> bool {
    object.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A non-empty string.
fn text_of(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An id, which Meta sends as a string and occasionally as a number.
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Number(n) => Some(n.to_string()),
        other => text_of(Some(other)),
    }
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn unhandled(account_id: Option<&str>, reason: &str, raw: &Value) -> Unhandled {
    Unhandled {
        account_id: account_id.map(str::to_owned),
        reason: reason.to_owned(),
        raw: raw.clone(),
    }
}
