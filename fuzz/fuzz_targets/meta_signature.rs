//! Meta `X-Hub-Signature-256`: arbitrary secret, header and body never panic, and
//! only the exact MAC over the exact body verifies.
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
    let result = webhooks::meta::verify_signature(input.secret, input.header, input.body);
    if result.is_ok() {
        let expected = webhooks::meta::sign(input.secret, input.body);
        let given = input.header.map(|h| String::from_utf8_lossy(h).to_string());
        assert!(given.is_some_and(|g| g.eq_ignore_ascii_case(&expected)));
    }
    // A correct signature always verifies.
    let signature = webhooks::meta::sign(input.secret, input.body);
    assert!(
        webhooks::meta::verify_signature(input.secret, Some(signature.as_bytes()), input.body)
            .is_ok()
    );
});
