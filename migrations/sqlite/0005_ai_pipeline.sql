-- The AI pipeline: assistant settings per tenant, holds while every provider is down,
-- provider call accounting, and website crawls of the knowledge base.

CREATE TABLE assistant_settings (
    tenant_id          TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    persona            TEXT NOT NULL DEFAULT '',
    business_facts     TEXT NOT NULL DEFAULT '',
    language           TEXT,
    providers          TEXT,                   -- JSON array, order of preference; NULL: the operator's order
    allowed_providers  TEXT,                   -- JSON array, the only providers that may see messages; NULL: any
    review_required    INTEGER NOT NULL DEFAULT 0,   -- drafts wait for an agent's approval
    updated_at         INTEGER NOT NULL
);

-- An event whose customer got the "we will get back to you" message because every
-- provider failed; the event is retried and the hold stops a second holding message.
CREATE TABLE ai_holds (
    inbox_id         INTEGER PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    created_at       INTEGER NOT NULL
);

-- One row per provider call: tokens and cost from the provider's usage fields.
CREATE TABLE ai_calls (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    conversation_id  TEXT REFERENCES conversations(id) ON DELETE SET NULL,
    provider         TEXT NOT NULL,
    model            TEXT NOT NULL,
    outcome          TEXT NOT NULL,            -- ok | timeout | rate_limited | server_error | rejected | malformed | transport
    input_tokens     INTEGER NOT NULL DEFAULT 0,
    output_tokens    INTEGER NOT NULL DEFAULT 0,
    cost_micros      INTEGER NOT NULL DEFAULT 0,   -- millionths of a US dollar
    created_at       INTEGER NOT NULL
);
CREATE INDEX ai_calls_tenant ON ai_calls(tenant_id, provider, model);

ALTER TABLE knowledge_documents ADD COLUMN content_hash TEXT;
ALTER TABLE knowledge_documents ADD COLUMN crawl_root TEXT;   -- the site a crawled page came from
CREATE INDEX knowledge_documents_url ON knowledge_documents(tenant_id, url);

CREATE TABLE crawl_jobs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    max_pages        INTEGER NOT NULL,
    state            TEXT NOT NULL,            -- running | done | failed
    pages_fetched    INTEGER NOT NULL DEFAULT 0,
    pages_indexed    INTEGER NOT NULL DEFAULT 0,   -- new or changed
    pages_unchanged  INTEGER NOT NULL DEFAULT 0,
    pages_skipped    INTEGER NOT NULL DEFAULT 0,   -- disallowed, not HTML, too large, failed
    pages_removed    INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX crawl_jobs_tenant ON crawl_jobs(tenant_id, created_at);
