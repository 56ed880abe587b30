-- Privacy engine: hash-chained audit log, consent ledger, restriction, retention and
-- privacy settings. Times are Unix milliseconds.

-- One hash chain per tenant ('' holds operator-level entries). The head records the
-- last entry, so removing entries at the end is detected too; the anchor is the
-- last entry pruned by retention, where the remaining chain starts.
CREATE TABLE audit_heads (
    tenant_id    TEXT PRIMARY KEY,
    n            INTEGER NOT NULL,
    hash         TEXT NOT NULL,
    anchor_n     INTEGER NOT NULL DEFAULT 0,
    anchor_hash  TEXT NOT NULL DEFAULT ''
);

-- Who did what, when, to which contact (by id): never names, numbers or message text.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    n           INTEGER NOT NULL,              -- position in the tenant's chain
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,                 -- api_key:<prefix> | operator | system | platform:<name> | customer
    action      TEXT NOT NULL,                 -- contact.erase, consent.change, retention.sweep, ...
    contact_id  TEXT,
    target      TEXT,                          -- another object: conversation, channel, ...
    detail      TEXT,                          -- JSON without personal data
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    UNIQUE (tenant_id, n)
);
CREATE INDEX audit_log_contact ON audit_log(tenant_id, contact_id);
CREATE INDEX audit_log_time ON audit_log(tenant_id, at);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Append-only consent ledger; the current state per purpose is its latest entry.
CREATE TABLE consent_events (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL,                 -- ai_processing | marketing | analytics
    granted     BOOLEAN NOT NULL,
    source      TEXT NOT NULL,                 -- keyword | admin_api | platform
    detail      TEXT,                          -- which keyword or platform signal
    at          INTEGER NOT NULL
);
CREATE INDEX consent_events_contact ON consent_events(tenant_id, contact_id, purpose, at);
CREATE TRIGGER consent_events_append_only BEFORE UPDATE ON consent_events BEGIN
    SELECT RAISE(ABORT, 'consent_events is append-only');
END;

-- Restriction of processing (GDPR Art. 18) and correctable profile fields.
ALTER TABLE contacts ADD COLUMN restricted_at INTEGER;
ALTER TABLE contacts ADD COLUMN email TEXT;
ALTER TABLE contacts ADD COLUMN updated_at INTEGER;


CREATE TABLE retention_settings (
    tenant_id        TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    messages_days    INTEGER NOT NULL,
    raw_events_days  INTEGER NOT NULL,
    analytics_days   INTEGER NOT NULL,
    audit_days       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE privacy_settings (
    tenant_id              TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    stop_words             TEXT NOT NULL,   -- JSON arrays of extra keywords
    start_words            TEXT NOT NULL,
    human_words            TEXT NOT NULL,
    disclosure             TEXT,            -- the tenant's wording of the AI disclosure
    handoff_idle_minutes   INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);
