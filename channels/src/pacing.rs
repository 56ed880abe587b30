//! Per-destination posting limits, as a token bucket the dispatcher keeps.

use std::time::Duration;

/// At most `burst` messages at once to one destination, then one per `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacing {
    /// The destination the limit applies to (a Slack channel id), unique within the
    /// channel account.
    pub key: String,
    pub interval: Duration,
    pub burst: u32,
}
