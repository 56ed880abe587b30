-- omnigate schema, SQLite dialect. Times are Unix milliseconds; ids are text (UUIDv7)
-- except internal queue rows, whose integer ids give insertion order.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    domain      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_hash    BLOB NOT NULL UNIQUE,          -- SHA-256 of the key; the key itself is never stored
    prefix      TEXT NOT NULL,                 -- first characters, to recognise a key in lists
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE channels (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    platform       TEXT NOT NULL,
    account_id     TEXT NOT NULL,              -- phone_number_id, page id, ...: routes deliveries
    status         TEXT NOT NULL DEFAULT 'active',   -- active | needs_reauth | deleted
    status_detail  TEXT,
    credentials    BLOB,                       -- AES-256-GCM nonce||ciphertext; NULL once deleted
    created_at     INTEGER NOT NULL,
    deleted_at     INTEGER
);
CREATE INDEX channels_tenant ON channels(tenant_id);
CREATE UNIQUE INDEX channels_account ON channels(platform, account_id) WHERE deleted_at IS NULL;

CREATE TABLE contacts (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    display_name  TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX contacts_tenant ON contacts(tenant_id);

CREATE TABLE contact_identities (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    contact_id        TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    channel_id        TEXT NOT NULL REFERENCES channels(id),
    external_user_id  TEXT NOT NULL,           -- the platform's own user id for this channel account
    phone             TEXT,                    -- optional: platforms may withhold it
    username          TEXT,
    display_name      TEXT,
    created_at        INTEGER NOT NULL,
    UNIQUE (channel_id, external_user_id)
);
CREATE INDEX contact_identities_contact ON contact_identities(tenant_id, contact_id);

CREATE TABLE conversations (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id        TEXT NOT NULL REFERENCES channels(id),
    contact_id        TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    external_chat_id  TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'bot',   -- bot | human
    last_message_at   INTEGER NOT NULL,
    last_inbound_at   INTEGER,
    disclosed_at      INTEGER,                 -- when the AI disclosure was last given
    created_at        INTEGER NOT NULL,
    UNIQUE (channel_id, external_chat_id)
);
CREATE INDEX conversations_list ON conversations(tenant_id, last_message_at DESC, id DESC);

CREATE TABLE messages (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,   -- conversation order
    id                  TEXT NOT NULL UNIQUE,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    conversation_id     TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    direction           TEXT NOT NULL,         -- inbound | outbound
    author              TEXT NOT NULL,         -- customer | assistant | agent | system
    kind                TEXT NOT NULL,         -- text, image, location, ...
    text                TEXT,
    content             TEXT,                  -- normalized content as JSON (media ids, location, ...)
    external_id         TEXT,
    reply_to            TEXT,
    status              TEXT NOT NULL,         -- received | queued | sent | delivered | read | failed | deleted
    error_code          INTEGER,
    error_detail        TEXT,
    produced_by         TEXT,                  -- which answerer wrote an assistant message
    possible_duplicate  INTEGER NOT NULL DEFAULT 0,
    platform_ts         INTEGER,
    created_at          INTEGER NOT NULL,
    edited_at           INTEGER
);
CREATE INDEX messages_conversation ON messages(conversation_id, seq);
CREATE UNIQUE INDEX messages_external ON messages(conversation_id, direction, external_id);

CREATE TABLE inbox_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id   TEXT NOT NULL REFERENCES channels(id),
    platform     TEXT NOT NULL,
    external_id  TEXT NOT NULL,                -- platform id: the dedupe key, kept >= 7 days
    kind         TEXT NOT NULL,
    conv_key     TEXT NOT NULL,                -- events of one key are handled in order
    platform_ts  INTEGER NOT NULL,
    payload      TEXT,                         -- normalized event; cleared once handled
    state        TEXT NOT NULL DEFAULT 'pending',   -- pending | processing | done
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  INTEGER,
    outcome      TEXT,
    received_at  INTEGER NOT NULL,
    done_at      INTEGER,
    UNIQUE (channel_id, external_id)
);
CREATE INDEX inbox_open ON inbox_events(conv_key, platform_ts, id) WHERE state <> 'done';
CREATE INDEX inbox_queue ON inbox_events(id) WHERE state <> 'done';

CREATE TABLE outbox (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id          TEXT NOT NULL REFERENCES channels(id),
    conversation_id     TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    message_id          TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    part                INTEGER NOT NULL,
    recipient           TEXT NOT NULL,
    text                TEXT NOT NULL,         -- cleared once the part is terminal
    reply_to            TEXT,
    state               TEXT NOT NULL DEFAULT 'pending',   -- pending | sending | sent | failed
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_until         INTEGER,
    external_id         TEXT,
    delivery            TEXT,                  -- sent | delivered | read | failed (from receipts)
    error_code          INTEGER,
    error_detail        TEXT,
    possible_duplicate  INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    sent_at             INTEGER
);
CREATE INDEX outbox_open ON outbox(conversation_id, id) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_ready ON outbox(next_attempt_at, id) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_external ON outbox(channel_id, external_id);
CREATE INDEX outbox_message ON outbox(message_id);

CREATE TABLE raw_envelopes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    channel_id   TEXT,
    platform     TEXT NOT NULL,
    body         BLOB NOT NULL,
    received_at  INTEGER NOT NULL
);
CREATE INDEX raw_envelopes_time ON raw_envelopes(received_at);

CREATE TABLE unhandled_events (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT REFERENCES tenants(id) ON DELETE CASCADE,   -- NULL: no tenant could be found
    channel_id   TEXT,
    platform     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    raw          TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);
CREATE INDEX unhandled_tenant ON unhandled_events(tenant_id, received_at);

CREATE TABLE knowledge_documents (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    url         TEXT,
    text        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX knowledge_documents_tenant ON knowledge_documents(tenant_id);

CREATE TABLE knowledge_passages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    document_id  TEXT NOT NULL REFERENCES knowledge_documents(id) ON DELETE CASCADE,
    ord          INTEGER NOT NULL,
    text         TEXT NOT NULL
);
CREATE INDEX knowledge_passages_doc ON knowledge_passages(document_id);

CREATE VIRTUAL TABLE knowledge_fts USING fts5(
    text, content = 'knowledge_passages', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER knowledge_passages_ai AFTER INSERT ON knowledge_passages BEGIN
    INSERT INTO knowledge_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER knowledge_passages_ad AFTER DELETE ON knowledge_passages BEGIN
    INSERT INTO knowledge_fts(knowledge_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
