//! Telegram Bot API webhooks.
//!
//! Telegram signs nothing: every delivery carries `X-Telegram-Bot-Api-Secret-Token`
//! holding the `secret_token` the bot passed to `setWebhook`, verbatim. The check is
//! a constant-time comparison of that header with the channel's secret.

use subtle::ConstantTimeEq;

use crate::{Verified, VerifyError};

/// The header Telegram puts the secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Checks the secret token header against `secret` in constant time; on success the
/// body is handed back as verified.
pub fn verify_secret_token<'a>(
    secret: &[u8],
    header: Option<&[u8]>,
    body: &'a [u8],
) -> Result<Verified<&'a [u8]>, VerifyError> {
    let given = header.ok_or(VerifyError::MissingSignature)?;
    if secret.is_empty() || !bool::from(given.ct_eq(secret)) {
        return Err(VerifyError::BadSignature);
    }
    Ok(Verified::new(body))
}

/// Whether `token` is a secret Telegram accepts for `setWebhook`: 1–256 characters
/// of `A-Z a-z 0-9 _ -`.
pub fn is_valid_secret_token(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_secret_passes() {
        let body = br#"{"update_id":1}"#;
        let verified =
            verify_secret_token(b"my-secret_TOKEN-123", Some(b"my-secret_TOKEN-123"), body);
        assert_eq!(verified.map(Verified::into_inner), Ok(&body[..]));
    }

    #[test]
    fn a_wrong_missing_or_partial_secret_fails() {
        let body = b"{}";
        assert_eq!(
            verify_secret_token(b"secret", None, body).err(),
            Some(VerifyError::MissingSignature)
        );
        for given in [&b"Secret"[..], b"secre", b"secret1", b""] {
            assert_eq!(
                verify_secret_token(b"secret", Some(given), body).err(),
                Some(VerifyError::BadSignature)
            );
        }
        // A channel without a secret accepts nothing.
        assert!(verify_secret_token(b"", Some(b""), body).is_err());
    }

    #[test]
    fn secret_token_alphabet() {
        assert!(is_valid_secret_token("my-secret_TOKEN-123"));
        assert!(!is_valid_secret_token(""));
        assert!(!is_valid_secret_token("has space"));
        assert!(!is_valid_secret_token(&"a".repeat(257)));
    }
}
