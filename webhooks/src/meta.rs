//! Meta Graph webhooks (WhatsApp Cloud API, Messenger, Instagram).
//!
//! Every POST carries `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256(app secret,
//! raw body)>`. The MAC is computed over the exact bytes Meta sent (which escape
//! non-ASCII as `\uXXXX`); re-serialising the JSON would change them, so callers must
//! hand over the raw body.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{Verified, VerifyError};

/// The header Meta signs deliveries with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

const PREFIX: &str = "sha256=";
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Checks `X-Hub-Signature-256` over `body` with `app_secret`, in constant time.
///
/// `header` is the header value as received (`None` when absent). The length of the
/// decoded MAC is checked before the comparison, so short, long or empty signatures
/// are rejected without panicking.
pub fn verify_signature<'a>(
    app_secret: &[u8],
    header: Option<&[u8]>,
    body: &'a [u8],
) -> Result<Verified<&'a [u8]>, VerifyError> {
    let header = header.ok_or(VerifyError::MissingSignature)?;
    let hex_mac = header
        .strip_prefix(PREFIX.as_bytes())
        .ok_or(VerifyError::MalformedSignature)?;
    if hex_mac.len() != MAC_LEN * 2 {
        return Err(VerifyError::MalformedSignature);
    }
    let mut given = [0u8; MAC_LEN];
    hex::decode_to_slice(hex_mac, &mut given).map_err(|_| VerifyError::MalformedSignature)?;
    let mut mac = new_mac(app_secret);
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(Verified::new(body))
}

/// The `X-Hub-Signature-256` value Meta would send for `body`; for tests and tools.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = new_mac(app_secret);
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// The query parameters of Meta's subscription check
/// (`GET ?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Subscription {
    #[serde(rename = "hub.mode")]
    pub mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    pub verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    pub challenge: Option<String>,
}

/// Answers the subscription handshake: the challenge to echo byte-for-byte when the
/// mode is `subscribe` and the verify token matches `expected_token` (constant time).
pub fn verify_subscription<'a>(
    expected_token: &[u8],
    query: &'a Subscription,
) -> Result<&'a str, VerifyError> {
    if query.mode.as_deref() != Some("subscribe") {
        return Err(VerifyError::BadMode);
    }
    let given = query
        .verify_token
        .as_deref()
        .ok_or(VerifyError::BadVerifyToken)?;
    if expected_token.is_empty() || !bool::from(given.as_bytes().ct_eq(expected_token)) {
        return Err(VerifyError::BadVerifyToken);
    }
    Ok(query.challenge.as_deref().unwrap_or_default())
}

fn new_mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // fixtures/whatsapp/signature-vector.json (generated vector over an escaped-unicode body).
    const SECRET: &[u8] = b"test_app_secret_0123456789abcdef";
    const BODY: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"1234567890987654321","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"972123456789","phone_number_id":"1122334455667"},"contacts":[{"profile":{"name":"Test Name"},"wa_id":"972987654321"}],"messages":[{"from":"972987654321","id":"wamid.xyzxyz","timestamp":"1697044456","type":"reaction","reaction":{"message_id":"wamid.yzxyzx=","emoji":"\ud83d\ude2e"}}]},"field":"messages"}]}]}"#;
    const EXPECTED: &str =
        "sha256=d5d7f49f0d885952eb72058522faacbd716c0230ac30948563e1d74b407e24fa";
    const RESERIALIZED: &str =
        "sha256=d6cd8a8ed3fd92141212e8f2b3bbc54c829f929d41e8460ff0c83425c5007c6e";

    #[test]
    fn published_vector_verifies() {
        assert_eq!(sign(SECRET, BODY.as_bytes()), EXPECTED);
        let ok = verify_signature(SECRET, Some(EXPECTED.as_bytes()), BODY.as_bytes());
        assert_eq!(ok.map(|v| *v.get()).ok(), Some(BODY.as_bytes()));
    }

    #[test]
    fn reserialized_body_does_not_verify() {
        let utf8_body = BODY.replace(r"\ud83d\ude2e", "😮");
        assert_eq!(sign(SECRET, utf8_body.as_bytes()), RESERIALIZED);
        assert_eq!(
            verify_signature(SECRET, Some(EXPECTED.as_bytes()), utf8_body.as_bytes()).err(),
            Some(VerifyError::BadSignature)
        );
    }

    #[test]
    fn tampering_and_wrong_secret_are_rejected() {
        let mut tampered = BODY.as_bytes().to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify_signature(SECRET, Some(EXPECTED.as_bytes()), &tampered).err(),
            Some(VerifyError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"other", Some(EXPECTED.as_bytes()), BODY.as_bytes()).err(),
            Some(VerifyError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_are_rejected_without_panic() {
        let body = BODY.as_bytes();
        let flipped = {
            let mut s = EXPECTED.to_string();
            s.replace_range(7..8, if &s[7..8] == "0" { "1" } else { "0" });
            s
        };
        let cases: [(Option<&[u8]>, VerifyError); 8] = [
            (None, VerifyError::MissingSignature),
            (Some(b""), VerifyError::MalformedSignature),
            (Some(b"sha256="), VerifyError::MalformedSignature),
            (
                Some(&EXPECTED.as_bytes()[..EXPECTED.len() - 2]),
                VerifyError::MalformedSignature,
            ),
            (
                Some(b"sha1=d5d7f49f0d885952eb72058522faacbd716c0230"),
                VerifyError::MalformedSignature,
            ),
            (Some(b"sha256=zz"), VerifyError::MalformedSignature),
            (Some(flipped.as_bytes()), VerifyError::BadSignature),
            (Some(&[0xff, 0xfe, 0x00]), VerifyError::MalformedSignature),
        ];
        for (header, expected) in cases {
            assert_eq!(verify_signature(SECRET, header, body).err(), Some(expected));
        }
        let long = format!("{EXPECTED}00");
        assert_eq!(
            verify_signature(SECRET, Some(long.as_bytes()), body).err(),
            Some(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let upper = format!("sha256={}", EXPECTED[7..].to_uppercase());
        assert!(verify_signature(SECRET, Some(upper.as_bytes()), BODY.as_bytes()).is_ok());
    }

    #[test]
    fn subscription_handshake() {
        let q = |mode: &str, token: &str| Subscription {
            mode: Some(mode.into()),
            verify_token: Some(token.into()),
            challenge: Some("1158201444".into()),
        };
        assert_eq!(
            verify_subscription(b"tok", &q("subscribe", "tok")),
            Ok("1158201444")
        );
        assert_eq!(
            verify_subscription(b"tok", &q("subscribe", "tok2")),
            Err(VerifyError::BadVerifyToken)
        );
        assert_eq!(
            verify_subscription(b"tok", &q("unsubscribe", "tok")),
            Err(VerifyError::BadMode)
        );
        assert_eq!(
            verify_subscription(b"", &q("subscribe", "")),
            Err(VerifyError::BadVerifyToken)
        );
        assert_eq!(
            verify_subscription(b"tok", &Subscription::default()),
            Err(VerifyError::BadMode)
        );
    }

    #[test]
    fn sign_then_verify_roundtrip() {
        for (secret, body) in [
            (&b"k"[..], &b""[..]),
            (b"\x00\xff", b"{}"),
            (SECRET, BODY.as_bytes()),
        ] {
            let sig = sign(secret, body);
            assert!(verify_signature(secret, Some(sig.as_bytes()), body).is_ok());
        }
    }
}
