//! Who gets SQLite's single writer connection next.
//!
//! Webhook acknowledgements wait on their group commit, so they go first: background
//! writers (worker, dispatcher) pass one at a time through a gate and, while
//! acknowledgements are waiting, take one turn per [`SHARE`] urgent commits (or after
//! [`MAX_WAIT`] at the latest), so under a flood of webhooks the backlog still moves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, Notify};
use tokio::time::Instant;

/// Urgent commits per background turn while both are waiting.
const SHARE: usize = 8;
/// Longest a background writer yields to urgent ones.
const MAX_WAIT: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Turns {
    gate: Mutex<()>,
    urgent: AtomicUsize,
    since_background: AtomicUsize,
    changed: Notify,
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

    /// A background writer's turn, once no urgent writer is waiting, or it has had
    /// its share, or [`MAX_WAIT`] has passed.
    pub async fn background(&self) -> Turn<'_> {
        let gate = self.gate.lock().await;
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let waiting = self.urgent.load(Ordering::Acquire);
            if waiting == 0 || self.since_background.load(Ordering::Acquire) >= SHARE {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        self.since_background.store(0, Ordering::Release);
        Turn::Background(gate)
    }
}
