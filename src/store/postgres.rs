//! The PostgreSQL backend, for running several gateway instances on one database.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use super::ai::ai_store;
use super::ops::ops_store;
use super::privacy::privacy_store;
use super::shared::shared_store;
use super::turns::Turn;

pub struct PgStore {
    pool: PgPool,
    /// Signs this store's wake-up announcements, so its own LISTEN connection skips
    /// them: whoever announces has already woken its own queue.
    announcer: String,
}

/// Advisory lock key serializing queue claims across instances, so "one event per
/// conversation at a time" holds even when two instances claim at once
/// (0x6f6d_6e69_6761_7465, "omnigate").
macro_rules! claim_lock {
    () => {
        "8029195109656523877"
    };
}
/// Begins a claim's transaction and takes the claim lock in one simple query (one
/// round trip); the claim's own statement then sees every claim committed before.
///
/// Sequential scans are off for the claim: every table it reads has the index it
/// needs, and a queue table that grew since it was last analyzed (a new database
/// under load: its statistics still say a few hundred rows) was otherwise read
/// whole to update the rows claimed (a hash join over a sequential scan of the
/// inbox, 0.2-2 ms per claim at a few thousand rows, growing with the table).
const CLAIM_BEGIN: &str = concat!(
    "BEGIN; SET LOCAL enable_seqscan = off; SELECT pg_advisory_xact_lock(",
    claim_lock!(),
    ")"
);
/// [`CLAIM_BEGIN`] for a relaxed commit (see `begin_write`).
const CLAIM_BEGIN_RELAXED: &str = concat!(
    "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_seqscan = off; \
     SELECT pg_advisory_xact_lock(",
    claim_lock!(),
    ")"
);

/// An ingress group's inbox rows (`$1`..`$9`) and raw deliveries (`$10`..`$14`), one
/// array per column, in one statement (rows keep the arrays' order, so their ids
/// follow the group's); either list may be empty. The two tables' rows do not depend
/// on each other.
const INSERT_INGRESS: &str = "WITH env AS (INSERT INTO raw_envelopes (tenant_id, channel_id, \
     platform, body, received_at) SELECT * FROM UNNEST($10::text[], $11::text[], \
     $12::text[], $13::bytea[], $14::bigint[])) \
     INSERT INTO inbox_events (tenant_id, channel_id, platform, \
     external_id, kind, conv_key, platform_ts, payload, available_at, received_at) \
     SELECT t, c, p, x, k, ck, ts, pl, r, r FROM UNNEST($1::text[], $2::text[], $3::text[], \
     $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::bigint[]) \
     AS u(t, c, p, x, k, ck, ts, pl, r) \
     ON CONFLICT (channel_id, external_id) DO NOTHING RETURNING channel_id, external_id";
/// An ingress group's unhandled deliveries (see [`INSERT_INGRESS`]).
const INSERT_UNHANDLED: &str = "INSERT INTO unhandled_events (id, tenant_id, channel_id, \
     platform, reason, raw, received_at) SELECT * FROM UNNEST($1::text[], $2::text[], \
     $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])";

/// A sent part and its message (what `push_sent` does in two statements), as one
/// statement committed on its own: one round trip instead of four. The message
/// update reads the part as it was before (`sending`), hence `p.id <> o.id`. It
/// returns one row when the part was this sender's: whether another part of the
/// conversation waits.
const RECORD_SENT: &str = "WITH o AS (UPDATE outbox SET state = 'sent', external_id = $3, \
     sent_at = $4, text = '', delivery = COALESCE(delivery, 'sent'), lease_owner = NULL, \
     lease_until = NULL WHERE id = $1 AND lease_owner = $2 AND state = 'sending' \
     RETURNING id, tenant_id, message_id, conversation_id, part, possible_duplicate) \
     UPDATE messages SET \
     external_id = CASE WHEN o.part = 0 THEN $3 ELSE messages.external_id END, \
     possible_duplicate = (messages.possible_duplicate OR o.possible_duplicate), \
     status = CASE WHEN messages.status = 'queued' AND NOT EXISTS (SELECT 1 FROM outbox p \
       WHERE p.message_id = o.message_id AND p.state <> 'sent' AND p.id <> o.id) \
       THEN 'sent' ELSE messages.status END \
     FROM o WHERE messages.tenant_id = o.tenant_id AND messages.id = o.message_id \
     RETURNING EXISTS (SELECT 1 FROM outbox p WHERE p.conversation_id = o.conversation_id \
       AND p.state IN ('pending', 'sending') AND p.id <> o.id)";

/// What `push_resolve` does for a new conversation whose identity needs no re-keying,
/// in one statement: the person's identity brought up to date (`upd`) or, with none,
/// a contact and its identity created; then the chat's conversation unless it
/// exists; returns the conversation, `created` when this statement made it.
/// Sibling statements do not see each other's rows, so each takes what it needs
/// from the ones before through `RETURNING` (the contact id of a new person is the
/// one given, `$7`); foreign keys are checked at the statement's end.
const RESOLVE: &str = "WITH upd AS (UPDATE contact_identities SET phone = COALESCE($4, phone), \
     username = COALESCE($5, username), display_name = COALESCE($6, display_name) \
     WHERE tenant_id = $1 AND channel_id = $2 AND external_user_id = $3 RETURNING contact_id), \
     contact AS (INSERT INTO contacts (id, tenant_id, display_name, created_at) \
       SELECT $7, $1, $6, $10 WHERE NOT EXISTS (SELECT 1 FROM upd) RETURNING id), \
     ident AS (INSERT INTO contact_identities (id, tenant_id, contact_id, channel_id, \
       external_user_id, phone, username, display_name, created_at) \
       SELECT $8, $1, id, $2, $3, $4, $5, $6, $10 FROM contact RETURNING contact_id), \
     conv AS (INSERT INTO conversations (id, tenant_id, channel_id, contact_id, \
       external_chat_id, last_message_at, created_at) \
       SELECT $9, $1, $2, w.contact_id, $11, $10, $10 \
       FROM (SELECT contact_id FROM upd UNION ALL SELECT contact_id FROM ident) w \
       ON CONFLICT (channel_id, external_chat_id) DO NOTHING \
       RETURNING id, contact_id, status, disclosed_at, last_message_at) \
     SELECT id, contact_id, status, disclosed_at, last_message_at, TRUE AS created FROM conv \
     UNION ALL SELECT id, contact_id, status, disclosed_at, last_message_at, FALSE \
     FROM conversations WHERE tenant_id = $1 AND channel_id = $2 AND external_chat_id = $11 \
     AND NOT EXISTS (SELECT 1 FROM conv)";

/// One column of `rows`, as an array to bind.
fn column<'a, T, U>(rows: &[&'a T], field: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(|row| field(row)).collect()
}

impl PgStore {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

    const SEARCH_SQL: &'static str = "SELECT p.document_id, d.title, d.url, p.text \
         FROM knowledge_passages p JOIN knowledge_documents d ON d.id = p.document_id \
         WHERE p.tenant_id = $2 AND p.tsv @@ to_tsquery('english', $1) \
         ORDER BY ts_rank(p.tsv, to_tsquery('english', $1)) DESC, p.id LIMIT $3";

    /// `sync_wal` does nothing: durability is the commit's own.
    const SYNCS_LOG_APART: bool = false;
    /// The extended protocol takes one statement per query (see `Script`).
    const MERGES_STATEMENTS: bool = false;
    /// Whether one writer makes every write in turn (see `Completed::sure`).
    const WRITES_IN_TURN: bool = false;

    /// Whether a raw delivery (`body`) holds the text `$2` (Meta messaging unsend).
    const ENVELOPE_HOLDS: &'static str = "position(convert_to($2, 'UTF8') in body) > 0";

    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            // The pool already pings each connection on its way back; a second ping
            // on the way out would cost every query one more round trip. A
            // connection that broke meanwhile fails its query, which is retried
            // like any other database error.
            .test_before_acquire(false)
            .connect(url)
            .await?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps an existing pool (tests create one per fresh database).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            announcer: super::new_id(),
        }
    }

    /// The connection migrations run on.
    async fn migration_connection(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// A connection for one query or read transaction.
    async fn read(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// Postgres has many writers; nobody needs to queue or reserve.
    fn reserve_writer(&self, _window: Duration) {}

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
    /// for the WAL flush, which the next durable commit performs for them. The
    /// setting goes with `BEGIN` (one simple query, one round trip).
    async fn begin_write<'c>(
        &self,
        conn: &'c mut PgConnection,
        durable: bool,
    ) -> Result<Transaction<'c, Postgres>, sqlx::Error> {
        if durable {
            conn.begin().await
        } else {
            Connection::begin_with(conn, "BEGIN; SET LOCAL synchronous_commit = off").await
        }
    }

    /// Runs `script` as one transaction; `keep` false (it sees the rows) rolls it
    /// back. Returns the rows and whether it committed.
    async fn run_transaction<'q>(
        &self,
        conn: &mut PgConnection,
        durable: bool,
        script: super::shared::Script<'q, Postgres>,
        keep: Option<super::shared::Keep<'_, PgRow>>,
    ) -> Result<(Vec<PgRow>, bool), sqlx::Error> {
        let mut tx = self.begin_write(conn, durable).await?;
        let rows = Self::run_script(&mut tx, script).await?;
        let kept = keep.is_none_or(|keep| keep(&rows));
        if kept {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok((rows, kept))
    }

    /// Creates what is missing of a new conversation with [`RESOLVE`], a statement
    /// committed on its own: one round trip instead of seven. Its commit waits for
    /// the log's flush (the script's transaction was relaxed), about as long on this
    /// disk (fdatasync p50 0.16 ms in the benchmark's probe) as the two calls a
    /// relaxed `BEGIN` and `COMMIT` would add. `None` when a phone-keyed identity may
    /// need re-keying first (the platform reports a phone and a different user id):
    /// the script does that.
    async fn resolve_in_one(
        &self,
        conn: &mut PgConnection,
        new: &super::shared::NewConversation,
    ) -> Result<Option<super::ConversationRef>, sqlx::Error> {
        let k = &new.key;
        if k.phone.as_deref().is_some_and(|p| p != k.user_id) {
            return Ok(None);
        }
        let found = sqlx::query_as(RESOLVE)
            .bind(&k.tenant_id)
            .bind(&k.channel_id)
            .bind(&k.user_id)
            .bind(&k.phone)
            .bind(&k.username)
            .bind(&k.name)
            .bind(&new.contact_id)
            .bind(&new.identity_id)
            .bind(&new.conversation_id)
            .bind(k.now)
            .bind(&k.chat)
            .fetch_one(conn)
            .await?;
        Ok(Some(found))
    }

    /// Records one sent part ([`RECORD_SENT`]). Committed durably, as a statement on
    /// its own is: a `BEGIN` to relax it would cost two round trips more.
    async fn sent_one(
        &self,
        conn: &mut PgConnection,
        part: &super::shared::SentPart,
    ) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(RECORD_SENT)
            .bind(part.outbox_id)
            .bind(&part.owner)
            .bind(&part.external_id)
            .bind(part.at)
            .fetch_optional(conn)
            .await?;
        Ok(Self::part_waits(row.as_ref()))
    }

    /// Many writers: each write goes on its own connection at once.
    fn pending_writes(&self) -> Option<&super::shared::PendingWrites> {
        None
    }

    /// Commits an ingress group durably (`synchronous_commit` on); returns the
    /// `(channel_id, external_id)` of the inbox rows it stored. Each table's rows go
    /// in as arrays ([`INSERT_INGRESS`]): the same statements for a group of any size,
    /// prepared once per connection, where a multi-row `VALUES` list would be a new
    /// text (parsed and planned again) for every group size. The usual group (no
    /// unhandled delivery) is that one statement committed on its own: one call.
    async fn write_ingress(
        &self,
        batches: &[super::IngressBatch],
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = super::shared::IngressRows::of(batches);
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let super::shared::IngressRows {
            events,
            unhandled,
            envelopes,
        } = rows;
        let insert = sqlx::query_as(INSERT_INGRESS)
            .bind(column(&events, |e| e.tenant_id.as_str()))
            .bind(column(&events, |e| e.channel_id.as_str()))
            .bind(column(&events, |e| e.platform.as_str()))
            .bind(column(&events, |e| e.external_id.as_str()))
            .bind(column(&events, |e| e.kind.as_str()))
            .bind(column(&events, |e| e.conv_key.as_str()))
            .bind(column(&events, |e| e.platform_ts))
            .bind(column(&events, |e| e.payload.as_str()))
            .bind(column(&events, |e| e.received_at))
            .bind(column(&envelopes, |e| e.tenant_id.as_deref()))
            .bind(column(&envelopes, |e| e.channel_id.as_deref()))
            .bind(column(&envelopes, |e| e.platform.as_str()))
            .bind(column(&envelopes, |e| e.body.as_slice()))
            .bind(column(&envelopes, |e| e.received_at));
        let mut conn = self.pool.acquire().await?;
        if unhandled.is_empty() {
            return insert.fetch_all(&mut *conn).await;
        }
        let mut tx = conn.begin().await?;
        let inserted = insert.fetch_all(&mut *tx).await?;
        sqlx::query(INSERT_UNHANDLED)
            .bind(column(&unhandled, |u| u.id.as_str()))
            .bind(column(&unhandled, |u| u.tenant_id.as_deref()))
            .bind(column(&unhandled, |u| u.channel_id.as_deref()))
            .bind(column(&unhandled, |u| u.platform.as_str()))
            .bind(column(&unhandled, |u| u.reason.as_str()))
            .bind(column(&unhandled, |u| u.raw.as_str()))
            .bind(column(&unhandled, |u| u.received_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Runs a queue claim: several instances claim at once, so in a transaction that
    /// holds the claim lock (see [`CLAIM_BEGIN`]).
    async fn run_claim<'q, T>(
        &self,
        conn: &mut PgConnection,
        durable: bool,
        claim: sqlx::query::QueryAs<'q, Postgres, T, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let begin = if durable {
            CLAIM_BEGIN
        } else {
            CLAIM_BEGIN_RELAXED
        };
        let mut tx = Connection::begin_with(conn, begin).await?;
        let items = claim.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(items)
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
    after_erase = "",
    before_compact = ""
);

// -- operations: wake-ups across instances (LISTEN/NOTIFY), backup --------------------
ops_store!(PgStore);

impl PgStore {
    async fn ops_announce(&self, queue: super::Wake) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(queue.channel())
            .bind(&self.announcer)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Holds one connection that LISTENs on both queues' channels; reconnects after
    /// a failure (and then wakes both queues, since announcements may have been missed).
    async fn ops_listen(
        &self,
        inbox: std::sync::Arc<tokio::sync::Notify>,
        outbox: std::sync::Arc<tokio::sync::Notify>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        use super::Wake;
        loop {
            match sqlx::postgres::PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => {
                    match listener
                        .listen_all([Wake::Inbox.channel(), Wake::Outbox.channel()])
                        .await
                    {
                        Ok(()) => {
                            inbox.notify_one();
                            outbox.notify_one();
                            loop {
                                let note = tokio::select! {
                                    _ = stop.cancelled() => return,
                                    note = listener.try_recv() => note,
                                };
                                match note {
                                    Ok(Some(n)) if n.payload() == self.announcer => {}
                                    Ok(Some(n)) if n.channel() == Wake::Outbox.channel() => {
                                        outbox.notify_one()
                                    }
                                    Ok(Some(_)) => inbox.notify_one(),
                                    // The connection dropped; notifications may be lost.
                                    Ok(None) => {
                                        inbox.notify_one();
                                        outbox.notify_one();
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "LISTEN connection failed");
                                        break;
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not open the LISTEN connection"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn ops_backup(&self, _path: &std::path::Path) -> super::Result<()> {
        Err(super::StoreError::Unsupported(
            "PostgreSQL is backed up with pg_dump (see docs/operations.md)",
        ))
    }
}

// -- AI pipeline ----
ai_store!(PgStore, Postgres);

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
