//! The claim loop shared by the worker (inbox) and the dispatcher (outbox): claim as
//! many items as there are free slots, run each as its own task, and sleep until
//! woken, a slot frees, or the poll interval passes. On `stop` it claims nothing
//! more and waits for the running items to finish.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How one queue is worked.
pub struct Queue<'a> {
    /// For logs.
    pub name: &'static str,
    /// Notified when new items may be ready.
    pub wake: &'a Notify,
    /// Items handled at once.
    pub concurrency: usize,
    /// While items run, claim again only once this many slots are free.
    pub min_claim: usize,
    /// Longest sleep when nothing wakes the loop.
    pub poll: Duration,
}

pub async fn run<T, C, CF, H, HF>(
    queue: Queue<'_>,
    stop: CancellationToken,
    mut claim: C,
    handle: H,
) where
    C: FnMut(usize) -> CF,
    CF: Future<Output = Result<Vec<T>, crate::store::StoreError>>,
    H: Fn(T) -> HF,
    HF: Future<Output = ()> + Send + 'static,
{
    let Queue {
        name,
        wake,
        concurrency,
        min_claim,
        poll,
    } = queue;
    let mut running = JoinSet::new();
    loop {
        let free = concurrency.saturating_sub(running.len());
        let mut claimed = 0;
        // Claim when idle or when at least `min_claim` slots are free, so that under
        // load one claim (a write) takes a batch rather than a single item.
        if free > 0 && (running.is_empty() || free >= min_claim) {
            let items = claim(free).await.unwrap_or_else(|e| {
                tracing::error!(queue = name, error = %e, "claim failed");
                Vec::new()
            });
            claimed = items.len();
            for item in items {
                running.spawn(handle(item));
            }
        }
        if claimed > 0 && claimed == free {
            // Possibly more ready: look again as soon as a slot frees.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = running.join_next() => {}
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    while running.join_next().await.is_some() {}
}
