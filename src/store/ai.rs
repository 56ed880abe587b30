//! Storage of the AI pipeline: assistant settings, conversation history for the
//! context, holds while every provider is down, provider call accounting, drafts
//! waiting for review, and website crawls. Same pattern as [`super::shared`]: the
//! SQL is written once and instantiated per backend by [`ai_store!`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Result;

/// A tenant's assistant settings (defaults when never set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssistantSettings {
    pub persona: String,
    pub business_facts: String,
    pub language: Option<String>,
    /// Provider names in order of preference; `None`: the operator's order.
    pub providers: Option<Vec<String>>,
    /// The only providers that may see this tenant's messages; `None`: any.
    pub allowed_providers: Option<Vec<String>>,
    /// Assistant answers wait as drafts for an agent's approval.
    pub review_required: bool,
}

/// A tenant's assistant settings row (its columns all NULL when never set) and
/// whether the tenant has any knowledge document.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SettingsRow {
    persona: Option<String>,
    business_facts: Option<String>,
    language: Option<String>,
    providers: Option<String>,
    allowed_providers: Option<String>,
    review_required: Option<bool>,
    knowledge: bool,
}

impl SettingsRow {
    /// The settings (`None` when never set) and whether there is knowledge.
    pub(crate) fn into_parts(self) -> (Option<AssistantSettings>, bool) {
        let list = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        let settings = match (self.persona, self.business_facts, self.review_required) {
            (Some(persona), Some(business_facts), Some(review_required)) => {
                Some(AssistantSettings {
                    persona,
                    business_facts,
                    language: self.language,
                    providers: list(self.providers),
                    allowed_providers: list(self.allowed_providers),
                    review_required,
                })
            }
            _ => None,
        };
        (settings, self.knowledge)
    }
}

/// One earlier turn of a conversation (text only).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryTurn {
    /// customer | assistant | agent
    pub author: String,
    pub text: String,
}

/// The hold on an event whose customer was told "we will get back to you".
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiHold {
    pub conversation_id: String,
    pub created_at: i64,
    /// A human agent wrote in the conversation since the hold began.
    pub agent_replied: bool,
}

/// One provider call, for accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiCall {
    pub provider: String,
    pub model: String,
    pub outcome: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub created_at: i64,
}

/// Usage summed per provider and model.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UsageRow {
    pub provider: String,
    pub model: String,
    pub calls: i64,
    pub failed_calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

/// An assistant answer waiting for an agent's approval.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DraftRecord {
    pub id: String,
    pub conversation_id: String,
    #[serde(skip)]
    pub platform: String,
    pub text: Option<String>,
    pub produced_by: Option<String>,
    pub created_at: i64,
}

/// A website crawl and its progress.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CrawlJob {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub url: String,
    pub max_pages: i64,
    pub state: String,
    pub pages_fetched: i64,
    pub pages_indexed: i64,
    pub pages_unchanged: i64,
    pub pages_skipped: i64,
    pub pages_removed: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// A page the crawler read.
pub struct CrawledPage {
    pub tenant_id: String,
    /// The site the crawl started from; a later crawl of it removes pages gone.
    pub root: String,
    pub url: String,
    pub title: String,
    pub text: String,
    pub hash: String,
    pub passages: Vec<String>,
    pub now: i64,
}

/// What storing a crawled page did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageChange {
    New,
    Changed,
    Unchanged,
}

#[async_trait]
pub trait AiStore: Send + Sync {
    async fn assistant_settings(&self, tenant_id: &str) -> Result<Option<AssistantSettings>>;
    /// What answering a question needs first, in one read: the tenant's settings
    /// (defaults when never set) and whether it has any knowledge document (without
    /// one there is nothing to search).
    async fn answer_settings(&self, tenant_id: &str) -> Result<(AssistantSettings, bool)>;
    async fn put_assistant_settings(
        &self,
        tenant_id: &str,
        settings: &AssistantSettings,
        now: i64,
    ) -> Result<()>;
    /// Text turns of a conversation, newest first, leaving out the inbound message
    /// `current` (the one being answered), unsent drafts and system notices.
    async fn history(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        current: &str,
        limit: i64,
    ) -> Result<Vec<HistoryTurn>>;
    async fn ai_hold(&self, tenant_id: &str, inbox_id: i64) -> Result<Option<AiHold>>;
    async fn record_ai_calls(
        &self,
        tenant_id: &str,
        conversation_id: Option<&str>,
        calls: &[AiCall],
    ) -> Result<()>;
    async fn ai_usage(&self, tenant_id: &str) -> Result<Vec<UsageRow>>;
    async fn drafts(&self, tenant_id: &str) -> Result<Vec<DraftRecord>>;
    async fn draft(&self, tenant_id: &str, message_id: &str) -> Result<Option<DraftRecord>>;
    /// Queues a draft for sending as `parts` (its text replaced by `text` when an
    /// agent edited it). `false` if it is no longer a draft.
    async fn release_draft(
        &self,
        tenant_id: &str,
        message_id: &str,
        text: &str,
        edited: bool,
        parts: &[String],
        now: i64,
    ) -> Result<bool>;
    /// `false` if it is no longer a draft.
    async fn discard_draft(&self, tenant_id: &str, message_id: &str) -> Result<bool>;

    async fn create_crawl_job(&self, job: &CrawlJob) -> Result<()>;
    /// Writes the job's progress counters, state and error.
    async fn update_crawl_job(&self, job: &CrawlJob) -> Result<()>;
    async fn crawl_job(&self, tenant_id: &str, id: &str) -> Result<Option<CrawlJob>>;
    /// Stores a crawled page, replacing the tenant's earlier copy of the same URL
    /// when its text changed.
    async fn upsert_page(&self, page: &CrawledPage) -> Result<PageChange>;
    /// Removes pages of `root` that a complete crawl no longer found.
    async fn prune_pages(&self, tenant_id: &str, root: &str, keep: &[String]) -> Result<u64>;
}

/// Implements [`AiStore`] for `$store` on database `$db` (see `shared_store!` for
/// the helpers the backend provides).
macro_rules! ai_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// The tenant's settings (`None` when never set) and whether it has any
            /// knowledge document, in one query.
            async fn settings_row(
                &self,
                tenant_id: &str,
            ) -> $crate::store::Result<(Option<$crate::store::AssistantSettings>, bool)> {
                let row: $crate::store::ai::SettingsRow = sqlx::query_as(
                    "SELECT s.persona, s.business_facts, s.language, s.providers, s.allowed_providers, \
                     s.review_required, \
                     EXISTS (SELECT 1 FROM knowledge_documents WHERE tenant_id = $1) AS knowledge \
                     FROM (SELECT 1) AS one LEFT JOIN assistant_settings s ON s.tenant_id = $1",
                )
                .bind(tenant_id)
                .fetch_one(&mut *self.read().await?)
                .await?;
                Ok(row.into_parts())
            }

            async fn delete_documents(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant_id: &str,
                ids: &[String],
            ) -> $crate::store::Result<()> {
                for id in ids {
                    // Passages first, so the full-text index triggers see each one go.
                    sqlx::query("DELETE FROM knowledge_passages WHERE tenant_id = $1 AND document_id = $2")
                        .bind(tenant_id)
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query("DELETE FROM knowledge_documents WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant_id)
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::AiStore for $store {
            async fn assistant_settings(
                &self,
                tenant_id: &str,
            ) -> $crate::store::Result<Option<$crate::store::AssistantSettings>> {
                Ok(self.settings_row(tenant_id).await?.0)
            }

            async fn answer_settings(
                &self,
                tenant_id: &str,
            ) -> $crate::store::Result<($crate::store::AssistantSettings, bool)> {
                let (settings, knowledge) = self.settings_row(tenant_id).await?;
                Ok((settings.unwrap_or_default(), knowledge))
            }

            async fn put_assistant_settings(
                &self,
                tenant_id: &str,
                s: &$crate::store::AssistantSettings,
                now: i64,
            ) -> $crate::store::Result<()> {
                let list = |l: &Option<Vec<String>>| l.as_ref().and_then(|l| serde_json::to_string(l).ok());
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query(
                    "INSERT INTO assistant_settings (tenant_id, persona, business_facts, language, providers, \
                     allowed_providers, review_required, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (tenant_id) DO UPDATE SET persona = $2, business_facts = $3, language = $4, \
                     providers = $5, allowed_providers = $6, review_required = $7, updated_at = $8",
                )
                .bind(tenant_id)
                .bind(&s.persona)
                .bind(&s.business_facts)
                .bind(&s.language)
                .bind(list(&s.providers))
                .bind(list(&s.allowed_providers))
                .bind(s.review_required)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn history(
                &self,
                tenant_id: &str,
                conversation_id: &str,
                current: &str,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::HistoryTurn>> {
                Ok(sqlx::query_as(
                    "SELECT author, text FROM messages WHERE tenant_id = $1 AND conversation_id = $2 \
                     AND text IS NOT NULL AND author IN ('customer', 'assistant', 'agent') \
                     AND status NOT IN ('draft', 'discarded', 'deleted') \
                     AND NOT (direction = 'inbound' AND external_id IS NOT NULL AND external_id = $3) \
                     ORDER BY seq DESC LIMIT $4",
                )
                .bind(tenant_id)
                .bind(conversation_id)
                .bind(current)
                .bind(limit)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn ai_hold(
                &self,
                tenant_id: &str,
                inbox_id: i64,
            ) -> $crate::store::Result<Option<$crate::store::AiHold>> {
                Ok(sqlx::query_as(
                    "SELECT h.conversation_id, h.created_at, EXISTS (SELECT 1 FROM messages m \
                     WHERE m.tenant_id = h.tenant_id AND m.conversation_id = h.conversation_id \
                     AND m.author = 'agent' AND m.created_at >= h.created_at) AS agent_replied \
                     FROM ai_holds h WHERE h.tenant_id = $1 AND h.inbox_id = $2",
                )
                .bind(tenant_id)
                .bind(inbox_id)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn record_ai_calls(
                &self,
                tenant_id: &str,
                conversation_id: Option<&str>,
                calls: &[$crate::store::AiCall],
            ) -> $crate::store::Result<()> {
                if calls.is_empty() {
                    return Ok(());
                }
                let mut script = Self::script();
                for c in calls {
                    Self::push_ai_call(&mut script, tenant_id, conversation_id, c);
                }
                let (_gate, mut conn) = self.write_connection(false).await?;
                self.run_transaction(&mut conn, false, script, None).await?;
                Ok(())
            }

            async fn ai_usage(&self, tenant_id: &str) -> $crate::store::Result<Vec<$crate::store::UsageRow>> {
                Ok(sqlx::query_as(
                    "SELECT provider, model, COUNT(*) AS calls, \
                     SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END) AS failed_calls, \
                     CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
                     CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
                     CAST(SUM(cost_micros) AS BIGINT) AS cost_micros \
                     FROM ai_calls WHERE tenant_id = $1 GROUP BY provider, model ORDER BY provider, model",
                )
                .bind(tenant_id)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn drafts(&self, tenant_id: &str) -> $crate::store::Result<Vec<$crate::store::DraftRecord>> {
                Ok(sqlx::query_as(
                    "SELECT m.id, m.conversation_id, ch.platform, m.text, m.produced_by, m.created_at \
                     FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                     JOIN channels ch ON ch.id = c.channel_id \
                     WHERE m.tenant_id = $1 AND m.status = 'draft' ORDER BY m.seq LIMIT 500",
                )
                .bind(tenant_id)
                .fetch_all(&mut *self.read().await?)
                .await?)
            }

            async fn draft(
                &self,
                tenant_id: &str,
                message_id: &str,
            ) -> $crate::store::Result<Option<$crate::store::DraftRecord>> {
                Ok(sqlx::query_as(
                    "SELECT m.id, m.conversation_id, ch.platform, m.text, m.produced_by, m.created_at \
                     FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                     JOIN channels ch ON ch.id = c.channel_id \
                     WHERE m.tenant_id = $1 AND m.id = $2 AND m.status = 'draft'",
                )
                .bind(tenant_id)
                .bind(message_id)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn release_draft(
                &self,
                tenant_id: &str,
                message_id: &str,
                text: &str,
                edited: bool,
                parts: &[String],
                now: i64,
            ) -> $crate::store::Result<bool> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let conversation_id: Option<String> = sqlx::query_scalar(
                    "UPDATE messages SET status = 'queued', text = $3, \
                     edited_at = CASE WHEN $4 THEN $5 ELSE edited_at END \
                     WHERE tenant_id = $1 AND id = $2 AND status = 'draft' RETURNING conversation_id",
                )
                .bind(tenant_id)
                .bind(message_id)
                .bind(text)
                .bind(edited)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(conversation_id) = conversation_id else {
                    return Ok(false);
                };
                // The draft carried the AI disclosure if one was due; now it is given.
                sqlx::query(
                    "UPDATE conversations SET disclosed_at = COALESCE(disclosed_at, $3), \
                     last_message_at = CASE WHEN last_message_at < $3 THEN $3 ELSE last_message_at END \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant_id)
                .bind(&conversation_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                for (i, part) in parts.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO outbox (tenant_id, channel_id, conversation_id, message_id, part, recipient, \
                         text, next_attempt_at, created_at) \
                         SELECT c.tenant_id, c.channel_id, c.id, $3, $4, c.external_chat_id, $5, $6, $6 \
                         FROM conversations c WHERE c.tenant_id = $1 AND c.id = $2",
                    )
                    .bind(tenant_id)
                    .bind(&conversation_id)
                    .bind(message_id)
                    .bind(i as i64)
                    .bind(part)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn discard_draft(&self, tenant_id: &str, message_id: &str) -> $crate::store::Result<bool> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let done = sqlx::query(
                    "UPDATE messages SET status = 'discarded' WHERE tenant_id = $1 AND id = $2 AND status = 'draft'",
                )
                .bind(tenant_id)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_crawl_job(&self, j: &$crate::store::CrawlJob) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(true).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query(
                    "INSERT INTO crawl_jobs (id, tenant_id, url, max_pages, state, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&j.id)
                .bind(&j.tenant_id)
                .bind(&j.url)
                .bind(j.max_pages)
                .bind(&j.state)
                .bind(j.created_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_crawl_job(&self, j: &$crate::store::CrawlJob) -> $crate::store::Result<()> {
                let (_gate, mut conn) = self.write_connection(false).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                sqlx::query(
                    "UPDATE crawl_jobs SET state = $3, pages_fetched = $4, pages_indexed = $5, pages_unchanged = $6, \
                     pages_skipped = $7, pages_removed = $8, error = $9, finished_at = $10 \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(&j.tenant_id)
                .bind(&j.id)
                .bind(&j.state)
                .bind(j.pages_fetched)
                .bind(j.pages_indexed)
                .bind(j.pages_unchanged)
                .bind(j.pages_skipped)
                .bind(j.pages_removed)
                .bind(&j.error)
                .bind(j.finished_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn crawl_job(
                &self,
                tenant_id: &str,
                id: &str,
            ) -> $crate::store::Result<Option<$crate::store::CrawlJob>> {
                Ok(sqlx::query_as(
                    "SELECT id, tenant_id, url, max_pages, state, pages_fetched, pages_indexed, pages_unchanged, \
                     pages_skipped, pages_removed, error, created_at, finished_at \
                     FROM crawl_jobs WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *self.read().await?)
                .await?)
            }

            async fn upsert_page(
                &self,
                p: &$crate::store::CrawledPage,
            ) -> $crate::store::Result<$crate::store::PageChange> {
                use $crate::store::PageChange;
                let (_gate, mut conn) = self.write_connection(false).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let existing: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT id, content_hash FROM knowledge_documents WHERE tenant_id = $1 AND url = $2",
                )
                .bind(&p.tenant_id)
                .bind(&p.url)
                .fetch_all(&mut *tx)
                .await?;
                if existing.len() == 1 && existing[0].1.as_deref() == Some(p.hash.as_str()) {
                    sqlx::query("UPDATE knowledge_documents SET crawl_root = $3 WHERE tenant_id = $1 AND id = $2")
                        .bind(&p.tenant_id)
                        .bind(&existing[0].0)
                        .bind(&p.root)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(PageChange::Unchanged);
                }
                let ids: Vec<String> = existing.iter().map(|(id, _)| id.clone()).collect();
                Self::delete_documents(&mut tx, &p.tenant_id, &ids).await?;
                let id = $crate::store::new_id();
                sqlx::query(
                    "INSERT INTO knowledge_documents (id, tenant_id, title, url, text, created_at, content_hash, crawl_root) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&id)
                .bind(&p.tenant_id)
                .bind(&p.title)
                .bind(&p.url)
                .bind(&p.text)
                .bind(p.now)
                .bind(&p.hash)
                .bind(&p.root)
                .execute(&mut *tx)
                .await?;
                for (i, passage) in p.passages.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO knowledge_passages (tenant_id, document_id, ord, text) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&p.tenant_id)
                    .bind(&id)
                    .bind(i as i64)
                    .bind(passage)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(if ids.is_empty() { PageChange::New } else { PageChange::Changed })
            }

            async fn prune_pages(
                &self,
                tenant_id: &str,
                root: &str,
                keep: &[String],
            ) -> $crate::store::Result<u64> {
                let (_gate, mut conn) = self.write_connection(false).await?;
                let mut tx = self.begin_write(&mut conn, true).await?;
                let found: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT id, url FROM knowledge_documents WHERE tenant_id = $1 AND crawl_root = $2",
                )
                .bind(tenant_id)
                .bind(root)
                .fetch_all(&mut *tx)
                .await?;
                let gone: Vec<String> = found
                    .into_iter()
                    .filter(|(_, url)| url.as_ref().is_none_or(|u| !keep.contains(u)))
                    .map(|(id, _)| id)
                    .collect();
                Self::delete_documents(&mut tx, tenant_id, &gone).await?;
                tx.commit().await?;
                Ok(gone.len() as u64)
            }
        }
    };
}

pub(crate) use ai_store;
