//! Discord interactions (Ed25519 over timestamp + body, timestamp within five minutes
//! of now): arbitrary key, headers, body and clock never panic; a delivery signed with
//! the application's key verifies exactly inside the replay window, and the same
//! signature over any other body or timestamp is refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use webhooks::{discord, VerifyError};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    seed: [u8; 32],
    public_key: &'a str,
    signature: Option<&'a [u8]>,
    timestamp: Option<&'a [u8]>,
    body: &'a [u8],
    now: i64,
    sent: u32,
    skew: i16,
    other_skew: i16,
    other_timestamp: &'a str,
    other_body: &'a [u8],
}

/// Whether `timestamp` is 1 to 12 ASCII digits within the window around `now`.
fn in_window(timestamp: &[u8], now: i64) -> bool {
    (1..=12).contains(&timestamp.len())
        && timestamp.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(timestamp)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t.abs_diff(now) <= discord::TOLERANCE_SECS.unsigned_abs())
}

fuzz_target!(|input: Input<'_>| {
    // An operator-supplied key string: parsed or refused, never a panic.
    if let Ok(key) = discord::parse_public_key(input.public_key) {
        let _ = discord::verify_interaction(
            &key,
            input.signature,
            input.timestamp,
            input.body,
            input.now,
        );
    }
    let Ok(key) = discord::parse_public_key(&discord::public_key_hex(&input.seed)) else {
        panic!("a key derived from a seed parses");
    };
    match discord::verify_interaction(
        &key,
        input.signature,
        input.timestamp,
        input.body,
        input.now,
    ) {
        Ok(verified) => {
            assert_eq!(*verified.get(), input.body);
            assert!(in_window(input.timestamp.unwrap_or_default(), input.now));
            let ts = String::from_utf8_lossy(input.timestamp.unwrap_or_default()).to_string();
            let given = String::from_utf8_lossy(input.signature.unwrap_or_default()).to_string();
            assert!(given.eq_ignore_ascii_case(&discord::sign(&input.seed, &ts, input.body)));
        }
        Err(e) => assert!(matches!(
            e,
            VerifyError::BadTimestamp
                | VerifyError::StaleTimestamp
                | VerifyError::MissingSignature
                | VerifyError::MalformedSignature
                | VerifyError::BadSignature
        )),
    }
    // Signed as Discord signs: verifies inside the window, is stale outside it; moved
    // to another body or time: refused.
    let sent = i64::from(input.sent);
    let now = sent + i64::from(input.skew);
    let ts = sent.to_string();
    let signature = discord::sign(&input.seed, &ts, input.body);
    let check = |ts: &[u8], body: &[u8]| {
        discord::verify_interaction(&key, Some(signature.as_bytes()), Some(ts), body, now)
            .map(|_| ())
    };
    if i64::from(input.skew).abs() <= discord::TOLERANCE_SECS {
        assert!(check(ts.as_bytes(), input.body).is_ok());
    } else {
        assert_eq!(
            check(ts.as_bytes(), input.body).err(),
            Some(VerifyError::StaleTimestamp)
        );
    }
    let mut signed = ts.as_bytes().to_vec();
    signed.extend_from_slice(input.body);
    let other_ts = (sent + i64::from(input.other_skew)).to_string();
    for other_ts in [input.other_timestamp, other_ts.as_str()] {
        let mut moved = other_ts.as_bytes().to_vec();
        moved.extend_from_slice(input.other_body);
        if moved != signed {
            let refused = check(other_ts.as_bytes(), input.other_body).err();
            if in_window(other_ts.as_bytes(), now) {
                assert_eq!(refused, Some(VerifyError::BadSignature));
            } else {
                assert!(matches!(
                    refused,
                    Some(VerifyError::BadTimestamp | VerifyError::StaleTimestamp)
                ));
            }
        }
    }
});
