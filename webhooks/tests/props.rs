//! Property tests of every verifier: arbitrary and mutated input never panics, a
//! delivery is accepted exactly when it carries the right MAC (or Telegram's exact
//! secret token, or Discord's Ed25519 signature) over the exact bytes received, and
//! every rejection is one of the named `VerifyError`s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use webhooks::{discord, meta, signed_request, slack, telegram, VerifyError};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Header values a sender might send: absent, random bytes, or a plausible
/// `prefix=hex` of random length.
fn header(prefix: &'static str) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        bytes(80).prop_map(Some),
        "[0-9a-fA-F]{0,70}".prop_map(move |h| Some(format!("{prefix}{h}").into_bytes())),
    ]
}

/// `body` with one byte changed, inserted or removed at `at`.
fn mutate(body: &[u8], at: usize, op: u8, value: u8) -> Vec<u8> {
    let mut out = body.to_vec();
    let i = if out.is_empty() { 0 } else { at % out.len() };
    match op % 3 {
        0 if !out.is_empty() => out[i] ^= value.max(1),
        1 => out.insert(i, value),
        _ if !out.is_empty() => {
            out.remove(i);
        }
        _ => out.push(value),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn meta_arbitrary_input_is_rejected_or_correctly_signed(
        secret in bytes(64),
        sig in header("sha256="),
        body in bytes(512),
    ) {
        let result = meta::verify_signature(&secret, sig.as_deref(), &body);
        let expected = meta::sign(&secret, &body);
        match result {
            Ok(verified) => {
                prop_assert_eq!(*verified.get(), &body[..]);
                let given = String::from_utf8(sig.unwrap()).unwrap();
                prop_assert!(given.eq_ignore_ascii_case(&expected));
            }
            Err(e) => prop_assert!(matches!(
                e,
                VerifyError::MissingSignature | VerifyError::MalformedSignature | VerifyError::BadSignature
            )),
        }
    }

    #[test]
    fn meta_signed_body_verifies_and_any_change_is_refused(
        secret in bytes(64),
        body in bytes(512),
        at in any::<usize>(),
        op in any::<u8>(),
        value in any::<u8>(),
    ) {
        let sig = meta::sign(&secret, &body);
        prop_assert!(meta::verify_signature(&secret, Some(sig.as_bytes()), &body).is_ok());
        let changed = mutate(&body, at, op, value);
        if changed != body {
            prop_assert_eq!(
                meta::verify_signature(&secret, Some(sig.as_bytes()), &changed).err(),
                Some(VerifyError::BadSignature)
            );
        }
        // A changed byte, not an appended zero: HMAC pads short keys with zeros, so
        // `k` and `k\0` are the same key.
        let mut other_secret = secret.clone();
        match other_secret.len() {
            0 => other_secret.push(1),
            n => other_secret[at % n] ^= value.max(1),
        }
        {
            prop_assert_eq!(
                meta::verify_signature(&other_secret, Some(sig.as_bytes()), &body).err(),
                Some(VerifyError::BadSignature)
            );
        }
    }

    #[test]
    fn meta_handshake_never_echoes_without_the_token(
        expected in bytes(32),
        mode in proptest::option::of("[a-z]{0,10}"),
        token in proptest::option::of(".{0,40}"),
        challenge in proptest::option::of(".{0,40}"),
    ) {
        let query = meta::Subscription { mode: mode.clone(), verify_token: token.clone(), challenge };
        if let Ok(echo) = meta::verify_subscription(&expected, &query) {
            prop_assert_eq!(mode.as_deref(), Some("subscribe"));
            prop_assert!(!expected.is_empty());
            prop_assert_eq!(token.as_deref().map(str::as_bytes), Some(&expected[..]));
            prop_assert_eq!(echo, query.challenge.as_deref().unwrap_or_default());
        }
    }

    #[test]
    fn signed_request_arbitrary_input_never_panics(secret in bytes(32), input in ".{0,300}") {
        if let Err(e) = signed_request::verify_signed_request(&secret, &input) {
            prop_assert!(matches!(
                e,
                VerifyError::MalformedSignedRequest | VerifyError::BadSignature | VerifyError::UnsupportedAlgorithm
            ));
        }
    }

    #[test]
    fn signed_request_roundtrip_and_tampering(
        secret in bytes(32),
        user_id in "[0-9]{1,20}",
        issued_at in any::<i64>(),
        at in any::<usize>(),
        op in any::<u8>(),
        value in any::<u8>(),
    ) {
        let payload = serde_json::json!({"algorithm": "HMAC-SHA256", "user_id": user_id, "issued_at": issued_at});
        let signed = signed_request::sign_signed_request(&secret, payload.to_string().as_bytes());
        let verified = signed_request::verify_signed_request(&secret, &signed).expect("signed verifies");
        prop_assert_eq!(&verified.get().user_id, &user_id);
        prop_assert_eq!(verified.get().issued_at, Some(issued_at));
        let changed = mutate(signed.as_bytes(), at, op, value);
        if let Ok(changed) = String::from_utf8(changed) {
            if changed.trim() != signed {
                // base64 tolerates a changed padding bit only when it decodes to
                // the same bytes; anything that verifies must name the same person.
                if let Ok(v) = signed_request::verify_signed_request(&secret, &changed) {
                    prop_assert_eq!(&v.get().user_id, &user_id);
                }
            }
        }
    }

    #[test]
    fn slack_arbitrary_input_is_rejected_or_correctly_signed(
        secret in bytes(64),
        timestamp in prop_oneof![Just(None), bytes(16).prop_map(Some), "[0-9]{1,12}".prop_map(|t| Some(t.into_bytes()))],
        sig in header("v0="),
        body in bytes(512),
        now in 0i64..4_000_000_000,
    ) {
        match slack::verify(&secret, timestamp.as_deref(), sig.as_deref(), &body, now) {
            Ok(verified) => {
                prop_assert_eq!(*verified.get(), &body[..]);
                let ts = String::from_utf8(timestamp.unwrap()).unwrap();
                prop_assert!(ts.parse::<i64>().unwrap().abs_diff(now) <= 300);
                let given = String::from_utf8(sig.unwrap()).unwrap();
                prop_assert!(given.eq_ignore_ascii_case(&slack::sign(&secret, &ts, &body)));
            }
            Err(e) => prop_assert!(matches!(
                e,
                VerifyError::BadTimestamp
                    | VerifyError::StaleTimestamp
                    | VerifyError::MissingSignature
                    | VerifyError::MalformedSignature
                    | VerifyError::BadSignature
            )),
        }
    }

    #[test]
    fn slack_signature_holds_only_inside_the_replay_window(
        secret in bytes(64),
        body in bytes(512),
        sent in 1_000_000_000i64..2_000_000_000,
        skew in -1000i64..1000,
        at in any::<usize>(),
        op in any::<u8>(),
        value in any::<u8>(),
    ) {
        let ts = sent.to_string();
        let sig = slack::sign(&secret, &ts, &body);
        let result = slack::verify(&secret, Some(ts.as_bytes()), Some(sig.as_bytes()), &body, sent + skew);
        if skew.abs() <= slack::TOLERANCE_SECS {
            prop_assert!(result.is_ok());
            let changed = mutate(&body, at, op, value);
            if changed != body {
                prop_assert_eq!(
                    slack::verify(&secret, Some(ts.as_bytes()), Some(sig.as_bytes()), &changed, sent + skew).err(),
                    Some(VerifyError::BadSignature)
                );
            }
            // The same signature under another timestamp inside the window (a replay
            // with a fresh time) is refused.
            let moved = (if skew == 0 { sent + 1 } else { sent + skew }).to_string();
            prop_assert_eq!(
                slack::verify(&secret, Some(moved.as_bytes()), Some(sig.as_bytes()), &body, sent + skew).err(),
                Some(VerifyError::BadSignature)
            );
        } else {
            prop_assert_eq!(result.err(), Some(VerifyError::StaleTimestamp));
        }
    }
}

/// A Telegram `secret_token` as `setWebhook` accepts it.
fn secret_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,256}"
}

/// A Discord application key pair, from its private seed.
fn seed() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

/// The application's public key, as the gateway parses it from the channel's hex.
fn discord_key(seed: &[u8; 32]) -> ed25519_dalek::VerifyingKey {
    discord::parse_public_key(&discord::public_key_hex(seed)).unwrap()
}

/// The gateway's clock in the Discord properties, Unix seconds.
const DISCORD_NOW: i64 = 1_750_000_000;

fn discord_verify(
    key: &ed25519_dalek::VerifyingKey,
    signature: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    body: &[u8],
) -> Result<Vec<u8>, VerifyError> {
    discord_verify_at(key, signature, timestamp, body, DISCORD_NOW)
}

fn discord_verify_at(
    key: &ed25519_dalek::VerifyingKey,
    signature: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    body: &[u8],
    now: i64,
) -> Result<Vec<u8>, VerifyError> {
    discord::verify_interaction(key, signature, timestamp, body, now).map(|v| v.get().to_vec())
}

/// Whether `timestamp` is one the replay window takes at `now`: 1 to 12 ASCII digits
/// within [`discord::TOLERANCE_SECS`].
fn in_window(timestamp: &[u8], now: i64) -> bool {
    (1..=12).contains(&timestamp.len())
        && timestamp.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(timestamp)
            .unwrap()
            .parse::<i64>()
            .unwrap()
            .abs_diff(now)
            <= discord::TOLERANCE_SECS.unsigned_abs()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn telegram_arbitrary_input_is_rejected_or_the_exact_secret(
        secret in prop_oneof![bytes(64), secret_token().prop_map(String::into_bytes)],
        header in prop_oneof![Just(None), bytes(80).prop_map(Some), secret_token().prop_map(|t| Some(t.into_bytes()))],
        body in bytes(512),
    ) {
        match telegram::verify_secret_token(&secret, header.as_deref(), &body) {
            Ok(verified) => {
                prop_assert_eq!(*verified.get(), &body[..]);
                prop_assert!(!secret.is_empty());
                prop_assert_eq!(header.as_deref(), Some(&secret[..]));
            }
            Err(e) => {
                let expected = match header {
                    None => VerifyError::MissingSignature,
                    Some(_) => VerifyError::BadSignature,
                };
                prop_assert_eq!(e, expected);
            }
        }
    }

    #[test]
    fn telegram_secret_verifies_any_body_and_any_change_to_it_is_refused(
        secret in secret_token(),
        body in bytes(512),
        at in any::<usize>(),
        op in any::<u8>(),
        value in any::<u8>(),
    ) {
        // Telegram signs no body: the token is the whole proof, and the body is
        // handed on untouched.
        let verified = telegram::verify_secret_token(secret.as_bytes(), Some(secret.as_bytes()), &body);
        prop_assert_eq!(verified.map(|v| v.into_inner()), Ok(&body[..]));
        let changed = mutate(secret.as_bytes(), at, op, value);
        if changed != secret.as_bytes() {
            prop_assert_eq!(
                telegram::verify_secret_token(secret.as_bytes(), Some(&changed), &body).err(),
                Some(VerifyError::BadSignature)
            );
        }
        prop_assert_eq!(
            telegram::verify_secret_token(secret.as_bytes(), None, &body).err(),
            Some(VerifyError::MissingSignature)
        );
        prop_assert!(telegram::is_valid_secret_token(&secret));
    }

    #[test]
    fn telegram_secret_token_alphabet(token in ".{0,300}") {
        let valid = (1..=256).contains(&token.len())
            && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        prop_assert_eq!(telegram::is_valid_secret_token(&token), valid);
    }

    #[test]
    fn discord_public_key_parsing_never_panics(key in prop_oneof![".{0,80}", "[0-9a-fA-F]{60,68}"]) {
        if discord::parse_public_key(&key).is_ok() {
            let trimmed = key.trim();
            prop_assert_eq!(trimmed.len(), 64);
            prop_assert!(trimmed.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn discord_arbitrary_input_is_rejected_or_correctly_signed(
        seed in seed(),
        signature in prop_oneof![
            Just(None),
            bytes(140).prop_map(Some),
            "[0-9a-fA-F]{120,130}".prop_map(|h| Some(h.into_bytes())),
        ],
        timestamp in prop_oneof![
            Just(None),
            bytes(16).prop_map(Some),
            "[0-9]{1,12}".prop_map(|t| Some(t.into_bytes())),
            (-400i64..400).prop_map(|skew| Some((DISCORD_NOW + skew).to_string().into_bytes())),
        ],
        body in bytes(512),
    ) {
        match discord_verify(&discord_key(&seed), signature.as_deref(), timestamp.as_deref(), &body) {
            Ok(verified) => {
                // Random bytes do not forge Ed25519: only the signature of the seed's
                // key over timestamp + body, sent inside the window, can get here.
                prop_assert_eq!(&verified, &body);
                let ts = timestamp.unwrap();
                prop_assert!(in_window(&ts, DISCORD_NOW));
                let ts = String::from_utf8(ts).unwrap();
                let given = String::from_utf8(signature.unwrap()).unwrap();
                prop_assert!(given.eq_ignore_ascii_case(&discord::sign(&seed, &ts, &body)));
            }
            Err(e) => {
                // The timestamp is checked before the signature.
                let expected_time_error = match timestamp.as_deref() {
                    None => Some(VerifyError::BadTimestamp),
                    Some(ts) if in_window(ts, DISCORD_NOW) => None,
                    Some(ts) if (1..=12).contains(&ts.len()) && ts.iter().all(u8::is_ascii_digit) => {
                        Some(VerifyError::StaleTimestamp)
                    }
                    Some(_) => Some(VerifyError::BadTimestamp),
                };
                match expected_time_error {
                    Some(expected) => prop_assert_eq!(e, expected),
                    None => {
                        prop_assert!(matches!(
                            e,
                            VerifyError::MissingSignature | VerifyError::MalformedSignature | VerifyError::BadSignature
                        ));
                        if signature.is_none() {
                            prop_assert_eq!(e, VerifyError::MissingSignature);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn discord_signed_body_verifies_and_any_change_is_refused(
        seed in seed(),
        other_seed in seed(),
        skew in -300i64..=300,
        body in bytes(512),
        at in any::<usize>(),
        op in any::<u8>(),
        value in any::<u8>(),
        bit in 0u8..8,
    ) {
        let timestamp = (DISCORD_NOW + skew).to_string();
        let key = discord_key(&seed);
        let signature = discord::sign(&seed, &timestamp, &body);
        prop_assert_eq!(
            discord_verify(&key, Some(signature.as_bytes()), Some(timestamp.as_bytes()), &body),
            Ok(body.clone())
        );
        // Any change to the body.
        let changed = mutate(&body, at, op, value);
        if changed != body {
            prop_assert_eq!(
                discord_verify(&key, Some(signature.as_bytes()), Some(timestamp.as_bytes()), &changed).err(),
                Some(VerifyError::BadSignature)
            );
        }
        // Any change to the timestamp (the same signature replayed at another time):
        // refused by the signature inside the window, by the window outside it.
        let moved = mutate(timestamp.as_bytes(), at, op, value);
        if moved != timestamp.as_bytes() {
            let refused = discord_verify(&key, Some(signature.as_bytes()), Some(&moved), &body).err();
            if in_window(&moved, DISCORD_NOW) {
                prop_assert_eq!(refused, Some(VerifyError::BadSignature));
            } else {
                prop_assert!(matches!(
                    refused,
                    Some(VerifyError::BadTimestamp | VerifyError::StaleTimestamp)
                ));
            }
        }
        // One bit of one signature byte.
        let mut raw = hex::decode(&signature).unwrap();
        let i = at % raw.len();
        raw[i] ^= 1 << bit;
        prop_assert_eq!(
            discord_verify(&key, Some(hex::encode(&raw).as_bytes()), Some(timestamp.as_bytes()), &body).err(),
            Some(VerifyError::BadSignature)
        );
        // A signature one hex digit short or long is malformed, not a panic.
        prop_assert_eq!(
            discord_verify(&key, Some(&signature.as_bytes()[1..]), Some(timestamp.as_bytes()), &body).err(),
            Some(VerifyError::MalformedSignature)
        );
        let longer = format!("{signature}0");
        prop_assert_eq!(
            discord_verify(&key, Some(longer.as_bytes()), Some(timestamp.as_bytes()), &body).err(),
            Some(VerifyError::MalformedSignature)
        );
        // Another application's key.
        if other_seed != seed {
            prop_assert_eq!(
                discord_verify(&discord_key(&other_seed), Some(signature.as_bytes()), Some(timestamp.as_bytes()), &body).err(),
                Some(VerifyError::BadSignature)
            );
        }
    }

    #[test]
    fn discord_signature_holds_only_inside_the_replay_window(
        seed in seed(),
        body in bytes(512),
        sent in 1_000_000_000i64..2_000_000_000,
        skew in -1000i64..1000,
        at in any::<usize>(),
        op in any::<u8>(),
        value in any::<u8>(),
    ) {
        let key = discord_key(&seed);
        let ts = sent.to_string();
        let signature = discord::sign(&seed, &ts, &body);
        let result = discord_verify_at(&key, Some(signature.as_bytes()), Some(ts.as_bytes()), &body, sent + skew);
        if skew.abs() <= discord::TOLERANCE_SECS {
            prop_assert_eq!(result, Ok(body.clone()));
            let changed = mutate(&body, at, op, value);
            if changed != body {
                prop_assert_eq!(
                    discord_verify_at(&key, Some(signature.as_bytes()), Some(ts.as_bytes()), &changed, sent + skew).err(),
                    Some(VerifyError::BadSignature)
                );
            }
            // The same signature under another timestamp inside the window (a replay
            // with a fresh time) is refused.
            let moved = (if skew == 0 { sent + 1 } else { sent + skew }).to_string();
            prop_assert_eq!(
                discord_verify_at(&key, Some(signature.as_bytes()), Some(moved.as_bytes()), &body, sent + skew).err(),
                Some(VerifyError::BadSignature)
            );
        } else {
            prop_assert_eq!(result.err(), Some(VerifyError::StaleTimestamp));
        }
    }
}
