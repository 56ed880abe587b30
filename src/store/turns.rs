//! Who gets SQLite's single writer connection next.
//!
//! Webhook acknowledgements wait on their group commit, so they go first: background
//! writers (worker, dispatcher) pass one at a time through a gate and, while
//! acknowledgements are waiting, take one turn per [`SHARE`] urgent commits (or after
//! [`MAX_WAIT`] at the latest), so under a flood of webhooks the backlog still moves.
//! Under load the next group of acknowledgements forms just after the previous commit;
//! the committer reserves the writer for that moment ([`Turns::reserve`]) so a
//! background transaction does not slip into the gap.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, Notify};
use tokio::time::Instant;

/// Urgent commits per background turn while both are waiting.
const SHARE: usize = 8;
/// Longest a background writer yields to urgent ones.
const MAX_WAIT: Duration = Duration::from_millis(50);

pub struct Turns {
    gate: Mutex<()>,
    urgent: AtomicUsize,
    since_background: AtomicUsize,
    changed: Notify,
    /// Reserved for urgent writers until this many nanoseconds after `epoch`.
    reserved_until: AtomicU64,
    epoch: Instant,
}

impl Default for Turns {
    fn default() -> Self {
        Self {
            gate: Mutex::new(()),
            urgent: AtomicUsize::new(0),
            since_background: AtomicUsize::new(0),
            changed: Notify::new(),
            reserved_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

/// Held for the length of one write transaction.
pub enum Turn<'a> {
    /// No scheduling (Postgres has many writers).
    Free,
    Urgent(&'a Turns),
    Background(#[allow(dead_code)] MutexGuard<'a, ()>),
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Turn::Urgent(turns) = self {
            turns.since_background.fetch_add(1, Ordering::AcqRel);
            turns.urgent.fetch_sub(1, Ordering::AcqRel);
            turns.changed.notify_waiters();
        }
    }
}

impl Turns {
    /// An urgent writer: counted as waiting from now on.
    pub fn urgent(&self) -> Turn<'_> {
        self.urgent.fetch_add(1, Ordering::AcqRel);
        Turn::Urgent(self)
    }

    /// Keeps background writers off for `window`: an urgent writer is expected.
    pub fn reserve(&self, window: Duration) {
        let until = (Instant::now() + window)
            .duration_since(self.epoch)
            .as_nanos();
        self.reserved_until
            .store(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Release);
    }

    fn reservation(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.reserved_until.load(Ordering::Acquire))
    }

    /// A background writer's turn, once no urgent writer is waiting or expected, or
    /// it has had its share, or [`MAX_WAIT`] has passed.
    pub async fn background(&self) -> Turn<'_> {
        let gate = self.gate.lock().await;
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let waiting = self.urgent.load(Ordering::Acquire) > 0;
            let reserved = self.reservation();
            if (!waiting && reserved <= now)
                || self.since_background.load(Ordering::Acquire) >= SHARE
                || now >= deadline
            {
                break;
            }
            // Woken by an urgent turn ending, or when the reservation lapses.
            let wake = if waiting {
                deadline
            } else {
                reserved.min(deadline)
            };
            let _ = tokio::time::timeout_at(wake, changed).await;
        }
        self.since_background.store(0, Ordering::Release);
        Turn::Background(gate)
    }
}
