//! Storage of the privacy engine: the hash-chained audit log and erasure of a contact
//! everywhere. [`PrivacyStore`] is a supertrait of [`Store`](super::Store), so every
//! store has these methods; both backends implement it through [`privacy_store!`]
//! with the few statements that differ passed in.

use async_trait::async_trait;
use serde::Serialize;

use super::Result;
use crate::audit::Audit;

/// One stored audit entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: String,
    pub tenant_id: String,
    pub n: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub contact_id: Option<String>,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The head of a tenant's chain: its last entry, and the last one pruned.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditHead {
    pub n: i64,
    pub hash: String,
    pub anchor_n: i64,
    pub anchor_hash: String,
}

/// A contact found by a platform identity.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ContactRef {
    pub tenant_id: String,
    pub contact_id: String,
}

/// What one erasure removed, per table (also the tombstone's detail).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErasureCounts {
    pub identities: u64,
    pub conversations: u64,
    pub messages: u64,
    pub outbox: u64,
    pub inbox_events: u64,
    pub raw_envelopes: u64,
    pub unhandled_events: u64,
    pub consent_events: u64,
}

#[async_trait]
pub trait PrivacyStore: Send + Sync {
    // -- audit -------------------------------------------------------------------------
    /// Appends one entry to its tenant's chain, in its own transaction.
    async fn append_audit(&self, entry: &Audit) -> Result<()>;
    /// A tenant's whole chain in position order, and its head.
    async fn audit_chain(&self, tenant_id: &str) -> Result<(Vec<AuditRecord>, Option<AuditHead>)>;
    /// The newest entries first, optionally only those about one contact.
    async fn audit_entries(
        &self,
        tenant_id: &str,
        contact_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>>;

    // -- erasure -----------------------------------------------------------------------
    /// Removes a contact of a tenant everywhere in one transaction (identities,
    /// conversations, messages, outbox and unhandled inbox rows, raw envelopes and
    /// unhandled events naming them, consent ledger) and appends `tombstone` (with the
    /// counts as detail) in the same transaction. `None` if there is no such contact.
    async fn erase_contact(
        &self,
        tenant_id: &str,
        contact_id: &str,
        tombstone: &Audit,
    ) -> Result<Option<ErasureCounts>>;
    /// Contacts holding an identity with this platform user id, on one channel or on
    /// every channel of the platform, across tenants (for platform callers such as
    /// Meta's data-deletion callback, which carry no tenant).
    async fn contacts_by_identity(
        &self,
        platform: &str,
        channel_id: Option<&str>,
        external_user_id: &str,
    ) -> Result<Vec<ContactRef>>;
}

/// Implements [`PrivacyStore`] for `$store` on database `$db`. `find` is the SQL
/// function giving the position of a substring (`instr` / `strpos`),
/// `envelope_names` the condition that raw envelope `body` (bytes) contains `$2`,
/// and `after_erase` a statement run after an erasure commits (SQLite truncates the
/// WAL so erased text does not linger in it), or empty.
macro_rules! privacy_store {
    ($store:ty, $db:ty, find = $find:literal, envelope_names = $envelope_names:literal, after_erase = $after_erase:literal) => {
        impl $store {
            /// Appends an audit entry inside `tx`. The head row's update locks it until
            /// commit, so concurrent appends to one chain are serialized.
            async fn audit_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                entry: &$crate::audit::Audit,
            ) -> $crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO audit_heads (tenant_id, n, hash) VALUES ($1, 0, '') \
                     ON CONFLICT (tenant_id) DO NOTHING",
                )
                .bind(&entry.tenant_id)
                .execute(&mut **tx)
                .await?;
                let (n, prev): (i64, String) = sqlx::query_as(
                    "UPDATE audit_heads SET n = n + 1 WHERE tenant_id = $1 RETURNING n, hash",
                )
                .bind(&entry.tenant_id)
                .fetch_one(&mut **tx)
                .await?;
                let r = entry.chained(n, &prev);
                sqlx::query(
                    "INSERT INTO audit_log (id, tenant_id, n, at, actor, action, contact_id, target, detail, \
                     prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&r.id)
                .bind(&r.tenant_id)
                .bind(r.n)
                .bind(r.at)
                .bind(&r.actor)
                .bind(&r.action)
                .bind(&r.contact_id)
                .bind(&r.target)
                .bind(&r.detail)
                .bind(&r.prev_hash)
                .bind(&r.hash)
                .execute(&mut **tx)
                .await?;
                sqlx::query("UPDATE audit_heads SET hash = $2 WHERE tenant_id = $1")
                    .bind(&entry.tenant_id)
                    .bind(&r.hash)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::PrivacyStore for $store {
            async fn append_audit(&self, entry: &$crate::audit::Audit) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                Self::audit_in(&mut tx, entry).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn audit_chain(
                &self,
                tenant_id: &str,
            ) -> $crate::store::Result<(Vec<$crate::store::AuditRecord>, Option<$crate::store::AuditHead>)> {
                // One read transaction, so entries and head are one snapshot.
                let mut reader = self.reader().acquire().await?;
                let mut tx = sqlx::Connection::begin(&mut *reader).await?;
                let head = sqlx::query_as(
                    "SELECT n, hash, anchor_n, anchor_hash FROM audit_heads WHERE tenant_id = $1",
                )
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
                let entries = sqlx::query_as(
                    "SELECT id, tenant_id, n, at, actor, action, contact_id, target, detail, prev_hash, hash \
                     FROM audit_log WHERE tenant_id = $1 ORDER BY n, id",
                )
                .bind(tenant_id)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok((entries, head))
            }

            async fn audit_entries(
                &self,
                tenant_id: &str,
                contact_id: Option<&str>,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::AuditRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, tenant_id, n, at, actor, action, contact_id, target, detail, prev_hash, hash \
                     FROM audit_log WHERE tenant_id = $1 AND ($2 IS NULL OR contact_id = $2) \
                     ORDER BY n DESC LIMIT $3",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .bind(limit)
                .fetch_all(self.reader())
                .await?)
            }

            async fn erase_contact(
                &self,
                tenant_id: &str,
                contact_id: &str,
                tombstone: &$crate::audit::Audit,
            ) -> $crate::store::Result<Option<$crate::store::ErasureCounts>> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let found: Option<String> =
                    sqlx::query_scalar("SELECT id FROM contacts WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant_id)
                        .bind(contact_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let mut counts = $crate::store::ErasureCounts::default();
                let identities: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT channel_id, external_user_id, phone, username FROM contact_identities \
                     WHERE tenant_id = $1 AND contact_id = $2",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .fetch_all(&mut *tx)
                .await?;
                let conversations: Vec<(String, String)> = sqlx::query_as(
                    "SELECT channel_id, external_chat_id FROM conversations WHERE tenant_id = $1 AND contact_id = $2",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .fetch_all(&mut *tx)
                .await?;
                // What names the person in raw stored payloads: their platform ids and
                // numbers (too-short values would match unrelated rows).
                let mut needles: Vec<(Option<String>, String)> = Vec::new();
                for (channel_id, user, phone, username) in &identities {
                    for value in [Some(user), phone.as_ref(), username.as_ref()].into_iter().flatten() {
                        if value.chars().count() >= 5 && !needles.iter().any(|(_, v)| v == value) {
                            needles.push((Some(channel_id.clone()), value.clone()));
                        }
                    }
                }
                for (channel_id, chat) in &conversations {
                    if chat.chars().count() >= 5 && !needles.iter().any(|(_, v)| v == chat) {
                        needles.push((Some(channel_id.clone()), chat.clone()));
                    }
                }
                counts.outbox = sqlx::query(
                    "DELETE FROM outbox WHERE tenant_id = $1 AND conversation_id IN \
                     (SELECT id FROM conversations WHERE tenant_id = $1 AND contact_id = $2)",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                counts.messages = sqlx::query(
                    "DELETE FROM messages WHERE tenant_id = $1 AND conversation_id IN \
                     (SELECT id FROM conversations WHERE tenant_id = $1 AND contact_id = $2)",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                for (channel_id, chat) in &conversations {
                    let key = format!("{channel_id}:{chat}");
                    // Handled events keep their platform id (the dedupe key, so a late
                    // redelivery is still recognised) under a key that names nobody.
                    sqlx::query(
                        "UPDATE inbox_events SET conv_key = $3, payload = NULL \
                         WHERE tenant_id = $1 AND conv_key = $2 AND state = 'done'",
                    )
                    .bind(tenant_id)
                    .bind(&key)
                    .bind(format!("{channel_id}:erased"))
                    .execute(&mut *tx)
                    .await?;
                    counts.inbox_events += sqlx::query(
                        "DELETE FROM inbox_events WHERE tenant_id = $1 AND conv_key = $2",
                    )
                    .bind(tenant_id)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                for (channel_id, needle) in &needles {
                    counts.inbox_events += sqlx::query(concat!(
                        "DELETE FROM inbox_events WHERE tenant_id = $1 AND channel_id = $3 \
                         AND state <> 'done' AND ", $find, "(payload, $2) > 0"
                    ))
                    .bind(tenant_id)
                    .bind(needle)
                    .bind(channel_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    counts.raw_envelopes += sqlx::query(concat!(
                        "DELETE FROM raw_envelopes WHERE (tenant_id = $1 OR tenant_id IS NULL) AND ",
                        $envelope_names
                    ))
                    .bind(tenant_id)
                    .bind(needle)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    counts.unhandled_events += sqlx::query(concat!(
                        "DELETE FROM unhandled_events WHERE (tenant_id = $1 OR tenant_id IS NULL) AND ",
                        $find, "(raw, $2) > 0"
                    ))
                    .bind(tenant_id)
                    .bind(needle)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                counts.consent_events = sqlx::query("DELETE FROM consent_events WHERE tenant_id = $1 AND contact_id = $2")
                    .bind(tenant_id)
                    .bind(contact_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                counts.conversations = sqlx::query("DELETE FROM conversations WHERE tenant_id = $1 AND contact_id = $2")
                    .bind(tenant_id)
                    .bind(contact_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                counts.identities = sqlx::query("DELETE FROM contact_identities WHERE tenant_id = $1 AND contact_id = $2")
                    .bind(tenant_id)
                    .bind(contact_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant_id)
                    .bind(contact_id)
                    .execute(&mut *tx)
                    .await?;
                let mut detail = tombstone.detail.clone().unwrap_or_else(|| serde_json::json!({}));
                if let Some(fields) = detail.as_object_mut() {
                    fields.insert("erased".into(), serde_json::to_value(&counts).unwrap_or_default());
                }
                let tombstone = tombstone.clone().contact(contact_id).detail(detail);
                Self::audit_in(&mut tx, &tombstone).await?;
                tx.commit().await?;
                if !$after_erase.is_empty() {
                    if let Err(e) = sqlx::query($after_erase).execute(&mut *conn).await {
                        tracing::warn!(error = %e, "post-erasure compaction failed");
                    }
                }
                Ok(Some(counts))
            }

            async fn contacts_by_identity(
                &self,
                platform: &str,
                channel_id: Option<&str>,
                external_user_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::ContactRef>> {
                Ok(sqlx::query_as(
                    "SELECT DISTINCT i.tenant_id, i.contact_id FROM contact_identities i \
                     JOIN channels c ON c.id = i.channel_id \
                     WHERE c.platform = $1 AND ($2 IS NULL OR i.channel_id = $2) AND i.external_user_id = $3",
                )
                .bind(platform)
                .bind(channel_id)
                .bind(external_user_id)
                .fetch_all(self.reader())
                .await?)
            }
        }
    };
}

pub(crate) use privacy_store;
