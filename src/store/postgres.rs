//! The PostgreSQL backend, for running several gateway instances on one database.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool, Postgres, Transaction};

use super::privacy::privacy_store;
use super::shared::shared_store;
use super::turns::Turn;

pub struct PgStore {
    pool: PgPool,
}

/// Advisory lock key serializing queue claims across instances, so "one event per
/// conversation at a time" holds even when two instances claim at once.
const CLAIM_LOCK: i64 = 0x6f6d_6e69_6761_7465;

impl PgStore {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

    const SEARCH_SQL: &'static str = "SELECT p.document_id, d.title, d.url, p.text \
         FROM knowledge_passages p JOIN knowledge_documents d ON d.id = p.document_id \
         WHERE p.tenant_id = $2 AND p.tsv @@ to_tsquery('english', $1) \
         ORDER BY ts_rank(p.tsv, to_tsquery('english', $1)) DESC, p.id LIMIT $3";

    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool (tests create one per fresh database).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// Postgres has many writers; nobody needs to queue or reserve.
    fn reserve_writer(&self, _window: Duration) {}

    /// Postgres commits ingress with `synchronous_commit` on: durable at commit.
    const INGRESS_DURABLE_AT_COMMIT: bool = true;

    async fn sync_wal(&self) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// Postgres has many writers; nobody needs to queue.
    async fn write_connection(
        &self,
        _urgent: bool,
    ) -> Result<(Turn<'_>, PoolConnection<Postgres>), sqlx::Error> {
        Ok((Turn::Free, self.pool.acquire().await?))
    }

    /// Relaxed transactions commit with `synchronous_commit = off`: they do not wait
    /// for the WAL flush, which the next durable commit performs for them.
    async fn begin_write<'c>(
        &self,
        conn: &'c mut PoolConnection<Postgres>,
        durable: bool,
    ) -> Result<Transaction<'c, Postgres>, sqlx::Error> {
        let mut tx = conn.begin().await?;
        if !durable {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    async fn claim_prelude(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// tsquery: any of the terms (terms are alphanumeric already).
    fn fts_query(terms: &[String]) -> String {
        terms.join(" | ")
    }
}

shared_store!(
    PgStore,
    Postgres,
    backend = "postgres",
    lock_inbox = " FOR UPDATE OF e SKIP LOCKED",
    lock_outbox = " FOR UPDATE OF o SKIP LOCKED"
);

// -- privacy: audit log and erasure ----------------------------------------------
privacy_store!(
    PgStore,
    Postgres,
    find = "strpos",
    envelope_names = "position(convert_to($2, 'UTF8') in body) > 0",
    after_erase = ""
);

// -- telegram, discord: gateway leases ------------------------------------------------
impl PgStore {
    /// A session advisory lock on a connection of its own: held while the connection
    /// lives, released by Postgres the moment this instance stops or loses it.
    async fn lease(&self, key: &str) -> Result<Option<Box<dyn super::Lease>>, sqlx::Error> {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("omnigate-lease:{key}").as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        let id = i64::from_be_bytes(id);
        let mut conn = sqlx::PgConnection::connect_with(&self.pool.connect_options()).await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(id)
            .fetch_one(&mut conn)
            .await?;
        if !taken {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgLease { conn })))
    }
}

struct PgLease {
    conn: sqlx::PgConnection,
}

#[async_trait::async_trait]
impl super::Lease for PgLease {
    async fn held(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }
}
