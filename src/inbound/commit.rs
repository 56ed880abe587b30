//! Group commit: concurrent webhook requests hand their writes to one task, which
//! commits whatever has queued up in a single transaction, so throughput is not one
//! fsync per request. Each request gets its own outcome back and is acknowledged only
//! after the commit that holds its events is durable. Committing and flushing are
//! pipelined: while one group's flush waits on the disk, the next group is written.

use std::sync::atomic::{AtomicU64, Ordering};
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
/// A group at least this large means webhooks flood in: many more requests arrive
/// than commits can be made one by one (at 500 requests/s with a commit of 10 ms,
/// groups are about 5; a stall of 60 ms at that rate makes one of 30).
const FLOOD_GROUP: usize = 32;
/// How long after a flooded commit webhooks still count as a flood (see
/// [`Committer::flooded`]).
const FLOOD_HOLD: std::time::Duration = std::time::Duration::from_millis(200);

type Reply = oneshot::Sender<Result<IngressOutcome, CommitFailed>>;

/// The events were not stored (the cause is logged where it happened).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("ingress commit failed")]
pub struct CommitFailed;

/// Handle used by request handlers.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<(IngressBatch, Reply)>,
    flood: Arc<Flood>,
}

/// When webhooks last came in groups (requests waiting for the same commit).
struct Flood {
    epoch: std::time::Instant,
    /// Milliseconds after `epoch` until which webhooks count as a flood.
    until_ms: AtomicU64,
}

impl Flood {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn hold(&self) {
        let until = self.now_ms().saturating_add(FLOOD_HOLD.as_millis() as u64);
        self.until_ms.store(until, Ordering::Relaxed);
    }
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

    /// Whether webhooks flood in (large groups waited for one commit in the last
    /// moments): then acknowledging them comes first, and the worker keeps to a few
    /// events at a time so that the requests, not the backlog, get the CPU.
    pub fn flooded(&self) -> bool {
        self.flood.now_ms() < self.flood.until_ms.load(Ordering::Relaxed)
    }
}

/// Committed requests waiting for their flush, with what to answer each.
type Committed = Vec<(Reply, Result<IngressOutcome, CommitFailed>)>;

/// Starts the commit task and its flusher. Groups are committed one after another;
/// a committed group is handed to the flusher, which makes it durable
/// ([`Store::sync_ingress`], one flush for every group that waits) and only then
/// answers its requests, while the next group is already being written. Both drain
/// what is queued after `stop` and then exit.
pub fn spawn_committer(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> (Committer, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<(IngressBatch, Reply)>(4096);
    let flood = Arc::new(Flood {
        epoch: std::time::Instant::now(),
        until_ms: AtomicU64::new(0),
    });
    let flooding = flood.clone();
    let (flush_tx, flush_rx) = mpsc::unbounded_channel::<(Committed, bool)>();
    let flusher = tokio::spawn(flush(store.clone(), wake, flush_rx));
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
            // commit; keep the writer for it.
            let busy = group.len() >= BUSY_GROUP;
            if group.len() >= FLOOD_GROUP {
                flooding.hold();
            }
            let committed = commit_group(store.as_ref(), group).await;
            if busy {
                store.expect_ingress(NEXT_GROUP_WINDOW);
            }
            if flush_tx.send(committed).is_err() {
                break;
            }
        }
        drop(flush_tx);
        let _ = flusher.await;
    });
    (Committer { tx, flood }, task)
}

/// Makes committed groups durable and answers their requests. A failed flush fails
/// every request of the groups it covered: they are not acknowledged, the platform
/// delivers them again, and the stored copy dedupes the redelivery.
async fn flush(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    mut rx: mpsc::UnboundedReceiver<(Committed, bool)>,
) {
    while let Some(first) = rx.recv().await {
        let mut groups = vec![first];
        while let Ok(more) = rx.try_recv() {
            groups.push(more);
        }
        let any_stored = groups
            .iter()
            .any(|(answers, _)| answers.iter().any(|(_, r)| r.is_ok()));
        let flushed = if any_stored {
            store.sync_ingress().await.map_err(|e| log_failure(&e))
        } else {
            Ok(())
        };
        let mut fresh = false;
        for (answers, group_fresh) in groups {
            fresh |= group_fresh;
            for (reply, result) in answers {
                let _ = reply.send(result.and_then(|o| flushed.map(|()| o)));
            }
        }
        if fresh && flushed.is_ok() {
            wake.notify_one();
            // Workers of other instances (Postgres NOTIFY), off the acknowledgement path.
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.announce(crate::store::Wake::Inbox).await {
                    tracing::debug!(error = %e, "inbox announcement failed");
                }
            });
        }
    }
}

/// Commits a group; if the group transaction fails, retries each request alone so
/// one request's problem does not fail its neighbours. Returns each request's answer
/// and whether anything new was stored.
async fn commit_group(store: &dyn Store, group: Vec<(IngressBatch, Reply)>) -> (Committed, bool) {
    let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
    match store.commit_ingress(&batches).await {
        Ok(outcomes) => {
            let fresh = outcomes.iter().any(|o| o.inserted > 0);
            (
                replies
                    .into_iter()
                    .zip(outcomes.into_iter().map(Ok))
                    .collect(),
                fresh,
            )
        }
        // -- fault tolerance: with the database away every request fails alike;
        // retrying them one by one would only hold each for another pool timeout.
        Err(e) if batches.len() == 1 || is_outage(&e) => {
            let failed = log_failure(&e);
            (
                replies.into_iter().map(|r| (r, Err(failed))).collect(),
                false,
            )
        }
        Err(_) => {
            let mut fresh = false;
            let mut answers = Vec::with_capacity(replies.len());
            for (batch, reply) in batches.into_iter().zip(replies) {
                let result = store
                    .commit_ingress(std::slice::from_ref(&batch))
                    .await
                    .map(|mut o| o.pop().unwrap_or_default());
                fresh |= result.as_ref().is_ok_and(|o| o.inserted > 0);
                answers.push((reply, result.map_err(|e| log_failure(&e))));
            }
            (answers, fresh)
        }
    }
}

fn is_outage(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(db) if crate::http::error::is_unavailable(db))
}

fn log_failure(e: &StoreError) -> CommitFailed {
    tracing::error!(error = %e, "ingress commit failed");
    CommitFailed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewEnvelope, SqliteStore};

    /// Many requests waiting for the same commit mean webhooks flood in: for a moment
    /// after such a group the committer reports a flood (the worker then keeps to a
    /// few events); single requests and small groups do not.
    #[tokio::test]
    async fn a_group_of_waiting_webhooks_counts_as_a_flood_for_a_moment() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("og.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", db.display())).await?;
        store.migrate().await?;
        let store: Arc<dyn Store> = Arc::new(store);
        let (committer, task) =
            spawn_committer(store, Arc::new(Notify::new()), CancellationToken::new());
        let batch = || IngressBatch {
            envelopes: vec![NewEnvelope {
                tenant_id: None,
                channel_id: None,
                platform: "whatsapp".into(),
                body: b"{}".to_vec(),
                received_at: 0,
            }],
            ..Default::default()
        };
        // On this single-threaded runtime requests sent together all queue before
        // the commit task runs: one group.
        let group = |n: usize| {
            let waiting: Vec<_> = (0..n)
                .map(|_| {
                    let committer = committer.clone();
                    let batch = batch();
                    tokio::spawn(async move { committer.commit(batch).await })
                })
                .collect();
            async move {
                for request in waiting {
                    request.await??;
                }
                anyhow::Ok(())
            }
        };
        group(1).await?;
        assert!(!committer.flooded(), "one request at a time is no flood");
        group(FLOOD_GROUP - 1).await?;
        assert!(!committer.flooded(), "a smaller group is ordinary load");
        group(FLOOD_GROUP).await?;
        assert!(committer.flooded());
        tokio::time::sleep(FLOOD_HOLD + std::time::Duration::from_millis(50)).await;
        assert!(!committer.flooded(), "the flood is over once groups stop");
        task.abort();
        Ok(())
    }
}
