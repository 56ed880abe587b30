//! Telegram `X-Telegram-Bot-Api-Secret-Token`: arbitrary secret, header and body
//! never panic; only the exact secret verifies (a channel without one accepts
//! nothing), and the body is handed on untouched.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    header: Option<&'a [u8]>,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let result = webhooks::telegram::verify_secret_token(input.secret, input.header, input.body);
    match result {
        Ok(verified) => {
            assert!(!input.secret.is_empty());
            assert_eq!(input.header, Some(input.secret));
            assert_eq!(*verified.get(), input.body);
        }
        Err(e) => {
            let expected = match input.header {
                None => webhooks::VerifyError::MissingSignature,
                Some(_) => webhooks::VerifyError::BadSignature,
            };
            assert_eq!(e, expected);
        }
    }
    if let Ok(secret) = std::str::from_utf8(input.secret) {
        let valid = webhooks::telegram::is_valid_secret_token(secret);
        assert_eq!(
            valid,
            (1..=256).contains(&secret.len())
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }
});
