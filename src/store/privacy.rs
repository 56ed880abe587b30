//! Storage of the privacy engine: the hash-chained audit log, erasure of a contact
//! everywhere, the consent ledger, restriction, settings and retention. [`PrivacyStore`] is a supertrait of [`Store`](super::Store), so every
//! store has these methods; both backends implement it through [`privacy_store!`]
//! with the few statements that differ passed in.

use async_trait::async_trait;
use serde::Serialize;

use super::{ConversationRecord, Result};
use crate::audit::Audit;
use crate::privacy::retention::RetentionSettings;

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

/// A purpose a contact consents to (or withdraws from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    AiProcessing,
    Marketing,
    Analytics,
}

impl Purpose {
    pub const ALL: [Self; 3] = [Self::AiProcessing, Self::Marketing, Self::Analytics];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AiProcessing => "ai_processing",
            Self::Marketing => "marketing",
            Self::Analytics => "analytics",
        }
    }
}

/// A tenant's policy words (besides the built-in STOP/START/HUMAN), disclosure
/// wording and the time after which an unanswered hand-off returns to the assistant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PrivacySettings {
    pub stop_words: Vec<String>,
    pub start_words: Vec<String>,
    pub human_words: Vec<String>,
    pub disclosure: Option<String>,
    pub handoff_idle_minutes: i64,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            stop_words: Vec::new(),
            start_words: Vec::new(),
            human_words: Vec::new(),
            disclosure: None,
            handoff_idle_minutes: 24 * 60,
        }
    }
}

/// What decides whether a queued reply part may go out now.
#[derive(Debug, Clone)]
pub struct SendPolicy {
    /// `customer`, `assistant`, `agent` or `system`.
    pub author: String,
    pub restricted: bool,
    /// The latest `ai_processing` entry of the ledger; `None`: never asked.
    pub ai_processing: Option<bool>,
    /// The recipient blocked the bot (Telegram, Discord).
    pub unreachable: bool,
}

/// What the policy layer needs to know about a contact.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    pub restricted: bool,
    /// The latest `ai_processing` entry of the ledger; `None`: never asked.
    pub ai_processing: Option<bool>,
    pub settings: PrivacySettings,
    /// The tenant's assistant settings and whether it has knowledge documents (as
    /// [`AiStore::answer_settings`](super::AiStore::answer_settings) reads them),
    /// read with the rest: the answer that follows the policy needs them.
    pub answer: (super::AssistantSettings, bool),
}

/// A privacy change, applied (with its audit entry) in the transaction that carries it.
#[derive(Debug, Clone)]
pub enum PrivacyEffect {
    /// An audit entry; its tenant is the transaction's.
    Audit(Audit),
    /// A consent ledger entry (`source`: keyword | admin_api | platform).
    Consent {
        contact_id: String,
        purpose: Purpose,
        granted: bool,
        source: &'static str,
        detail: Option<String>,
        actor: String,
        at: i64,
    },
    Restrict {
        contact_id: String,
        restricted: bool,
        actor: String,
        at: i64,
    },
    /// Corrected profile fields; `Some("")` clears one.
    Rectify {
        contact_id: String,
        display_name: Option<String>,
        email: Option<String>,
        actor: String,
        at: i64,
    },
}

/// The data classes retention deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataClass {
    /// Messages (text, attachments' metadata) and their finished outbox parts.
    Messages,
    /// Raw webhook envelopes.
    RawEvents,
    /// Events kept raw because they were not understood.
    Unhandled,
    /// Handled inbox rows: platform ids only, the redelivery guard.
    DedupeKeys,
    /// Analytics events (none are stored yet).
    Analytics,
    Audit,
}

impl DataClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::RawEvents => "raw_events",
            Self::Unhandled => "unhandled_events",
            Self::DedupeKeys => "dedupe_keys",
            Self::Analytics => "analytics",
            Self::Audit => "audit",
        }
    }

    /// One batch's DELETE and the matching COUNT (`$1` tenant or NULL for rows no
    /// tenant owns, `$2` cutoff, `$3` batch size). `None`: nothing stored.
    pub(crate) fn statements(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Self::Messages => (
                "DELETE FROM messages WHERE seq IN (SELECT m.seq FROM messages m WHERE m.tenant_id = $1 \
                 AND m.created_at <= $2 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id \
                 AND o.state IN ('pending', 'sending')) LIMIT $3)",
                "SELECT COUNT(*) FROM messages m WHERE m.tenant_id = $1 AND m.created_at <= $2 \
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id \
                 AND o.state IN ('pending', 'sending'))",
            ),
            Self::RawEvents => (
                "DELETE FROM raw_envelopes WHERE id IN (SELECT id FROM raw_envelopes \
                 WHERE (tenant_id = $1 OR ($1 IS NULL AND tenant_id IS NULL)) AND received_at <= $2 LIMIT $3)",
                "SELECT COUNT(*) FROM raw_envelopes \
                 WHERE (tenant_id = $1 OR ($1 IS NULL AND tenant_id IS NULL)) AND received_at <= $2",
            ),
            Self::Unhandled => (
                "DELETE FROM unhandled_events WHERE id IN (SELECT id FROM unhandled_events \
                 WHERE (tenant_id = $1 OR ($1 IS NULL AND tenant_id IS NULL)) AND received_at <= $2 LIMIT $3)",
                "SELECT COUNT(*) FROM unhandled_events \
                 WHERE (tenant_id = $1 OR ($1 IS NULL AND tenant_id IS NULL)) AND received_at <= $2",
            ),
            Self::DedupeKeys => (
                "DELETE FROM inbox_events WHERE id IN (SELECT id FROM inbox_events \
                 WHERE tenant_id = $1 AND state = 'done' AND done_at <= $2 LIMIT $3)",
                "SELECT COUNT(*) FROM inbox_events WHERE tenant_id = $1 AND state = 'done' AND done_at <= $2",
            ),
            Self::Analytics | Self::Audit => return None,
        })
    }
}

/// A contact's own profile.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ContactRecord {
    pub id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub restricted_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

/// One of a contact's identities on a channel.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct IdentityRecord {
    pub channel_id: String,
    pub platform: String,
    pub external_user_id: String,
    pub phone: Option<String>,
    pub username: Option<String>,
    pub display_name: Option<String>,
    pub created_at: i64,
}

/// One consent ledger entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ConsentRecord {
    pub id: String,
    pub purpose: String,
    pub granted: bool,
    pub source: String,
    pub detail: Option<String>,
    pub at: i64,
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

    // -- consent, restriction, policy --------------------------------------------------
    /// Restriction, latest AI-processing consent and the tenant's settings.
    async fn policy_state(&self, tenant_id: &str, contact_id: &str) -> Result<PolicyState>;
    async fn privacy_settings(&self, tenant_id: &str) -> Result<PrivacySettings>;
    async fn put_privacy_settings(
        &self,
        tenant_id: &str,
        settings: &PrivacySettings,
        audit: &Audit,
    ) -> Result<()>;

    // -- data-subject views ------------------------------------------------------------
    async fn contact(&self, tenant_id: &str, contact_id: &str) -> Result<Option<ContactRecord>>;
    async fn identities(&self, tenant_id: &str, contact_id: &str) -> Result<Vec<IdentityRecord>>;
    async fn contact_conversations(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> Result<Vec<ConversationRecord>>;
    /// The consent ledger of a contact, oldest first.
    async fn consent_history(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> Result<Vec<ConsentRecord>>;

    // -- retention ---------------------------------------------------------------------
    async fn tenant_ids(&self) -> Result<Vec<String>>;
    async fn retention_settings(&self, tenant_id: &str) -> Result<Option<RetentionSettings>>;
    async fn put_retention_settings(
        &self,
        tenant_id: &str,
        settings: &RetentionSettings,
        audit: &Audit,
    ) -> Result<()>;
    /// Deletes one batch of `class` at or before `cutoff` for a tenant (`None`: rows
    /// no tenant owns), in its own short transaction; the number deleted, and how
    /// long the batch took once it had the writer (its transaction and its flush).
    async fn delete_expired(
        &self,
        tenant_id: Option<&str>,
        class: DataClass,
        cutoff: i64,
        batch: i64,
    ) -> Result<(u64, std::time::Duration)>;
    async fn count_expired(
        &self,
        tenant_id: Option<&str>,
        class: DataClass,
        cutoff: i64,
    ) -> Result<u64>;
    /// Removes a tenant's audit entries at or before `cutoff` (a prefix of the chain),
    /// moving the chain's anchor past them; with `dry_run` only counts.
    async fn prune_audit(&self, tenant_id: &str, cutoff: i64, dry_run: bool) -> Result<u64>;
    /// Makes deleted data leave the files (SQLite: truncate the WAL); no-op elsewhere.
    async fn compact(&self) -> Result<()>;

    /// What decides whether a queued reply part may go out now (`None`: its message
    /// is gone): who wrote it, the contact's restriction and AI-processing consent,
    /// and whether `recipient` blocked the bot on the channel.
    async fn send_policy(
        &self,
        tenant_id: &str,
        message_id: &str,
        channel_id: &str,
        recipient: &str,
    ) -> Result<Option<SendPolicy>>;
}

/// A contact's AI-processing consent as its latest ledger entry says (`NULL`: none
/// recorded), as a subquery on the SQL expressions naming its tenant and contact.
macro_rules! ai_consent {
    ($tenant:literal, $contact:literal) => {
        concat!(
            "(SELECT e.granted FROM consent_events e WHERE e.tenant_id = ",
            $tenant,
            " AND e.contact_id = ",
            $contact,
            " AND e.purpose = 'ai_processing' ORDER BY e.at DESC, e.id DESC LIMIT 1)"
        )
    };
}
pub(crate) use ai_consent;

/// Implements [`PrivacyStore`] for `$store` on database `$db`. `find` is the SQL
/// function giving the position of a substring (`instr` / `strpos`), and
/// `after_erase` a statement run after an erasure commits (SQLite truncates the
/// WAL so erased text does not linger in it), or empty; `before_compact` copies the
/// log without blocking the writer before a sweep's compaction (run only when
/// `after_erase` is set).
macro_rules! privacy_store {
    ($store:ty, $db:ty, find = $find:literal, after_erase = $after_erase:literal, before_compact = $before_compact:literal) => {
        impl $store {
            /// A tenant's privacy settings from their row (keyword lists as JSON).
            fn privacy_settings_of(
                (stop, start, human, disclosure, handoff_idle_minutes): (String, String, String, Option<String>, i64),
            ) -> $crate::store::PrivacySettings {
                let words = |json: &str| serde_json::from_str::<Vec<String>>(json).unwrap_or_default();
                $crate::store::PrivacySettings {
                    stop_words: words(&stop),
                    start_words: words(&start),
                    human_words: words(&human),
                    disclosure,
                    handoff_idle_minutes,
                }
            }

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

            /// Applies one privacy change and its audit entry inside `tx`.
            async fn apply_privacy(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant_id: &str,
                effect: &$crate::store::PrivacyEffect,
            ) -> $crate::store::Result<()> {
                use $crate::audit::Audit;
                use $crate::store::PrivacyEffect;
                let entry = match effect {
                    PrivacyEffect::Audit(entry) => Audit { tenant_id: tenant_id.to_string(), ..entry.clone() },
                    PrivacyEffect::Consent { contact_id, purpose, granted, source, detail, actor, at } => {
                        sqlx::query(
                            "INSERT INTO consent_events (id, tenant_id, contact_id, purpose, granted, source, detail, at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind($crate::store::new_id())
                        .bind(tenant_id)
                        .bind(contact_id)
                        .bind(purpose.as_str())
                        .bind(granted)
                        .bind(source)
                        .bind(detail)
                        .bind(at)
                        .execute(&mut **tx)
                        .await?;
                        Audit::new(tenant_id, actor, "consent.change").contact(contact_id).detail(serde_json::json!({
                            "purpose": purpose.as_str(), "granted": granted, "source": source, "signal": detail,
                        }))
                    }
                    PrivacyEffect::Restrict { contact_id, restricted, actor, at } => {
                        sqlx::query("UPDATE contacts SET restricted_at = $3 WHERE tenant_id = $1 AND id = $2")
                            .bind(tenant_id)
                            .bind(contact_id)
                            .bind(restricted.then_some(*at))
                            .execute(&mut **tx)
                            .await?;
                        let action = if *restricted { "contact.restrict" } else { "contact.unrestrict" };
                        Audit::new(tenant_id, actor, action).contact(contact_id)
                    }
                    PrivacyEffect::Rectify { contact_id, display_name, email, actor, at } => {
                        sqlx::query(
                            "UPDATE contacts SET \
                             display_name = CASE WHEN $3 THEN $4 ELSE display_name END, \
                             email = CASE WHEN $5 THEN $6 ELSE email END, updated_at = $7 \
                             WHERE tenant_id = $1 AND id = $2",
                        )
                        .bind(tenant_id)
                        .bind(contact_id)
                        .bind(display_name.is_some())
                        .bind(display_name.as_deref().filter(|v| !v.is_empty()))
                        .bind(email.is_some())
                        .bind(email.as_deref().filter(|v| !v.is_empty()))
                        .bind(at)
                        .execute(&mut **tx)
                        .await?;
                        let fields: Vec<&str> = [("display_name", display_name.is_some()), ("email", email.is_some())]
                            .into_iter()
                            .filter_map(|(name, set)| set.then_some(name))
                            .collect();
                        Audit::new(tenant_id, actor, "contact.rectify")
                            .contact(contact_id)
                            .detail(serde_json::json!({ "fields": fields }))
                    }
                };
                Self::audit_in(tx, &entry).await
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
                let mut reader = self.read().await?;
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
                .fetch_all(&mut *self.read().await?)
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
                    counts.raw_envelopes +=
                        Self::delete_envelopes_naming(&mut tx, tenant_id, needle).await?;
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
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn policy_state(
                &self,
                tenant_id: &str,
                contact_id: &str,
            ) -> $crate::store::Result<$crate::store::PolicyState> {
                // One read: the contact's restriction, its latest AI-processing
                // consent, the tenant's privacy settings, and its assistant settings
                // (as `answer_settings` reads them).
                type Row = (Option<i64>, Option<bool>, Option<String>, Option<String>, Option<String>, Option<String>, Option<i64>);
                let row: Option<<$db as sqlx::Database>::Row> = sqlx::query(concat!(
                    "SELECT (SELECT restricted_at FROM contacts WHERE tenant_id = $1 AND id = $2), ",
                    $crate::store::privacy::ai_consent!("$1", "$2"),
                    ", s.stop_words, s.start_words, s.human_words, s.disclosure, s.handoff_idle_minutes, \
                     a.persona, a.business_facts, a.language, a.providers, a.allowed_providers, \
                     a.review_required, \
                     EXISTS (SELECT 1 FROM knowledge_documents WHERE tenant_id = $1) AS knowledge \
                     FROM tenants t LEFT JOIN privacy_settings s ON s.tenant_id = t.id \
                     LEFT JOIN assistant_settings a ON a.tenant_id = t.id WHERE t.id = $1",
                ))
                .bind(tenant_id)
                .bind(contact_id)
                .fetch_optional(&mut *self.read().await?)
                .await?;
                let Some(row) = row else {
                    return Ok($crate::store::PolicyState::default());
                };
                let (restricted_at, ai_processing, stop, start, human, disclosure, idle): Row =
                    sqlx::FromRow::from_row(&row)?;
                let answer = <$crate::store::ai::SettingsRow as sqlx::FromRow<_>>::from_row(&row)?.into_parts();
                let answer = (answer.0.unwrap_or_default(), answer.1);
                let settings = match (stop, start, human, idle) {
                    (Some(stop), Some(start), Some(human), Some(idle)) => {
                        Self::privacy_settings_of((stop, start, human, disclosure, idle))
                    }
                    _ => $crate::store::PrivacySettings::default(),
                };
                Ok($crate::store::PolicyState {
                    restricted: restricted_at.is_some(),
                    ai_processing,
                    settings,
                    answer,
                })
            }

            async fn privacy_settings(&self, tenant_id: &str) -> $crate::store::Result<$crate::store::PrivacySettings> {
                let row: Option<(String, String, String, Option<String>, i64)> = sqlx::query_as(
                    "SELECT stop_words, start_words, human_words, disclosure, handoff_idle_minutes \
                     FROM privacy_settings WHERE tenant_id = $1",
                )
                .bind(tenant_id)
                .fetch_optional(&mut *self.read().await?)
                .await?;
                Ok(row.map_or_else($crate::store::PrivacySettings::default, Self::privacy_settings_of))
            }

            async fn put_privacy_settings(
                &self,
                tenant_id: &str,
                s: &$crate::store::PrivacySettings,
                audit: &$crate::audit::Audit,
            ) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let json = |words: &Vec<String>| serde_json::to_string(words).unwrap_or_else(|_| "[]".into());
                sqlx::query(
                    "INSERT INTO privacy_settings (tenant_id, stop_words, start_words, human_words, disclosure, \
                     handoff_idle_minutes, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant_id) DO UPDATE SET stop_words = $2, start_words = $3, human_words = $4, \
                     disclosure = $5, handoff_idle_minutes = $6, updated_at = $7",
                )
                .bind(tenant_id)
                .bind(json(&s.stop_words))
                .bind(json(&s.start_words))
                .bind(json(&s.human_words))
                .bind(&s.disclosure)
                .bind(s.handoff_idle_minutes)
                .bind($crate::store::now_ms())
                .execute(&mut *tx)
                .await?;
                Self::audit_in(&mut tx, &$crate::audit::Audit { tenant_id: tenant_id.to_string(), ..audit.clone() }).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn contact(
                &self,
                tenant_id: &str,
                contact_id: &str,
            ) -> $crate::store::Result<Option<$crate::store::ContactRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, display_name, email, restricted_at, created_at, updated_at FROM contacts \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn identities(
                &self,
                tenant_id: &str,
                contact_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::IdentityRecord>> {
                Ok(sqlx::query_as(
                    "SELECT i.channel_id, c.platform, i.external_user_id, i.phone, i.username, i.display_name, \
                     i.created_at FROM contact_identities i JOIN channels c ON c.id = i.channel_id \
                     WHERE i.tenant_id = $1 AND i.contact_id = $2 ORDER BY i.created_at, i.id",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn contact_conversations(
                &self,
                tenant_id: &str,
                contact_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::ConversationRecord>> {
                Ok(sqlx::query_as(
                    "SELECT c.id, c.channel_id, ch.platform, c.contact_id, c.external_chat_id, c.status, \
                     c.last_message_at, c.created_at FROM conversations c JOIN channels ch ON ch.id = c.channel_id \
                     WHERE c.tenant_id = $1 AND c.contact_id = $2 ORDER BY c.created_at, c.id",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn consent_history(
                &self,
                tenant_id: &str,
                contact_id: &str,
            ) -> $crate::store::Result<Vec<$crate::store::ConsentRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, purpose, granted, source, detail, at FROM consent_events \
                     WHERE tenant_id = $1 AND contact_id = $2 ORDER BY at, id",
                )
                .bind(tenant_id)
                .bind(contact_id)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn tenant_ids(&self) -> $crate::store::Result<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
                    .fetch_all(&mut *self.read().await?)
                    .await?)
            }

            async fn retention_settings(
                &self,
                tenant_id: &str,
            ) -> $crate::store::Result<Option<$crate::privacy::retention::RetentionSettings>> {
                Ok(sqlx::query_as(
                    "SELECT messages_days, raw_events_days, analytics_days, audit_days \
                     FROM retention_settings WHERE tenant_id = $1",
                )
                .bind(tenant_id)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn put_retention_settings(
                &self,
                tenant_id: &str,
                s: &$crate::privacy::retention::RetentionSettings,
                audit: &$crate::audit::Audit,
            ) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query(
                    "INSERT INTO retention_settings (tenant_id, messages_days, raw_events_days, analytics_days, \
                     audit_days, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (tenant_id) DO UPDATE SET messages_days = $2, raw_events_days = $3, \
                     analytics_days = $4, audit_days = $5, updated_at = $6",
                )
                .bind(tenant_id)
                .bind(s.messages_days)
                .bind(s.raw_events_days)
                .bind(s.analytics_days)
                .bind(s.audit_days)
                .bind($crate::store::now_ms())
                .execute(&mut *tx)
                .await?;
                Self::audit_in(&mut tx, &$crate::audit::Audit { tenant_id: tenant_id.to_string(), ..audit.clone() }).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_expired(
                &self,
                tenant_id: Option<&str>,
                class: $crate::store::DataClass,
                cutoff: i64,
                batch: i64,
            ) -> $crate::store::Result<(u64, std::time::Duration)> {
                let Some((delete, _)) = class.statements() else {
                    return Ok((0, std::time::Duration::ZERO));
                };
                // Background turn: acknowledgements go first. On SQLite the batch
                // commits relaxed and its log is flushed once the writer is free again
                // (a flush on the writer would hold up every other write meanwhile).
                let (gate, mut conn) = self.write_connection(false).await?;
                let began = std::time::Instant::now();
                let mut tx = self.begin_write(&mut conn, !Self::SYNCS_LOG_APART).await?;
                let n = sqlx::query(delete)
                    .bind(tenant_id)
                    .bind(cutoff)
                    .bind(batch)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                drop((gate, conn));
                self.sync_wal().await?;
                Ok((n, began.elapsed()))
            }

            async fn count_expired(
                &self,
                tenant_id: Option<&str>,
                class: $crate::store::DataClass,
                cutoff: i64,
            ) -> $crate::store::Result<u64> {
                let Some((_, count)) = class.statements() else { return Ok(0) };
                let n: i64 = sqlx::query_scalar(count)
                    .bind(tenant_id)
                    .bind(cutoff)
                    .fetch_one(&mut *self.read().await?)
                    .await?;
                Ok(n.max(0) as u64)
            }

            async fn prune_audit(&self, tenant_id: &str, cutoff: i64, dry_run: bool) -> $crate::store::Result<u64> {
                if dry_run {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM audit_log WHERE tenant_id = $1 AND n <= \
                         (SELECT COALESCE(MAX(n), 0) FROM audit_log WHERE tenant_id = $1 AND at <= $2)",
                    )
                    .bind(tenant_id)
                    .bind(cutoff)
                    .fetch_one(&mut *self.read().await?)
                    .await?;
                    return Ok(n.max(0) as u64);
                }
                let (_gate, mut conn) = self.write_connection(false).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let last: Option<(i64, String)> = sqlx::query_as(
                    "SELECT n, hash FROM audit_log WHERE tenant_id = $1 AND at <= $2 ORDER BY n DESC LIMIT 1",
                )
                .bind(tenant_id)
                .bind(cutoff)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((n, hash)) = last else {
                    tx.rollback().await?;
                    return Ok(0);
                };
                // Lock the head first (as appends do), then cut the prefix.
                sqlx::query("UPDATE audit_heads SET anchor_n = $2, anchor_hash = $3 WHERE tenant_id = $1")
                    .bind(tenant_id)
                    .bind(n)
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await?;
                let deleted = sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND n <= $2")
                    .bind(tenant_id)
                    .bind(n)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(deleted)
            }

            async fn send_policy(
                &self,
                tenant_id: &str,
                message_id: &str,
                channel_id: &str,
                recipient: &str,
            ) -> $crate::store::Result<Option<$crate::store::SendPolicy>> {
                let row: Option<(String, Option<i64>, Option<bool>, bool)> = sqlx::query_as(concat!(
                    "SELECT m.author, ct.restricted_at, ",
                    $crate::store::privacy::ai_consent!("m.tenant_id", "c.contact_id"),
                    ", EXISTS (SELECT 1 FROM contact_identities i WHERE i.channel_id = $3 \
                       AND i.external_user_id = $4 AND i.unreachable_at IS NOT NULL) \
                     FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                     JOIN contacts ct ON ct.id = c.contact_id WHERE m.tenant_id = $1 AND m.id = $2",
                ))
                .bind(tenant_id)
                .bind(message_id)
                .bind(channel_id)
                .bind(recipient)
                .fetch_optional(&mut *self.read().await?)
                .await?;
                Ok(row.map(|(author, restricted_at, ai_processing, unreachable)| $crate::store::SendPolicy {
                    author,
                    restricted: restricted_at.is_some(),
                    ai_processing,
                    unreachable,
                }))
            }

            async fn compact(&self) -> $crate::store::Result<()> {
                if !$after_erase.is_empty() {
                    // A sweep leaves a long log: copy most of it beside the writer
                    // first (a passive checkpoint never blocks it), so the truncating
                    // one below holds the writer only for what was written since.
                    sqlx::query($before_compact).execute(&mut *self.read().await?).await?;
                    let (_gate, mut conn) = self.write_connection(false).await?;
                    sqlx::query($after_erase).execute(&mut *conn).await?;
                }
                Ok(())
            }
        }
    };
}

pub(crate) use privacy_store;
