-- Slack: install links in flight (OAuth `state`, CSRF) and revocations received.

CREATE TABLE slack_install_states (
    state_hash  TEXT PRIMARY KEY,              -- SHA-256 (hex) of the state; the state itself is never stored
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX slack_install_states_expiry ON slack_install_states(expires_at);

-- One row per revocation event (uninstall, token revoked): a redelivery is a no-op.
CREATE TABLE channel_revocations (
    channel_id  TEXT NOT NULL REFERENCES channels(id),
    event_id    TEXT NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,                 -- app_uninstalled | tokens_revoked
    received_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, event_id)
);
