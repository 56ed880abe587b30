//! Per-tenant rate limit of the admin API: a token bucket per tenant, per instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets not touched for this long are forgotten (they would be full again).
const IDLE: Duration = Duration::from_secs(600);

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket; `Err(seconds)` to wait when empty.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < IDLE);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_then_refill() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("a", t0), Ok(()));
        }
        assert_eq!(limiter.check_at("a", t0), Err(1));
        // Another tenant has its own bucket.
        assert_eq!(limiter.check_at("b", t0), Ok(()));
        // Half a second refills one token at 2 per second.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(limiter.check_at("a", later), Ok(()));
        assert_eq!(limiter.check_at("a", later), Err(1));
    }

    #[test]
    fn retry_after_covers_a_slow_refill() {
        let limiter = RateLimiter::new(0.1, 1);
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("a", t0), Ok(()));
        assert_eq!(limiter.check_at("a", t0), Err(10));
    }
}
