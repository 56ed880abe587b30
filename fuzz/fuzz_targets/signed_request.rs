//! Meta `signed_request` (data-deletion callback): arbitrary strings never panic;
//! a payload signed with the secret verifies and names its user.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    signed_request: &'a str,
    payload: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let _ = webhooks::signed_request::verify_signed_request(input.secret, input.signed_request);
    let signed = webhooks::signed_request::sign_signed_request(input.secret, input.payload);
    if let Ok(verified) = webhooks::signed_request::verify_signed_request(input.secret, &signed) {
        assert!(!verified.get().user_id.is_empty());
    }
});
