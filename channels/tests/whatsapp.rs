//! WhatsApp channel: normalization of every fixture in `fixtures/whatsapp/`, and sends
//! against a fake Graph API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use channels::whatsapp::{classify_error, WhatsApp};
use channels::*;
use secrecy::SecretString;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PNID: &str = "106540352242922";
const USER: &str = "16505551234";
const TOKEN: &str = "EAAG-test-token-do-not-log";

// ---------------------------------------------------------------------------------
// Normalization helpers

fn channel() -> WhatsApp {
    WhatsApp::new(reqwest::Client::new(), "http://127.0.0.1:9", "v23.0")
}

fn normalize_bytes(body: &[u8]) -> Result<Normalized, NormalizeError> {
    const SECRET: &[u8] = b"fixture-app-secret";
    let signature = webhooks::meta::sign(SECRET, body);
    let verified = webhooks::meta::verify_signature(SECRET, Some(signature.as_bytes()), body)
        .expect("a freshly signed body verifies");
    channel().normalize(verified)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/whatsapp/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).expect("fixture is JSON")
}

fn normalize_fixture(name: &str) -> Normalized {
    let normalized = normalize_bytes(&fixture_bytes(name)).expect("fixture normalizes");
    // Events travel through the gateway's durable inbox as JSON.
    let json = serde_json::to_string(&normalized).expect("serializes");
    let back: Normalized = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, normalized, "{name}: serde roundtrip");
    normalized
}

/// The single event of a fixture that must produce exactly one event and nothing else.
fn only_event(name: &str) -> InboundEvent {
    let mut normalized = normalize_fixture(name);
    assert!(
        normalized.unhandled.is_empty(),
        "{name}: {:?}",
        normalized.unhandled
    );
    assert_eq!(
        normalized.events.len(),
        1,
        "{name}: {:?}",
        normalized.events
    );
    normalized.events.remove(0)
}

/// `entry[e].changes[c].value.messages[m]` of a fixture.
fn raw_message(name: &str, e: usize, c: usize, m: usize) -> Value {
    fixture_json(name)["entry"][e]["changes"][c]["value"]["messages"][m].clone()
}

fn sheena() -> Participant {
    Participant {
        id: USER.into(),
        phone: Some(USER.into()),
        name: Some("Sheena Nelson".into()),
        username: None,
    }
}

fn message_event(id: &str, timestamp: i64, content: Content) -> InboundEvent {
    InboundEvent {
        external_id: id.into(),
        account_id: PNID.into(),
        timestamp,
        body: EventBody::Message(InboundMessage {
            chat: USER.into(),
            sender: sheena(),
            content,
            reply_to: None,
            forwarded: false,
        }),
    }
}

fn with_reply_to(mut event: InboundEvent, reply_to: &str) -> InboundEvent {
    if let EventBody::Message(m) = &mut event.body {
        m.reply_to = Some(reply_to.into());
    }
    event
}

fn media(kind: MediaKind) -> Media {
    Media {
        kind,
        media_id: None,
        url: None,
        mime_type: None,
        sha256: None,
        caption: None,
        filename: None,
        voice: false,
        animated: false,
    }
}

fn status_event(id: &str, status: &str, timestamp: i64, delivery: DeliveryStatus) -> InboundEvent {
    InboundEvent {
        external_id: format!("{id}:{status}"),
        account_id: PNID.into(),
        timestamp,
        body: EventBody::Status(StatusUpdate {
            message_id: id.into(),
            status: delivery,
            recipient: Some(USER.into()),
            error: None,
        }),
    }
}

// ---------------------------------------------------------------------------------
// Inbound messages, one test per fixture

#[test]
fn text() {
    assert_eq!(
        only_event("text.json"),
        message_event(
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            1749416383,
            Content::Text {
                body: "Does it come in another color?".into()
            },
        )
    );
}

#[test]
fn image() {
    let event = only_event("image.json");
    assert_eq!(
        event,
        message_event(
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            1744344496,
            Content::Media(Media {
                media_id: Some("1003383421387256".into()),
                url: Some(
                    "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=133...".into()
                ),
                mime_type: Some("image/jpeg".into()),
                sha256: Some("SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=".into()),
                caption: Some("Taj Mahal".into()),
                ..media(MediaKind::Image)
            }),
        )
    );
    let EventBody::Message(m) = &event.body else {
        unreachable!()
    };
    assert_eq!(
        (m.content.kind(), m.content.text()),
        ("image", Some("Taj Mahal"))
    );
}

#[test]
fn interactive_button_reply() {
    assert_eq!(
        only_event("interactive-button-reply.json"),
        with_reply_to(
            message_event(
                "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTZBQzg0MzQ4QjRCM0NGNkVGOAA=",
                1750025136,
                Content::InteractiveReply {
                    id: "cancel-button".into(),
                    title: "Cancel".into(),
                    description: None,
                },
            ),
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEM2RUJFNkI0RENGQTVDRjUA",
        )
    );
}

#[test]
fn interactive_list_reply() {
    assert_eq!(
        only_event("interactive-list-reply.json"),
        with_reply_to(
            message_event(
                "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
                1749854575,
                Content::InteractiveReply {
                    id: "priority_express".into(),
                    title: "Priority Mail Express".into(),
                    description: Some("Next Day to 2 Days".into()),
                },
            ),
            "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA=",
        )
    );
}

#[test]
fn interactive_nfm_reply_is_unsupported() {
    let name = "interactive-nfm-reply.json";
    assert_eq!(
        only_event(name),
        with_reply_to(
            message_event(
                "wamid.nfm-01",
                1750031100,
                Content::Unsupported {
                    reason: "interactive:nfm_reply".into(),
                    code: None,
                    raw: raw_message(name, 0, 0, 0),
                },
            ),
            "wamid.flow-host-01",
        )
    );
}

#[test]
fn audio_voice_note() {
    assert_eq!(
        only_event("audio-voice.json"),
        message_event(
            "wamid.audio-voice-01",
            1750030100,
            Content::Media(Media {
                media_id: Some("1013859600285441".into()),
                url: Some(
                    "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1013859600285441"
                        .into()
                ),
                mime_type: Some("audio/ogg; codecs=opus".into()),
                sha256: Some("Bq4jJ4oZ9dTxtFPs3YR5YxTrDOEcFi2z0A0Yl8TqXXk=".into()),
                voice: true,
                ..media(MediaKind::Audio)
            }),
        )
    );
}

#[test]
fn video() {
    assert_eq!(
        only_event("video.json"),
        message_event(
            "wamid.video-01",
            1750030200,
            Content::Media(Media {
                media_id: Some("1166846181421424".into()),
                mime_type: Some("video/mp4".into()),
                sha256: Some(
                    "fd9d8a4f5c1a3a6c39c0b1b5f27ac0b4e0b6a0f8b7f5e7c9d1e2f3a4b5c6d7e8=".into()
                ),
                caption: Some("Unboxing".into()),
                ..media(MediaKind::Video)
            }),
        )
    );
}

#[test]
fn document() {
    assert_eq!(
        only_event("document.json"),
        message_event(
            "wamid.document-01",
            1750030300,
            Content::Media(Media {
                media_id: Some("1003383421387257".into()),
                url: Some(
                    "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1003383421387257"
                        .into()
                ),
                mime_type: Some("application/pdf".into()),
                sha256: Some("Gf8x5cXkU1q3E0fK2m8g2a1m9Q0b4q4pC3v5sR0lX7s=".into()),
                caption: Some("Invoice for May".into()),
                filename: Some("invoice-2025-05.pdf".into()),
                ..media(MediaKind::Document)
            }),
        )
    );
}

#[test]
fn animated_sticker() {
    assert_eq!(
        only_event("sticker.json"),
        message_event(
            "wamid.sticker-01",
            1750030400,
            Content::Media(Media {
                media_id: Some("1234857301234567".into()),
                mime_type: Some("image/webp".into()),
                sha256: Some("pn8Y2gk3wv8xS5mF7hM9q0aR1eY2tB3nC4dE5fG6hI7=".into()),
                animated: true,
                ..media(MediaKind::Sticker)
            }),
        )
    );
}

#[test]
fn location() {
    assert_eq!(
        only_event("location.json"),
        message_event(
            "wamid.location-01",
            1750030500,
            Content::Location(Location {
                latitude: 37.483307,
                longitude: -122.148981,
                name: Some("Main Street Cafe".into()),
                address: Some("1 Hacker Way, Menlo Park, CA 94025".into()),
                url: Some("https://www.example.com".into()),
            }),
        )
    );
}

#[test]
fn shared_contacts() {
    assert_eq!(
        only_event("contacts.json"),
        message_event(
            "wamid.contacts-01",
            1750030600,
            Content::Contacts {
                contacts: vec![
                    SharedContact {
                        name: "Barbara J. Johnson".into(),
                        phones: vec!["+1 (940) 555-1234".into(), "+1 (650) 555-1234".into()],
                        emails: vec!["barbara@example.com".into()],
                    },
                    SharedContact {
                        name: "Omar Haddad".into(),
                        phones: vec!["+44 20 7946 0000".into()],
                        emails: vec![],
                    },
                ],
            },
        )
    );
}

#[test]
fn template_button() {
    assert_eq!(
        only_event("button.json"),
        with_reply_to(
            message_event(
                "wamid.button-01",
                1750030700,
                Content::Button {
                    text: "Stop promotions".into(),
                    payload: Some("STOP_PROMOTIONS".into()),
                },
            ),
            "wamid.template-host-01",
        )
    );
}

#[test]
fn system_notice_without_contacts() {
    let mut expected = message_event(
        "wamid.system-01",
        1750030800,
        Content::System {
            body: "User Sheena Nelson changed from 16505551234 to 16505559999".into(),
        },
    );
    // No `contacts` array on system messages: the sender is known by `from` only.
    if let EventBody::Message(m) = &mut expected.body {
        m.sender.name = None;
    }
    assert_eq!(only_event("system.json"), expected);
}

#[test]
fn unsupported_type_keeps_code_and_raw() {
    let name = "unsupported.json";
    assert_eq!(
        only_event(name),
        message_event(
            "wamid.unsupported-01",
            1750030900,
            Content::Unsupported {
                reason: "unsupported".into(),
                code: Some(131051),
                raw: raw_message(name, 0, 0, 0),
            },
        )
    );
}

#[test]
fn unknown_type_order() {
    let name = "order.json";
    assert_eq!(
        only_event(name),
        message_event(
            "wamid.order-01",
            1750031000,
            Content::Unsupported {
                reason: "type:order".into(),
                code: None,
                raw: raw_message(name, 0, 0, 0),
            },
        )
    );
}

#[test]
fn forwarded_and_frequently_forwarded() {
    let normalized = normalize_fixture("text-forwarded.json");
    assert!(normalized.unhandled.is_empty());
    let forwarded = |mut e: InboundEvent| {
        if let EventBody::Message(m) = &mut e.body {
            m.forwarded = true;
        }
        e
    };
    assert_eq!(
        normalized.events,
        vec![
            forwarded(message_event(
                "wamid.forwarded-01",
                1750031200,
                Content::Text {
                    body: "Look at this".into()
                }
            )),
            forwarded(message_event(
                "wamid.forwarded-02",
                1750031201,
                Content::Text {
                    body: "Chain letter".into()
                }
            )),
        ]
    );
}

// ---------------------------------------------------------------------------------
// Reactions, edits, deletes, usernames

fn test_name() -> Participant {
    Participant {
        id: "972987654321".into(),
        phone: Some("972987654321".into()),
        name: Some("Test Name".into()),
        username: None,
    }
}

#[test]
fn reaction() {
    assert_eq!(
        only_event("reaction.json"),
        InboundEvent {
            external_id: "wamid.xyzxyz".into(),
            account_id: "1122334455667".into(),
            timestamp: 1697044456,
            body: EventBody::Reaction(Reaction {
                chat: "972987654321".into(),
                sender: test_name(),
                target: "wamid.yzxyzx=".into(),
                emoji: Some("😮".into()),
            }),
        }
    );
}

#[test]
fn reaction_removed_with_empty_or_missing_emoji() {
    let normalized = normalize_fixture("reaction-removed.json");
    assert!(normalized.unhandled.is_empty());
    let removal = |id: &str, timestamp, target: &str| InboundEvent {
        external_id: id.into(),
        account_id: PNID.into(),
        timestamp,
        body: EventBody::Reaction(Reaction {
            chat: USER.into(),
            sender: sheena(),
            target: target.into(),
            emoji: None,
        }),
    };
    assert_eq!(
        normalized.events,
        vec![
            removal("wamid.unreact-01", 1750031300, "wamid.reply-01"),
            removal("wamid.unreact-02", 1750031301, "wamid.reply-02"),
        ]
    );
}

#[test]
fn edit() {
    assert_eq!(
        only_event("edit.json"),
        InboundEvent {
            external_id: "wamid.yyyyyy".into(),
            account_id: "1122334455667".into(),
            timestamp: 1697044968,
            body: EventBody::Edit(Edit {
                chat: "972987654321".into(),
                sender: test_name(),
                target: "wamid.zzzzzz".into(),
                content: Content::Text {
                    body: "Text was edited".into()
                },
            }),
        }
    );
}

#[test]
fn revoke_with_business_scoped_user_id() {
    // The fixture keeps pywa's placeholders: `from` does not match the one contact's
    // `wa_id`, so the only contact is the sender.
    assert_eq!(
        only_event("revoke.json"),
        InboundEvent {
            external_id: "<WHATSAPP_MESSAGE_ID>".into(),
            account_id: "<BUSINESS_PHONE_NUMBER_ID>".into(),
            timestamp: 1697043223,
            body: EventBody::Delete(Delete {
                chat: "972987654321".into(),
                sender: Some(Participant {
                    id: "US.13491208655302741918".into(),
                    ..test_name()
                }),
                target: "<ORIGINAL_WHATSAPP_MESSAGE_ID>".into(),
            }),
        }
    );
}

#[test]
fn username_user_without_phone_number() {
    let event = only_event("bsuid-only.json");
    assert_eq!(
        event,
        InboundEvent {
            external_id: "wamid.bsuid-01".into(),
            account_id: PNID.into(),
            timestamp: 1779372805,
            body: EventBody::Message(InboundMessage {
                chat: "US.13491208655302741918".into(),
                sender: Participant {
                    id: "US.13491208655302741918".into(),
                    phone: None,
                    name: Some("Maria Lopez".into()),
                    username: Some("@maria.lopez".into()),
                },
                content: Content::Text {
                    body: "Hi, it's me".into()
                },
                reply_to: None,
                forwarded: false,
            }),
        }
    );
    assert_eq!(event.chat(), Some("US.13491208655302741918"));
}

// ---------------------------------------------------------------------------------
// Statuses and account errors

#[test]
fn status_sent() {
    assert_eq!(
        only_event("status-sent.json"),
        status_event(
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
            "sent",
            1750030073,
            DeliveryStatus::Sent,
        )
    );
}

#[test]
fn status_delivered() {
    assert_eq!(
        only_event("status-delivered.json"),
        status_event(
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA",
            "delivered",
            1750263773,
            DeliveryStatus::Delivered,
        )
    );
}

#[test]
fn status_read_v24() {
    let event = only_event("status-read-v24.json");
    assert_eq!(
        event,
        status_event(
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
            "read",
            1750030073,
            DeliveryStatus::Read,
        )
    );
    assert_eq!((event.kind(), event.chat()), ("status", Some(USER)));
}

#[test]
fn status_played_counts_as_read() {
    assert_eq!(
        only_event("status-played.json"),
        status_event(
            "wamid.voice-out-01",
            "played",
            1750031400,
            DeliveryStatus::Read
        )
    );
}

#[test]
fn status_failed_carries_the_error() {
    let mut expected = status_event(
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QUQ2MjA4NEYyRkExNjMyREUA",
        "failed",
        1751142888,
        DeliveryStatus::Failed,
    );
    if let EventBody::Status(s) = &mut expected.body {
        s.error = Some(PlatformError {
            code: Some(131049),
            title: Some(
                "This message was not delivered to maintain healthy ecosystem engagement.".into(),
            ),
            detail: Some(
                "In order to maintain a healthy ecosystem engagement, the message failed to be delivered."
                    .into(),
            ),
        });
    }
    assert_eq!(only_event("status-failed.json"), expected);
}

#[test]
fn account_level_error_has_a_stable_content_id() {
    let name = "system-error-rate-limit.json";
    let event = only_event(name);
    // Compact JSON (keys sorted) of the error object, then the entry id.
    let canonical = r#"{"code":130429,"error_data":{"details":"Message failed to send because there were too many messages sent from this phone number in a short period of time"},"href":"/documentation/business-messaging/whatsapp/support/error-codes","message":"Rate limit hit","title":"Rate limit hit"}"#;
    let digest = Sha256::new()
        .chain_update(canonical)
        .chain_update("102290129340398")
        .finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        event,
        InboundEvent {
            external_id: format!("error:{hex}"),
            account_id: PNID.into(),
            timestamp: 0,
            body: EventBody::AccountError(PlatformError {
                code: Some(130429),
                title: Some("Rate limit hit".into()),
                detail: Some(
                    "Message failed to send because there were too many messages sent from this phone number in a short period of time"
                        .into()
                ),
            }),
        }
    );
    assert_eq!((event.kind(), event.chat()), ("account_error", None));

    // Redelivered (even re-encoded) → same id; another entry → another id.
    let reencoded = serde_json::to_vec_pretty(&fixture_json(name)).expect("serializes");
    assert_eq!(
        normalize_bytes(&reencoded).expect("normalizes").events,
        vec![event.clone()]
    );
    let mut other = fixture_json(name);
    other["entry"][0]["id"] = json!("999");
    let other = normalize_bytes(&serde_json::to_vec(&other).expect("serializes")).expect("ok");
    assert_ne!(other.events[0].external_id, event.external_id);
}

#[test]
fn unknown_field_is_unhandled_with_the_change() {
    let name = "account-update.json";
    let normalized = normalize_fixture(name);
    assert!(normalized.events.is_empty());
    assert_eq!(
        normalized.unhandled,
        vec![Unhandled {
            account_id: None,
            reason: "unknown_field:account_update".into(),
            raw: fixture_json(name)["entry"][0]["changes"][0].clone(),
        }]
    );
}

#[test]
fn user_preferences_stop_and_resume_are_marketing_consent_signals() {
    let event = only_event("user-preferences.json");
    assert_eq!(
        event,
        InboundEvent {
            external_id: format!("user_preferences:{USER}:1731705721:stop"),
            account_id: "106540352242922".into(),
            timestamp: 1731705721,
            body: EventBody::Consent(ConsentSignal {
                chat: USER.into(),
                sender: sheena(),
                purpose: "marketing".into(),
                granted: false,
                signal: "user_preferences".into(),
            }),
        }
    );
    let mut resume = fixture_json("user-preferences.json");
    let item = "/entry/0/changes/0/value/user_preferences/0";
    if let Some(v) = resume.pointer_mut(&format!("{item}/value")) {
        *v = "resume".into();
    }
    if let Some(v) = resume.pointer_mut(&format!("{item}/timestamp")) {
        *v = "1731705800".into();
    }
    let normalized = normalize_bytes(resume.to_string().as_bytes()).expect("normalize");
    let EventBody::Consent(signal) = &normalized.events[0].body else {
        panic!("{normalized:?}");
    };
    assert!(signal.granted);
    assert_eq!(normalized.events[0].timestamp, 1731705800);
    // An unknown preference value is kept raw, not guessed.
    if let Some(v) = resume.pointer_mut(&format!("{item}/value")) {
        *v = "maybe".into();
    }
    let normalized = normalize_bytes(resume.to_string().as_bytes()).expect("normalize");
    assert!(normalized.events.is_empty());
    assert_eq!(normalized.unhandled[0].reason, "unknown_preference:maybe");
}

// ---------------------------------------------------------------------------------
// Batches and robustness

#[test]
fn batch_yields_every_item_of_every_entry_in_order() {
    let normalized = normalize_fixture("batch.json");
    assert!(
        normalized.unhandled.is_empty(),
        "{:?}",
        normalized.unhandled
    );
    let summary: Vec<(&str, &str, &str, Option<&str>, i64)> = normalized
        .events
        .iter()
        .map(|e| {
            (
                e.kind(),
                e.external_id.as_str(),
                e.account_id.as_str(),
                e.chat(),
                e.timestamp,
            )
        })
        .collect();
    const PN2: &str = "106540352242923";
    const B: &str = "447700900123";
    assert_eq!(
        summary,
        vec![
            ("message", "wamid.batch-a1", PNID, Some(USER), 1750040001),
            ("message", "wamid.batch-b1", PNID, Some(B), 1750040002),
            ("reaction", "wamid.batch-a2", PNID, Some(USER), 1750040003),
            ("status", "wamid.out-1:sent", PNID, Some(USER), 1750040004),
            (
                "status",
                "wamid.out-1:delivered",
                PNID,
                Some(USER),
                1750040005
            ),
            ("status", "wamid.out-2:read", PNID, Some(B), 1750040006),
            ("message", "wamid.batch-a3", PN2, Some(USER), 1750040007),
            ("status", "wamid.out-3:failed", PN2, Some(USER), 1750040008),
            ("message", "wamid.batch-b2", PN2, Some(B), 1750040009),
            ("message", "wamid.batch-b3", PN2, Some(B), 1750040010),
        ]
    );
    // Each sender is matched to its own contact profile.
    let names: Vec<Option<&str>> = normalized
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Message(m) => Some(m.sender.name.as_deref()),
            EventBody::Reaction(r) => Some(r.sender.name.as_deref()),
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        [
            "Sheena Nelson",
            "Tom Baker",
            "Sheena Nelson",
            "Sheena Nelson",
            "Tom Baker",
            "Tom Baker"
        ]
        .map(Some)
    );
    let EventBody::Status(failed) = &normalized.events[7].body else {
        unreachable!()
    };
    assert_eq!(failed.error.as_ref().and_then(|e| e.code), Some(131026));
    let EventBody::Message(image) = &normalized.events[9].body else {
        unreachable!()
    };
    assert_eq!(image.content.kind(), "image");
}

#[test]
fn malformed_messages_do_not_drop_their_siblings() {
    let name = "malformed-in-batch.json";
    let normalized = normalize_fixture(name);
    let sender_only_from = Participant {
        name: None,
        ..sheena()
    };
    let text = |id: &str, timestamp, body: &str| InboundEvent {
        external_id: id.into(),
        account_id: PNID.into(),
        timestamp,
        body: EventBody::Message(InboundMessage {
            chat: USER.into(),
            sender: sender_only_from.clone(),
            content: Content::Text { body: body.into() },
            reply_to: None,
            forwarded: false,
        }),
    };
    assert_eq!(
        normalized.events,
        vec![
            text("wamid.ok-1", 1750050001, "before"),
            text("wamid.ok-2", 0, "after")
        ]
    );
    let malformed = |m| Unhandled {
        account_id: Some(PNID.into()),
        reason: "malformed_message".into(),
        raw: raw_message(name, 0, 0, m),
    };
    assert_eq!(
        normalized.unhandled,
        vec![malformed(1), malformed(2), malformed(3)]
    );
}

#[test]
fn body_that_is_not_json_is_an_error() {
    assert!(matches!(
        normalize_bytes(b"not json"),
        Err(NormalizeError::Json(_))
    ));
    assert!(matches!(normalize_bytes(b""), Err(NormalizeError::Json(_))));
    assert!(matches!(
        normalize_bytes(b"{\"object\":"),
        Err(NormalizeError::Json(_))
    ));
}

#[test]
fn json_without_entry_array_is_an_error() {
    for body in [
        &br#"{}"#[..],
        br#"[]"#,
        br#"42"#,
        br#"{"object":"whatsapp_business_account"}"#,
        br#"{"object":"whatsapp_business_account","entry":{}}"#,
        br#"{"entry":[]}"#,
    ] {
        assert!(
            matches!(normalize_bytes(body), Err(NormalizeError::Envelope(_))),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn other_object_is_one_unhandled_item() {
    let body = json!({"object": "page", "entry": [{"id": "1", "messaging": []}]});
    let normalized = normalize_bytes(body.to_string().as_bytes()).expect("ok");
    assert_eq!(
        normalized,
        Normalized {
            events: vec![],
            unhandled: vec![Unhandled {
                account_id: None,
                reason: "unknown_object:page".into(),
                raw: body,
            }],
        }
    );
}

fn one_change(value: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": value}
    ]}]})
}

#[test]
fn odd_changes_and_items_are_unhandled() {
    let metadata = json!({"display_phone_number": "15550783881", "phone_number_id": PNID});
    let cases = [
        (
            json!({"messaging_product": "whatsapp", "metadata": metadata}),
            "empty_change",
        ),
        (
            json!({"metadata": metadata, "messages": [], "statuses": []}),
            "empty_change",
        ),
        (
            json!({"metadata": metadata, "statuses": [
                {"id": "wamid.s", "status": "deleted", "timestamp": "1", "recipient_id": USER}
            ]}),
            "unknown_status:deleted",
        ),
        (
            json!({"metadata": metadata, "statuses": [{"status": "sent"}]}),
            "malformed_status",
        ),
        (
            json!({"metadata": metadata, "messages": [
                {"from": USER, "id": "wamid.r", "timestamp": "1", "type": "reaction"}
            ]}),
            "malformed_message",
        ),
        (
            json!({"metadata": metadata, "messages": [
                {"from": USER, "id": "wamid.e", "timestamp": "1", "type": "edit",
                 "edit": {"original_message_id": "wamid.o", "message": {"type": "text"}}}
            ]}),
            "malformed_message",
        ),
    ];
    for (value, reason) in cases {
        let normalized =
            normalize_bytes(one_change(value.clone()).to_string().as_bytes()).expect("normalizes");
        assert!(
            normalized.events.is_empty(),
            "{reason}: {:?}",
            normalized.events
        );
        assert_eq!(normalized.unhandled.len(), 1, "{value}");
        assert_eq!(normalized.unhandled[0].reason, reason, "{value}");
        assert_eq!(normalized.unhandled[0].account_id.as_deref(), Some(PNID));
    }

    // Without a phone number id the change cannot be routed.
    let body = one_change(json!({"messages": [
        {"from": USER, "id": "wamid.x", "timestamp": "1", "type": "text", "text": {"body": "hi"}}
    ]}));
    let normalized = normalize_bytes(body.to_string().as_bytes()).expect("normalizes");
    assert!(normalized.events.is_empty());
    assert_eq!(normalized.unhandled[0].reason, "missing_phone_number_id");
}

#[test]
fn edit_to_media_maps_the_inner_message() {
    let body = one_change(json!({
        "metadata": {"phone_number_id": PNID},
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": USER}],
        "messages": [{"from": USER, "id": "wamid.e2", "timestamp": 1750060000, "type": "edit",
            "edit": {"original_message_id": "wamid.o2", "message": {"type": "image",
                "image": {"id": "42", "mime_type": "image/png", "caption": "new caption"}}}}]
    }));
    let normalized = normalize_bytes(body.to_string().as_bytes()).expect("normalizes");
    assert_eq!(
        normalized.events,
        vec![InboundEvent {
            external_id: "wamid.e2".into(),
            account_id: PNID.into(),
            timestamp: 1750060000,
            body: EventBody::Edit(Edit {
                chat: USER.into(),
                sender: sheena(),
                target: "wamid.o2".into(),
                content: Content::Media(Media {
                    media_id: Some("42".into()),
                    mime_type: Some("image/png".into()),
                    caption: Some("new caption".into()),
                    ..media(MediaKind::Image)
                }),
            }),
        }]
    );
}

/// The gateway's inbox stores events as JSON and reads them back: media content (whose
/// `kind` field sits inside the tagged `Content`) must survive the round trip.
#[test]
fn media_content_survives_a_serde_roundtrip() {
    let normalized = normalize_bytes(&fixture_bytes("image.json")).expect("normalizes");
    let json = serde_json::to_string(&normalized.events[0]).expect("serializes");
    let back: Result<InboundEvent, _> = serde_json::from_str(&json);
    assert_eq!(back.ok().as_ref(), Some(&normalized.events[0]), "{json}");
}

#[test]
fn channel_facts() {
    let wa = channel();
    assert_eq!(wa.kind(), ChannelKind::WhatsApp);
    assert_eq!(wa.text_limit(), 4096);
}

// ---------------------------------------------------------------------------------
// Sending, against a fake Graph API

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct FakeGraph {
    requests: Arc<Mutex<Vec<Recorded>>>,
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
}

async fn answer(
    State(fake): State<FakeGraph>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    fake.requests.lock().expect("lock").push(Recorded {
        method,
        path: uri.path().to_owned(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let mut response = (
        StatusCode::from_u16(fake.status).expect("status"),
        fake.body,
    )
        .into_response();
    for (name, value) in &fake.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// Serves one canned answer on `127.0.0.1:0`; returns its base URL and the requests seen.
async fn fake_graph(
    status: u16,
    headers: &[(&'static str, &'static str)],
    body: &'static str,
) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let fake = FakeGraph {
        requests: requests.clone(),
        status,
        headers: headers.to_vec(),
        body,
    };
    let app = Router::new().fallback(answer).with_state(fake);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), requests)
}

fn credentials() -> Credentials {
    Credentials::WhatsApp(WhatsAppCredentials {
        phone_number_id: PNID.into(),
        waba_id: Some("102290129340398".into()),
        access_token: SecretString::from(TOKEN),
        app_secret: None,
        verify_token: None,
    })
}

fn reply(reply_to: Option<&str>) -> OutboundReply {
    OutboundReply {
        to: USER.into(),
        text: "It comes in blue and green.".into(),
        reply_to: reply_to.map(str::to_owned),
    }
}

const ACCEPTED: &str = r#"{"messaging_product":"whatsapp","contacts":[{"input":"16505551234","wa_id":"16505551234"}],"messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}"#;

async fn send_with(
    status: u16,
    headers: &[(&'static str, &'static str)],
    body: &'static str,
) -> Result<SendReceipt, SendError> {
    let (base, _) = fake_graph(status, headers, body).await;
    let wa = WhatsApp::new(reqwest::Client::new(), base, "v23.0");
    wa.send(&credentials(), &reply(None)).await
}

#[tokio::test]
async fn send_posts_the_text_message() {
    let (base, requests) = fake_graph(200, &[], ACCEPTED).await;
    // A trailing slash on the configured URL must not double up.
    let wa = WhatsApp::new(reqwest::Client::new(), format!("{base}/"), "v23.0");
    let receipt = wa.send(&credentials(), &reply(None)).await.expect("sent");
    assert_eq!(
        receipt,
        SendReceipt {
            external_id: "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA".into()
        }
    );
    let requests = requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, format!("/v23.0/{PNID}/messages"));
    assert_eq!(
        request.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": USER,
            "type": "text",
            "text": {"preview_url": false, "body": "It comes in blue and green."}
        })
    );
}

#[tokio::test]
async fn send_quotes_the_answered_message() {
    let (base, requests) = fake_graph(200, &[], ACCEPTED).await;
    let wa = WhatsApp::new(reqwest::Client::new(), base, "v23.0");
    wa.send(&credentials(), &reply(Some("wamid.question")))
        .await
        .expect("sent");
    let requests = requests.lock().expect("lock").clone();
    assert_eq!(
        requests[0].body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": USER,
            "type": "text",
            "text": {"preview_url": false, "body": "It comes in blue and green."},
            "context": {"message_id": "wamid.question"}
        })
    );
}

#[tokio::test]
async fn accepted_without_message_id_is_permanent() {
    for body in [
        r#"{"messaging_product":"whatsapp","messages":[]}"#,
        "",
        "not json",
    ] {
        assert_eq!(
            send_with(200, &[], body).await,
            Err(SendError::Permanent {
                code: None,
                subcode: None,
                detail: "accepted without a message id".into(),
                outside_window: false,
            }),
            "{body:?}"
        );
    }
}

#[tokio::test]
async fn http_429_with_retry_after_is_retryable() {
    let result = send_with(429, &[("retry-after", "7")], "").await;
    assert_eq!(
        result,
        Err(SendError::Retryable {
            retry_after: Some(Duration::from_secs(7)),
            code: None,
            detail: "HTTP 429".into(),
        })
    );
}

#[tokio::test]
async fn throughput_limit_on_http_400_is_retryable() {
    let body = r#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,"error_data":{"messaging_product":"whatsapp","details":"Cloud API message throughput has been reached."},"fbtrace_id":"AbC123"}}"#;
    assert_eq!(
        send_with(400, &[], body).await,
        Err(SendError::Retryable {
            retry_after: None,
            code: Some(130429),
            detail: "(#130429) Rate limit hit: Cloud API message throughput has been reached."
                .into(),
        })
    );
}

#[tokio::test]
async fn pair_rate_limit_on_http_400_is_retryable() {
    let body = r#"{"error":{"message":"(#131056) (Business Account, Consumer Account) pair rate limit hit","type":"OAuthException","code":131056,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."},"fbtrace_id":"AbC124"}}"#;
    let result = send_with(400, &[("retry-after", "12")], body).await;
    assert!(
        matches!(
            result,
            Err(SendError::Retryable { code: Some(131056), retry_after: Some(d), .. })
                if d == Duration::from_secs(12)
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn expired_token_is_unauthorized_and_not_echoed() {
    let body = r#"{"error":{"message":"Error validating access token: Session has expired on Tuesday, 17-Jun-25 04:00:00 PDT.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"AbC125"}}"#;
    let result = send_with(401, &[], body).await;
    assert_eq!(
        result,
        Err(SendError::Unauthorized {
            code: Some(190),
            detail: "Error validating access token: Session has expired on Tuesday, 17-Jun-25 04:00:00 PDT."
                .into(),
        })
    );
    // Even if Meta echoed the token, it would not reach the error.
    let echoing = r#"{"error":{"message":"Malformed access token EAAG-test-token-do-not-log","type":"OAuthException","code":190}}"#;
    let result = send_with(401, &[], echoing).await;
    let text = format!(
        "{result:?} {}",
        result
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    assert!(!text.contains(TOKEN), "{text}");
    assert!(matches!(
        result,
        Err(SendError::Unauthorized {
            code: Some(190),
            ..
        })
    ));
}

#[tokio::test]
async fn closed_customer_service_window_is_permanent() {
    let body = r#"{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":131047,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because more than 24 hours have passed since the customer last replied to this number."},"fbtrace_id":"AbC126"}}"#;
    let result = send_with(400, &[], body).await;
    assert!(
        matches!(
            result,
            Err(SendError::Permanent {
                code: Some(131047),
                outside_window: true,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn other_client_error_is_permanent_with_code_and_subcode() {
    let body = r#"{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,"error_subcode":2494010,"fbtrace_id":"AbC127"}}"#;
    assert_eq!(
        send_with(400, &[("retry-after", "5")], body).await,
        Err(SendError::Permanent {
            code: Some(100),
            subcode: Some(2494010),
            detail: "(#100) Invalid parameter".into(),
            outside_window: false,
        })
    );
}

#[tokio::test]
async fn service_unavailable_is_retryable() {
    let result = send_with(503, &[], "Service Unavailable").await;
    assert!(
        matches!(
            result,
            Err(SendError::Retryable {
                retry_after: None,
                code: None,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let wa = WhatsApp::new(
        reqwest::Client::new(),
        format!("http://127.0.0.1:{port}"),
        "v23.0",
    );
    let result = wa.send(&credentials(), &reply(None)).await;
    assert!(
        matches!(
            result,
            Err(SendError::Retryable {
                retry_after: None,
                code: None,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn classification_table() {
    let graph = |code: i64| format!(r#"{{"error":{{"message":"m","code":{code}}}}}"#);
    let seven = Some(Duration::from_secs(7));
    for code in [
        4, 80007, 130429, 131048, 131056, 1, 2, 131000, 131016, 133004,
    ] {
        for status in [400, 403, 429, 500] {
            assert_eq!(
                classify_error(status, seven, graph(code).as_bytes()),
                SendError::Retryable {
                    retry_after: seven,
                    code: Some(code),
                    detail: "m".into()
                },
                "code {code} status {status}"
            );
        }
    }
    assert!(matches!(
        classify_error(400, seven, graph(190).as_bytes()),
        SendError::Unauthorized {
            code: Some(190),
            ..
        }
    ));
    // Permanent errors drop Retry-After.
    assert_eq!(
        classify_error(400, seven, graph(131026).as_bytes()),
        SendError::Permanent {
            code: Some(131026),
            subcode: None,
            detail: "m".into(),
            outside_window: false
        }
    );
    // An unknown code on a 5xx is a server problem: retry.
    assert!(matches!(
        classify_error(500, None, graph(131026).as_bytes()),
        SendError::Retryable {
            code: Some(131026),
            ..
        }
    ));
    for status in [429, 500, 502, 503, 504] {
        assert!(
            matches!(
                classify_error(status, None, b""),
                SendError::Retryable { .. }
            ),
            "{status}"
        );
    }
    for status in [400, 401, 404, 302] {
        assert!(
            matches!(
                classify_error(status, None, b""),
                SendError::Permanent { .. }
            ),
            "{status}"
        );
    }
}
