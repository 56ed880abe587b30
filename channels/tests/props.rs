//! Property tests of every normalizer (WhatsApp, Messenger, Instagram, Slack):
//! arbitrary bytes and mutated real payloads never panic; a verified payload is either
//! parsed into events, kept as unhandled, or refused with a `NormalizeError` (which the
//! gateway keeps raw as `unparseable`). Parsed events always carry the ids the inbox
//! dedupes on, and survive the JSON round trip through the inbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use channels::instagram::Instagram;
use channels::messenger::Messenger;
use channels::slack::Slack;
use channels::whatsapp::WhatsApp;
use channels::*;
use proptest::prelude::*;
use serde_json::Value;

const SECRET: &[u8] = b"property-secret";

fn channels() -> [(&'static str, Box<dyn Channel>); 4] {
    let http = reqwest::Client::new();
    [
        (
            "whatsapp",
            Box::new(WhatsApp::new(http.clone(), "http://127.0.0.1:9", "v23.0")),
        ),
        (
            "messenger",
            Box::new(Messenger::new(http.clone(), "http://127.0.0.1:9", "v21.0")),
        ),
        (
            "instagram",
            Box::new(Instagram::new(http.clone(), "http://127.0.0.1:9", "v21.0")),
        ),
        ("slack", Box::new(Slack::new(http, "http://127.0.0.1:9"))),
    ]
}

/// Every real payload in `fixtures/<platform>/`, as (platform, bytes).
fn fixtures() -> &'static [(usize, Vec<u8>)] {
    static ALL: OnceLock<Vec<(usize, Vec<u8>)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = Vec::new();
        for (i, (dir, _)) in channels().iter().enumerate() {
            let path = format!("{}/tests/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .expect("fixture dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            names.sort();
            for name in names {
                all.push((i, std::fs::read(name).expect("fixture")));
            }
        }
        all
    })
}

/// Signs and verifies `body` the way ingress does, then normalizes it.
fn normalize(channel: &dyn Channel, body: &[u8]) -> Result<Normalized, NormalizeError> {
    let verified = if channel.kind() == ChannelKind::Slack {
        let sig = webhooks::slack::sign(SECRET, "1700000000", body);
        webhooks::slack::verify(
            SECRET,
            Some(b"1700000000"),
            Some(sig.as_bytes()),
            body,
            1_700_000_000,
        )
    } else {
        let sig = webhooks::meta::sign(SECRET, body);
        webhooks::meta::verify_signature(SECRET, Some(sig.as_bytes()), body)
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
