//! Group commit: concurrent webhook requests hand their writes to one task, which
//! commits whatever has queued up in a single transaction, so throughput is not one
//! fsync per request. Each request gets its own outcome back and is acknowledged only
//! after the commit that holds its events.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{IngressBatch, IngressOutcome, Store, StoreError};

/// Requests waiting to be committed together, at most.
const MAX_GROUP: usize = 256;
/// A group at least this large means requests keep coming.
const BUSY_GROUP: usize = 4;
/// How long the writer is kept for the next group after a busy commit.
const NEXT_GROUP_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

type Reply = oneshot::Sender<Result<IngressOutcome, CommitFailed>>;

/// The events were not stored (the cause is logged where it happened).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("ingress commit failed")]
pub struct CommitFailed;

/// Handle used by request handlers.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(IngressBatch, Reply)>,
}

impl Committer {
    /// Stores `batch` durably; returns once it is committed.
    pub async fn commit(&self, batch: IngressBatch) -> Result<IngressOutcome, CommitFailed> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((batch, reply))
            .await
            .map_err(|_| CommitFailed)?;
        wait.await.map_err(|_| CommitFailed)?
    }
}

/// Starts the commit task. It drains what is queued after `stop` and then exits.
pub fn spawn_committer(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> (Committer, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<(IngressBatch, Reply)>(4096);
    let task = tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                item = rx.recv() => item,
                _ = stop.cancelled() => {
                    rx.close();
                    rx.recv().await
                }
            };
            let Some(first) = first else { break };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(item) => group.push(item),
                    Err(_) => break,
                }
            }
            // A group of several means load: the next one forms right after this
            // commit answers them; keep the writer for it.
            let busy = group.len() >= BUSY_GROUP;
            let fresh = commit_group(store.as_ref(), group).await;
            if busy {
                store.expect_ingress(NEXT_GROUP_WINDOW);
            }
            if fresh {
                wake.notify_one();
            }
        }
    });
    (Committer { tx }, task)
}

/// Commits a group; if the group transaction fails, retries each request alone so
/// one request's problem does not fail its neighbours. Returns whether anything new
/// was stored.
async fn commit_group(store: &dyn Store, group: Vec<(IngressBatch, Reply)>) -> bool {
    let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
    match store.commit_ingress(&batches).await {
        Ok(outcomes) => {
            let fresh = outcomes.iter().any(|o| o.inserted > 0);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
            fresh
        }
        Err(e) if batches.len() == 1 => {
            let _ = replies
                .into_iter()
                .next()
                .map(|r| r.send(Err(log_failure(&e))));
            false
        }
        Err(_) => {
            let mut fresh = false;
            for (batch, reply) in batches.into_iter().zip(replies) {
                let result = store
                    .commit_ingress(std::slice::from_ref(&batch))
                    .await
                    .map(|mut o| o.pop().unwrap_or_default());
                fresh |= result.as_ref().is_ok_and(|o| o.inserted > 0);
                let _ = reply.send(result.map_err(|e| log_failure(&e)));
            }
            fresh
        }
    }
}

fn log_failure(e: &StoreError) -> CommitFailed {
    tracing::error!(error = %e, "ingress commit failed");
    CommitFailed
}
