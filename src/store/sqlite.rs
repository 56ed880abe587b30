//! The embedded SQLite backend: one file in WAL mode, one writer connection (so
//! writes queue in-process instead of failing with SQLITE_BUSY) and a few readers.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqlitePool, Transaction};

use tokio_util::sync::CancellationToken;

use super::ai::ai_store;
use super::ops::ops_store;
use super::privacy::privacy_store;
use super::shared::shared_store;
use super::turns::{Turn, Turns};

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Orders turns on the single writer connection (acknowledgements first).
    turns: Turns,
    /// Whether the writer connection runs `synchronous = FULL` now.
    writer_full: AtomicBool,
    /// The WAL, flushed by `sync_wal` (`None` for an in-memory database).
    wal: Option<Arc<WalFile>>,
    checkpointer: CancellationToken,
}

/// The database's write-ahead log. Ingress commits run with `synchronous = NORMAL`
/// (the commit's frames reach the WAL file but are not synced) and are acknowledged
/// only after the WAL file was synced: the durability of `FULL`, whose commit syncs the
/// same file, but the next group's inserts no longer wait for the disk.
struct WalFile {
    path: PathBuf,
}

impl WalFile {
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

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

impl SqliteStore {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

    const SEARCH_SQL: &'static str = "SELECT p.document_id, d.title, d.url, p.text \
         FROM knowledge_fts f JOIN knowledge_passages p ON p.id = f.rowid \
         JOIN knowledge_documents d ON d.id = p.document_id \
         WHERE knowledge_fts MATCH $1 AND p.tenant_id = $2 \
         ORDER BY bm25(knowledge_fts) LIMIT $3";

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
            .pragma("secure_delete", "ON");
        // Checkpoints run beside the writer (below), not inside its commits, so an
        // acknowledgement never waits for the database file to be synced.
        // A local file cannot drop its connection: skip the ping before each use.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        // The main database file ("" when in memory); its WAL sits beside it.
        let main_file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&writer)
                .await?;
        let wal = (!main_file.is_empty()).then(|| {
            Arc::new(WalFile {
                path: PathBuf::from(format!("{main_file}-wal")),
            })
        });
        let checkpointer = CancellationToken::new();
        tokio::spawn(checkpoint(reader.clone(), checkpointer.clone()));
        Ok(Self {
            writer,
            reader,
            turns: Turns::default(),
            writer_full: AtomicBool::new(true),
            wal,
            checkpointer,
        })
    }

    /// Ingress commits are made durable by [`Self::sync_wal`], after the commit.
    const INGRESS_DURABLE_AT_COMMIT: bool = false;

    /// Flushes the WAL file: every transaction committed before the call is on disk
    /// when it returns (a WAL commit is durable once its frames are synced).
    async fn sync_wal(&self) -> Result<(), sqlx::Error> {
        let Some(wal) = self.wal.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || wal.sync())
            .await
            .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
            .map_err(sqlx::Error::Io)
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn reserve_writer(&self, window: Duration) {
        self.turns.reserve(window);
    }

    async fn write_connection(
        &self,
        urgent: bool,
    ) -> Result<(Turn<'_>, PoolConnection<Sqlite>), sqlx::Error> {
        let turn = if urgent {
            self.turns.urgent()
        } else {
            self.turns.background().await
        };
        Ok((turn, self.writer.acquire().await?))
    }

    /// Durable commits run with `synchronous = FULL` (the WAL is fsynced at commit,
    /// which also covers every earlier relaxed commit); relaxed ones with `NORMAL`
    /// (safe against a process crash, flushed by the next FULL commit). The level
    /// cannot change inside a transaction, so it is set just before `BEGIN`.
    /// There is one writer connection, so the level it has is tracked here and set
    /// only when it changes (a reopened connection starts at FULL, which is safe).
    async fn begin_write<'c>(
        &self,
        conn: &'c mut PoolConnection<Sqlite>,
        durable: bool,
    ) -> Result<Transaction<'c, Sqlite>, sqlx::Error> {
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
            sqlx::query(level).execute(&mut **conn).await?;
            self.writer_full.store(durable, Ordering::Release);
        }
        conn.begin().await
    }

    /// SQLite has one writer; the claim needs no extra lock.
    async fn claim_prelude(_tx: &mut Transaction<'_, Sqlite>) -> Result<(), sqlx::Error> {
        Ok(())
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

/// Copies committed WAL frames into the database file in the background (PASSIVE:
/// never blocks the writer or readers).
async fn checkpoint(pool: SqlitePool, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

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
    after_erase = "PRAGMA wal_checkpoint(TRUNCATE)"
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
            .execute(&self.reader)
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
    use super::*;
    use crate::store::Store;

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
}
