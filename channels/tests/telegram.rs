#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Telegram updates (fixtures from the Bot API docs and teloxide) normalized into
//! the common model.

use channels::telegram::{callback_answer, normalize_update, BotIdentity};
use channels::{Content, EventBody, MediaKind};
use serde_json::json;

fn bot() -> BotIdentity {
    BotIdentity {
        id: Some(7001),
        username: Some("shop_bot".into()),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/telegram/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn private_text_is_a_message_in_the_users_chat() {
    let out = normalize_update(&bot(), &fixture("message-private-text.json")).unwrap();
    assert!(out.unhandled.is_empty(), "{:?}", out.unhandled);
    let [event] = out.events.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(event.external_id, "218485655:6557");
    assert_eq!(event.account_id, "7001");
    assert_eq!(event.timestamp, 1569518342);
    let EventBody::Message(m) = &event.body else {
        panic!()
    };
    assert_eq!(m.chat, "218485655");
    assert_eq!(m.sender.id, "218485655");
    assert_eq!(m.sender.username.as_deref(), Some("WaffleLapkin"));
    assert_eq!(
        m.content,
        Content::Text {
            body: "hello there".into()
        }
    );
}

#[test]
fn callback_query_is_a_button_reply_and_is_acknowledged() {
    let body = fixture("callback-query.json");
    let out = normalize_update(&bot(), &body).unwrap();
    let [event] = out.events.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(event.external_id, "892252935");
    let EventBody::Message(m) = &event.body else {
        panic!()
    };
    assert_eq!(m.chat, "1");
    assert!(matches!(&m.content, Content::InteractiveReply { id, .. } if id == "confirm_profile"));
    assert_eq!(
        callback_answer(&body),
        Some(json!({"method": "answerCallbackQuery", "callback_query_id": "1"}))
    );
    assert_eq!(callback_answer(&fixture("message-private-text.json")), None);
}

fn message(extra: serde_json::Value) -> Vec<u8> {
    let mut msg = json!({"message_id": 5, "from": {"id": 9, "is_bot": false, "first_name": "Ann", "last_name": "Lee"},
        "chat": {"id": 9, "first_name": "Ann", "type": "private"}, "date": 1_700_000_000});
    for (k, v) in extra.as_object().unwrap() {
        msg[k] = v.clone();
    }
    json!({"update_id": 10, "message": msg})
        .to_string()
        .into_bytes()
}

fn content_of(body: &[u8]) -> Content {
    let out = normalize_update(&bot(), body).unwrap();
    match &out.events[0].body {
        EventBody::Message(m) => m.content.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn media_location_and_contact() {
    let file =
        |id: &str| json!({"file_id": id, "file_unique_id": format!("u{id}"), "file_size": 10});
    let photo = content_of(&message(json!({"caption": "look", "photo": [
        {"file_id": "small", "file_unique_id": "us", "width": 90, "height": 90},
        {"file_id": "big", "file_unique_id": "ub", "width": 800, "height": 800}]})));
    assert!(
        matches!(&photo, Content::Media(m) if m.kind == MediaKind::Image && m.media_id.as_deref() == Some("big") && m.caption.as_deref() == Some("look"))
    );
    let mut doc = file("doc");
    doc["file_name"] = json!("invoice.pdf");
    doc["mime_type"] = json!("application/pdf");
    let doc = content_of(&message(json!({"document": doc})));
    assert!(
        matches!(&doc, Content::Media(m) if m.kind == MediaKind::Document && m.filename.as_deref() == Some("invoice.pdf"))
    );
    let mut voice = file("v");
    voice["duration"] = json!(3);
    voice["mime_type"] = json!("audio/ogg");
    let voice = content_of(&message(json!({"voice": voice})));
    assert!(
        matches!(&voice, Content::Media(m) if m.kind == MediaKind::Audio && m.voice),
        "{voice:?}"
    );
    let mut video = file("vid");
    video["width"] = json!(1);
    video["height"] = json!(1);
    video["duration"] = json!(1);
    video["mime_type"] = json!("video/mp4");
    assert!(
        matches!(content_of(&message(json!({"video": video}))), Content::Media(m) if m.kind == MediaKind::Video)
    );
    let mut sticker = file("st");
    for (k, v) in [
        ("width", json!(512)),
        ("height", json!(512)),
        ("is_animated", json!(false)),
        ("is_video", json!(false)),
        ("type", json!("regular")),
    ] {
        sticker[k] = v;
    }
    assert!(
        matches!(content_of(&message(json!({"sticker": sticker}))), Content::Media(m) if m.kind == MediaKind::Sticker)
    );
    let location = content_of(&message(
        json!({"location": {"latitude": 52.5, "longitude": 13.4}}),
    ));
    assert!(matches!(location, Content::Location(l) if l.latitude == 52.5));
    let contact = content_of(&message(
        json!({"contact": {"phone_number": "+4930123", "first_name": "Bob"}}),
    ));
    assert!(
        matches!(contact, Content::Contacts { contacts } if contacts[0].phones == ["+4930123"])
    );
}

#[test]
fn edits_target_the_original_message() {
    let mut body: serde_json::Value =
        serde_json::from_slice(&message(json!({"text": "new", "edit_date": 1_700_000_100})))
            .unwrap();
    body["edited_message"] = body["message"].take();
    body.as_object_mut().unwrap().remove("message");
    let out = normalize_update(&bot(), body.to_string().as_bytes()).unwrap();
    let EventBody::Edit(edit) = &out.events[0].body else {
        panic!("{out:?}")
    };
    assert_eq!(edit.target, "9:5");
    assert_eq!(out.events[0].external_id, "10");
}

#[test]
fn blocking_and_unblocking_change_reachability() {
    let member = |status: &str| {
        json!({"update_id": 11, "my_chat_member": {"chat": {"id": 9, "first_name": "Ann", "type": "private"},
            "from": {"id": 9, "is_bot": false, "first_name": "Ann"}, "date": 1_700_000_000,
            "old_chat_member": {"user": {"id": 7001, "is_bot": true, "first_name": "Shop"}, "status": "member"},
            "new_chat_member": {"user": {"id": 7001, "is_bot": true, "first_name": "Shop"}, "status": status, "until_date": 0}}})
        .to_string()
    };
    for (status, reachable) in [("kicked", false), ("member", true)] {
        let out = normalize_update(&bot(), member(status).as_bytes()).unwrap();
        let EventBody::Reachability(r) = &out.events[0].body else {
            panic!("{out:?}")
        };
        assert_eq!((r.chat.as_str(), r.reachable), ("9", reachable));
    }
}

#[test]
fn unknown_updates_are_kept_raw() {
    let out = normalize_update(&bot(), br#"{"update_id": 12, "poll": {"id": "1"}}"#).unwrap();
    assert!(out.events.is_empty());
    assert_eq!(out.unhandled.len(), 1);
    assert!(normalize_update(&bot(), b"not json").is_err());
}
