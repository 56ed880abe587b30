//! Storage of operations: wake-ups across instances, lease release at shutdown,
//! queue gauges, re-sealing credentials under a new master key, online backup.
//! [`OpsStore`] is a supertrait of [`Store`](super::Store); both backends implement
//! it through [`ops_store!`], with `ops_announce`, `ops_listen` and `ops_backup`
//! written in each backend's own file.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Result;

/// A queue other instances can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Inbox,
    Outbox,
}

impl Wake {
    /// The Postgres notification channel.
    pub fn channel(self) -> &'static str {
        match self {
            Self::Inbox => "omnigate_inbox",
            Self::Outbox => "omnigate_outbox",
        }
    }
}

/// The inbox backlog, for the gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    /// Events not done yet (pending, leased or waiting for a retry).
    pub open: i64,
    /// When the oldest open event was received (ms since the epoch).
    pub oldest_received_at: Option<i64>,
}

/// One channel's sealed credentials.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedCredentials {
    pub id: String,
    pub tenant_id: String,
    pub credentials: Vec<u8>,
}

/// Leases handed back at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    pub inbox: u64,
    pub outbox: u64,
}

#[async_trait]
pub trait OpsStore: Send + Sync {
    /// Tells every instance that `queue` has new work (Postgres `NOTIFY`; nothing on
    /// SQLite, which runs as one instance).
    async fn announce(&self, queue: Wake) -> Result<()>;

    /// Until `stop`, wakes `inbox`/`outbox` when any instance announces work on them
    /// (Postgres `LISTEN`). Returns at once on SQLite.
    async fn listen(&self, inbox: Arc<Notify>, outbox: Arc<Notify>, stop: CancellationToken);

    /// Hands back what `owner` still holds: its inbox events return to the queue at
    /// once; its sends are expired, so the next claim takes them and flags them as
    /// possible duplicates (the platform may have accepted them).
    async fn release_leases(&self, owner: &str) -> Result<Released>;

    async fn inbox_backlog(&self) -> Result<Backlog>;

    /// Every live channel's sealed credentials (operator tooling: key rotation).
    async fn sealed_credentials(&self) -> Result<Vec<SealedCredentials>>;

    /// Replaces a channel's sealed credentials if they are still `old`.
    async fn reseal_credentials(&self, channel_id: &str, old: &[u8], new: &[u8]) -> Result<bool>;

    /// Writes a consistent copy of the database to `path` while it is in use
    /// (SQLite `VACUUM INTO`). Postgres is backed up with `pg_dump`.
    async fn backup(&self, path: &Path) -> Result<()>;
}

macro_rules! ops_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::OpsStore for $store {
            async fn announce(&self, queue: $crate::store::Wake) -> $crate::store::Result<()> {
                Ok(self.ops_announce(queue).await?)
            }

            async fn listen(
                &self,
                inbox: std::sync::Arc<tokio::sync::Notify>,
                outbox: std::sync::Arc<tokio::sync::Notify>,
                stop: tokio_util::sync::CancellationToken,
            ) {
                self.ops_listen(inbox, outbox, stop).await
            }

            async fn release_leases(&self, owner: &str) -> $crate::store::Result<$crate::store::Released> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let inbox = sqlx::query(
                    "UPDATE inbox_events SET state = 'pending', lease_owner = NULL, lease_until = NULL \
                     WHERE lease_owner = $1 AND state = 'processing'",
                )
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let outbox = sqlx::query(
                    "UPDATE outbox SET lease_until = 0 WHERE lease_owner = $1 AND state = 'sending'",
                )
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok($crate::store::Released { inbox, outbox })
            }

            async fn inbox_backlog(&self) -> $crate::store::Result<$crate::store::Backlog> {
                let (open, oldest_received_at): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT COUNT(*), MIN(received_at) FROM inbox_events WHERE state <> 'done'",
                )
                .fetch_one(&mut *self.read().await?)
                .await?;
                Ok($crate::store::Backlog { open, oldest_received_at })
            }

            async fn sealed_credentials(&self) -> $crate::store::Result<Vec<$crate::store::SealedCredentials>> {
                Ok(sqlx::query_as(
                    "SELECT id, tenant_id, credentials FROM channels \
                     WHERE deleted_at IS NULL AND credentials IS NOT NULL ORDER BY id",
                )
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn reseal_credentials(
                &self,
                channel_id: &str,
                old: &[u8],
                new: &[u8],
            ) -> $crate::store::Result<bool> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let done = sqlx::query(
                    "UPDATE channels SET credentials = $3 WHERE id = $1 AND credentials = $2 AND deleted_at IS NULL",
                )
                .bind(channel_id)
                .bind(old)
                .bind(new)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn backup(&self, path: &std::path::Path) -> $crate::store::Result<()> {
                self.ops_backup(path).await
            }
        }
    };
}

pub(crate) use ops_store;
