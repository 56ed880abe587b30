//! The provider router: asks the tenant's providers in order, each under a timeout
//! and behind a circuit breaker, and fails over on any failure (timeout, 429, 5xx,
//! malformed answer). A call abandoned at its timeout is dropped, so its late answer
//! can never reach anyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::providers::{ChatRequest, Completion, Provider, ProviderError};
use crate::config::ProviderName;

/// Per-provider breaker: closed while calls succeed; open for a cool-down after
/// `threshold` consecutive failures (or one failure that will not clear soon), and
/// for as long as the provider's `Retry-After` asked; then half-open, letting one
/// probe through whose result closes or re-opens it.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// When the half-open probe was let through (a probe dropped mid-way frees the
    /// slot again after one cool-down).
    probe_since: Option<Instant>,
}

impl Breaker {
    /// Whether a call may go to the provider now.
    pub fn allow(&mut self, now: Instant, cooldown: Duration) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => match self.probe_since {
                Some(since) if now < since + cooldown => false,
                _ => {
                    self.probe_since = Some(now);
                    true
                }
            },
        }
    }

    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// Counts a failure. `hold` opens the circuit at once for that long (a failure
    /// that will not clear soon, or the provider's own `Retry-After`); the count
    /// reaching `threshold`, or a failed probe, opens it for `cooldown`. The later
    /// of the two wins.
    pub fn failed(
        &mut self,
        now: Instant,
        threshold: u32,
        cooldown: Duration,
        hold: Option<Duration>,
    ) {
        self.failures = self.failures.saturating_add(1);
        self.probe_since = None;
        let by_count =
            (self.failures >= threshold || self.open_until.is_some()).then(|| now + cooldown);
        if let Some(until) = by_count.max(hold.map(|wait| now + wait)) {
            self.open_until = Some(until);
        }
    }

    pub fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }
}

/// One call made to a provider, for accounting.
#[derive(Debug, Clone)]
pub struct Call {
    pub provider: ProviderName,
    pub model: String,
    pub outcome: &'static str,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// What the router got.
pub enum Routed {
    Answered {
        provider: ProviderName,
        completion: Completion,
    },
    /// Every eligible provider failed or was skipped by its breaker.
    Failed,
}

pub struct Router {
    providers: Vec<Arc<dyn Provider>>,
    breakers: Mutex<HashMap<ProviderName, Breaker>>,
    timeout: Duration,
    threshold: u32,
    cooldown: Duration,
}

impl Router {
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        timeout: Duration,
        threshold: u32,
        cooldown: Duration,
    ) -> Self {
        Self {
            providers,
            breakers: Mutex::new(HashMap::new()),
            timeout,
            threshold,
            cooldown,
        }
    }

    /// The configured providers in `order`, keeping only those in `allowed` (the
    /// tenant's sub-processor choice) when it is given.
    pub fn eligible(
        &self,
        order: &[ProviderName],
        allowed: Option<&[ProviderName]>,
    ) -> Vec<Arc<dyn Provider>> {
        let mut out: Vec<Arc<dyn Provider>> = Vec::new();
        for name in order {
            if allowed.is_some_and(|a| !a.contains(name)) {
                continue;
            }
            if out.iter().any(|p| p.name() == *name) {
                continue;
            }
            if let Some(p) = self.providers.iter().find(|p| p.name() == *name) {
                out.push(p.clone());
            }
        }
        out
    }

    /// Asks `candidates` in order until one answers or `budget` runs out; every call
    /// made is passed to `record`.
    pub async fn ask(
        &self,
        candidates: &[Arc<dyn Provider>],
        request: &ChatRequest,
        budget: Duration,
        record: &mut (dyn FnMut(Call) + Send),
    ) -> Routed {
        let deadline = Instant::now() + budget;
        for provider in candidates {
            let name = provider.name();
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if !self.with_breaker(name, |b| b.allow(now, self.cooldown)) {
                tracing::debug!(provider = name.as_str(), "circuit open: provider skipped");
                continue;
            }
            let limit = self.timeout.min(deadline - now);
            // On timeout the call's future is dropped here: the request is abandoned
            // and whatever it would have answered is never seen.
            let result = match tokio::time::timeout(limit, provider.complete(request)).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::Timeout),
            };
            match result {
                Ok(completion) => {
                    self.with_breaker(name, Breaker::succeeded);
                    record(Call {
                        provider: name,
                        model: completion.model.clone(),
                        outcome: "ok",
                        input_tokens: completion.input_tokens,
                        output_tokens: completion.output_tokens,
                    });
                    return Routed::Answered {
                        provider: name,
                        completion,
                    };
                }
                Err(error) => {
                    tracing::warn!(
                        provider = name.as_str(),
                        outcome = error.outcome(),
                        error = %error,
                        "provider failed; failing over"
                    );
                    // A provider that said when to come back is not asked before.
                    let hold = if error.cools_down() {
                        Some(self.cooldown)
                    } else {
                        error.retry_after()
                    };
                    self.with_breaker(name, |b| {
                        b.failed(Instant::now(), self.threshold, self.cooldown, hold)
                    });
                    record(Call {
                        provider: name,
                        model: provider.model().to_string(),
                        outcome: error.outcome(),
                        input_tokens: 0,
                        output_tokens: 0,
                    });
                }
            }
        }
        Routed::Failed
    }

    /// Names of providers whose circuit is open now (for metrics).
    pub fn open_circuits(&self) -> Vec<ProviderName> {
        let now = Instant::now();
        self.breakers
            .lock()
            .map(|b| {
                b.iter()
                    .filter(|(_, b)| b.is_open(now))
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn with_breaker<T>(&self, name: ProviderName, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breakers = match self.breakers.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(breakers.entry(name).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_threshold_then_lets_one_probe_through() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.failed(t0, 5, COOL, None);
            assert!(b.allow(t0, COOL));
        }
        b.failed(t0, 5, COOL, None);
        assert!(!b.allow(t0, COOL), "open after 5 failures");
        assert!(!b.allow(t0 + COOL - Duration::from_millis(1), COOL));
        let later = t0 + COOL;
        assert!(b.allow(later, COOL), "one probe after the cool-down");
        assert!(!b.allow(later, COOL), "only one probe at a time");
        b.failed(later, 5, COOL, None);
        assert!(
            !b.allow(later + Duration::from_secs(1), COOL),
            "failed probe re-opens"
        );
        let again = later + COOL;
        assert!(b.allow(again, COOL));
        b.succeeded();
        assert!(
            b.allow(again, COOL) && b.allow(again, COOL),
            "closed after a good probe"
        );
    }

    #[test]
    fn hard_failures_open_at_once() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.failed(t0, 5, COOL, Some(COOL));
        assert!(!b.allow(t0, COOL));
    }

    #[test]
    fn retry_after_holds_the_circuit_that_long_below_the_threshold() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(2);
        let mut b = Breaker::default();
        b.failed(t0, 5, COOL, Some(wait));
        assert!(!b.allow(t0 + wait - Duration::from_millis(1), COOL));
        assert!(b.allow(t0 + wait, COOL), "one probe once the wait is over");
        b.succeeded();
        // Past the threshold, the longer of the cool-down and the wait.
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.failed(t0, 5, COOL, None);
        }
        b.failed(t0, 5, COOL, Some(wait));
        assert!(!b.allow(t0 + wait, COOL));
        assert!(b.allow(t0 + COOL, COOL));
        let long = COOL * 3;
        let mut b = Breaker::default();
        b.failed(t0, 1, COOL, Some(long));
        assert!(!b.allow(t0 + COOL, COOL));
        assert!(b.allow(t0 + long, COOL));
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.failed(t0, 5, COOL, None);
        }
        b.succeeded();
        b.failed(t0, 5, COOL, None);
        assert!(b.allow(t0, COOL));
    }
}
