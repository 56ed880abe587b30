//! Discord interactions (Ed25519 over timestamp + body): arbitrary key, headers and
//! body never panic; a delivery signed with the application's key verifies, and the
//! same signature over any other body or timestamp is refused.
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
    other_timestamp: &'a str,
    other_body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    // An operator-supplied key string: parsed or refused, never a panic.
    if let Ok(key) = discord::parse_public_key(input.public_key) {
        let _ = discord::verify_interaction(&key, input.signature, input.timestamp, input.body);
    }
    let Ok(key) = discord::parse_public_key(&discord::public_key_hex(&input.seed)) else {
        panic!("a key derived from a seed parses");
    };
    match discord::verify_interaction(&key, input.signature, input.timestamp, input.body) {
        Ok(verified) => {
            assert_eq!(*verified.get(), input.body);
            let ts = String::from_utf8_lossy(input.timestamp.unwrap_or_default()).to_string();
            let given = String::from_utf8_lossy(input.signature.unwrap_or_default()).to_string();
            assert!(given.eq_ignore_ascii_case(&discord::sign(&input.seed, &ts, input.body)));
        }
        Err(e) => assert!(matches!(
            e,
            VerifyError::MissingSignature
                | VerifyError::MalformedSignature
                | VerifyError::BadSignature
        )),
    }
    // Signed as Discord signs: verifies; moved to another body or time: refused.
    let ts = String::from_utf8_lossy(input.timestamp.unwrap_or_default()).to_string();
    let signature = discord::sign(&input.seed, &ts, input.body);
    let check = |ts: &[u8], body: &[u8]| {
        discord::verify_interaction(&key, Some(signature.as_bytes()), Some(ts), body).map(|_| ())
    };
    assert!(check(ts.as_bytes(), input.body).is_ok());
    let mut signed = ts.as_bytes().to_vec();
    signed.extend_from_slice(input.body);
    let mut moved = input.other_timestamp.as_bytes().to_vec();
    moved.extend_from_slice(input.other_body);
    if moved != signed {
        assert_eq!(
            check(input.other_timestamp.as_bytes(), input.other_body).err(),
            Some(VerifyError::BadSignature)
        );
    }
});
