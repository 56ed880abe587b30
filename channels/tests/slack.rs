//! Slack channel: every fixture in `fixtures/slack/` read and normalized.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use channels::slack::{self, Delivery, Revocation};
use channels::*;
use serde_json::Value;

const SECRET: &[u8] = b"fixture-signing-secret";
const NOW: i64 = 1_700_000_000;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/slack/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn read(body: &[u8]) -> Result<Delivery, NormalizeError> {
    let ts = NOW.to_string();
    let signature = webhooks::slack::sign(SECRET, &ts, body);
    let verified = webhooks::slack::verify(
        SECRET,
        Some(ts.as_bytes()),
        Some(signature.as_bytes()),
        body,
        NOW,
    )
    .expect("a freshly signed body verifies");
    slack::read(verified)
}

fn callback(name: &str) -> slack::Callback {
    match read(&fixture(name)).expect("fixture reads") {
        Delivery::Callback(c) => c,
        other => panic!("{name}: not an event callback: {other:?}"),
    }
}

/// The normalized fixture, after the JSON roundtrip the inbox puts it through.
fn normalized(name: &str, own_bot: Option<&str>) -> Normalized {
    let n = callback(name).normalize(own_bot);
    let back: Normalized = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
    assert_eq!(back, n, "{name}: serde roundtrip");
    n
}

fn only_message(n: &Normalized) -> (&InboundEvent, &InboundMessage) {
    assert!(n.unhandled.is_empty(), "{:?}", n.unhandled);
    assert_eq!(n.events.len(), 1, "{:?}", n.events);
    match &n.events[0].body {
        EventBody::Message(m) => (&n.events[0], m),
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn url_verification_yields_the_challenge() {
    match read(&fixture("url-verification.json")).unwrap() {
        Delivery::UrlVerification { challenge } => assert_eq!(
            challenge,
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn direct_message_is_one_conversation_per_dm_channel() {
    let cb = callback("message-im.json");
    assert_eq!(cb.team_id, "T061EG9R6");
    assert_eq!(cb.event_id, "Ev0PV52K21");
    assert_eq!(cb.revocation(), None);
    let n = normalized("message-im.json", None);
    let (event, message) = only_message(&n);
    assert_eq!(event.external_id, "D024BE91L:1355517523.000005");
    assert_eq!(event.account_id, "T061EG9R6");
    assert_eq!(event.timestamp, 1_355_517_523);
    assert_eq!(message.chat, "D024BE91L");
    assert_eq!(message.sender.id, "U2147483697");
    assert_eq!(message.reply_to, None);
    assert_eq!(
        message.content,
        Content::Text {
            body: "Hello hello can you hear me?".into()
        }
    );
}

#[test]
fn app_mention_in_a_channel_starts_a_thread_under_the_message() {
    let n = normalized("app-mention.json", Some("U0LAN0Z89"));
    let (event, message) = only_message(&n);
    assert_eq!(event.external_id, "C0LAN2Q65:1515449483.000108");
    assert_eq!(message.chat, "C0LAN2Q65:1515449483.000108");
    assert_eq!(message.sender.id, "W021FGA1Z");
    // The bot's own mention is removed from what the assistant reads.
    assert_eq!(
        message.content.text(),
        Some("You can count on for an honorable mention.")
    );
    // Without knowing the bot, the mention is kept as plain text.
    let n = normalized("app-mention.json", None);
    assert_eq!(
        only_message(&n).1.content.text(),
        Some("You can count on @U0LAN0Z89 for an honorable mention.")
    );
}

#[test]
fn thread_reply_joins_the_parents_conversation_with_plain_text() {
    let n = normalized("message-thread-reply.json", None);
    let (event, message) = only_message(&n);
    assert_eq!(event.external_id, "C024BE91L:1355517600.000010");
    assert_eq!(message.chat, "C024BE91L:1355517523.000005");
    assert_eq!(
        message.reply_to.as_deref(),
        Some("C024BE91L:1355517523.000005")
    );
    assert_eq!(message.sender.name.as_deref(), Some("Egon Spengler"));
    assert_eq!(message.sender.username.as_deref(), Some("egon"));
    // authorizations[] names the bot: its mention goes, the link becomes plain text.
    assert_eq!(
        message.content.text(),
        Some("And the invoice for order 42 (https://shop.example.com/orders/42?x=1&y=2), ?")
    );
}

#[test]
fn our_own_message_coming_back_is_a_delivery_not_a_customer_message() {
    let n = normalized("message-bot-echo.json", None);
    assert!(n.unhandled.is_empty());
    assert_eq!(n.events.len(), 1);
    match &n.events[0].body {
        EventBody::Status(s) => {
            assert_eq!(s.message_id, "C024BE91L:1355517610.000020");
            assert_eq!(s.status, DeliveryStatus::Delivered);
        }
        other => panic!("{other:?}"),
    }
    // Even without authorizations, the gateway's known bot user id is enough.
    let body = String::from_utf8(fixture("message-bot-echo.json")).unwrap();
    let mut v: Value = serde_json::from_str(&body).unwrap();
    v.as_object_mut().unwrap().remove("authorizations");
    let Delivery::Callback(cb) = read(v.to_string().as_bytes()).unwrap() else {
        panic!()
    };
    assert!(matches!(
        cb.normalize(Some("U0BOTUSER")).events[0].body,
        EventBody::Status(_)
    ));
    // And with no way to tell it is ours, a bot_id still keeps it from being answered.
    let n = cb.normalize(None);
    assert!(n.events.is_empty());
    assert_eq!(n.unhandled[0].reason, "bot_message");
}

#[test]
fn other_bots_are_kept_never_answered() {
    let n = normalized("message-other-bot.json", None);
    assert!(n.events.is_empty());
    assert_eq!(n.unhandled.len(), 1);
    assert_eq!(n.unhandled[0].reason, "bot_message");
    assert_eq!(n.unhandled[0].account_id.as_deref(), Some("T061EG9R6"));
}

#[test]
fn edit_and_delete_target_the_original_message() {
    let n = normalized("message-changed.json", None);
    assert!(n.unhandled.is_empty());
    match &n.events[0].body {
        EventBody::Edit(e) => {
            assert_eq!(e.chat, "D024BE91L");
            assert_eq!(e.target, "D024BE91L:1355517523.000005");
            assert_eq!(e.content.text(), Some("Hello, can you hear me now?"));
        }
        other => panic!("{other:?}"),
    }
    let n = normalized("message-deleted.json", None);
    match &n.events[0].body {
        EventBody::Delete(d) => {
            assert_eq!(d.chat, "D024BE91L");
            assert_eq!(d.target, "D024BE91L:1355517523.000005");
            assert_eq!(d.sender.as_ref().unwrap().id, "U2147483697");
        }
        other => panic!("{other:?}"),
    }
    assert_ne!(n.events[0].external_id, "D024BE91L:1355517523.000005");
}

#[test]
fn shared_files_are_attachments() {
    let n = normalized("message-file-share.json", None);
    assert!(n.unhandled.is_empty());
    assert_eq!(n.events.len(), 2);
    let media = |i: usize| match &n.events[i].body {
        EventBody::Message(InboundMessage {
            content: Content::Media(m),
            ..
        }) => m.clone(),
        other => panic!("{other:?}"),
    };
    let (first, second) = (media(0), media(1));
    assert_eq!(first.kind, MediaKind::Image);
    assert_eq!(first.media_id.as_deref(), Some("F0S43PZDF"));
    assert_eq!(first.caption.as_deref(), Some("Here is the broken part"));
    assert_eq!(first.filename.as_deref(), Some("part.jpg"));
    assert_eq!(second.kind, MediaKind::Document);
    assert_eq!(second.caption, None);
    assert_eq!(n.events[0].external_id, "D024BE91L:1355517700.000100");
    assert_eq!(
        n.events[1].external_id,
        "D024BE91L:1355517700.000100#F0S43Q1AB"
    );
}

#[test]
fn uninstall_and_bot_token_revocation_are_revocations() {
    let cb = callback("app-uninstalled.json");
    assert_eq!(cb.revocation(), Some(Revocation::Uninstalled));
    assert_eq!(cb.team_id, "TXXXXXXXX");
    let n = cb.normalize(None);
    assert!(n.events.is_empty());
    assert_eq!(n.unhandled[0].reason, "revocation:app_uninstalled");

    let cb = callback("tokens-revoked.json");
    assert_eq!(
        cb.revocation(),
        Some(Revocation::TokensRevoked {
            bot_users: vec!["U0BOTUSER".into()]
        })
    );
    // Only user tokens revoked: the bot keeps working.
    let body = String::from_utf8(fixture("tokens-revoked.json"))
        .unwrap()
        .replace(r#""bot": ["U0BOTUSER"]"#, r#""bot": []"#);
    let Delivery::Callback(cb) = read(body.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(cb.revocation(), None);
}

#[test]
fn unknown_envelopes_and_events_are_kept_raw() {
    match read(&fixture("app-rate-limited.json")).unwrap() {
        Delivery::Other(u) => {
            assert_eq!(u.reason, "unknown_envelope:app_rate_limited");
            assert_eq!(u.account_id.as_deref(), Some("T123456"));
        }
        other => panic!("{other:?}"),
    }
    let body = br#"{"type":"event_callback","team_id":"T1","event_id":"Ev1","event":{"type":"reaction_added","user":"U1"}}"#;
    let Delivery::Callback(cb) = read(body).unwrap() else {
        panic!()
    };
    let n = cb.normalize(None);
    assert_eq!(n.unhandled[0].reason, "unknown_event:reaction_added");
    let body = br#"{"type":"event_callback","team_id":"T1","event_id":"Ev2","event":{"type":"message","subtype":"channel_join","user":"U1","channel":"C1","ts":"1.2"}}"#;
    let Delivery::Callback(cb) = read(body).unwrap() else {
        panic!()
    };
    assert_eq!(
        cb.normalize(None).unhandled[0].reason,
        "message_subtype:channel_join"
    );
    // Not JSON at all (a slash command's form body): an error the gateway keeps raw.
    assert!(read(b"token=x&team_id=T1&command=%2Fhelp").is_err());
    assert!(read(br#"{"type":"event_callback","event":{}}"#).is_err());
}

#[test]
fn credentials_never_show_the_token_in_debug() {
    let creds = Credentials::Slack(SlackCredentials {
        team_id: "T1".into(),
        team_name: None,
        app_id: None,
        bot_user_id: None,
        bot_token: Some(secrecy::SecretString::from("xoxb-canary-token")),
        signing_secret: Some(secrecy::SecretString::from("canary-signing-secret")),
    });
    let debug = format!("{creds:?}");
    assert!(!debug.contains("canary"), "{debug}");
    assert_eq!(creds.account_id(), "T1");
    assert!(creds.signing_secret().is_some());
    // Sealing needs the secrets: serialization keeps them, and reads them back.
    let json = serde_json::to_string(&creds).unwrap();
    assert!(json.contains("xoxb-canary-token"));
    let back: Credentials = serde_json::from_str(&json).unwrap();
    assert_eq!(back.kind(), ChannelKind::Slack);
}

/// Truncated and bit-flipped versions of every fixture: read and normalized without
/// panicking (a deterministic stand-in for the fuzz target).
#[test]
fn mangled_bodies_never_panic() {
    let dir = format!("{}/tests/fixtures/slack", env!("CARGO_MANIFEST_DIR"));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for entry in std::fs::read_dir(&dir).unwrap() {
        let body = std::fs::read(entry.unwrap().path()).unwrap();
        let mut cases: Vec<Vec<u8>> = (0..body.len())
            .step_by(7)
            .map(|n| body[..n].to_vec())
            .collect();
        for _ in 0..300 {
            let mut flipped = body.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % flipped.len();
                flipped[i] = match next() % 4 {
                    0 => b'<',
                    1 => b'>',
                    2 => b'|',
                    _ => flipped[i] ^ (1 << (next() % 8)),
                };
            }
            cases.push(flipped);
        }
        for case in cases {
            if let Ok(Delivery::Callback(cb)) = read(&case) {
                let _ = cb.revocation();
                let _ = cb.normalize(Some("U0BOTUSER"));
                let _ = cb.normalize(None);
            }
        }
    }
    for text in [
        "<",
        ">",
        "<>",
        "<|>",
        "<@>",
        "<!>",
        "<#|>",
        "<<@U1>>",
        "&amp",
        "&&lt;;",
        "é<@U1|é>é",
    ] {
        let _ = slack::format::to_plain(text, Some("U1"));
        let _ = slack::format::to_plain(text, None);
    }
}
