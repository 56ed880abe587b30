//! Meta's `signed_request` (data-deletion and deauthorize callbacks):
//! `<base64url(signature)>.<base64url(JSON payload)>`, unpadded, where the signature
//! is the raw HMAC-SHA256 of the still-encoded payload string keyed with the app
//! secret. The payload is decoded only after the signature matched.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Verified, VerifyError};

/// base64url; Meta omits the padding, tolerate it when present.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const MAC_LEN: usize = 32;
/// Longest `signed_request` accepted: far above what Meta sends.
const MAX_LEN: usize = 16 * 1024;

/// The fields of a verified request omnigate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The app-scoped id of the person the request is about.
    pub user_id: String,
    pub issued_at: Option<i64>,
    pub expires: Option<i64>,
}

/// Checks a `signed_request` with `app_secret` (constant time) and returns its payload.
/// The `algorithm` must be `HMAC-SHA256` (any case) and `user_id` present.
pub fn verify_signed_request(
    app_secret: &[u8],
    signed_request: &str,
) -> Result<Verified<SignedRequest>, VerifyError> {
    if signed_request.len() > MAX_LEN {
        return Err(VerifyError::MalformedSignedRequest);
    }
    let (signature, payload) = signed_request
        .trim()
        .split_once('.')
        .ok_or(VerifyError::MalformedSignedRequest)?;
    let signature = B64
        .decode(signature)
        .map_err(|_| VerifyError::MalformedSignedRequest)?;
    if signature.len() != MAC_LEN {
        return Err(VerifyError::MalformedSignedRequest);
    }
    let mut mac = new_mac(app_secret);
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| VerifyError::BadSignature)?;

    let json = B64
        .decode(payload)
        .map_err(|_| VerifyError::MalformedSignedRequest)?;
    let payload: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| VerifyError::MalformedSignedRequest)?;
    let algorithm = payload.get("algorithm").and_then(serde_json::Value::as_str);
    if !algorithm.is_some_and(|a| a.eq_ignore_ascii_case("HMAC-SHA256")) {
        return Err(VerifyError::UnsupportedAlgorithm);
    }
    let user_id = match payload.get("user_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(VerifyError::MalformedSignedRequest),
    };
    let int = |key: &str| payload.get(key).and_then(serde_json::Value::as_i64);
    Ok(Verified::new(SignedRequest {
        user_id,
        issued_at: int("issued_at"),
        expires: int("expires"),
    }))
}

/// The `signed_request` Meta would send for the JSON `payload`; for tests and tools.
pub fn sign_signed_request(app_secret: &[u8], payload: &[u8]) -> String {
    let payload = B64.encode(payload);
    let mut mac = new_mac(app_secret);
    mac.update(payload.as_bytes());
    format!("{}.{payload}", B64.encode(mac.finalize().into_bytes()))
}

fn new_mac(secret: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // fixtures/meta-deletion/signed-request-vector.json
    const SECRET: &[u8] = b"client_secret_shhhhhh!";
    const VECTOR: &str = "w5ZbbWP9yOwBA1uJZbc7-9gZok0O42U4i0yyvxXE_jY.eyJhbGdvcml0aG0iOiJITUFDLVNIQTI1NiIsImV4cGlyZXMiOjEyOTE4NDA0MDAsImlzc3VlZF9hdCI6MTI5MTgzNjgwMCwidXNlcl9pZCI6IjIxODQ3MSJ9";

    #[test]
    fn published_vector_verifies() {
        let verified = verify_signed_request(SECRET, VECTOR).map(Verified::into_inner);
        assert_eq!(
            verified,
            Ok(SignedRequest {
                user_id: "218471".into(),
                issued_at: Some(1291836800),
                expires: Some(1291840400),
            })
        );
        let payload = br#"{"algorithm":"HMAC-SHA256","expires":1291840400,"issued_at":1291836800,"user_id":"218471"}"#;
        assert_eq!(sign_signed_request(SECRET, payload), VECTOR);
    }

    #[test]
    fn tampering_and_wrong_secret_are_rejected() {
        assert_eq!(
            verify_signed_request(b"other secret", VECTOR).err(),
            Some(VerifyError::BadSignature)
        );
        // Another user id under the same signature.
        let (sig, _) = VECTOR.split_once('.').unwrap_or_default();
        let forged = format!(
            "{sig}.{}",
            B64.encode(br#"{"algorithm":"HMAC-SHA256","user_id":"999"}"#)
        );
        assert_eq!(
            verify_signed_request(SECRET, &forged).err(),
            Some(VerifyError::BadSignature)
        );
        let mut flipped = VECTOR.to_string();
        flipped.replace_range(0..1, "x");
        assert!(verify_signed_request(SECRET, &flipped).is_err());
    }

    #[test]
    fn malformed_requests_are_rejected_without_panic() {
        for bad in ["", ".", "abc", "a.b", "!!!.eyJ9", &"A".repeat(MAX_LEN + 1)] {
            assert_eq!(
                verify_signed_request(SECRET, bad).err(),
                Some(VerifyError::MalformedSignedRequest),
                "{bad:.20}"
            );
        }
        // A short signature (one byte off) is malformed, not compared.
        let (sig, payload) = VECTOR.split_once('.').unwrap_or_default();
        let short = B64.encode(&B64.decode(sig).unwrap_or_default()[..31]);
        assert_eq!(
            verify_signed_request(SECRET, &format!("{short}.{payload}")).err(),
            Some(VerifyError::MalformedSignedRequest)
        );
    }

    #[test]
    fn algorithm_must_be_hmac_sha256() {
        let other = sign_signed_request(SECRET, br#"{"algorithm":"none","user_id":"1"}"#);
        assert_eq!(
            verify_signed_request(SECRET, &other).err(),
            Some(VerifyError::UnsupportedAlgorithm)
        );
        let lower = sign_signed_request(SECRET, br#"{"algorithm":"hmac-sha256","user_id":42}"#);
        assert_eq!(
            verify_signed_request(SECRET, &lower).map(|v| v.into_inner().user_id),
            Ok("42".into())
        );
        let no_user = sign_signed_request(SECRET, br#"{"algorithm":"HMAC-SHA256"}"#);
        assert_eq!(
            verify_signed_request(SECRET, &no_user).err(),
            Some(VerifyError::MalformedSignedRequest)
        );
    }
}
