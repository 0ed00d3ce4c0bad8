-- Revocation notice deliveries not yet made (compat §6.6): one row per notice, channel
-- and target, written before the first attempt and deleted once delivered or given up,
-- so a verifier restart resumes what a crash would otherwise drop.
CREATE TABLE pending_notices (
    id {id},
    agent_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    notice TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX pending_notices_due ON pending_notices (next_attempt_at);
