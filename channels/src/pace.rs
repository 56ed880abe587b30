//! Send pacing inside one process: spaces sends per destination and overall, and
//! holds a destination back after the platform said to wait (429).
//!
//! Each call reserves the next free slot and sleeps until it; reservations are made
//! under a lock, so concurrent sends to one destination queue up in order.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest pause pacing adds to one send; beyond it the send fails as retryable
/// (with the wait as `retry_after`), so a dispatcher slot is not held for long.
pub const MAX_PAUSE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Pacer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Next free slot per destination.
    next: HashMap<String, Instant>,
    /// Next free slot of the account as a whole.
    global: Option<Instant>,
}

impl Pacer {
    /// Reserves a slot for `key`, `every` after the previous one for `key` and
    /// `global_every` after the previous one overall. Returns how long to wait.
    pub fn reserve(&self, key: &str, every: Duration, global_every: Duration) -> Duration {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return Duration::ZERO;
        };
        if state.next.len() > 10_000 {
            state.next.retain(|_, at| *at > now);
        }
        let own = state.next.get(key).copied().unwrap_or(now).max(now);
        let global = state.global.unwrap_or(now).max(now);
        let slot = own.max(global);
        state.next.insert(key.to_string(), slot + every);
        // The bot-wide spacing counts sends, not one destination's wait.
        state.global = Some(global + global_every);
        slot - now
    }

    /// Holds `key` back until `wait` from now (the platform's `retry_after`).
    pub fn hold(&self, key: &str, wait: Duration) {
        let until = Instant::now() + wait;
        if let Ok(mut state) = self.state.lock() {
            let at = state.next.entry(key.to_string()).or_insert(until);
            *at = (*at).max(until);
        }
    }

    /// Holds every destination back (a global rate limit).
    pub fn hold_all(&self, wait: Duration) {
        let until = Instant::now() + wait;
        if let Ok(mut state) = self.state.lock() {
            state.global = Some(state.global.map_or(until, |g| g.max(until)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_one_destination_are_spaced() {
        let pacer = Pacer::default();
        let every = Duration::from_secs(1);
        assert_eq!(pacer.reserve("a", every, Duration::ZERO), Duration::ZERO);
        let second = pacer.reserve("a", every, Duration::ZERO);
        assert!(second > Duration::from_millis(900), "{second:?}");
        // Another destination is not held back by the first one.
        assert_eq!(pacer.reserve("b", every, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_hold_delays_the_destination() {
        let pacer = Pacer::default();
        pacer.hold("a", Duration::from_secs(35));
        assert!(pacer.reserve("a", Duration::ZERO, Duration::ZERO) > Duration::from_secs(34));
        pacer.hold_all(Duration::from_secs(5));
        assert!(pacer.reserve("c", Duration::ZERO, Duration::ZERO) > Duration::from_secs(4));
    }
}
