-- Meta messaging (Messenger, Instagram) and Meta's data-deletion callback.

-- The message tag a reply part is sent with (`HUMAN_AGENT`: a person's reply after the
-- 24-hour standard messaging window and within 7 days).
ALTER TABLE outbox ADD COLUMN message_tag TEXT;

-- Data-deletion requests Meta sent for a person (a `signed_request` `user_id`). The
-- status page shows them by confirmation code and never reveals who asked.
CREATE TABLE data_deletion_requests (
    code             TEXT PRIMARY KEY,         -- confirmation code given to Meta and the person
    channel_id       TEXT,                     -- the channel's own route; NULL: the operator app
    subject          TEXT,                     -- app-scoped user id; cleared once erased
    status           TEXT NOT NULL,            -- pending | completed
    erased_contacts  BIGINT NOT NULL DEFAULT 0,
    requested_at     BIGINT NOT NULL,
    completed_at     BIGINT
);
CREATE INDEX data_deletion_pending ON data_deletion_requests(requested_at) WHERE status = 'pending';
