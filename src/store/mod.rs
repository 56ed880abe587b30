//! Durable state: one [`Store`] interface, two implementations through sqlx
//! (SQLite, the embedded default, and PostgreSQL for scale-out).
//!
//! Methods are units of work: each runs in its own transaction. Every method that
//! touches customer data takes the tenant id and filters on it, except the few that
//! serve platform callers and background work by internal id (ingress routing,
//! claims), which are named as such.

mod ai;
mod ops;
mod postgres;
mod privacy;
mod shared;
mod sqlite;
mod turns;
mod types;

use std::sync::Arc;

use async_trait::async_trait;

pub use ai::{
    AiCall, AiHold, AiStore, AssistantSettings, CrawlJob, CrawledPage, DraftRecord, HistoryTurn,
    PageChange, UsageRow,
};
pub use postgres::PgStore;
// -- privacy (audit log, erasure) --------------------------------------------------
pub use privacy::{
    AuditHead, AuditRecord, ConsentRecord, ContactRecord, ContactRef, DataClass, ErasureCounts,
    IdentityRecord, PolicyState, PrivacyEffect, PrivacySettings, PrivacyStore, Purpose, SendPolicy,
};
// -- operations (wake-ups, leases, gauges, key rotation, backup) ----------------------
pub use ops::{Backlog, OpsStore, Released, SealedCredentials, Wake};
pub use sqlite::SqliteStore;
pub use types::*;

use crate::config::DatabaseUrl;

// -- telegram, discord ---------------------------------------------------------------
/// An exclusive lease held by this instance (see [`Store::try_lease`]).
#[async_trait]
pub trait Lease: Send + Sync {
    /// Whether the lease is still held (the connection holding it is alive).
    async fn held(&mut self) -> bool;
}

/// Errors of the storage layer that callers act on; anything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists: {0}")]
    Conflict(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The backend cannot do this (e.g. an online backup of Postgres: use pg_dump).
    #[error("{0}")]
    Unsupported(&'static str),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the database named by `url` (creating a SQLite file if missing) and applies
/// the migrations.
pub async fn open(url: &DatabaseUrl) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.is_sqlite() {
        Arc::new(SqliteStore::connect(url.as_str()).await?)
    } else if url.is_postgres() {
        Arc::new(PgStore::connect(url.as_str()).await?)
    } else {
        anyhow::bail!("database_url must start with sqlite: or postgres://");
    };
    store.migrate().await?;
    Ok(store)
}

/// The AI pipeline's part of the interface lives in [`AiStore`] (`store/ai.rs`).
#[async_trait]
pub trait Store: PrivacyStore + OpsStore + AiStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    async fn migrate(&self) -> Result<()>;
    /// Whether the database answers and every migration is applied.
    async fn ready(&self) -> Result<bool>;

    // -- tenants and keys ------------------------------------------------------------
    async fn create_tenant(&self, tenant: &NewTenant) -> Result<()>;
    /// The tenant an API key (by hash) belongs to, if the key is live.
    async fn tenant_by_key_hash(&self, hash: &[u8]) -> Result<Option<String>>;

    // -- channels ----------------------------------------------------------------------
    async fn create_channel(&self, channel: &NewChannel) -> Result<()>;
    async fn list_channels(&self, tenant_id: &str) -> Result<Vec<ChannelRecord>>;
    /// Destroys the credentials and stops routing to the channel.
    async fn delete_channel(&self, tenant_id: &str, channel_id: &str) -> Result<bool>;
    /// Ingress and dispatcher look-up by internal id (platform callers carry no tenant).
    async fn channel(&self, channel_id: &str) -> Result<Option<ChannelRecord>>;
    /// Ingress routing of the shared Meta route by the account an entry is addressed to.
    async fn channel_by_account(
        &self,
        platform: &str,
        account_id: &str,
    ) -> Result<Option<ChannelRecord>>;
    async fn set_channel_status(
        &self,
        channel_id: &str,
        status: &str,
        detail: Option<&str>,
    ) -> Result<()>;

    // -- telegram, discord -------------------------------------------------------------
    /// Records that a send found the recipient had blocked the bot (dispatcher).
    async fn mark_unreachable(&self, channel_id: &str, recipient: &str, at: i64) -> Result<()>;
    /// Every live channel of a platform, across tenants (the Discord gateway
    /// supervisor, background work).
    async fn platform_channels(&self, platform: &str) -> Result<Vec<ChannelRecord>>;
    /// Tries to take the exclusive lease named `key` among the instances sharing the
    /// database (Postgres: a session advisory lock; SQLite: one instance, always).
    /// The lease lasts until the handle is dropped or the connection is lost.
    async fn try_lease(&self, key: &str) -> Result<Option<Box<dyn Lease>>>;

    // -- ingress -----------------------------------------------------------------------
    /// Tells the store more acknowledgement writes are about to come (the committer,
    /// under load), so background writers should not take the writer for `window`.
    fn expect_ingress(&self, window: std::time::Duration);

    /// Writes several requests' worth of envelopes, inbox events and unhandled items in
    /// one transaction (group commit). Inbox events dedupe on (channel, external id).
    /// The commit may not be on disk yet when this returns: acknowledge only after a
    /// later [`Store::sync_ingress`] succeeded.
    async fn commit_ingress(&self, batches: &[IngressBatch]) -> Result<Vec<IngressOutcome>>;

    /// Makes every commit that returned before this call durable. Where commits are
    /// durable by themselves (Postgres) this does nothing; on SQLite it flushes the
    /// WAL, so the next group's inserts run while the previous group's flush waits on
    /// the disk.
    async fn sync_ingress(&self) -> Result<()>;

    // -- worker ------------------------------------------------------------------------
    /// Leases up to `limit` ready inbox events, oldest first and at most one per
    /// conversation key: the key's earliest open event in platform-time order.
    async fn claim_inbox(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<InboxItem>>;
    /// Marks a leased event done and applies its effects, atomically; nothing is
    /// applied if the lease was lost ([`Completed::kept`] is `false`).
    async fn complete_inbox(&self, done: &Completion) -> Result<Completed>;
    /// Whether an inbox event other than `inbox_id` is open in its conversation
    /// (after a completion whose [`Completed::more`] was not sure).
    async fn open_besides(&self, inbox_id: i64) -> Result<bool>;
    /// Returns a leased event to the queue, to be tried again at `available_at`.
    async fn retry_inbox(
        &self,
        inbox_id: i64,
        owner: &str,
        available_at: i64,
        note: &str,
    ) -> Result<()>;
    /// Finds or creates the contact, identity and conversation a participant writes in.
    async fn resolve_conversation(&self, key: &ConversationKey) -> Result<ConversationRef>;
    /// Whether an outbound part with this platform id exists on the channel.
    async fn outbound_exists(&self, channel_id: &str, external_id: &str) -> Result<bool>;
    /// Applies effects outside the inbox (agent replies, hand-off).
    async fn apply(&self, tenant_id: &str, effects: &[Effect]) -> Result<()>;

    // -- dispatcher --------------------------------------------------------------------
    async fn claim_outbox(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxItem>>;
    /// Records a send's outcome if `owner` still holds the part. `true` when another
    /// part of the conversation may be waiting (always, for anything but a send).
    async fn finish_send(&self, outbox_id: i64, owner: &str, outcome: &SendOutcome)
        -> Result<bool>;

    // -- admin views ---------------------------------------------------------------------
    async fn list_conversations(
        &self,
        tenant_id: &str,
        filter: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>>;
    async fn conversation(&self, tenant_id: &str, id: &str) -> Result<Option<ConversationRecord>>;
    async fn messages(&self, tenant_id: &str, conversation_id: &str) -> Result<Vec<MessageRecord>>;
    async fn unhandled(&self, tenant_id: &str, limit: i64) -> Result<Vec<UnhandledRecord>>;

    // -- knowledge -----------------------------------------------------------------------
    async fn add_document(&self, doc: &NewDocument) -> Result<()>;
    /// Passages matching any of `terms`, best first (FTS5 / tsvector ranking).
    async fn search_passages(
        &self,
        tenant_id: &str,
        terms: &[String],
        limit: i64,
    ) -> Result<Vec<Passage>>;

    // -- Meta messaging (Messenger, Instagram) ------------------------------------------
    /// Whether a reply part to `recipient` on the channel is being sent right now (its
    /// platform id is not recorded yet).
    async fn outbox_sending(&self, channel_id: &str, recipient: &str) -> Result<bool>;
    /// When the customer last wrote in the conversation (platform time, ms).
    async fn last_customer_message_at(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Option<i64>>;

    // -- Meta data-deletion callback ------------------------------------------------------
    async fn create_deletion_request(&self, request: &DeletionRequest) -> Result<()>;
    async fn deletion_request(&self, code: &str) -> Result<Option<DeletionRequest>>;
    /// Marks a request completed and forgets whom it was about.
    async fn complete_deletion_request(&self, code: &str, erased: i64, at: i64) -> Result<()>;
    /// Requests not completed yet, oldest first (resumed after a restart).
    async fn pending_deletion_requests(&self, limit: i64) -> Result<Vec<DeletionRequest>>;
    /// Platform-caller look-up (Meta names a person, not a tenant): the contacts with
    /// an identity of this user id on a Messenger or Instagram channel, as
    /// (tenant id, contact id, channel id).
    async fn contacts_by_platform_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String, String)>>;

    // -- slack install and revocation -----------------------------------------------------
    /// Records an OAuth `state` (by hash) issued to `tenant_id`, usable until `expires_at`.
    async fn create_install_state(&self, state: &NewInstallState) -> Result<()>;
    /// Consumes an install state: the tenant it was issued to, when it exists and has not
    /// expired. A state works once; expired ones are swept on the way.
    async fn take_install_state(&self, state_hash: &str, now: i64) -> Result<Option<String>>;
    /// Replaces a channel's sealed credentials and makes it active again (a re-install).
    async fn replace_channel_credentials(
        &self,
        tenant_id: &str,
        channel_id: &str,
        credentials: &[u8],
    ) -> Result<bool>;
    /// Applies a platform's revocation of the channel's access, once per event: the
    /// channel is disabled, its credentials replaced by the token-less ones given,
    /// replies not yet sent fail, and the audit entry is appended, in one transaction.
    /// `false` when this event was applied before (nothing changes then).
    async fn revoke_channel(&self, revocation: &ChannelRevocation) -> Result<bool>;
}
