//! Per-destination pacing: a token bucket per (channel, destination) for platforms
//! whose posting limit is per destination (Slack: about one message a second per
//! Slack channel). A send that would exceed it is parked until a slot is free, so a
//! burst of replies stays within the limit instead of collecting 429s. The buckets
//! live in this process: several instances sharing a database each pace their own
//! sends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use channels::Pacing;

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 10_000;

#[derive(Default)]
pub struct Pacer {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Pacer {
    /// Takes a slot for one message now, or says how long until one is free.
    pub fn take(&self, channel_id: &str, pacing: &Pacing) -> Result<(), Duration> {
        self.take_at(channel_id, pacing, Instant::now())
    }

    fn take_at(&self, channel_id: &str, pacing: &Pacing, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock only means another send panicked; do not hold sends up.
            return Ok(());
        };
        let burst = f64::from(pacing.burst.max(1));
        let interval = pacing.interval.as_secs_f64().max(f64::EPSILON);
        let refill = |bucket: &Bucket| {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            (bucket.tokens + elapsed / interval).min(burst)
        };
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| refill(b) < burst);
        }
        let bucket = buckets
            .entry((channel_id.to_string(), pacing.key.clone()))
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            });
        bucket.tokens = refill(bucket);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) * interval))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack(key: &str) -> Pacing {
        Pacing {
            key: key.into(),
            interval: Duration::from_secs(1),
            burst: 3,
        }
    }

    #[test]
    fn a_burst_then_one_per_interval_per_destination() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(pacer.take_at("ch", &slack("C1"), t0), Ok(()));
        }
        assert_eq!(
            pacer.take_at("ch", &slack("C1"), t0),
            Err(Duration::from_secs(1))
        );
        // Another destination, or the same one on another channel, has its own bucket.
        assert_eq!(pacer.take_at("ch", &slack("C2"), t0), Ok(()));
        assert_eq!(pacer.take_at("other", &slack("C1"), t0), Ok(()));
        let half = t0 + Duration::from_millis(500);
        assert_eq!(
            pacer.take_at("ch", &slack("C1"), half),
            Err(Duration::from_millis(500))
        );
        let later = t0 + Duration::from_secs(1);
        assert_eq!(pacer.take_at("ch", &slack("C1"), later), Ok(()));
        assert!(pacer.take_at("ch", &slack("C1"), later).is_err());
        // A long pause refills up to the burst, not beyond.
        let idle = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(pacer.take_at("ch", &slack("C1"), idle), Ok(()));
        }
        assert!(pacer.take_at("ch", &slack("C1"), idle).is_err());
    }
}
