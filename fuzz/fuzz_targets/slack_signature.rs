//! Slack v0 signatures with the replay window: arbitrary headers, body and clock
//! never panic; a verified request is correctly signed and within five minutes.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    timestamp: Option<&'a [u8]>,
    signature: Option<&'a [u8]>,
    body: &'a [u8],
    now: i64,
}

fuzz_target!(|input: Input<'_>| {
    let result = webhooks::slack::verify(
        input.secret,
        input.timestamp,
        input.signature,
        input.body,
        input.now,
    );
    if result.is_ok() {
        let ts = String::from_utf8_lossy(input.timestamp.unwrap_or_default()).to_string();
        let seconds: i64 = ts.parse().unwrap_or(i64::MIN);
        assert!(seconds.abs_diff(input.now) <= webhooks::slack::TOLERANCE_SECS as u64);
        let expected = webhooks::slack::sign(input.secret, &ts, input.body);
        let given = String::from_utf8_lossy(input.signature.unwrap_or_default()).to_string();
        assert!(given.eq_ignore_ascii_case(&expected));
    }
});
