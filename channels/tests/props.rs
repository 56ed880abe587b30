//! Property tests of every normalizer (WhatsApp, Messenger, Instagram, Slack,
//! Telegram, Discord interactions and Discord gateway messages): arbitrary bytes and
//! mutated real payloads never panic; a verified payload is either parsed into
//! events, kept as unhandled, or refused with a `NormalizeError` (which the gateway
//! keeps raw as `unparseable`). Parsed events always carry the ids the inbox dedupes
//! on, and survive the JSON round trip through the inbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use channels::discord::gateway::{self, BotScope};
use channels::discord::Discord;
use channels::instagram::Instagram;
use channels::messenger::Messenger;
use channels::slack::Slack;
use channels::telegram::{self, BotIdentity, Telegram};
use channels::whatsapp::WhatsApp;
use channels::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use serenity::all::{ChannelId, Message, MessageId, MessageUpdateEvent};

const SECRET: &[u8] = b"property-secret";
/// The Discord application's private key seed (test only).
const DISCORD_SEED: [u8; 32] = [7; 32];
/// The Discord bot's own user id.
const DISCORD_BOT: u64 = 999_000_111;

const PLATFORMS: [&str; 6] = [
    "whatsapp",
    "messenger",
    "instagram",
    "slack",
    "telegram",
    "discord",
];
const TELEGRAM: usize = 4;

fn channels() -> [(&'static str, Box<dyn Channel>); 6] {
    let http = reqwest::Client::new();
    let url = "http://127.0.0.1:9";
    [
        (
            "whatsapp",
            Box::new(WhatsApp::new(http.clone(), url, "v23.0")),
        ),
        (
            "messenger",
            Box::new(Messenger::new(http.clone(), url, "v21.0")),
        ),
        (
            "instagram",
            Box::new(Instagram::new(http.clone(), url, "v21.0")),
        ),
        ("slack", Box::new(Slack::new(http.clone(), url))),
        ("telegram", Box::new(Telegram::new(http.clone(), url))),
        ("discord", Box::new(Discord::new(http, url))),
    ]
}

fn fixture_dir(dir: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<_> = std::fs::read_dir(&path)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| std::fs::read(name).expect("fixture"))
        .collect()
}

/// Telegram updates beyond the fixtures, built from the Bot API's field definitions
/// (the shapes `tests/telegram.rs` checks one by one): a group command, a mention, a
/// reply to the bot, a forum topic, media, location, venue, contact, an edit, a
/// block, and an update type the gateway does not take.
fn telegram_seeds() -> Vec<Value> {
    let user = json!({"id": 9, "is_bot": false, "first_name": "Ann", "last_name": "Lee", "username": "ann"});
    let private = json!({"id": 9, "first_name": "Ann", "type": "private"});
    let group =
        json!({"id": -100_123, "title": "Shop fans", "type": "supergroup", "is_forum": true});
    let message = |chat: &Value, extra: Value| {
        let mut m = json!({"message_id": 5, "from": user, "chat": chat, "date": 1_700_000_000});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    };
    let file =
        |id: &str| json!({"file_id": id, "file_unique_id": format!("u{id}"), "file_size": 10});
    let bot = json!({"id": 7001, "is_bot": true, "first_name": "Shop", "username": "shop_bot"});
    vec![
        json!({"update_id": 20, "message": message(&group, json!({"text": "/help@shop_bot now",
            "entities": [{"type": "bot_command", "offset": 0, "length": 14}]}))}),
        json!({"update_id": 21, "message": message(&group, json!({"text": "hi @shop_bot 👋",
            "entities": [{"type": "mention", "offset": 3, "length": 9}]}))}),
        json!({"update_id": 22, "message": message(&group, json!({"text": "thanks",
            "reply_to_message": {"message_id": 4, "from": bot, "chat": group, "date": 1_699_999_000, "text": "Hello"}}))}),
        json!({"update_id": 23, "message": message(&group, json!({"text": "in a topic", "message_thread_id": 77,
            "is_topic_message": true, "entities": [{"type": "text_mention", "offset": 0, "length": 2, "user": bot}]}))}),
        json!({"update_id": 24, "message": message(&private, json!({"caption": "look", "photo": [
            {"file_id": "small", "file_unique_id": "us", "width": 90, "height": 90},
            {"file_id": "big", "file_unique_id": "ub", "width": 800, "height": 800}]}))}),
        json!({"update_id": 25, "message": message(&private, json!({"document": {"file_id": "d", "file_unique_id": "ud",
            "file_name": "invoice.pdf", "mime_type": "application/pdf"}}))}),
        json!({"update_id": 26, "message": message(&private, json!({"voice": {"file_id": "v", "file_unique_id": "uv",
            "duration": 3, "mime_type": "audio/ogg"}}))}),
        json!({"update_id": 27, "message": message(&private, json!({"location": {"latitude": 52.5, "longitude": 13.4}}))}),
        json!({"update_id": 28, "message": message(&private, json!({"venue": {"location": {"latitude": 52.5, "longitude": 13.4},
            "title": "Shop", "address": "Main St 1"}}))}),
        json!({"update_id": 29, "message": message(&private, json!({"contact": {"phone_number": "+4930123", "first_name": "Bob", "last_name": "B"}}))}),
        json!({"update_id": 30, "message": message(&private, json!({"sticker": {"file_id": "st", "file_unique_id": "ust",
            "width": 512, "height": 512, "is_animated": false, "is_video": false, "type": "regular"}}))}),
        json!({"update_id": 31, "message": message(&private, json!({"text": "forwarded",
            "forward_origin": {"type": "user", "date": 1_699_000_000, "sender_user": user}}))}),
        json!({"update_id": 32, "edited_message": message(&private, json!({"text": "new", "edit_date": 1_700_000_100}))}),
        json!({"update_id": 33, "my_chat_member": {"chat": private, "from": user, "date": 1_700_000_000,
            "old_chat_member": {"user": bot, "status": "member"},
            "new_chat_member": {"user": bot, "status": "kicked", "until_date": 0}}}),
        json!({"update_id": 34, "message": message(&private, json!({"new_chat_title": "renamed"}))}),
        json!({"update_id": 35, "poll": {"id": "1", "question": "?", "options": [], "total_voter_count": 0,
            "is_closed": false, "is_anonymous": true, "type": "regular", "allows_multiple_answers": false}}),
        json!({"update_id": 36, "message": message(&private, json!({"video": {"file_id": "vid", "file_unique_id": "uvid",
            "width": 1, "height": 1, "duration": 1, "mime_type": "video/mp4"}, "caption": "clip"}))}),
        json!({"update_id": 37, "message": message(&private, json!({"animation": file("gif")}))}),
    ]
}

/// Discord interactions other than the signed PING fixture, built from Discord's
/// field definitions: an application command, a button, an autocomplete and a modal.
fn discord_interaction_seeds() -> Vec<Value> {
    let user = json!({"id": "80351110224678912", "username": "nelly", "discriminator": "0", "global_name": "Nelly"});
    let base = |kind: u64, data: Value| {
        json!({"application_id": "1234560123453231555", "id": format!("12345678901234567{kind}"),
            "token": "aW50ZXJhY3Rpb24", "type": kind, "version": 1, "channel_id": "290926798999357250",
            "user": user, "data": data})
    };
    vec![
        base(
            2,
            json!({"id": "771825006014889984", "name": "help", "type": 1,
            "options": [{"name": "topic", "type": 3, "value": "shipping"}]}),
        ),
        base(3, json!({"custom_id": "confirm", "component_type": 2})),
        base(
            4,
            json!({"id": "771825006014889984", "name": "help", "type": 1,
            "options": [{"name": "topic", "type": 3, "value": "sh", "focused": true}]}),
        ),
        base(
            5,
            json!({"custom_id": "feedback", "components": [{"type": 1, "components": [
            {"type": 4, "custom_id": "text", "value": "great"}]}]}),
        ),
    ]
}

/// Every real payload of every platform, plus the constructed seeds above, as
/// (platform index, bytes).
fn fixtures() -> &'static [(usize, Vec<u8>)] {
    static ALL: OnceLock<Vec<(usize, Vec<u8>)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = Vec::new();
        for (i, dir) in PLATFORMS.iter().enumerate() {
            match *dir {
                "discord" => {
                    // The fixtures hold gateway frames and a signed PING with its body
                    // as a string: the interaction bodies are what this endpoint gets.
                    let ping: Value = serde_json::from_slice(
                        &std::fs::read(format!(
                            "{}/tests/fixtures/discord/interaction-ping-signed.json",
                            env!("CARGO_MANIFEST_DIR")
                        ))
                        .expect("ping fixture"),
                    )
                    .expect("json");
                    all.push((i, ping["raw_body"].as_str().unwrap().as_bytes().to_vec()));
                    for seed in discord_interaction_seeds() {
                        all.push((i, serde_json::to_vec(&seed).unwrap()));
                    }
                }
                dir => {
                    for body in fixture_dir(dir) {
                        all.push((i, body));
                    }
                    if dir == "telegram" {
                        for seed in telegram_seeds() {
                            all.push((i, serde_json::to_vec(&seed).unwrap()));
                        }
                    }
                }
            }
        }
        all
    })
}

/// Signs and verifies `body` the way ingress does, then normalizes it.
fn normalize(channel: &dyn Channel, body: &[u8]) -> Result<Normalized, NormalizeError> {
    let verified = match channel.kind() {
        ChannelKind::Slack => {
            let sig = webhooks::slack::sign(SECRET, "1700000000", body);
            webhooks::slack::verify(
                SECRET,
                Some(b"1700000000"),
                Some(sig.as_bytes()),
                body,
                1_700_000_000,
            )
        }
        ChannelKind::Telegram => {
            webhooks::telegram::verify_secret_token(SECRET, Some(SECRET), body)
        }
        ChannelKind::Discord => {
            let key = webhooks::discord::parse_public_key(&webhooks::discord::public_key_hex(
                &DISCORD_SEED,
            ))
            .expect("key");
            let sig = webhooks::discord::sign(&DISCORD_SEED, "1700000000", body);
            webhooks::discord::verify_interaction(
                &key,
                Some(sig.as_bytes()),
                Some(b"1700000000"),
                body,
                1_700_000_000,
            )
        }
        _ => {
            let sig = webhooks::meta::sign(SECRET, body);
            webhooks::meta::verify_signature(SECRET, Some(sig.as_bytes()), body)
        }
    }
    .expect("freshly signed body verifies");
    channel.normalize(verified)
}

/// What must hold for any outcome: parsed events carry their dedupe ids and survive
/// the inbox's JSON round trip; unhandled parts keep a reason.
fn check(outcome: Result<Normalized, NormalizeError>) -> Result<(), TestCaseError> {
    let Ok(normalized) = outcome else {
        return Ok(());
    };
    for event in &normalized.events {
        prop_assert!(!event.external_id.is_empty(), "event without id: {event:?}");
    }
    for item in &normalized.unhandled {
        prop_assert!(!item.reason.is_empty());
    }
    let json = serde_json::to_string(&normalized).expect("serializes");
    let back: Normalized = serde_json::from_str(&json).expect("deserializes");
    prop_assert_eq!(&back.events, &normalized.events);
    // Raw unhandled JSON is compared by reason and account only: serde_json (without
    // `float_roundtrip`) may move an extreme float by one ulp on a re-parse.
    let kept = |n: &Normalized| {
        n.unhandled
            .iter()
            .map(|u| (u.account_id.clone(), u.reason.clone()))
            .collect::<Vec<_>>()
    };
    prop_assert_eq!(kept(&back), kept(&normalized));
    Ok(())
}

/// Every JSON pointer in `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn replacement() -> impl Strategy<Value = Option<Value>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Floats that survive a re-parse: serde_json without `float_roundtrip` may
        // move an extreme one by one ulp, which is not the normalizer's doing.
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number))
            .prop_filter("float survives a re-parse", |v| {
                serde_json::from_str::<Value>(&v.to_string()).ok().as_ref() == Some(v)
            }),
        // Integers of the sizes the wire types use (u32 widths, i32 message ids),
        // which an arbitrary i64 almost never is.
        any::<u32>().prop_map(Value::from),
        (-3i64..100_000).prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        Just(Value::Array(Vec::new())),
        Just(Value::Object(serde_json::Map::new())),
    ];
    prop_oneof![
        1 => Just(None),
        4 => leaf.prop_recursive(3, 16, 4, |inner| prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ])
        .prop_map(Some),
    ]
}

/// `fixture` with the value at one of its pointers replaced by `with` (or removed).
fn mutate_json(fixture: &[u8], pick: usize, with: Option<Value>) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(fixture).expect("fixture is JSON");
    let mut all = Vec::new();
    pointers(&value, String::new(), &mut all);
    let pointer = &all[pick % all.len()];
    match (with, pointer.rsplit_once('/')) {
        (Some(new), _) => {
            if let Some(slot) = value.pointer_mut(pointer) {
                *slot = new;
            }
        }
        (None, Some((parent, key))) => match value.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.remove(&key.replace("~1", "/").replace("~0", "~"));
            }
            Some(Value::Array(items)) => {
                if let Ok(i) = key.parse::<usize>() {
                    if i < items.len() {
                        items.remove(i);
                    }
                }
            }
            _ => {}
        },
        (None, None) => value = Value::Null,
    }
    serde_json::to_vec(&value).expect("serializes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for (_, channel) in channels() {
            check(normalize(channel.as_ref(), &body))?;
        }
    }

    #[test]
    fn byte_mutated_payloads_never_panic(
        pick in any::<usize>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let all = fixtures();
        let (platform, fixture) = &all[pick % all.len()];
        let mut body = fixture.clone();
        for (at, byte) in edits {
            let i = at % body.len();
            body[i] = byte;
        }
        if let Some(cut) = cut {
            body.truncate(cut % (body.len() + 1));
        }
        check(normalize(channels()[*platform].1.as_ref(), &body))?;
    }

    #[test]
    fn json_mutated_payloads_are_parsed_or_kept(
        pick in any::<usize>(),
        mutations in proptest::collection::vec((any::<usize>(), replacement()), 1..4),
    ) {
        let all = fixtures();
        let (platform, fixture) = &all[pick % all.len()];
        let mut body = fixture.clone();
        for (at, with) in mutations {
            body = mutate_json(&body, at, with);
        }
        // Valid JSON: never a JSON error, only parsed, kept, or an envelope refusal.
        let outcome = normalize(channels()[*platform].1.as_ref(), &body);
        prop_assert!(!matches!(outcome, Err(NormalizeError::Json(_))), "{outcome:?}");
        check(outcome)?;
    }

    #[test]
    fn every_payload_normalizes_the_same_on_every_run(pick in any::<usize>()) {
        let all = fixtures();
        let (platform, fixture) = &all[pick % all.len()];
        let channel = &channels()[*platform].1;
        let first = normalize(channel.as_ref(), fixture).map_err(|e| e.to_string());
        let second = normalize(channel.as_ref(), fixture).map_err(|e| e.to_string());
        prop_assert_eq!(first, second);
    }
}

/// JSON nested far beyond serde_json's recursion limit is refused, not a stack overflow.
#[test]
fn deeply_nested_json_is_refused_without_overflow() {
    for depth in [200, 10_000, 100_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!(
            "{{\"object\":\"page\",\"entry\":{}{}}}",
            "[{\"a\":".repeat(depth),
            "1}]".repeat(depth)
        );
        for (_, channel) in channels() {
            for body in [&arrays, &objects] {
                let outcome = normalize(channel.as_ref(), body.as_bytes());
                assert!(
                    matches!(outcome, Err(NormalizeError::Json(_))),
                    "depth {depth}: {outcome:?}"
                );
            }
        }
    }
}

/// Large arrays within the body limit are handled, each element kept or parsed.
#[test]
fn a_hundred_thousand_empty_entries_are_handled() {
    let body = format!(
        "{{\"object\":\"whatsapp_business_account\",\"entry\":[{}]}}",
        vec!["{}"; 100_000].join(",")
    );
    let (_, channel) = &channels()[0];
    let outcome = normalize(channel.as_ref(), body.as_bytes());
    assert!(outcome.is_ok(), "{outcome:?}");
}

// -- telegram, discord --------------------------------------------------------------

/// The bot identities ingress normalizes Telegram updates with: none known, or the
/// channel's bot (whose mentions and replies address it in groups).
fn telegram_bot() -> impl Strategy<Value = BotIdentity> {
    prop_oneof![
        Just(BotIdentity::default()),
        Just(BotIdentity {
            id: Some(7001),
            username: Some("shop_bot".into()),
        }),
        (any::<u64>(), proptest::option::of("[a-z_]{0,12}")).prop_map(|(id, username)| {
            BotIdentity {
                id: Some(id),
                username,
            }
        }),
    ]
}

/// What must hold for a Telegram update: at most one event, keyed by
/// `{chat}:{message_id}` for a new message and by `update_id` for everything else,
/// and addressed to the bot's account.
fn check_telegram(
    bot: &BotIdentity,
    body: &[u8],
    outcome: Result<Normalized, NormalizeError>,
) -> Result<(), TestCaseError> {
    let raw: Option<Value> = serde_json::from_slice(body).ok();
    let update_id = raw
        .as_ref()
        .and_then(|r| r.get("update_id"))
        .and_then(Value::as_u64);
    match &outcome {
        Err(NormalizeError::Json(_)) => prop_assert!(raw.is_none(), "valid JSON refused"),
        Err(NormalizeError::Envelope(_)) => prop_assert!(raw.is_some() && update_id.is_none()),
        Ok(normalized) => {
            let update_id = update_id.expect("parsed without update_id");
            prop_assert!(normalized.events.len() + normalized.unhandled.len() <= 1);
            let raw = raw.expect("parsed");
            let message_key = format!(
                "{}:{}",
                raw["message"]["chat"]["id"], raw["message"]["message_id"]
            );
            for event in &normalized.events {
                let expected = match &event.body {
                    EventBody::Message(_) if raw.get("message").is_some() => message_key.clone(),
                    _ => update_id.to_string(),
                };
                prop_assert_eq!(&event.external_id, &expected);
                prop_assert_eq!(
                    &event.account_id,
                    &bot.id.map(|id| id.to_string()).unwrap_or_default()
                );
            }
        }
    }
    check(outcome)
}

fn telegram_fixtures() -> Vec<&'static [u8]> {
    fixtures()
        .iter()
        .filter(|(p, _)| *p == TELEGRAM)
        .map(|(_, body)| body.as_slice())
        .collect()
}

/// MESSAGE_CREATE `d` from fixtures/discord/gateway-message-create-dispatch.json, as
/// sent in a guild, and variants: a direct message, a mention of the bot with an
/// attachment, and a reply.
fn discord_messages() -> &'static [Value] {
    static ALL: OnceLock<Vec<Value>> = OnceLock::new();
    ALL.get_or_init(|| {
        let frame: Value = serde_json::from_slice(
            &std::fs::read(format!(
                "{}/tests/fixtures/discord/gateway-message-create-dispatch.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("dispatch fixture"),
        )
        .expect("json");
        let guild = frame["d"].clone();
        let mut dm = guild.clone();
        dm.as_object_mut().unwrap().remove("guild_id");
        dm.as_object_mut().unwrap().remove("member");
        let mut mention = guild.clone();
        mention["content"] = json!(format!("<@{DISCORD_BOT}>"));
        mention["mentions"] = json!([{"id": DISCORD_BOT.to_string(), "username": "shop",
            "discriminator": "0", "avatar": null, "bot": true}]);
        mention["attachments"] = json!([{"id": "1100000000000000001", "filename": "a.png",
            "size": 10, "url": "https://cdn.discordapp.com/a.png", "proxy_url": "https://media.discordapp.net/a.png"}]);
        let mut reply = dm.clone();
        reply["message_reference"] =
            json!({"message_id": "334385199974967000", "channel_id": "290926798999357250"});
        reply["type"] = json!(19);
        vec![guild, dm, mention, reply]
    })
}

/// What serenity reads from a gateway object, or None where it cannot. serenity
/// (0.12) reads an avatar or icon hash (`ImageHash`) by byte offsets and panics on
/// one that is not ASCII; Discord sends hex there, and the gateway's objects reach
/// the handler only as serenity read them, so a panic inside serenity's own reading
/// counts as "not read" here. Only serenity's reading is caught, never ours.
fn serenity_reads<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    std::panic::catch_unwind(|| serde_json::from_slice::<T>(body).ok())
        .ok()
        .flatten()
}

fn discord_scope() -> impl Strategy<Value = BotScope> {
    (proptest::option::of(Just(DISCORD_BOT)), any::<bool>()).prop_map(|(user_id, support)| {
        BotScope {
            application_id: "1234560123453231555".into(),
            user_id,
            support_channels: if support {
                vec!["290926798999357250".into()]
            } else {
                Vec::new()
            },
        }
    })
}

/// What must hold for a gateway message serenity could read: at most one event,
/// keyed by the message id; never one for a bot's own message.
fn check_discord_create(
    scope: &BotScope,
    raw: &Value,
    message: &Message,
) -> Result<(), TestCaseError> {
    let out = gateway::normalize_create(scope, message);
    prop_assert!(out.events.len() <= 1 && out.unhandled.is_empty());
    for event in &out.events {
        prop_assert_eq!(&event.external_id, &message.id.to_string());
        // Discord sends ids as strings; serenity reads numbers too.
        let raw_id = match &raw["id"] {
            Value::String(id) => Some(id.clone()),
            Value::Number(id) => Some(id.to_string()),
            _ => None,
        };
        prop_assert_eq!(Some(&event.external_id), raw_id.as_ref());
        prop_assert!(!message.author.bot);
        prop_assert_ne!(Some(message.author.id.get()), scope.user_id);
    }
    check(Ok(out))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn telegram_arbitrary_bytes_never_panic(
        bot in telegram_bot(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        check_telegram(&bot, &body, telegram::normalize_update(&bot, &body))?;
    }

    #[test]
    fn telegram_mutated_updates_are_keyed_by_their_ids(
        bot in telegram_bot(),
        pick in any::<usize>(),
        mutations in proptest::collection::vec((any::<usize>(), replacement()), 0..4),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
    ) {
        let seeds = telegram_fixtures();
        let mut body = seeds[pick % seeds.len()].to_vec();
        for (at, with) in mutations {
            body = mutate_json(&body, at, with);
        }
        for (at, byte) in edits {
            let i = at % body.len();
            body[i] = byte;
        }
        check_telegram(&bot, &body, telegram::normalize_update(&bot, &body))?;
        // The webhook's own answer to a button tap reads the same bytes.
        let _ = telegram::callback_answer(&body);
    }

    #[test]
    fn discord_gateway_arbitrary_bytes_never_panic(
        scope in discord_scope(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        if let Some(message) = serenity_reads::<Message>(&body) {
            let raw: Value = serde_json::from_slice(&body).unwrap();
            check_discord_create(&scope, &raw, &message)?;
        }
        if let Some(update) = serenity_reads::<MessageUpdateEvent>(&body) {
            check(Ok(gateway::normalize_update(&scope, &update)))?;
        }
    }

    #[test]
    fn discord_gateway_mutated_messages_are_keyed_by_message_id(
        scope in discord_scope(),
        pick in any::<usize>(),
        mutations in proptest::collection::vec((any::<usize>(), replacement()), 0..4),
    ) {
        let seeds = discord_messages();
        let mut body = serde_json::to_vec(&seeds[pick % seeds.len()]).unwrap();
        for (at, with) in mutations {
            body = mutate_json(&body, at, with);
        }
        let raw: Value = serde_json::from_slice(&body).unwrap();
        // What serenity cannot read never reaches the handler; what it reads must
        // map to at most one event keyed by the message id.
        if let Some(message) = serenity_reads::<Message>(&body) {
            check_discord_create(&scope, &raw, &message)?;
        }
        // The same object as a MESSAGE_UPDATE: an edit keyed by id and edit time.
        if let Some(update) = serenity_reads::<MessageUpdateEvent>(&body) {
            let out = gateway::normalize_update(&scope, &update);
            prop_assert!(out.events.len() <= 1);
            for event in &out.events {
                let at = update.edited_timestamp.map_or(0, |t| t.unix_timestamp());
                prop_assert_eq!(&event.external_id, &format!("{}:edit:{at}", update.id));
            }
            check(Ok(out))?;
        }
    }

    #[test]
    fn discord_gateway_deletes_are_one_authorless_delete_per_message(
        scope in discord_scope(),
        channel in 1u64..,
        messages in proptest::collection::vec(1u64.., 0..5),
    ) {
        let ids: Vec<MessageId> = messages.iter().copied().map(MessageId::new).collect();
        let out = gateway::normalize_delete(&scope, ChannelId::new(channel), &ids);
        prop_assert!(out.unhandled.is_empty());
        prop_assert_eq!(out.events.len(), messages.len());
        for (event, id) in out.events.iter().zip(&messages) {
            prop_assert_eq!(&event.external_id, &format!("delete:{id}"));
            match &event.body {
                EventBody::Delete(delete) => {
                    prop_assert_eq!(&delete.target, &id.to_string());
                    prop_assert_eq!(&delete.chat, &channel.to_string());
                    prop_assert!(delete.sender.is_none());
                }
                other => prop_assert!(false, "not a delete: {other:?}"),
            }
        }
        check(Ok(out))?;
    }
}

/// The unmutated seeds do what the properties above rely on, so those are not
/// vacuous: every Telegram update seed normalizes, and serenity reads every gateway
/// seed into a message the bot takes (DM, mention, support channel).
#[test]
fn telegram_and_discord_seeds_are_understood() {
    let bot = BotIdentity {
        id: Some(7001),
        username: Some("shop_bot".into()),
    };
    for seed in telegram_seeds() {
        let body = serde_json::to_vec(&seed).unwrap();
        let out = telegram::normalize_update(&bot, &body).expect("seed normalizes");
        // Every seed is one event, except the poll: an update type kept raw.
        let expected = if seed.get("poll").is_some() {
            (0, 1)
        } else {
            (1, 0)
        };
        assert_eq!((out.events.len(), out.unhandled.len()), expected, "{seed}");
    }
    let scope = BotScope {
        application_id: "1234560123453231555".into(),
        user_id: Some(DISCORD_BOT),
        support_channels: Vec::new(),
    };
    let taken: Vec<usize> = discord_messages()
        .iter()
        .map(|d| {
            let message: Message = serde_json::from_value(d.clone()).expect("serenity reads it");
            gateway::normalize_create(&scope, &message).events.len()
        })
        .collect();
    assert_eq!(taken, [0, 1, 1, 1]);
}

/// Found by the gateway property: a mutation that puts a non-ASCII string in an
/// author's `avatar` made serenity panic while reading the message. Such an object
/// is one serenity cannot read (never an event), and the same message with its hex
/// avatar is read and taken.
#[test]
fn a_gateway_message_with_a_non_hex_avatar_is_not_read() {
    let scope = BotScope {
        application_id: "1234560123453231555".into(),
        user_id: Some(DISCORD_BOT),
        support_channels: Vec::new(),
    };
    let dm = &discord_messages()[1];
    let mut odd = dm.clone();
    odd["author"]["avatar"] =
        json!("a   A \u{10000}\u{10000}\u{10000}\u{10000}\u{b} \u{10000}\u{10000}");
    let body = serde_json::to_vec(&odd).unwrap();
    assert!(serenity_reads::<Message>(&body).is_none());
    assert!(serenity_reads::<MessageUpdateEvent>(&body).is_none());
    let body = serde_json::to_vec(dm).unwrap();
    let message = serenity_reads::<Message>(&body).expect("the seed is read");
    assert_eq!(gateway::normalize_create(&scope, &message).events.len(), 1);
}

/// Found by the property above: a photo size whose area is beyond `u32` (a mutated
/// `width`/`height`) overflowed while picking the largest size.
#[test]
fn a_photo_area_beyond_u32_picks_the_largest_without_overflow() {
    let body = json!({"update_id": 40, "message": {"message_id": 5,
        "from": {"id": 9, "is_bot": false, "first_name": "Ann"},
        "chat": {"id": 9, "first_name": "Ann", "type": "private"}, "date": 1_700_000_000,
        "photo": [
            {"file_id": "small", "file_unique_id": "us", "width": 90, "height": 90},
            {"file_id": "huge", "file_unique_id": "uh", "width": 4_000_000_000u32, "height": 65_536}]}})
    .to_string();
    let out = telegram::normalize_update(&BotIdentity::default(), body.as_bytes()).unwrap();
    let EventBody::Message(m) = &out.events[0].body else {
        panic!("{out:?}")
    };
    assert!(
        matches!(&m.content, Content::Media(media) if media.media_id.as_deref() == Some("huge")),
        "{:?}",
        m.content
    );
}
