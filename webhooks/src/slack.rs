//! Slack request signing (Events API, interactivity, slash commands).
//!
//! Slack sends `X-Slack-Request-Timestamp` (Unix seconds) and `X-Slack-Signature`
//! (`v0=` + lowercase hex HMAC-SHA256 with the app's signing secret over
//! `v0:{timestamp}:{raw body}`). A request whose timestamp is more than five minutes
//! away from now is refused, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{window, Verified, VerifyError};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// The header carrying the request time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Largest accepted distance between the request time and now, in seconds.
pub const TOLERANCE_SECS: i64 = window::TOLERANCE_SECS;

const PREFIX: &str = "v0=";
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Checks a Slack request at time `now` (Unix seconds): the timestamp first (missing,
/// malformed or outside [`TOLERANCE_SECS`] is refused), then the signature over
/// `v0:{timestamp}:{body}`, in constant time. Header values are given as received.
pub fn verify<'a>(
    signing_secret: &[u8],
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &'a [u8],
    now: i64,
) -> Result<Verified<&'a [u8]>, VerifyError> {
    let timestamp = window::check(timestamp, now)?;
    let signature = signature.ok_or(VerifyError::MissingSignature)?;
    let hex_mac = signature
        .strip_prefix(PREFIX.as_bytes())
        .ok_or(VerifyError::MalformedSignature)?;
    if hex_mac.len() != MAC_LEN * 2 {
        return Err(VerifyError::MalformedSignature);
    }
    let mut given = [0u8; MAC_LEN];
    hex::decode_to_slice(hex_mac, &mut given).map_err(|_| VerifyError::MalformedSignature)?;
    base_mac(signing_secret, timestamp, body)
        .verify_slice(&given)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(Verified::new(body))
}

/// The `X-Slack-Signature` Slack would send for `body` at `timestamp`; for tests and
/// tools.
pub fn sign(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mac = base_mac(signing_secret, timestamp.as_bytes(), body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

fn base_mac(secret: &[u8], timestamp: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(b"v0:");
    mac.update(timestamp);
    mac.update(b":");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    // fixtures/slack/signature-vector.json: Slack's documented example.
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const NOW: i64 = 1_531_420_618;
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const EXPECTED: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn check(ts: Option<&str>, sig: Option<&str>, body: &str, now: i64) -> Result<(), VerifyError> {
        verify(
            SECRET,
            ts.map(str::as_bytes),
            sig.map(str::as_bytes),
            body.as_bytes(),
            now,
        )
        .map(|_| ())
    }

    #[test]
    fn published_vector_verifies() {
        assert_eq!(sign(SECRET, TS, BODY.as_bytes()), EXPECTED);
        assert_eq!(check(Some(TS), Some(EXPECTED), BODY, NOW), Ok(()));
    }

    #[test]
    fn replay_window_is_five_minutes_either_way() {
        for now in [NOW - 300, NOW + 300, NOW + 299] {
            assert_eq!(check(Some(TS), Some(EXPECTED), BODY, now), Ok(()), "{now}");
        }
        for now in [NOW - 301, NOW + 301, NOW + 86_400 * 365 * 8] {
            assert_eq!(
                check(Some(TS), Some(EXPECTED), BODY, now),
                Err(VerifyError::StaleTimestamp),
                "{now}"
            );
        }
    }

    #[test]
    fn bad_timestamps_are_refused_before_the_mac() {
        for ts in [
            None,
            Some(""),
            Some("-1531420618"),
            Some("1531420618.5"),
            Some(" 1531420618"),
            Some("100000000000000000000"),
            Some("abc"),
        ] {
            assert_eq!(
                check(ts, Some(EXPECTED), BODY, NOW),
                Err(VerifyError::BadTimestamp),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn tampering_wrong_secret_and_malformed_signatures_are_refused() {
        let mut tampered = BODY.to_string();
        tampered.push(' ');
        assert_eq!(
            check(Some(TS), Some(EXPECTED), &tampered, NOW),
            Err(VerifyError::BadSignature)
        );
        let other = verify(
            b"other",
            Some(TS.as_bytes()),
            Some(EXPECTED.as_bytes()),
            BODY.as_bytes(),
            NOW,
        );
        assert_eq!(other.err(), Some(VerifyError::BadSignature));
        // The timestamp is signed too: a fresh timestamp on an old signature fails.
        assert_eq!(
            check(Some("1531420619"), Some(EXPECTED), BODY, NOW),
            Err(VerifyError::BadSignature)
        );
        let short = &EXPECTED[..EXPECTED.len() - 2];
        let long = format!("{EXPECTED}00");
        let cases = [
            (None, VerifyError::MissingSignature),
            (Some(""), VerifyError::MalformedSignature),
            (Some("v0="), VerifyError::MalformedSignature),
            (Some(short), VerifyError::MalformedSignature),
            (Some(long.as_str()), VerifyError::MalformedSignature),
            (
                Some("v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                VerifyError::MalformedSignature,
            ),
            (
                Some("v0=zz114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                VerifyError::MalformedSignature,
            ),
        ];
        for (sig, expected) in cases {
            assert_eq!(check(Some(TS), sig, BODY, NOW), Err(expected), "{sig:?}");
        }
    }

    #[test]
    fn sign_then_verify_roundtrip() {
        for (secret, body) in [
            (&b"k"[..], &b""[..]),
            (b"\x00\xff", b"{}"),
            (SECRET, BODY.as_bytes()),
        ] {
            let sig = sign(secret, "1700000000", body);
            assert!(verify(
                secret,
                Some(b"1700000000"),
                Some(sig.as_bytes()),
                body,
                1_700_000_100
            )
            .is_ok());
        }
    }
}
