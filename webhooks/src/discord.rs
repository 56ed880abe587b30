//! Discord interactions endpoint.
//!
//! Each request carries `X-Signature-Ed25519` (hex signature) and
//! `X-Signature-Timestamp`; the signature is Ed25519 over the timestamp bytes followed
//! immediately by the raw body, under the application's public key (hex). Discord
//! sends deliberately bad signatures to check that they are refused. The timestamp
//! (Unix seconds) must also be within five minutes of now, so a captured interaction
//! cannot be replayed later.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::{window, Verified, VerifyError};

pub const SIGNATURE_HEADER: &str = "x-signature-ed25519";
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
/// Largest accepted distance between the request time and now, in seconds.
pub const TOLERANCE_SECS: i64 = window::TOLERANCE_SECS;

/// Interaction type of the PING Discord sends when the endpoint URL is saved.
pub const PING: u64 = 1;
/// The answer to a PING.
pub const PONG_BODY: &str = r#"{"type":1}"#;

/// Parses an application public key given as 64 hex digits.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, VerifyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut bytes)
        .map_err(|_| VerifyError::MalformedSignature)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| VerifyError::MalformedSignature)
}

/// Verifies an interaction delivery at time `now` (Unix seconds): the timestamp first
/// (missing, malformed or outside [`TOLERANCE_SECS`] is refused), then the Ed25519
/// signature over timestamp + body. `signature` and `timestamp` are the header values
/// as received (`None` when absent).
pub fn verify_interaction<'a>(
    public_key: &VerifyingKey,
    signature: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    body: &'a [u8],
    now: i64,
) -> Result<Verified<&'a [u8]>, VerifyError> {
    let timestamp = window::check(timestamp, now)?;
    let signature = signature.ok_or(VerifyError::MissingSignature)?;
    if signature.len() != 128 {
        return Err(VerifyError::MalformedSignature);
    }
    let mut raw = [0u8; 64];
    hex::decode_to_slice(signature, &mut raw).map_err(|_| VerifyError::MalformedSignature)?;
    let signature = Signature::from_bytes(&raw);
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp);
    message.extend_from_slice(body);
    public_key
        .verify_strict(&message, &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(Verified::new(body))
}

/// The `X-Signature-Ed25519` value Discord would send, from the application's
/// private key seed; for tests and tools.
pub fn sign(seed: &[u8; 32], timestamp: &str, body: &[u8]) -> String {
    let key = SigningKey::from_bytes(seed);
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body);
    hex::encode(key.sign(&message).to_bytes())
}

/// The hex public key belonging to a private key seed; for tests and tools.
pub fn public_key_hex(seed: &[u8; 32]) -> String {
    hex::encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

/// Whether a verified interaction body is a PING (answered with [`PONG_BODY`]).
pub fn is_ping(body: &Verified<&[u8]>) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: u64,
    }
    serde_json::from_slice::<Kind>(body.get()).is_ok_and(|k| k.kind == PING)
}

#[cfg(test)]
mod tests {
    use super::*;

    // fixtures/discord/interaction-ping-signed.json (generated key).
    const PUBLIC: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    const SIGNATURE: &str = "f9652fc17d0776019688bf85f67bf4205a13ee19458f17d5d72fdeae3722e31f12b18e95a26fd04b589e10b465dcd8921b78836ecbcf2e6d9fcebd1c5e726705";
    const TIMESTAMP: &str = "1731000000";
    const NOW: i64 = 1_731_000_000;
    const BODY: &str = r#"{"application_id":"1234560123453231555","id":"1234567890123456789","token":"aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OTpleGFtcGxl","type":1,"user":{"id":"80351110224678912","username":"nelly"},"version":1}"#;

    fn seed() -> [u8; 32] {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = i as u8;
        }
        seed
    }

    fn check(sig: Option<&str>, ts: Option<&str>, body: &str, now: i64) -> Result<(), VerifyError> {
        let key = parse_public_key(PUBLIC).unwrap();
        verify_interaction(
            &key,
            sig.map(str::as_bytes),
            ts.map(str::as_bytes),
            body.as_bytes(),
            now,
        )
        .map(|_| ())
    }

    #[test]
    fn published_vector_verifies_and_is_a_ping() {
        let key = parse_public_key(PUBLIC).unwrap();
        let verified = verify_interaction(
            &key,
            Some(SIGNATURE.as_bytes()),
            Some(TIMESTAMP.as_bytes()),
            BODY.as_bytes(),
            NOW,
        )
        .unwrap();
        assert!(is_ping(&verified));
        assert_eq!(public_key_hex(&seed()), PUBLIC);
        assert_eq!(sign(&seed(), TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn replay_window_is_five_minutes_either_way() {
        for now in [NOW - 300, NOW - 240, NOW + 240, NOW + 299, NOW + 300] {
            assert_eq!(
                check(Some(SIGNATURE), Some(TIMESTAMP), BODY, now),
                Ok(()),
                "{now}"
            );
        }
        for now in [
            NOW - 301,
            NOW - 360,
            NOW + 301,
            NOW + 360,
            NOW + 86_400 * 365 * 8,
        ] {
            assert_eq!(
                check(Some(SIGNATURE), Some(TIMESTAMP), BODY, now),
                Err(VerifyError::StaleTimestamp),
                "{now}"
            );
        }
        // The timestamp is checked first: a stale request is refused as stale
        // whatever its signature.
        assert_eq!(
            check(None, Some(TIMESTAMP), BODY, NOW + 3600),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn bad_timestamps_are_refused_before_the_signature() {
        for ts in [
            None,
            Some(""),
            Some("-1731000000"),
            Some("1731000000.5"),
            Some(" 1731000000"),
            Some("100000000000000000000"),
            Some("abc"),
        ] {
            assert_eq!(
                check(Some(SIGNATURE), ts, BODY, NOW),
                Err(VerifyError::BadTimestamp),
                "{ts:?}"
            );
            assert_eq!(check(None, ts, BODY, NOW), Err(VerifyError::BadTimestamp));
        }
    }

    #[test]
    fn tampering_fails() {
        let tampered_body = BODY.replace("nelly", "nellx");
        assert_eq!(
            check(Some(SIGNATURE), Some(TIMESTAMP), &tampered_body, NOW),
            Err(VerifyError::BadSignature)
        );
        // The timestamp is signed too: a fresh timestamp on an old signature fails.
        assert_eq!(
            check(Some(SIGNATURE), Some("1731000001"), BODY, NOW),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            check(None, Some(TIMESTAMP), BODY, NOW),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            check(Some(&SIGNATURE[..126]), Some(TIMESTAMP), BODY, NOW),
            Err(VerifyError::MalformedSignature)
        );
        assert_eq!(
            check(Some(""), Some(TIMESTAMP), BODY, NOW),
            Err(VerifyError::MalformedSignature)
        );
        let mut flipped = SIGNATURE.to_string();
        flipped.replace_range(0..1, "e");
        assert_eq!(
            check(Some(&flipped), Some(TIMESTAMP), BODY, NOW),
            Err(VerifyError::BadSignature)
        );
        assert!(parse_public_key("zz").is_err());
    }
}
