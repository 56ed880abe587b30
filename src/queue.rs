//! The claim loop shared by the worker (inbox) and the dispatcher (outbox): claim as
//! many items as there are free slots, run each as its own task, and sleep until
//! woken, a slot frees, or the poll interval passes. On `stop` it claims nothing
//! more and waits for the running items to finish.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub async fn run<T, C, CF, H, HF>(
    stop: CancellationToken,
    wake: &Notify,
    concurrency: usize,
    min_claim: usize,
    poll: Duration,
    mut claim: C,
    handle: H,
) where
    C: FnMut(usize) -> CF,
    CF: Future<Output = Vec<T>>,
    H: Fn(T) -> HF,
    HF: Future<Output = ()> + Send + 'static,
{
    let mut running = JoinSet::new();
    loop {
        let free = concurrency.saturating_sub(running.len());
        let mut claimed = 0;
        // Claim when idle or when at least `min_claim` slots are free, so that under
        // load one claim (a write) takes a batch rather than a single item.
        if free > 0 && (running.is_empty() || free >= min_claim) {
            let items = claim(free).await;
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
