//! Every normalizer on arbitrary verified bodies: WhatsApp, Messenger, Instagram,
//! Slack, Telegram (with and without the bot's identity), Discord interactions, and
//! Discord gateway `MESSAGE_CREATE` / `MESSAGE_UPDATE` objects as serenity reads them.
//! Never panics; parsed events carry their dedupe id (Telegram: `{chat}:{message_id}`
//! or `update_id`; Discord: the message id) and survive the inbox's JSON round trip.
//! The first byte picks the normalizer; seed the corpus as `fuzz/README.md` shows.
#![no_main]

use std::sync::OnceLock;

use channels::discord::gateway::{self, BotScope};
use channels::telegram::{self, BotIdentity};
use channels::{Channel, EventBody, Normalized};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SECRET: &[u8] = b"fuzz-secret";
const DISCORD_SEED: [u8; 32] = [7; 32];
const DISCORD_BOT: u64 = 999_000_111;

/// Built once: a client per input would cost more than the normalizing.
fn channels() -> &'static [Box<dyn Channel>; 6] {
    static ALL: OnceLock<[Box<dyn Channel>; 6]> = OnceLock::new();
    ALL.get_or_init(|| {
        let http = reqwest::Client::new();
        let url = "http://127.0.0.1:9";
        [
            Box::new(channels::whatsapp::WhatsApp::new(
                http.clone(),
                url,
                "v23.0",
            )),
            Box::new(channels::messenger::Messenger::new(
                http.clone(),
                url,
                "v21.0",
            )),
            Box::new(channels::instagram::Instagram::new(
                http.clone(),
                url,
                "v21.0",
            )),
            Box::new(channels::slack::Slack::new(http.clone(), url)),
            Box::new(channels::telegram::Telegram::new(http.clone(), url)),
            Box::new(channels::discord::Discord::new(http, url)),
        ]
    })
}

/// Parsed events carry their id and survive the inbox's JSON round trip.
fn check(normalized: &Normalized) {
    for event in &normalized.events {
        assert!(!event.external_id.is_empty());
    }
    for item in &normalized.unhandled {
        assert!(!item.reason.is_empty());
    }
    let json = serde_json::to_string(normalized).unwrap_or_default();
    let back: Normalized = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back.events, normalized.events);
}

/// Signs `body` the way the platform would, verifies it as ingress does, and
/// normalizes it through the `Channel` trait.
fn through_channel(index: usize, body: &[u8]) {
    let channel = &channels()[index];
    let verified = match index {
        3 => {
            let signature = webhooks::slack::sign(SECRET, "1700000000", body);
            webhooks::slack::verify(
                SECRET,
                Some(b"1700000000"),
                Some(signature.as_bytes()),
                body,
                1_700_000_000,
            )
        }
        4 => webhooks::telegram::verify_secret_token(SECRET, Some(SECRET), body),
        5 => {
            let Ok(key) = webhooks::discord::parse_public_key(&webhooks::discord::public_key_hex(
                &DISCORD_SEED,
            )) else {
                panic!("a key derived from a seed parses");
            };
            let signature = webhooks::discord::sign(&DISCORD_SEED, "1700000000", body);
            webhooks::discord::verify_interaction(
                &key,
                Some(signature.as_bytes()),
                Some(b"1700000000"),
                body,
                1_700_000_000,
            )
        }
        _ => {
            let signature = webhooks::meta::sign(SECRET, body);
            webhooks::meta::verify_signature(SECRET, Some(signature.as_bytes()), body)
        }
    };
    let Ok(verified) = verified else {
        panic!("a freshly signed body must verify");
    };
    match channel.normalize(verified) {
        Ok(normalized) => {
            if index == 5 {
                // Interactions are not modelled yet: kept raw, never an event.
                assert!(normalized.events.is_empty());
            }
            check(&normalized);
        }
        Err(channels::NormalizeError::Json(_)) => {
            assert!(
                serde_json::from_slice::<Value>(body).is_err(),
                "valid JSON refused as JSON"
            );
        }
        Err(channels::NormalizeError::Envelope(_)) => {}
    }
}

/// A Telegram update with the channel's bot identity: keyed by `{chat}:{message_id}`
/// for a new message and by `update_id` for everything else.
fn telegram_with_bot(body: &[u8]) {
    let bot = BotIdentity {
        id: Some(7001),
        username: Some("shop_bot".into()),
    };
    let Ok(normalized) = telegram::normalize_update(&bot, body) else {
        return;
    };
    let Ok(raw) = serde_json::from_slice::<Value>(body) else {
        panic!("parsed without being JSON");
    };
    let update_id = raw["update_id"].as_u64().map(|id| id.to_string());
    let message_key = format!(
        "{}:{}",
        raw["message"]["chat"]["id"], raw["message"]["message_id"]
    );
    assert!(normalized.events.len() + normalized.unhandled.len() <= 1);
    for event in &normalized.events {
        let expected = match &event.body {
            EventBody::Message(_) if raw.get("message").is_some() => Some(message_key.clone()),
            _ => update_id.clone(),
        };
        assert_eq!(Some(&event.external_id), expected.as_ref());
        assert_eq!(event.account_id, "7001");
    }
    check(&normalized);
    let _ = telegram::callback_answer(body);
}

/// A gateway message object, read by serenity as the session reads it.
fn discord_gateway(body: &[u8]) {
    let scope = BotScope {
        application_id: "1234560123453231555".into(),
        user_id: Some(DISCORD_BOT),
        support_channels: vec!["290926798999357250".into()],
    };
    if let Ok(message) = serde_json::from_slice::<serenity::all::Message>(body) {
        let normalized = gateway::normalize_create(&scope, &message);
        assert!(normalized.events.len() <= 1);
        for event in &normalized.events {
            assert_eq!(event.external_id, message.id.to_string());
        }
        check(&normalized);
    }
    if let Ok(update) = serde_json::from_slice::<serenity::all::MessageUpdateEvent>(body) {
        let normalized = gateway::normalize_update(&scope, &update);
        assert!(normalized.events.len() <= 1);
        check(&normalized);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        6 => telegram_with_bot(body),
        7 => discord_gateway(body),
        index => through_channel(usize::from(index), body),
    }
});
