//! Messenger and Instagram channels: normalization of every fixture in
//! `fixtures/messenger/` and `fixtures/instagram/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use channels::instagram::Instagram;
use channels::messenger::Messenger;
use channels::*;

const SECRET: &[u8] = b"fixture-app-secret";

fn normalize(channel: &dyn Channel, dir: &str, name: &str) -> Normalized {
    let path = format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let signature = webhooks::meta::sign(SECRET, &body);
    let verified = webhooks::meta::verify_signature(SECRET, Some(signature.as_bytes()), &body)
        .expect("a freshly signed body verifies");
    let normalized = channel.normalize(verified).expect("fixture normalizes");
    let json = serde_json::to_string(&normalized).expect("serializes");
    let back: Normalized = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, normalized, "{name}: serde roundtrip");
    normalized
}

fn messenger(name: &str) -> InboundEvent {
    let channel = Messenger::new(reqwest::Client::new(), "http://127.0.0.1:9", "v21.0");
    one(normalize(&channel, "messenger", name))
}

fn instagram(name: &str) -> InboundEvent {
    let channel = Instagram::new(reqwest::Client::new(), "http://127.0.0.1:9", "v21.0");
    one(normalize(&channel, "instagram", name))
}

fn one(normalized: Normalized) -> InboundEvent {
    assert!(
        normalized.unhandled.is_empty(),
        "{:?}",
        normalized.unhandled
    );
    assert_eq!(normalized.events.len(), 1, "{:?}", normalized.events);
    normalized.events.into_iter().next().expect("one event")
}

fn message(event: &InboundEvent) -> &InboundMessage {
    match &event.body {
        EventBody::Message(m) => m,
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn text_with_quick_reply() {
    let event = messenger("text-quick-reply.json");
    assert_eq!(event.external_id, "mid.1457764197618:41d102a3e1ae206a38");
    assert_eq!(event.account_id, "<PAGE_ID>");
    assert_eq!(event.timestamp, 1458692752);
    let m = message(&event);
    assert_eq!(m.chat, "<PSID>");
    assert_eq!(m.sender.id, "<PSID>");
    assert_eq!(
        m.content,
        Content::QuickReply {
            text: "hello, world!".into(),
            payload: "<DEVELOPER_DEFINED_PAYLOAD>".into()
        }
    );
    assert_eq!(m.content.text(), Some("hello, world!"));
}

#[test]
fn image_attachment() {
    let event = messenger("attachment.json");
    assert_eq!(event.account_id, "682498302938465");
    let Content::Media(media) = &message(&event).content else {
        panic!("not media");
    };
    assert_eq!(media.kind, MediaKind::Image);
    assert_eq!(media.url.as_deref(), Some("<ATTACHMENT_URL>"));
}

#[test]
fn echo_is_the_pages_own_message_to_the_customer() {
    let event = messenger("echo.json");
    let EventBody::Echo(echo) = &event.body else {
        panic!("not an echo: {event:?}");
    };
    assert_eq!(echo.chat, "<PSID>");
    assert_eq!(echo.app_id.as_deref(), Some("1517776481860111"));
    assert_eq!(
        echo.metadata.as_deref(),
        Some("<DEVELOPER_DEFINED_METADATA_STRING>")
    );
    assert_eq!(echo.content.text(), Some("hello, world!"));
    let event = instagram("echo.json");
    let EventBody::Echo(echo) = &event.body else {
        panic!("not an echo: {event:?}");
    };
    assert_eq!(echo.chat, "1234567890123456");
    assert_eq!(event.account_id, "17841400000000000");
}

#[test]
fn postbacks_keep_their_payload() {
    let event = messenger("postback.json");
    assert_eq!(event.external_id, "m_1457764197618:41d102a3e1ae206a38");
    let Content::Postback {
        title,
        payload,
        referral,
    } = &message(&event).content
    else {
        panic!("not a postback");
    };
    assert_eq!(title.as_deref(), Some("TITLE-FOR-THE-CTA"));
    assert_eq!(payload.as_deref(), Some("USER-DEFINED-PAYLOAD"));
    assert_eq!(
        referral.as_ref().and_then(|r| r.reference.as_deref()),
        Some("USER-DEFINED-REFERRAL-PARAM")
    );
    let event = instagram("postback-icebreaker.json");
    assert_eq!(message(&event).content.kind(), "postback");
}

#[test]
fn reactions_and_unreactions() {
    for event in [messenger("reaction.json"), instagram("reaction.json")] {
        let EventBody::Reaction(r) = &event.body else {
            panic!("not a reaction");
        };
        assert_eq!(r.emoji.as_deref(), Some("❤️"));
    }
    let event = messenger("unreaction.json");
    let EventBody::Reaction(r) = &event.body else {
        panic!("not a reaction");
    };
    assert_eq!(
        (r.target.as_str(), r.emoji.as_deref()),
        ("m_reacted1", None)
    );
    assert!(event.external_id.contains("unreact"));
}

#[test]
fn receipts_carry_watermark_and_mids() {
    let event = messenger("read.json");
    assert_eq!(event.external_id, "read:<PSID>:1458668856253");
    let EventBody::Receipt(r) = &event.body else {
        panic!("not a receipt");
    };
    assert_eq!(
        (r.status, r.watermark),
        (DeliveryStatus::Read, Some(1458668856253))
    );
    let event = messenger("delivery.json");
    let EventBody::Receipt(r) = &event.body else {
        panic!("not a receipt");
    };
    assert_eq!(r.status, DeliveryStatus::Delivered);
    assert_eq!(r.message_ids, ["mid.1458668856218:ed81099e15d3f4f233"]);
    let event = instagram("read.json");
    let EventBody::Receipt(r) = &event.body else {
        panic!("not a receipt");
    };
    assert_eq!(
        (r.watermark, r.message_ids.as_slice()),
        (None, &["<MESSAGE_ID>".to_string()][..])
    );
}

#[test]
fn edits_unsends_and_story_events() {
    let EventBody::Edit(edit) = messenger("edit.json").body else {
        panic!("not an edit");
    };
    assert_eq!(edit.target, "m_edited1");
    assert_eq!(edit.content.text(), Some("Corrected text"));
    let event = instagram("unsend.json");
    assert_eq!(event.external_id, "deleted:<MESSAGE_ID>");
    let EventBody::Delete(delete) = &event.body else {
        panic!("not a delete");
    };
    assert_eq!(delete.target, "<MESSAGE_ID>");
    let event = instagram("story-mention.json");
    let Content::Media(media) = &message(&event).content else {
        panic!("not media");
    };
    assert_eq!(media.kind, MediaKind::StoryMention);
    let event = instagram("story-reply.json");
    assert_eq!(
        message(&event).content,
        Content::StoryReply {
            body: "Love this!".into(),
            story_id: Some("<STORY_ID>".into()),
            url: Some("<CDN_URL>".into())
        }
    );
    assert_eq!(
        message(&instagram("text.json")).content.text(),
        Some("Hi! Do you ship to Canada?")
    );
}

#[test]
fn standby_handover_and_referral() {
    let EventBody::Standby(standby) = messenger("standby.json").body else {
        panic!("not standby");
    };
    assert!(matches!(*standby.body, EventBody::Message(_)));
    let EventBody::Handover(h) = messenger("pass-thread-control.json").body else {
        panic!("not a handover");
    };
    assert_eq!(h.action, "pass_thread_control");
    let event = messenger("referral.json");
    let Content::Referral(r) = &message(&event).content else {
        panic!("not a referral");
    };
    assert_eq!(r.reference.as_deref(), Some("summer-sale"));
}

#[test]
fn unknown_items_are_kept_and_siblings_survive() {
    let channel = Messenger::new(reqwest::Client::new(), "http://127.0.0.1:9", "v21.0");
    let body = br#"{"object":"page","entry":[{"id":"1","time":1,"messaging":[
        {"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"optin":{"ref":"x"}},
        {"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":6,"message":{"mid":"m1","text":"hi"}},
        {"recipient":{"id":"1"}}
    ]},{"id":"1","time":1,"changes":[{"field":"feed","value":{}}]}]}"#;
    let signature = webhooks::meta::sign(SECRET, body);
    let verified = webhooks::meta::verify_signature(SECRET, Some(signature.as_bytes()), body)
        .expect("verifies");
    let normalized = channel.normalize(verified).expect("normalizes");
    assert_eq!(normalized.events.len(), 1);
    let reasons: Vec<&str> = normalized
        .unhandled
        .iter()
        .map(|u| u.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "unknown_event:optin",
            "malformed_event",
            "unknown_field:feed"
        ]
    );
    // Another platform's object is kept whole, not misread.
    let body = br#"{"object":"instagram","entry":[]}"#;
    let signature = webhooks::meta::sign(SECRET, body);
    let verified = webhooks::meta::verify_signature(SECRET, Some(signature.as_bytes()), body)
        .expect("verifies");
    let normalized = channel.normalize(verified).expect("normalizes");
    assert_eq!(normalized.unhandled[0].reason, "unknown_object:instagram");
}
