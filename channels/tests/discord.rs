#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Discord gateway events, fed to the session handler's mapping as serenity reads
//! them from the Gateway: one event per message for the bot, none for bots (itself
//! included), none for guild chatter that does not mention it; a deletion per
//! deleted message. The whole session against a fake gateway is in tests/api/discord.rs.

use channels::discord::gateway::{
    intents, normalize_create, normalize_delete, normalize_update, BotScope,
};
use channels::{Content, EventBody};
use serde_json::{json, Value};
use serenity::all::{GatewayIntents, Message, MessageUpdateEvent};

const BOT: u64 = 999_000_111;

fn scope(support: &[&str]) -> BotScope {
    BotScope {
        application_id: "1234560123453231555".into(),
        user_id: Some(BOT),
        support_channels: support.iter().map(|s| s.to_string()).collect(),
    }
}

/// MESSAGE_CREATE `d` from fixtures/discord/gateway-message-create-dispatch.json.
fn dispatch() -> Value {
    let raw = std::fs::read(format!(
        "{}/tests/fixtures/discord/gateway-message-create-dispatch.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let frame: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(frame["t"], "MESSAGE_CREATE");
    frame["d"].clone()
}

fn message(d: Value) -> Message {
    serde_json::from_value(d).unwrap()
}

#[test]
fn only_the_needed_intents() {
    assert_eq!(
        intents(),
        GatewayIntents::DIRECT_MESSAGES
            | GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::MESSAGE_CONTENT
    );
}

#[test]
fn guild_chatter_is_ignored_a_mention_or_support_channel_is_taken() {
    let d = dispatch();
    assert!(normalize_create(&scope(&[]), &message(d.clone()))
        .events
        .is_empty());

    let mut mentioned = d.clone();
    mentioned["content"] = json!(format!("<@{BOT}> Supa Hot"));
    mentioned["mentions"] = json!([{"id": BOT.to_string(), "username": "shop", "discriminator": "0", "avatar": null, "bot": true}]);
    let out = normalize_create(&scope(&[]), &message(mentioned));
    let [event] = out.events.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(event.external_id, "334385199974967042");
    let EventBody::Message(m) = &event.body else {
        panic!()
    };
    assert_eq!(m.chat, "290926798999357250");
    assert_eq!(m.sender.id, "53908099506183680");
    assert_eq!(
        m.content,
        Content::Text {
            body: "Supa Hot".into()
        }
    );

    let out = normalize_create(&scope(&["290926798999357250"]), &message(d));
    assert_eq!(out.events.len(), 1);
}

#[test]
fn direct_messages_are_taken_bots_never() {
    let mut dm = dispatch();
    dm.as_object_mut().unwrap().remove("guild_id");
    dm.as_object_mut().unwrap().remove("member");
    assert_eq!(
        normalize_create(&scope(&[]), &message(dm.clone()))
            .events
            .len(),
        1
    );

    let mut from_bot = dm.clone();
    from_bot["author"]["bot"] = json!(true);
    assert!(normalize_create(&scope(&[]), &message(from_bot))
        .events
        .is_empty());

    let mut from_itself = dm;
    from_itself["author"]["id"] = json!(BOT.to_string());
    assert!(normalize_create(&scope(&[]), &message(from_itself))
        .events
        .is_empty());
}

#[test]
fn edits_and_deletes() {
    let event: MessageUpdateEvent = serde_json::from_value(json!({
        "id": "334385199974967042", "channel_id": "290926798999357250",
        "author": {"id": "53908099506183680", "username": "Mason", "discriminator": "9999", "avatar": null},
        "content": "Supa Hotter", "edited_timestamp": "2017-07-11T17:28:07.299000+00:00"
    }))
    .unwrap();
    let out = normalize_update(&scope(&[]), &event);
    let EventBody::Edit(edit) = &out.events[0].body else {
        panic!("{out:?}")
    };
    assert_eq!(edit.target, "334385199974967042");

    // A deletion names no author: it targets the message in the chat it was sent in.
    let out = normalize_delete(
        &scope(&[]),
        serenity::all::ChannelId::new(290926798999357250),
        &[
            serenity::all::MessageId::new(334385199974967042),
            serenity::all::MessageId::new(334385199974967043),
        ],
    );
    assert!(out.unhandled.is_empty());
    let targets: Vec<(&str, &str)> = out
        .events
        .iter()
        .map(|e| {
            let EventBody::Delete(delete) = &e.body else {
                panic!("{e:?}")
            };
            assert_eq!(delete.chat, "290926798999357250");
            assert_eq!(delete.sender, None);
            (e.external_id.as_str(), delete.target.as_str())
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("delete:334385199974967042", "334385199974967042"),
            ("delete:334385199974967043", "334385199974967043")
        ]
    );
}
