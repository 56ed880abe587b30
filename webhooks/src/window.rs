//! The replay window of verifiers whose signature covers a Unix-seconds timestamp
//! (Slack, Discord): a request stamped more than five minutes away from now is
//! refused, so a captured request cannot be replayed later.

use crate::VerifyError;

/// Largest accepted distance between the request time and now, in seconds.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Checks a timestamp header value at time `now` (Unix seconds): missing or malformed
/// is [`VerifyError::BadTimestamp`], outside [`TOLERANCE_SECS`] either way is
/// [`VerifyError::StaleTimestamp`].
pub(crate) fn check(timestamp: Option<&[u8]>, now: i64) -> Result<&[u8], VerifyError> {
    let timestamp = timestamp.ok_or(VerifyError::BadTimestamp)?;
    let seconds = parse(timestamp)?;
    if seconds.abs_diff(now) > TOLERANCE_SECS.unsigned_abs() {
        return Err(VerifyError::StaleTimestamp);
    }
    Ok(timestamp)
}

/// The timestamp as the platforms send it: ASCII digits only (no sign, no spaces), at
/// most 12 of them, so it fits comfortably in an `i64`.
fn parse(raw: &[u8]) -> Result<i64, VerifyError> {
    if raw.is_empty() || raw.len() > 12 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(VerifyError::BadTimestamp);
    }
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(VerifyError::BadTimestamp)
}
