//! The embedded SQLite backend: one file in WAL mode, one writer connection (so
//! writes queue in-process instead of failing with SQLITE_BUSY) and a few readers.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqlitePool, Transaction};

use super::shared::shared_store;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

    const SEARCH_SQL: &'static str = "SELECT p.document_id, d.title, d.url, p.text \
         FROM knowledge_fts f JOIN knowledge_passages p ON p.id = f.rowid \
         JOIN knowledge_documents d ON d.id = p.document_id \
         WHERE knowledge_fts MATCH $1 AND p.tenant_id = $2 \
         ORDER BY bm25(knowledge_fts) LIMIT $3";

    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Each write transaction sets its own level (see `begin_write`).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("secure_delete", "ON");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Self { writer, reader })
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Durable commits run with `synchronous = FULL` (the WAL is fsynced at commit,
    /// which also covers every earlier relaxed commit); relaxed ones with `NORMAL`
    /// (safe against a process crash, flushed by the next FULL commit). The level
    /// cannot change inside a transaction, so it is set just before `BEGIN`.
    async fn begin_write(
        conn: &mut PoolConnection<Sqlite>,
        durable: bool,
    ) -> Result<Transaction<'_, Sqlite>, sqlx::Error> {
        let level = if durable {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        };
        sqlx::query(level).execute(&mut **conn).await?;
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

shared_store!(
    SqliteStore,
    Sqlite,
    backend = "sqlite",
    lock_inbox = "",
    lock_outbox = ""
);
