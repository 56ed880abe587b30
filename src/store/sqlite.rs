//! The embedded SQLite backend: one file in WAL mode, one writer connection (so
//! writes queue in-process instead of failing with SQLITE_BUSY) and a few readers.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::ai::ai_store;
use super::ops::ops_store;
use super::privacy::privacy_store;
use super::shared::shared_store;
use super::turns::{Turn, Turns};

pub struct SqliteStore {
    /// The one writer connection. Held here rather than in a pool: a pool pings a
    /// connection each time it comes back (a round trip to the connection's thread
    /// after every transaction), and the next write waits for that.
    writer: Mutex<SqliteConnection>,
    reader: Arc<Readers>,
    /// Orders turns on the single writer connection (acknowledgements first).
    turns: Turns,
    /// Whether the writer connection runs `synchronous = FULL` now.
    writer_full: AtomicBool,
    /// Set while a transaction begun inside a script (see `run_transaction`) may be
    /// open on the writer: if its holder was cut off before ending it, the next
    /// holder rolls it back first.
    writer_in_script: AtomicBool,
    /// Background writes waiting to be made together (see `complete_inbox`).
    pending: super::shared::PendingWrites,
    /// The WAL, flushed by `sync_wal` (`None` for an in-memory database).
    wal: Option<Arc<WalFile>>,
    /// Set by the background checkpointer when the WAL has grown long: the next
    /// writer finishes the checkpoint, so the log starts over (see [`checkpoint`]).
    checkpoint_due: Arc<AtomicBool>,
    checkpointer: CancellationToken,
}

/// The database's write-ahead log. Ingress commits run with `synchronous = NORMAL`
/// (the commit's frames reach the WAL file but are not synced) and are acknowledged
/// only after the WAL file was synced: the durability of `FULL`, whose commit syncs the
/// same file, but the next group's inserts no longer wait for the disk.
struct WalFile {
    path: PathBuf,
    /// Flushes asked for so far (see [`WalFile::flush`]).
    requested: AtomicU64,
    /// Every flush asked for up to this number is done.
    flushed: AtomicU64,
    /// One sync at a time.
    syncing: Mutex<()>,
    /// Syncs made.
    syncs: AtomicU64,
}

impl WalFile {
    /// Puts on disk everything committed before the call. Callers at the same time
    /// share a sync: each waits for the sync under way (which may have started
    /// before its commit), then the next one, started after its call, covers it and
    /// everyone who called meanwhile; they return without a sync of their own.
    async fn flush(self: &Arc<Self>) -> std::io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let _syncing = self.syncing.lock().await;
        if self.flushed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        // Every flush asked for up to here was asked after its commit.
        let covers = self.requested.load(Ordering::Acquire);
        let wal = self.clone();
        tokio::task::spawn_blocking(move || wal.sync())
            .await
            .map_err(std::io::Error::other)??;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.flushed.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }

    /// Opened afresh each time, so a WAL that SQLite deleted and created again (when
    /// every connection closed) is never mistaken for the live one.
    fn sync(&self) -> std::io::Result<()> {
        match std::fs::File::open(&self.path) {
            Ok(file) => file.sync_data(),
            // SQLite removes the WAL only after checkpointing it into the database
            // file and syncing that: everything committed is on disk already.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.cancel();
    }
}

/// How often the WAL is copied back into the database file (and, when long, started
/// over). The log holds about this long of writes: at 1,000 webhooks a second in the
/// benchmark, 30-35 MB at 250 ms, 60-160 MB at a second. A shorter log keeps each
/// checkpoint's burst to the disk small (an acknowledgement's flush waits behind it) and
/// stays under [`WAL_SIZE_LIMIT`], so restarts need not cut the file back.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// A WAL longer than this many frames (about 4 MiB) is restarted by the writer.
const RESTART_FRAMES: i64 = 1000;
/// Reader connections (queries run beside the writer and each other).
const READERS: usize = 4;
/// A WAL file that grew past this (a burst) is truncated back when it restarts.
/// Cutting it back frees disk blocks, which with the filesystem's online discard waits
/// for the disk while the writer is held (20-40 ms seen); under steady load the log
/// stays below this (see [`CHECKPOINT_EVERY`]).
const WAL_SIZE_LIMIT: &str = "67108864";

impl SqliteStore {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

    const SEARCH_SQL: &'static str = "SELECT p.document_id, d.title, d.url, p.text \
         FROM knowledge_fts f JOIN knowledge_passages p ON p.id = f.rowid \
         JOIN knowledge_documents d ON d.id = p.document_id \
         WHERE knowledge_fts MATCH $1 AND p.tenant_id = $2 \
         ORDER BY bm25(knowledge_fts) LIMIT $3";

    /// A relaxed commit followed by `sync_wal` is durable.
    const SYNCS_LOG_APART: bool = true;
    /// SQLite runs a text of several statements in one call (see `Script`).
    const MERGES_STATEMENTS: bool = true;
    /// Whether one writer makes every write in turn (see `Completed::sure`).
    const WRITES_IN_TURN: bool = true;

    /// Whether a raw delivery (`body`) holds the text `$2` (Meta messaging unsend).
    const ENVELOPE_HOLDS: &'static str = "instr(body, CAST($2 AS BLOB)) > 0";

    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Each write transaction sets its own level (see `begin_write`).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("secure_delete", "ON")
            .pragma("journal_size_limit", WAL_SIZE_LIMIT);
        // Checkpoints run beside the writer (below), not inside its commits, so an
        // acknowledgement never waits for the database file to be synced.
        // A local file cannot drop its connection: the store holds its connections
        // itself, with no pool testing them before or after each use.
        // A statement that may stop part way inside a transaction (a multi-row insert,
        // a foreign key) journals the pages it changes, so that it alone can be undone;
        // held in memory, that journal costs the writer no file writes (it spilled to
        // a temporary file past 64 KiB: an ingress group's insert does).
        let mut writer = SqliteConnection::connect_with(
            &options
                .clone()
                .pragma("wal_autocheckpoint", "0")
                .pragma("temp_store", "MEMORY"),
        )
        .await?;
        let reader = Arc::new(Readers::open(&options, READERS).await?);
        // The main database file ("" when in memory); its WAL sits beside it.
        let main_file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&mut writer)
                .await?;
        let wal = (!main_file.is_empty()).then(|| {
            Arc::new(WalFile {
                path: PathBuf::from(format!("{main_file}-wal")),
                requested: AtomicU64::new(0),
                flushed: AtomicU64::new(0),
                syncing: Mutex::new(()),
                syncs: AtomicU64::new(0),
            })
        });
        let checkpointer = CancellationToken::new();
        let checkpoint_due = Arc::new(AtomicBool::new(false));
        tokio::spawn(checkpoint(
            reader.clone(),
            checkpoint_due.clone(),
            checkpointer.clone(),
        ));
        Ok(Self {
            writer: Mutex::new(writer),
            reader,
            turns: Turns::default(),
            writer_full: AtomicBool::new(true),
            writer_in_script: AtomicBool::new(false),
            pending: Default::default(),
            wal,
            checkpoint_due,
            checkpointer,
        })
    }

    /// Flushes the WAL file: every transaction committed before the call is on disk
    /// when it returns (a WAL commit is durable once its frames are synced).
    async fn sync_wal(&self) -> Result<(), sqlx::Error> {
        let Some(wal) = self.wal.clone() else {
            return Ok(());
        };
        wal.flush().await.map_err(sqlx::Error::Io)
    }

    /// The connection migrations run on.
    async fn migration_connection(&self) -> Result<MutexGuard<'_, SqliteConnection>, sqlx::Error> {
        Ok(self.writer.lock().await)
    }

    /// A reader connection for one query or read transaction.
    async fn read(&self) -> Result<ReadConnection<'_>, sqlx::Error> {
        self.reader.acquire().await
    }

    fn reserve_writer(&self, window: Duration) {
        self.turns.reserve(window);
    }

    async fn write_connection(
        &self,
        urgent: bool,
    ) -> Result<(Turn<'_>, MutexGuard<'_, SqliteConnection>), sqlx::Error> {
        let turn = if urgent {
            self.turns.urgent()
        } else {
            self.turns.background().await
        };
        let mut conn = self.writer.lock().await;
        if self.writer_in_script.load(Ordering::Acquire) {
            self.roll_back_script(&mut conn).await?;
        }
        if self.checkpoint_due.swap(false, Ordering::AcqRel) {
            // No other write can start while this connection is held: the checkpoint
            // reaches the end of the log (unless a reader still reads an old
            // snapshot), and this turn's first write starts the log over instead of
            // growing the file. A failed checkpoint costs nothing but a longer WAL.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *conn)
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint on the writer failed");
            }
        }
        Ok((turn, conn))
    }

    /// Durable commits run with `synchronous = FULL` (the WAL is fsynced at commit,
    /// which also covers every earlier relaxed commit); relaxed ones with `NORMAL`
    /// (safe against a process crash, flushed by the next FULL commit). The level
    /// cannot change inside a transaction, so it is set just before `BEGIN`.
    /// There is one writer connection, so the level it has is tracked here and set
    /// only when it changes (the connection opens at FULL, which is safe).
    async fn begin_write<'c>(
        &self,
        conn: &'c mut SqliteConnection,
        durable: bool,
    ) -> Result<Transaction<'c, Sqlite>, sqlx::Error> {
        self.set_synchronous(conn, durable).await?;
        conn.begin().await
    }

    /// Runs `script` as one transaction whose `BEGIN` goes in the same call as its
    /// statements, and its `COMMIT` too unless `keep` must see the rows first (then
    /// `keep` false rolls it back). One or two calls to the connection's thread
    /// instead of one per statement plus two. Returns the rows and whether it
    /// committed.
    async fn run_transaction<'q>(
        &self,
        conn: &mut SqliteConnection,
        durable: bool,
        mut script: super::shared::Script<'q, Sqlite>,
        keep: Option<super::shared::Keep<'_, SqliteRow>>,
    ) -> Result<(Vec<SqliteRow>, bool), sqlx::Error> {
        self.set_synchronous(conn, durable).await?;
        script.begin("BEGIN IMMEDIATE");
        if keep.is_none() {
            script.push("COMMIT");
        }
        self.writer_in_script.store(true, Ordering::Release);
        let rows = match Self::run_script(conn, script).await {
            Ok(rows) => rows,
            Err(e) => {
                // A statement failed: whatever it began is undone before anyone
                // else writes (if this fails too, the next writer tries again).
                let _ = self.roll_back_script(conn).await;
                return Err(e);
            }
        };
        let kept = match keep {
            None => true,
            Some(keep) => {
                let kept = keep(&rows);
                Self::end_script_transaction(conn, if kept { "COMMIT" } else { "ROLLBACK" })
                    .await?;
                kept
            }
        };
        self.writer_in_script.store(false, Ordering::Release);
        Ok((rows, kept))
    }

    /// Rolls back a transaction a script began, if one is open, and records that
    /// none is.
    async fn roll_back_script(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        Self::end_script_transaction(conn, "ROLLBACK").await?;
        self.writer_in_script.store(false, Ordering::Release);
        Ok(())
    }

    /// `COMMIT` or `ROLLBACK` of a script's transaction; rolling back one that is
    /// not open (`BEGIN` itself failed) is not an error.
    async fn end_script_transaction(
        conn: &mut SqliteConnection,
        end: &'static str,
    ) -> Result<(), sqlx::Error> {
        match sqlx::query(end).execute(&mut *conn).await {
            Err(sqlx::Error::Database(e))
                if end == "ROLLBACK" && e.message().contains("no transaction is active") =>
            {
                Ok(())
            }
            done => done.map(|_| ()),
        }
    }

    /// A new conversation's script runs in one call already (`push_resolve`).
    async fn resolve_in_one(
        &self,
        _conn: &mut SqliteConnection,
        _new: &super::shared::NewConversation,
    ) -> Result<Option<super::ConversationRef>, sqlx::Error> {
        Ok(None)
    }

    /// Records one sent part in one call (see `push_sent`).
    async fn sent_one(
        &self,
        conn: &mut SqliteConnection,
        part: &super::shared::SentPart,
    ) -> Result<bool, sqlx::Error> {
        let mut script = Self::script();
        Self::push_sent(&mut script, part);
        let (rows, _) = self.run_transaction(conn, false, script, None).await?;
        Ok(Self::part_waits(rows.first()))
    }

    /// One writer: background writes that queue up for it are made together.
    fn pending_writes(&self) -> Option<&super::shared::PendingWrites> {
        Some(&self.pending)
    }

    /// Runs a queue claim: one writer, so its single statement needs no lock and no
    /// transaction around it (one call instead of three). Callers that need it on
    /// disk pass `durable` false all the same (`SYNCS_LOG_APART`) and call
    /// [`Self::sync_wal`] once they have let go of the writer, so the flush does not
    /// hold up other writes.
    async fn run_claim<'q, T>(
        &self,
        conn: &mut SqliteConnection,
        durable: bool,
        claim: sqlx::query::QueryAs<'q, Sqlite, T, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow>,
    {
        self.set_synchronous(conn, durable).await?;
        claim.fetch_all(conn).await
    }

    /// Sets the writer's `synchronous` level for the next commits (see `begin_write`).
    async fn set_synchronous(
        &self,
        conn: &mut SqliteConnection,
        durable: bool,
    ) -> Result<(), sqlx::Error> {
        if self.writer_full.load(Ordering::Acquire) != durable {
            let level = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            // Mark FULL before switching down: a failed switch must never leave the
            // record saying FULL while the connection runs NORMAL.
            if !durable {
                self.writer_full.store(true, Ordering::Release);
            }
            sqlx::query(level).execute(&mut *conn).await?;
            self.writer_full.store(durable, Ordering::Release);
        }
        Ok(())
    }

    /// Stores an ingress group; returns the `(channel_id, external_id)` of the inbox
    /// rows it stored. The group's multi-row statements come as one text that begins
    /// the transaction (see [`ingress_statements`]); its `COMMIT` is added here, so
    /// the whole group is one call to the connection's thread (under load those
    /// hand-offs, not SQLite's work, are most of a commit's time). A failed group is
    /// rolled back, and the committer then stores its requests one by one. The
    /// commit is relaxed: acknowledgements wait for [`Self::sync_wal`].
    async fn write_ingress(
        &self,
        batches: &[super::IngressBatch],
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = super::shared::IngressRows::of(batches);
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (mut text, returns) = ingress_statements(&rows);
        text.push(";\nCOMMIT");
        let (_turn, mut conn) = self.write_connection(true).await?;
        self.set_synchronous(&mut conn, false).await?;
        self.writer_in_script.store(true, Ordering::Release);
        let stored = if returns {
            text.build_query_as().fetch_all(&mut *conn).await
        } else {
            text.build().execute(&mut *conn).await.map(|_| Vec::new())
        };
        match stored {
            Ok(inserted) => {
                self.writer_in_script.store(false, Ordering::Release);
                Ok(inserted)
            }
            Err(e) => {
                let _ = self.roll_back_script(&mut conn).await;
                Err(e)
            }
        }
    }

    /// FTS5 query: any of the terms, each quoted (terms are alphanumeric already).
    fn fts_query(terms: &[String]) -> String {
        terms
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    }
}

/// Rows per multi-row INSERT: well under SQLite's 32,766 bound parameters at ten
/// columns a row.
const ROWS_PER_STATEMENT: usize = 1000;

/// An ingress group's inserts as multi-row statements (a group of hundreds of
/// requests is a handful of statements, not hundreds), all in one text that begins
/// the transaction with `BEGIN IMMEDIATE`: one hand-off to the connection's thread.
/// The caller adds the `COMMIT`.
/// Returns the text and whether it returns inbox rows.
fn ingress_statements<'a>(
    rows: &super::shared::IngressRows<'a>,
) -> (sqlx::QueryBuilder<'a, Sqlite>, bool) {
    let mut text = sqlx::QueryBuilder::new("BEGIN IMMEDIATE");
    for chunk in rows.events.chunks(ROWS_PER_STATEMENT) {
        text.push(
            ";\nINSERT INTO inbox_events (tenant_id, channel_id, platform, external_id, kind, \
             conv_key, platform_ts, payload, available_at, received_at) ",
        )
        .push_values(chunk, |mut row, ev| {
            row.push_bind(&ev.tenant_id)
                .push_bind(&ev.channel_id)
                .push_bind(&ev.platform)
                .push_bind(&ev.external_id)
                .push_bind(&ev.kind)
                .push_bind(&ev.conv_key)
                .push_bind(ev.platform_ts)
                .push_bind(&ev.payload)
                .push_bind(ev.received_at)
                .push_bind(ev.received_at);
        })
        .push(
            " ON CONFLICT (channel_id, external_id) DO NOTHING RETURNING channel_id, external_id",
        );
    }
    for chunk in rows.unhandled.chunks(ROWS_PER_STATEMENT) {
        text.push(
            ";\nINSERT INTO unhandled_events (id, tenant_id, channel_id, platform, reason, raw, \
             received_at) ",
        )
        .push_values(chunk, |mut row, u| {
            row.push_bind(&u.id)
                .push_bind(&u.tenant_id)
                .push_bind(&u.channel_id)
                .push_bind(&u.platform)
                .push_bind(&u.reason)
                .push_bind(&u.raw)
                .push_bind(u.received_at);
        });
    }
    for chunk in rows.envelopes.chunks(ROWS_PER_STATEMENT) {
        text.push(
            ";\nINSERT INTO raw_envelopes (tenant_id, channel_id, platform, body, received_at) ",
        )
        .push_values(chunk, |mut row, e| {
            row.push_bind(&e.tenant_id)
                .push_bind(&e.channel_id)
                .push_bind(&e.platform)
                .push_bind(&e.body)
                .push_bind(e.received_at);
        });
    }
    (text, !rows.events.is_empty())
}

/// Copies committed WAL frames into the database file in the background (PASSIVE:
/// never blocks the writer or readers). Under steady writes a background checkpoint
/// never reaches the end of the log (new commits land while it copies), and SQLite
/// starts the log over only when a write begins on a fully checkpointed WAL: the file
/// would grow without bound. So when the log is long, the writer is asked to finish
/// the checkpoint between two of its transactions (little is left to copy by then).
async fn checkpoint(pool: Arc<Readers>, due: Arc<AtomicBool>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        if let Err(e) = checkpoint_once(&pool, &due).await {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// One background checkpoint; asks the writer to finish it when the log is long.
/// Returns how many frames the log held.
async fn checkpoint_once(pool: &Readers, due: &AtomicBool) -> Result<i64, sqlx::Error> {
    // (busy, frames in the log, frames checkpointed)
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *pool.acquire().await?)
        .await?;
    if frames >= RESTART_FRAMES {
        due.store(true, Ordering::Release);
    }
    Ok(frames)
}

/// The reader connections. Kept here rather than in a pool for the writer's reason:
/// a pool pings each connection on its way back, one more hand-off to the
/// connection's thread per query. A query waits for a permit, then takes whichever
/// connection is free (a permit holder holds at most one connection, so there is
/// one). A query cut off mid-way leaves nothing behind: the connection's thread
/// finishes its commands in order, and sqlx rolls back a read transaction dropped
/// unfinished before the connection's next command.
struct Readers {
    conns: Vec<Mutex<SqliteConnection>>,
    permits: tokio::sync::Semaphore,
}

/// A reader connection, held for one query or read transaction.
pub struct ReadConnection<'a> {
    // Declared first, so dropped first: the connection is free before the permit is.
    conn: MutexGuard<'a, SqliteConnection>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl std::ops::Deref for ReadConnection<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for ReadConnection<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Readers {
    async fn open(options: &SqliteConnectOptions, count: usize) -> Result<Self, sqlx::Error> {
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            conns.push(Mutex::new(SqliteConnection::connect_with(options).await?));
        }
        Ok(Self {
            conns,
            permits: tokio::sync::Semaphore::new(count),
        })
    }

    async fn acquire(&self) -> Result<ReadConnection<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(READ_WAIT, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let conn = self
            .conns
            .iter()
            .find_map(|c| c.try_lock().ok())
            .ok_or(sqlx::Error::PoolTimedOut)?;
        Ok(ReadConnection {
            conn,
            _permit: permit,
        })
    }
}

/// Longest a query waits for a reader connection.
const READ_WAIT: Duration = Duration::from_secs(30);

shared_store!(
    SqliteStore,
    Sqlite,
    backend = "sqlite",
    lock_inbox = "",
    lock_outbox = ""
);

// -- privacy: audit log and erasure ----------------------------------------------
privacy_store!(
    SqliteStore,
    Sqlite,
    find = "instr",
    after_erase = "PRAGMA wal_checkpoint(TRUNCATE)",
    before_compact = "PRAGMA wal_checkpoint(PASSIVE)"
);

// -- operations: one instance needs no wake-ups; online backup by VACUUM INTO ----------
ops_store!(SqliteStore);

impl SqliteStore {
    async fn ops_announce(&self, _queue: super::Wake) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn ops_listen(
        &self,
        _inbox: Arc<tokio::sync::Notify>,
        _outbox: Arc<tokio::sync::Notify>,
        _stop: CancellationToken,
    ) {
    }

    /// A transactionally consistent copy, taken on a reader connection: writers go on.
    async fn ops_backup(&self, path: &std::path::Path) -> super::Result<()> {
        let path = path.to_str().ok_or(super::StoreError::Unsupported(
            "the backup path must be valid UTF-8",
        ))?;
        sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(&mut *self.read().await?)
            .await?;
        Ok(())
    }
}

// -- AI pipeline ----
ai_store!(SqliteStore, Sqlite);

// -- telegram, discord: gateway leases ------------------------------------------------
impl SqliteStore {
    /// SQLite means one instance: it holds every lease.
    async fn lease(&self, _key: &str) -> Result<Option<Box<dyn super::Lease>>, sqlx::Error> {
        Ok(Some(Box::new(SoleInstance)))
    }
}

struct SoleInstance;

#[async_trait::async_trait]
impl super::Lease for SoleInstance {
    async fn held(&mut self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::shared::lock;
    use super::*;
    use crate::store::Store;

    /// The connection keeps the prepared text of one completion (so the next one
    /// with the same effects is not prepared again) but not that of a batch of
    /// them, whose make-up rarely repeats and which prepares many statements.
    #[test]
    fn one_completion_is_kept_prepared_a_batch_is_not() {
        use crate::store::*;
        let now = 1;
        let message = |direction: &'static str| NewMessage {
            id: new_id(),
            direction,
            author: "customer",
            kind: "text".into(),
            text: Some("hi".into()),
            content: None,
            external_id: Some("m".into()),
            reply_to: None,
            status: "received",
            produced_by: None,
            platform_ts: None,
            created_at: now,
        };
        let done = Completion {
            inbox_id: 1,
            owner: "w".into(),
            tenant_id: "t".into(),
            outcome: "replied".into(),
            now,
            effects: vec![
                Effect::InsertMessage {
                    conversation_id: "c".into(),
                    message: message("inbound"),
                },
                Effect::Touch {
                    conversation_id: "c".into(),
                    at: now,
                    inbound: true,
                    disclosed: true,
                },
                Effect::EnqueueReply {
                    conversation_id: "c".into(),
                    channel_id: "ch".into(),
                    recipient: "r".into(),
                    message: message("outbound"),
                    parts: vec!["one".into(), "two".into(), "three".into()],
                },
                Effect::RecordAiCalls {
                    conversation_id: "c".into(),
                    calls: vec![],
                },
            ],
            hand_off: Some(HandOff {
                owner: "d".into(),
                lease_until: now,
            }),
        };
        let text = |n: usize| {
            let mut script = SqliteStore::script();
            for _ in 0..n {
                assert!(SqliteStore::push_completion(&mut script, &done));
            }
            script.begin("BEGIN IMMEDIATE");
            script.push("COMMIT");
            script
                .into_parts()
                .map(|mut parts| parts.remove(0).0)
                .unwrap_or_default()
        };
        assert!(super::super::shared::worth_keeping(&text(1)));
        assert!(super::super::shared::worth_keeping(&text(2)));
        assert!(!super::super::shared::worth_keeping(&text(4)));
    }

    /// Flushes asked for while a sync is under way share the next sync; a flush
    /// asked for afterwards syncs again.
    #[tokio::test]
    async fn flushes_at_the_same_time_share_a_sync() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("og.db");
        let store = Arc::new(SqliteStore::connect(&format!("sqlite://{}", db.display())).await?);
        store.migrate().await?;
        let wal = store.wal.clone().ok_or_else(|| anyhow::anyhow!("no WAL"))?;
        let before = wal.syncs.load(Ordering::Relaxed);
        let asked = wal.requested.load(Ordering::Acquire);
        let under_way = wal.syncing.lock().await;
        let flushing: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.sync_wal().await })
            })
            .collect();
        while wal.requested.load(Ordering::Acquire) < asked + 20 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(under_way);
        for flushing in flushing {
            flushing.await??;
        }
        assert_eq!(
            wal.syncs.load(Ordering::Relaxed) - before,
            1,
            "twenty callers, one sync"
        );
        store.sync_wal().await?;
        assert_eq!(wal.syncs.load(Ordering::Relaxed) - before, 2);
        Ok(())
    }

    /// Acknowledgements wait for `sync_wal`; it must flush the file SQLite really
    /// writes its commits to (a wrong path would look like "already checkpointed").
    #[tokio::test]
    async fn the_flushed_file_is_the_live_wal() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().canonicalize()?.join("og.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", db.display())).await?;
        store.migrate().await?;
        let wal = store.wal.clone().ok_or_else(|| anyhow::anyhow!("no WAL"))?;
        assert_eq!(wal.path, dir.path().canonicalize()?.join("og.db-wal"));
        assert!(
            wal.path.metadata()?.len() > 0,
            "the WAL holds the migrations"
        );
        store.sync_ingress().await?;

        let memory = SqliteStore::connect("sqlite::memory:").await?;
        assert!(memory.wal.is_none());
        memory.sync_ingress().await?;
        Ok(())
    }

    /// A query takes whichever reader is free, and a read cut off mid-transaction
    /// leaves its connection usable.
    #[tokio::test]
    async fn readers_are_handed_out_as_they_free_up() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("og.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", db.display())).await?;
        store.migrate().await?;
        let mut held = Vec::new();
        for _ in 0..READERS {
            held.push(store.read().await?);
        }
        let waiting = store.read();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut waiting)
                .await
                .is_err(),
            "every reader is taken: the query waits"
        );
        // Not the first one: a waiter must not be tied to one connection.
        let mut freed = held.remove(2);
        let mut cut_off = freed.begin().await?;
        let _: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
            .fetch_one(&mut *cut_off)
            .await?;
        drop(cut_off);
        drop(freed);
        let mut next = tokio::time::timeout(Duration::from_secs(5), waiting).await??;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
            .fetch_one(&mut *next)
            .await?;
        assert_eq!(n, 0);
        // The connection whose transaction was dropped starts a new one.
        let mut tx = next.begin().await?;
        let _: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A transaction run in one call commits all of its statements or none: a
    /// failing statement rolls back the ones before it, `keep` false rolls back, and
    /// one left open by a holder that was cut off is rolled back by the next writer.
    #[tokio::test]
    async fn a_script_transaction_is_all_or_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("og.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", db.display())).await?;
        store.migrate().await?;
        let insert = |script: &mut super::super::shared::Script<'_, Sqlite>, id: &str| {
            script
                .push("INSERT INTO tenants (id, name, domain, created_at) VALUES ($1, 'n', 'd', 0)")
                .bind(id.to_string());
        };
        let count = || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
                .fetch_one(&mut *store.read().await?)
                .await?;
            anyhow::Ok(n)
        };

        let mut script = SqliteStore::script();
        insert(&mut script, "a");
        insert(&mut script, "a");
        let (_turn, mut conn) = store.write_connection(false).await?;
        assert!(
            store
                .run_transaction(&mut conn, false, script, None)
                .await
                .is_err(),
            "the second insert breaks the primary key"
        );
        drop((_turn, conn));
        assert_eq!(count().await?, 0, "the first insert was rolled back");

        let mut script = SqliteStore::script();
        insert(&mut script, "b");
        script.push("SELECT id FROM tenants");
        let (_turn, mut conn) = store.write_connection(false).await?;
        let (rows, kept) = store
            .run_transaction(&mut conn, false, script, Some(&|rows| rows.len() == 2))
            .await?;
        assert_eq!((rows.len(), kept), (1, false));
        drop((_turn, conn));
        assert_eq!(count().await?, 0, "not kept: rolled back");

        // Cut off after `BEGIN` and an insert ran: the next writer undoes them.
        let (_turn, mut conn) = store.write_connection(false).await?;
        store.writer_in_script.store(true, Ordering::Release);
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        sqlx::query("INSERT INTO tenants (id, name, domain, created_at) VALUES ('c', 'n', 'd', 0)")
            .execute(&mut *conn)
            .await?;
        drop((_turn, conn));
        let mut script = SqliteStore::script();
        insert(&mut script, "d");
        let (_turn, mut conn) = store.write_connection(false).await?;
        let (_, kept) = store
            .run_transaction(&mut conn, false, script, None)
            .await?;
        drop((_turn, conn));
        assert!(kept);
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
            .fetch_all(&mut *store.read().await?)
            .await?;
        assert_eq!(ids, ["d"]);
        Ok(())
    }

    /// A migrated store in a temporary directory (dropped with it), with a tenant
    /// and a WhatsApp channel: `(directory, store, tenant id, channel id)`.
    async fn store_with_channel(
    ) -> anyhow::Result<(tempfile::TempDir, Arc<SqliteStore>, String, String)> {
        use crate::store::*;
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("og.db");
        let store = Arc::new(SqliteStore::connect(&format!("sqlite://{}", db.display())).await?);
        store.migrate().await?;
        let (tenant, channel) = (new_id(), new_id());
        store
            .create_tenant(&NewTenant {
                id: tenant.clone(),
                name: "t".into(),
                domain: "t.example.com".into(),
                key_id: new_id(),
                key_hash: new_id().into_bytes(),
                key_prefix: "og_xxxxx".into(),
                created_at: now_ms(),
            })
            .await?;
        store
            .create_channel(&NewChannel {
                id: channel.clone(),
                tenant_id: tenant.clone(),
                platform: "whatsapp".into(),
                account_id: "900".into(),
                credentials: vec![1],
                created_at: now_ms(),
            })
            .await?;
        Ok((dir, store, tenant, channel))
    }

    /// Background writes that queue up for the writer are made together by whoever
    /// gets it next, and each keeps its own outcome: new conversations each get
    /// theirs, a completion whose lease was lost is not made while the others are,
    /// and completions made together each get their own reply's part handed over.
    #[tokio::test]
    async fn writes_made_together_keep_their_own_outcomes() -> anyhow::Result<()> {
        use crate::store::*;
        let (_dir, store, tenant, channel) = store_with_channel().await?;
        let chats = ["a", "b", "c"];
        // One message in each chat, with ids `{prefix}-{chat}`.
        let ingest = |prefix: &'static str, platform_ts: i64| {
            let events = chats
                .iter()
                .map(|chat| NewInboxEvent {
                    tenant_id: tenant.clone(),
                    channel_id: channel.clone(),
                    platform: "whatsapp".into(),
                    external_id: format!("{prefix}-{chat}"),
                    kind: "message".into(),
                    conv_key: chat.to_string(),
                    platform_ts,
                    payload: "{}".into(),
                    received_at: now_ms(),
                })
                .collect();
            let store = store.clone();
            async move {
                store
                    .commit_ingress(&[IngressBatch {
                        events,
                        ..Default::default()
                    }])
                    .await
            }
        };
        ingest("m", 1).await?;
        // "b" is claimed with a short lease and taken over by another worker.
        let now = now_ms();
        let mut claimed = Vec::new();
        for lease in [60_000, 1_000, 60_000] {
            claimed.extend(store.claim_inbox("w", now, lease, 1).await?);
        }
        assert_eq!(
            store
                .claim_inbox("other", now + 1_001, 1_000, 5)
                .await?
                .len(),
            1
        );

        // The writer is busy: everything below queues up behind it.
        let busy = store.write_connection(true).await?;
        let resolving: Vec<_> = chats
            .iter()
            .map(|chat| {
                let (store, key) = (
                    store.clone(),
                    ConversationKey {
                        tenant_id: tenant.clone(),
                        channel_id: channel.clone(),
                        chat: chat.to_string(),
                        user_id: chat.to_string(),
                        phone: Some(chat.to_string()),
                        username: None,
                        name: None,
                        now,
                    },
                );
                tokio::spawn(async move { store.resolve_conversation(&key).await })
            })
            .collect();
        while lock(&store.pending.resolves).len() < chats.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(busy);
        let mut conversations = Vec::new();
        for (resolved, chat) in resolving.into_iter().zip(chats) {
            let conversation = resolved.await??;
            let stored: String =
                sqlx::query_scalar("SELECT external_chat_id FROM conversations WHERE id = $1")
                    .bind(&conversation.id)
                    .fetch_one(&mut *store.read().await?)
                    .await?;
            assert_eq!(stored, chat, "each gets its own conversation");
            conversations.push(conversation.id);
        }

        let busy = store.write_connection(true).await?;
        let completing: Vec<_> = claimed
            .iter()
            .zip(&conversations)
            .map(|(item, conversation)| {
                let store = store.clone();
                let done = Completion {
                    inbox_id: item.id,
                    owner: "w".into(),
                    tenant_id: tenant.clone(),
                    outcome: "stored".into(),
                    now,
                    effects: vec![Effect::InsertMessage {
                        conversation_id: conversation.clone(),
                        message: NewMessage {
                            id: new_id(),
                            direction: "inbound",
                            author: "customer",
                            kind: "text".into(),
                            text: Some("hi".into()),
                            content: None,
                            external_id: Some(item.external_id.clone()),
                            reply_to: None,
                            status: "received",
                            produced_by: None,
                            platform_ts: None,
                            created_at: now,
                        },
                    }],
                    hand_off: None,
                };
                tokio::spawn(async move { store.complete_inbox(&done).await.map(|c| c.kept) })
            })
            .collect();
        while lock(&store.pending.completions).len() < claimed.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(busy);
        let mut made = Vec::new();
        for completing in completing {
            made.push(completing.await??);
        }
        assert_eq!(made, [true, false, true], "the lost lease alone is refused");
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT external_id FROM messages ORDER BY external_id")
                .fetch_all(&mut *store.read().await?)
                .await?;
        assert_eq!(
            stored,
            ["m-a", "m-c"],
            "the refused completion left nothing"
        );

        // Replies handed to the dispatcher: each completion of a batch gets the part
        // leased for its own reply.
        let b = store.claim_inbox("other", now + 1_001, 1_000, 5).await?;
        assert!(b.is_empty(), "b is still the other worker's");
        let finish_b = Completion {
            inbox_id: claimed[1].id,
            owner: "other".into(),
            tenant_id: tenant.clone(),
            outcome: "stored".into(),
            now,
            effects: vec![],
            hand_off: None,
        };
        assert!(store.complete_inbox(&finish_b).await?.kept);
        ingest("m2", 2).await?;
        let second = store.claim_inbox("w", now_ms(), 60_000, 5).await?;
        assert_eq!(second.len(), 3);
        let busy = store.write_connection(true).await?;
        let replying: Vec<_> = second
            .iter()
            .map(|item| {
                let store = store.clone();
                let chat = item.external_id.trim_start_matches("m2-").to_string();
                let conversation =
                    &conversations[chats.iter().position(|c| *c == chat).unwrap_or(0)];
                let reply_id = new_id();
                let done = Completion {
                    inbox_id: item.id,
                    owner: "w".into(),
                    tenant_id: tenant.clone(),
                    outcome: "replied".into(),
                    now,
                    effects: vec![Effect::EnqueueReply {
                        conversation_id: conversation.clone(),
                        channel_id: channel.clone(),
                        recipient: chat.clone(),
                        message: NewMessage {
                            id: reply_id.clone(),
                            direction: "outbound",
                            author: "assistant",
                            kind: "text".into(),
                            text: Some(format!("to {chat}")),
                            content: None,
                            external_id: None,
                            reply_to: None,
                            status: "queued",
                            produced_by: Some("kb".into()),
                            platform_ts: None,
                            created_at: now,
                        },
                        parts: vec![format!("to {chat}")],
                    }],
                    hand_off: Some(HandOff {
                        owner: "d".into(),
                        lease_until: now + 60_000,
                    }),
                };
                (
                    reply_id,
                    tokio::spawn(async move { store.complete_inbox(&done).await }),
                )
            })
            .collect();
        while lock(&store.pending.completions).len() < second.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(busy);
        for (reply_id, completing) in replying {
            let completed = completing.await??;
            assert!(completed.kept);
            let [part] = completed.handed.as_slice() else {
                panic!("one part handed over, got {:?}", completed.handed);
            };
            assert_eq!(part.message_id, reply_id, "its own reply's part");
            assert_eq!((part.part, part.attempts), (0, 1));
        }
        let leased: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE state = 'sending' AND lease_owner = 'd'",
        )
        .fetch_one(&mut *store.read().await?)
        .await?;
        assert_eq!(leased, 3, "leased in the completions' transaction");
        assert!(
            store
                .claim_outbox("d2", now_ms(), 60_000, 10)
                .await?
                .is_empty(),
            "nothing left for a claim"
        );
        Ok(())
    }

    /// A turn of the writer makes the oldest waiting writes, no more than
    /// `MAX_TOGETHER`; the rest wait, in order, for the next turns.
    #[test]
    fn a_turn_takes_the_oldest_writes_up_to_its_bound() {
        use super::super::shared::{take_oldest, MAX_TOGETHER};
        let queue = std::sync::Mutex::new((0..MAX_TOGETHER * 2 + 3).collect::<Vec<_>>());
        assert_eq!(take_oldest(&queue), (0..MAX_TOGETHER).collect::<Vec<_>>());
        assert_eq!(
            take_oldest(&queue),
            (MAX_TOGETHER..MAX_TOGETHER * 2).collect::<Vec<_>>()
        );
        assert_eq!(
            take_oldest(&queue),
            (MAX_TOGETHER * 2..MAX_TOGETHER * 2 + 3).collect::<Vec<_>>()
        );
        assert!(take_oldest(&queue).is_empty());
    }

    /// A waiter whose turn made a full batch of older writes but not its own takes
    /// another turn: its write is made, not left queued with nobody waiting for the
    /// writer. (The older writes here stand for waiters that had their turn already.)
    #[tokio::test]
    async fn a_write_left_out_of_its_own_turn_takes_the_next() -> anyhow::Result<()> {
        use crate::store::*;
        let (_dir, store, tenant, channel) = store_with_channel().await?;
        let key = |chat: String| ConversationKey {
            tenant_id: tenant.clone(),
            channel_id: channel.clone(),
            chat: chat.clone(),
            user_id: chat,
            phone: None,
            username: None,
            name: None,
            now: now_ms(),
        };
        let mut older = Vec::new();
        for n in 0..super::super::shared::MAX_TOGETHER {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let new = super::super::shared::NewConversation {
                key: key(format!("older-{n}")),
                contact_id: new_id(),
                identity_id: new_id(),
                conversation_id: new_id(),
            };
            lock(&store.pending.resolves).push((new, reply));
            older.push(answer);
        }
        let own = tokio::time::timeout(
            Duration::from_secs(10),
            store.resolve_conversation(&key("own".into())),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the waiter's own write was left queued"))??;
        let stored: String =
            sqlx::query_scalar("SELECT external_chat_id FROM conversations WHERE id = $1")
                .bind(&own.id)
                .fetch_one(&mut *store.read().await?)
                .await?;
        assert_eq!(stored, "own");
        for answer in older {
            answer.await??;
        }
        assert!(lock(&store.pending.resolves).is_empty());
        Ok(())
    }

    /// Under steady writes the log must start over instead of growing without bound:
    /// once it is long, the next writer finishes the checkpoint and the following
    /// commit writes from the start of the file again.
    #[tokio::test]
    async fn a_long_wal_starts_over() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("og.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", db.display())).await?;
        store.migrate().await?;
        let blob = vec![7u8; 3000];
        let write = |n: usize| {
            let store = &store;
            let blob = blob.clone();
            async move {
                for _ in 0..n {
                    let (_turn, mut conn) = store.write_connection(true).await?;
                    let mut tx = store.begin_write(&mut conn, false).await?;
                    sqlx::query(
                        "INSERT INTO raw_envelopes (platform, body, received_at) VALUES ('whatsapp', $1, 0)",
                    )
                    .bind(&blob)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                }
                anyhow::Ok(())
            }
        };
        // A reader on an old snapshot keeps the background checkpoint from reaching
        // the end of the log, as commits landing during it do under load.
        write(RESTART_FRAMES as usize / 2).await?;
        let mut reader = store.read().await?;
        let mut old_snapshot = reader.begin().await?;
        let _: i64 = sqlx::query_scalar("SELECT count(*) FROM raw_envelopes")
            .fetch_one(&mut *old_snapshot)
            .await?;
        write(RESTART_FRAMES as usize / 2).await?;
        // The background checkpointer may be checkpointing at the same moment: then
        // this one is refused (-1 frames) and tried again.
        let checkpoint = || async {
            loop {
                let frames = checkpoint_once(&store.reader, &store.checkpoint_due).await?;
                if frames >= 0 {
                    return anyhow::Ok(frames);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let frames = checkpoint().await?;
        old_snapshot.rollback().await?;
        drop(reader);
        assert!(frames >= RESTART_FRAMES, "{frames} frames");
        assert!(store.checkpoint_due.load(Ordering::Acquire));
        let size = std::fs::metadata(dir.path().join("og.db-wal"))?.len();
        write(3).await?;
        let after = checkpoint().await?;
        assert!(after < 20, "the log started over: {after} frames");
        assert_eq!(
            std::fs::metadata(dir.path().join("og.db-wal"))?.len(),
            size,
            "the file is reused, not grown"
        );
        Ok(())
    }
}
