//! `omnigate backup FILE`: an online copy of the SQLite database, checked after it is
//! written (integrity check, migrations, row counts), so an operator knows the file
//! restores. PostgreSQL is backed up with `pg_dump` (docs/operations.md).

use std::path::Path;

use anyhow::Context as _;

use crate::config::DatabaseUrl;

/// What a verified backup holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    pub path: String,
    pub bytes: u64,
    pub integrity: String,
    pub tenants: i64,
    pub channels: i64,
    pub messages: i64,
    pub inbox_events: i64,
}

/// Writes the backup of `database` to `path` (which must not exist) and verifies it.
pub async fn run(database: &DatabaseUrl, path: &Path) -> anyhow::Result<BackupReport> {
    anyhow::ensure!(
        database.is_sqlite(),
        "omnigate backup copies SQLite databases; back up PostgreSQL with pg_dump (docs/operations.md)"
    );
    anyhow::ensure!(!path.exists(), "{} already exists", path.display());
    let store = crate::store::open(database).await?;
    store.backup(path).await.context("backup failed")?;
    verify(path).await
}

/// Opens a backup file read-only and checks it: SQLite's integrity check, every
/// migration applied, and the row counts an operator compares with the live database.
pub async fn verify(path: &Path) -> anyhow::Result<BackupReport> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("backup {}", path.display()))?
        .len();
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .context("open the backup")?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        integrity == "ok",
        "backup integrity check failed: {integrity}"
    );
    let count = |table: &'static str| format!("SELECT COUNT(*) FROM {table}");
    let mut counts = Vec::new();
    for table in ["tenants", "channels", "messages", "inbox_events"] {
        let n: i64 = sqlx::query_scalar(&count(table))
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("backup lacks table {table}"))?;
        counts.push(n);
    }
    conn.close().await?;
    Ok(BackupReport {
        path: path.display().to_string(),
        bytes,
        integrity,
        tenants: counts[0],
        channels: counts[1],
        messages: counts[2],
        inbox_events: counts[3],
    })
}
