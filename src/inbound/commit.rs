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
/// A group at least this large means requests queue up for the commits: more arrive
/// than commits can be made one by one (at 500 requests/s with a commit of 10 ms,
/// groups are about 5). A slow database is saturated this way at any rate.
const FLOOD_GROUP: usize = 32;
/// Webhooks a second above which they flood in however fast commits are, on SQLite
/// (`worker.flood_rate` unset): more than the worker answers at full width on two
/// shared cores (about 1,000 conversations a second end to end).
pub const SQLITE_FLOOD_RATE: u64 = 2_000;
/// [`SQLITE_FLOOD_RATE`] on Postgres, where the worker answers about 550 a second
/// end to end on two shared cores (the server's share is most of each answer's CPU):
/// at 1,000 webhooks a second at full width it takes the CPU the acknowledgements
/// need (p50 11 ms, p99 27-41 ms against 1.5 and 4 ms keeping to one event).
pub const POSTGRES_FLOOD_RATE: u64 = 800;
/// Webhooks are watched over windows this long; a flood is two windows in a row each
/// with a group of [`FLOOD_GROUP`] or more, or over the flood rate. The lump that piles
/// up behind a stall (at 500 a second, 60 ms make a group of 30, 400 ms one of 200)
/// fills one window, not two.
const FLOOD_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);
/// How long after a flooded window webhooks still count as a flood (see
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

/// Whether webhooks flood in (see [`FLOOD_WINDOW`]): watched by the commit task, read
/// by the worker.
struct Flood {
    epoch: std::time::Instant,
    /// Milliseconds after `epoch` until which webhooks count as a flood.
    until_ms: AtomicU64,
}

/// The commit task's watch on the groups it commits, per [`FLOOD_WINDOW`].
struct FloodWindows {
    /// Webhooks a second that flood in (see [`SQLITE_FLOOD_RATE`]).
    rate: u64,
    start: std::time::Instant,
    /// Requests committed in this window.
    count: u64,
    /// Whether a group of [`FLOOD_GROUP`] or more was committed in this window.
    queued: bool,
    /// Whether the last window was a flood's.
    last_over: bool,
}

impl FloodWindows {
    fn new(rate: u64, now: std::time::Instant) -> Self {
        Self {
            rate,
            start: now,
            count: 0,
            queued: false,
            last_over: false,
        }
    }

    /// Counts a group of `requests` taken for a commit at `now`; true when this ends
    /// a second flooded window in a row. A window ends at the first commit after its time; a
    /// pause of two windows or more starts the watch over.
    fn count(&mut self, requests: usize, now: std::time::Instant) -> bool {
        if now.saturating_duration_since(self.start) >= 2 * FLOOD_WINDOW {
            *self = Self::new(self.rate, now);
        }
        self.count += requests as u64;
        self.queued |= requests >= FLOOD_GROUP;
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < FLOOD_WINDOW {
            return false;
        }
        let over = self.queued || self.count * 1000 >= self.rate * elapsed.as_millis() as u64;
        let flood = over && self.last_over;
        *self = Self {
            last_over: over,
            ..Self::new(self.rate, now)
        };
        flood
    }
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

    /// Whether webhooks flood in (see [`FLOOD_WINDOW`]): then acknowledging them
    /// comes first, and the worker keeps to one event at a time so that the requests,
    /// not the backlog, get the CPU.
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
/// what is queued after `stop` and then exit. More than `flood_rate` webhooks a
/// second is a flood (see [`Committer::flooded`]).
pub fn spawn_committer(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    flood_rate: u64,
) -> (Committer, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<(IngressBatch, Reply)>(4096);
    let flood = Arc::new(Flood {
        epoch: std::time::Instant::now(),
        until_ms: AtomicU64::new(0),
    });
    let flooding = flood.clone();
    let mut windows = FloodWindows::new(flood_rate, std::time::Instant::now());
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
            if windows.count(group.len(), std::time::Instant::now()) {
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

    use std::time::{Duration, Instant};

    /// Commits of `group` requests every `every`, for `lasting`, from `start`;
    /// returns when the first flood was reported (offset from `start`) and how many
    /// windows reported one.
    fn commits(
        windows: &mut FloodWindows,
        start: Instant,
        group: usize,
        every: Duration,
        lasting: Duration,
    ) -> (Option<Duration>, usize) {
        let (mut first, mut floods) = (None, 0);
        let mut at = Duration::ZERO;
        while at < lasting {
            if windows.count(group, start + at) {
                first.get_or_insert(at);
                floods += 1;
            }
            at += every;
        }
        (first, floods)
    }

    /// From a fresh watch, commits of `group` requests every `every` for a second.
    fn steady(group: usize, every: Duration) -> (Option<Duration>, usize) {
        let start = Instant::now();
        commits(
            &mut FloodWindows::new(SQLITE_FLOOD_RATE, start),
            start,
            group,
            every,
            Duration::from_secs(1),
        )
    }

    /// 500 requests a second, one by one, for `before`; then nothing until `resumed`,
    /// when the `lump` that piled up meanwhile is committed at once; then 500 a second
    /// again. Whether a flood was reported before, at the lump, and after.
    fn stall(
        before: Duration,
        resumed: Duration,
        lump: usize,
    ) -> (Option<Duration>, bool, Option<Duration>) {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut windows = FloodWindows::new(SQLITE_FLOOD_RATE, start);
        let (first_before, _) = commits(&mut windows, start, 1, ms(2), before);
        let at_lump = windows.count(lump, start + resumed);
        let again = start + resumed + ms(2);
        let (first_after, _) = commits(&mut windows, again, 1, ms(2), ms(500));
        (first_before, at_lump, first_after)
    }

    /// Webhooks flood in when more than the flood rate ([`SQLITE_FLOOD_RATE`] here) a
    /// second keep arriving, or requests keep queuing up for the commits, for two
    /// windows; a steady rate below it in small groups is ordinary load, and so is the
    /// lump of requests that piles up behind a stall.
    #[test]
    fn a_flood_is_kept_up_not_a_lump_after_a_stall() {
        let start = Instant::now();
        let ms = Duration::from_millis;

        let mut windows = FloodWindows::new(SQLITE_FLOOD_RATE, start);
        let (first, _) = commits(&mut windows, start, 1, ms(2), ms(2000));
        assert_eq!(first, None, "500 a second is no flood");

        // An 800-ms stall: 400 requests in one group.
        assert_eq!(
            stall(ms(1000), ms(1800), 400),
            (None, false, None),
            "a stall's lump is no flood"
        );

        // 3,000 a second (30 every 10 ms): a flood from the end of the second window,
        // reported again at the end of every window while it lasts.
        assert_eq!(steady(30, ms(10)), (Some(ms(200)), 8));

        // Just under the rate (1,900 a second) in small groups is not one.
        assert_eq!(steady(19, ms(10)).0, None);

        // A slow database: 64 requests waiting for each 40-ms commit (1,600 a second,
        // under the rate, but the queue never empties). Windows end at the first
        // commit after 100 ms: at 120, 240, 360…
        assert_eq!(steady(64, ms(40)), (Some(ms(240)), 7));

        // A 60-ms stall: one group of 32 is ordinary.
        assert_eq!(stall(ms(500), ms(560), FLOOD_GROUP), (None, false, None));

        // On Postgres 1,000 a second is a flood, 500 a second is not.
        let on_postgres = |group: usize| {
            let start = Instant::now();
            let mut windows = FloodWindows::new(POSTGRES_FLOOD_RATE, start);
            commits(&mut windows, start, group, ms(10), Duration::from_secs(1)).0
        };
        assert_eq!(on_postgres(10), Some(ms(200)));
        assert_eq!(on_postgres(5), None);
    }

    /// A reported flood holds for [`FLOOD_HOLD`], then webhooks are ordinary again.
    #[tokio::test]
    async fn a_flood_holds_for_a_moment() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("og.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", db.display())).await?;
        store.migrate().await?;
        let store: Arc<dyn Store> = Arc::new(store);
        let (committer, task) = spawn_committer(
            store,
            Arc::new(Notify::new()),
            CancellationToken::new(),
            SQLITE_FLOOD_RATE,
        );
        committer
            .commit(IngressBatch {
                envelopes: vec![NewEnvelope {
                    tenant_id: None,
                    channel_id: None,
                    platform: "whatsapp".into(),
                    body: b"{}".to_vec(),
                    received_at: 0,
                }],
                ..Default::default()
            })
            .await?;
        assert!(!committer.flooded(), "one request is no flood");
        committer.flood.hold();
        assert!(committer.flooded());
        tokio::time::sleep(FLOOD_HOLD + Duration::from_millis(50)).await;
        assert!(
            !committer.flooded(),
            "the flood is over once it is not reported again"
        );
        task.abort();
        Ok(())
    }
}
