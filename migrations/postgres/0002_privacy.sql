-- Privacy engine: hash-chained audit log, consent ledger, restriction, retention and
-- privacy settings. Times are Unix milliseconds.

-- One hash chain per tenant ('' holds operator-level entries). The head records the
-- last entry, so removing entries at the end is detected too; the anchor is the
-- last entry pruned by retention, where the remaining chain starts.
CREATE TABLE audit_heads (
    tenant_id    TEXT PRIMARY KEY,
    n            BIGINT NOT NULL,
    hash         TEXT NOT NULL,
    anchor_n     BIGINT NOT NULL DEFAULT 0,
    anchor_hash  TEXT NOT NULL DEFAULT ''
);

-- Who did what, when, to which contact (by id): never names, numbers or message text.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    n           BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    contact_id  TEXT,
    target      TEXT,
    detail      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    UNIQUE (tenant_id, n)
);
CREATE INDEX audit_log_contact ON audit_log(tenant_id, contact_id);
CREATE INDEX audit_log_time ON audit_log(tenant_id, at);

CREATE FUNCTION omnigate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION omnigate_append_only();

CREATE TABLE consent_events (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    contact_id  TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL,
    granted     BOOLEAN NOT NULL,
    source      TEXT NOT NULL,
    detail      TEXT,
    at          BIGINT NOT NULL
);
CREATE INDEX consent_events_contact ON consent_events(tenant_id, contact_id, purpose, at);
CREATE TRIGGER consent_events_append_only BEFORE UPDATE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION omnigate_append_only();

ALTER TABLE contacts ADD COLUMN restricted_at BIGINT;
ALTER TABLE contacts ADD COLUMN email TEXT;
ALTER TABLE contacts ADD COLUMN updated_at BIGINT;

CREATE TABLE retention_settings (
    tenant_id        TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    messages_days    BIGINT NOT NULL,
    raw_events_days  BIGINT NOT NULL,
    analytics_days   BIGINT NOT NULL,
    audit_days       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE privacy_settings (
    tenant_id              TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    stop_words             TEXT NOT NULL,
    start_words            TEXT NOT NULL,
    human_words            TEXT NOT NULL,
    disclosure             TEXT,
    handoff_idle_minutes   BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
