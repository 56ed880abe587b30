//! Every normalizer (WhatsApp, Messenger, Instagram, Slack) on arbitrary verified
//! bodies: never panics; parsed events carry their dedupe id and survive the inbox's
//! JSON round trip. Seed the corpus with `channels/tests/fixtures/*/*.json`.
#![no_main]

use channels::{Channel, Normalized};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let http = reqwest::Client::new();
    let url = "http://127.0.0.1:9";
    let channel: Box<dyn Channel> = match selector % 4 {
        0 => Box::new(channels::whatsapp::WhatsApp::new(http, url, "v23.0")),
        1 => Box::new(channels::messenger::Messenger::new(http, url, "v21.0")),
        2 => Box::new(channels::instagram::Instagram::new(http, url, "v21.0")),
        _ => Box::new(channels::slack::Slack::new(http, url)),
    };
    let verified = if selector % 4 == 3 {
        let signature = webhooks::slack::sign(SECRET, "1700000000", body);
        webhooks::slack::verify(SECRET, Some(b"1700000000"), Some(signature.as_bytes()), body, 1_700_000_000)
    } else {
        let signature = webhooks::meta::sign(SECRET, body);
        webhooks::meta::verify_signature(SECRET, Some(signature.as_bytes()), body)
    };
    let Ok(verified) = verified else {
        panic!("a freshly signed body must verify");
    };
    if let Ok(normalized) = channel.normalize(verified) {
        for event in &normalized.events {
            assert!(!event.external_id.is_empty());
        }
        let json = serde_json::to_string(&normalized).unwrap_or_default();
        let back: Normalized = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back.events, normalized.events);
    }
});
