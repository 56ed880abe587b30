//! The worker: claims inbox events (one per conversation at a time, in platform
//! order, under a lease), resolves contact and conversation, asks the assistant, and
//! records the message and its reply in the same transaction that marks the event
//! done.

mod handle;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::store::{new_id, now_ms};

/// Runs until `stop`, then lets in-flight events finish.
pub async fn run_worker(app: App, stop: CancellationToken) {
    let owner = format!("worker-{}", new_id());
    let concurrency = app.config.worker.concurrency;
    let lease_ms = app.config.worker.lease_ms as i64;
    let poll = Duration::from_millis(app.config.worker.poll_ms);
    let mut running = JoinSet::new();
    loop {
        let free = concurrency.saturating_sub(running.len());
        let mut claimed = 0;
        if free > 0 {
            match app
                .store
                .claim_inbox(&owner, now_ms(), lease_ms, free as i64)
                .await
            {
                Ok(items) => {
                    claimed = items.len();
                    for item in items {
                        running.spawn(handle::handle(app.clone(), owner.clone(), item));
                    }
                }
                Err(e) => tracing::error!(error = %e, "inbox claim failed"),
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
            _ = app.inbox_wake.notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    while running.join_next().await.is_some() {}
}
