//! Inbound step for Telegram: one webhook `Update` (teloxide's type) into events of
//! the common model. Pure: no I/O, no logging of content.
//!
//! Event ids: a message is `{chat}:{message_id}` (message ids are unique per chat,
//! so a redelivered update repeats it and the inbox drops the copy); every other
//! update is keyed by its `update_id`.

use serde_json::Value;
use teloxide_core::types::{
    CallbackQuery, ChatMemberUpdated, MediaKind as TgMedia, Message, MessageEntityKind,
    MessageKind, Update, UpdateKind, User,
};

use crate::model::{
    Content, Edit, EventBody, InboundEvent, InboundMessage, Location, Media, MediaKind, Normalized,
    Participant, Reachability, SharedContact, Unhandled,
};
use crate::NormalizeError;

/// Who the bot is, to tell whether a group message is addressed to it.
#[derive(Debug, Clone, Default)]
pub struct BotIdentity {
    /// Numeric user id of the bot (the token's prefix).
    pub id: Option<u64>,
    /// `username` without the `@`.
    pub username: Option<String>,
}

/// Normalizes one update body (already authenticated by the caller).
pub fn normalize_update(bot: &BotIdentity, body: &[u8]) -> Result<Normalized, NormalizeError> {
    let raw: Value = serde_json::from_slice(body)?;
    let update_id = raw
        .get("update_id")
        .and_then(Value::as_u64)
        .ok_or_else(|| NormalizeError::Envelope("no `update_id`".into()))?;
    let account_id = bot.id.map(|id| id.to_string()).unwrap_or_default();
    let mut out = Normalized::default();
    // From the bytes: teloxide's `UpdateKind` does not read back from a `Value`.
    let update: Update = match serde_json::from_slice(body) {
        Ok(update) => update,
        Err(_) => {
            out.unhandled
                .push(unhandled(&account_id, "unreadable_update", raw));
            return Ok(out);
        }
    };
    let event = |external_id: String, timestamp: i64, body: EventBody| InboundEvent {
        external_id,
        account_id: account_id.clone(),
        timestamp,
        body,
    };
    match &update.kind {
        UpdateKind::Message(message) => {
            if !is_addressed(bot, message) {
                // Group talk not meant for the bot: not part of any conversation of
                // ours (the raw delivery is kept with the envelope only).
                return Ok(out);
            }
            let Some(sender) = message.from.as_ref() else {
                out.unhandled
                    .push(unhandled(&account_id, "message_without_sender", raw));
                return Ok(out);
            };
            let content = content(message, &raw);
            out.events.push(event(
                message_key(message),
                message.date.timestamp(),
                EventBody::Message(InboundMessage {
                    chat: conversation(message),
                    sender: participant(sender),
                    content,
                    reply_to: message.reply_to_message().map(message_key),
                    forwarded: message.forward_origin().is_some(),
                }),
            ));
        }
        UpdateKind::EditedMessage(message) => {
            if !is_addressed(bot, message) {
                return Ok(out);
            }
            let Some(sender) = message.from.as_ref() else {
                out.unhandled
                    .push(unhandled(&account_id, "message_without_sender", raw));
                return Ok(out);
            };
            let at = message.edit_date().unwrap_or(&message.date).timestamp();
            out.events.push(event(
                update_id.to_string(),
                at,
                EventBody::Edit(Edit {
                    chat: conversation(message),
                    sender: participant(sender),
                    target: message_key(message),
                    content: content(message, &raw),
                }),
            ));
        }
        UpdateKind::CallbackQuery(query) => match callback(query) {
            Some((chat, content)) => out.events.push(event(
                update_id.to_string(),
                query
                    .message
                    .as_ref()
                    .and_then(|m| m.regular_message())
                    .map_or(0, |m| m.date.timestamp()),
                EventBody::Message(InboundMessage {
                    chat,
                    sender: participant(&query.from),
                    content,
                    reply_to: None,
                    forwarded: false,
                }),
            )),
            None => out
                .unhandled
                .push(unhandled(&account_id, "callback_query_without_chat", raw)),
        },
        UpdateKind::MyChatMember(member) => match reachability(member) {
            Some(body) => {
                out.events
                    .push(event(update_id.to_string(), member.date.timestamp(), body))
            }
            None => out
                .unhandled
                .push(unhandled(&account_id, "my_chat_member", raw)),
        },
        other => {
            let reason = match other {
                UpdateKind::Error(_) => "unknown_update".to_string(),
                _ => "unhandled_update".to_string(),
            };
            out.unhandled.push(unhandled(&account_id, &reason, raw));
        }
    }
    Ok(out)
}

/// The webhook answer that acknowledges a callback query (`answerCallbackQuery`
/// sent as the response body, as the Bot API allows), so the button's spinner stops.
pub fn callback_answer(body: &[u8]) -> Option<Value> {
    let update: Update = serde_json::from_slice(body).ok()?;
    match update.kind {
        UpdateKind::CallbackQuery(query) => Some(serde_json::json!({
            "method": "answerCallbackQuery",
            "callback_query_id": query.id.0,
        })),
        _ => None,
    }
}

fn unhandled(account_id: &str, reason: &str, raw: Value) -> Unhandled {
    Unhandled {
        account_id: (!account_id.is_empty()).then(|| account_id.to_string()),
        reason: reason.into(),
        raw,
    }
}

/// `{chat}:{message_id}`: a message's id as the rest of omnigate sees it.
fn message_key(message: &Message) -> String {
    format!("{}:{}", message.chat.id.0, message.id.0)
}

/// The conversation a message belongs to: the chat, or its forum topic.
fn conversation(message: &Message) -> String {
    match message.thread_id {
        Some(thread) if message.is_topic_message => {
            format!("{}:{}", message.chat.id.0, thread.0 .0)
        }
        _ => message.chat.id.0.to_string(),
    }
}

fn participant(user: &User) -> Participant {
    Participant {
        id: user.id.0.to_string(),
        phone: None,
        name: Some(user.full_name()),
        username: user.username.clone(),
    }
}

/// Whether the bot should take this message: always in private chats; in groups
/// only commands (for it), replies to it and mentions of it.
fn is_addressed(bot: &BotIdentity, message: &Message) -> bool {
    if message.chat.is_private() {
        return true;
    }
    if let (Some(id), Some(parent)) = (bot.id, message.reply_to_message()) {
        if parent.from.as_ref().is_some_and(|u| u.id.0 == id) {
            return true;
        }
    }
    let text = message.text().or(message.caption()).unwrap_or_default();
    let entities = message
        .entities()
        .or(message.caption_entities())
        .unwrap_or_default();
    let username = bot.username.as_deref().map(str::to_lowercase);
    entities.iter().any(|entity| {
        let part = utf16_slice(text, entity.offset, entity.length).to_lowercase();
        match &entity.kind {
            MessageEntityKind::BotCommand => {
                entity.offset == 0
                    && match part.split_once('@') {
                        Some((_, target)) => username.as_deref() == Some(target),
                        None => true,
                    }
            }
            MessageEntityKind::Mention => username
                .as_deref()
                .is_some_and(|u| part.strip_prefix('@') == Some(u)),
            MessageEntityKind::TextMention { user } => bot.id == Some(user.id.0),
            _ => false,
        }
    })
}

/// Entity offsets and lengths count UTF-16 code units.
fn utf16_slice(text: &str, offset: usize, length: usize) -> String {
    let units: Vec<u16> = text.encode_utf16().skip(offset).take(length).collect();
    String::from_utf16_lossy(&units)
}

fn content(message: &Message, raw: &Value) -> Content {
    let caption = message.caption().map(str::to_string);
    let media = |kind, media_id: &str, mime: Option<String>, filename: Option<String>| Media {
        kind,
        media_id: Some(media_id.to_string()),
        url: None,
        mime_type: mime,
        sha256: None,
        caption: caption.clone(),
        filename,
        voice: false,
        animated: false,
    };
    let MessageKind::Common(common) = &message.kind else {
        return unsupported("service_message", raw);
    };
    match &common.media_kind {
        TgMedia::Text(text) => Content::Text {
            body: text.text.clone(),
        },
        // The area in u64: two u32 sides overflow u32.
        TgMedia::Photo(photo) => match photo
            .photo
            .iter()
            .max_by_key(|p| u64::from(p.width) * u64::from(p.height))
        {
            Some(largest) => {
                Content::Media(media(MediaKind::Image, &largest.file.id.0, None, None))
            }
            None => unsupported("photo_without_sizes", raw),
        },
        TgMedia::Document(doc) => Content::Media(media(
            MediaKind::Document,
            &doc.document.file.id.0,
            doc.document.mime_type.as_ref().map(ToString::to_string),
            doc.document.file_name.clone(),
        )),
        TgMedia::Animation(anim) => Content::Media(Media {
            animated: true,
            ..media(
                MediaKind::Video,
                &anim.animation.file.id.0,
                anim.animation.mime_type.as_ref().map(ToString::to_string),
                anim.animation.file_name.clone(),
            )
        }),
        TgMedia::Audio(audio) => Content::Media(media(
            MediaKind::Audio,
            &audio.audio.file.id.0,
            audio.audio.mime_type.as_ref().map(ToString::to_string),
            audio.audio.file_name.clone(),
        )),
        TgMedia::Voice(voice) => Content::Media(Media {
            voice: true,
            ..media(
                MediaKind::Audio,
                &voice.voice.file.id.0,
                voice.voice.mime_type.as_ref().map(ToString::to_string),
                None,
            )
        }),
        TgMedia::Video(video) => Content::Media(media(
            MediaKind::Video,
            &video.video.file.id.0,
            video.video.mime_type.as_ref().map(ToString::to_string),
            video.video.file_name.clone(),
        )),
        TgMedia::VideoNote(note) => Content::Media(media(
            MediaKind::Video,
            &note.video_note.file.id.0,
            None,
            None,
        )),
        TgMedia::Sticker(sticker) => Content::Media(Media {
            animated: sticker.sticker.is_animated() || sticker.sticker.is_video(),
            ..media(MediaKind::Sticker, &sticker.sticker.file.id.0, None, None)
        }),
        TgMedia::Location(location) => Content::Location(Location {
            latitude: location.location.latitude,
            longitude: location.location.longitude,
            name: None,
            address: None,
            url: None,
        }),
        TgMedia::Venue(venue) => Content::Location(Location {
            latitude: venue.venue.location.latitude,
            longitude: venue.venue.location.longitude,
            name: Some(venue.venue.title.clone()),
            address: Some(venue.venue.address.clone()),
            url: None,
        }),
        TgMedia::Contact(contact) => {
            let c = &contact.contact;
            let name = match &c.last_name {
                Some(last) => format!("{} {last}", c.first_name),
                None => c.first_name.clone(),
            };
            Content::Contacts {
                contacts: vec![SharedContact {
                    name,
                    phones: vec![c.phone_number.clone()],
                    emails: vec![],
                }],
            }
        }
        _ => unsupported("unsupported_message", raw),
    }
}

fn unsupported(reason: &str, raw: &Value) -> Content {
    Content::Unsupported {
        reason: reason.into(),
        code: None,
        raw: raw.clone(),
    }
}

/// A button tap: the chat of the message holding the button, and the button's data.
fn callback(query: &CallbackQuery) -> Option<(String, Content)> {
    let message = query.message.as_ref()?;
    let chat = match message.regular_message() {
        Some(m) => conversation(m),
        None => message.chat().id.0.to_string(),
    };
    let data = query
        .data
        .clone()
        .or_else(|| query.game_short_name.clone())?;
    Some((
        chat,
        Content::InteractiveReply {
            id: data.clone(),
            title: data,
            description: None,
        },
    ))
}

/// In a private chat `my_chat_member` means the user blocked (`kicked`) or
/// unblocked (`member`) the bot.
fn reachability(update: &ChatMemberUpdated) -> Option<EventBody> {
    if !update.chat.is_private() {
        return None;
    }
    let kind = &update.new_chat_member.kind;
    let reachable = if kind.is_banned() || kind.is_left() {
        false
    } else if kind.is_member() {
        true
    } else {
        return None;
    };
    Some(EventBody::Reachability(Reachability {
        chat: update.chat.id.0.to_string(),
        sender: participant(&update.from),
        reachable,
    }))
}
