-- Integrity events not yet delivered: one row per (event, sink), written in the same
-- transaction as the round that made the event, deleted once the sink took it. A
-- replica delivering a row holds it by a lease (owner, expiry): when that replica dies,
-- another takes the row over once the lease expires, so delivery is at least once.
CREATE TABLE event_outbox (
    id {id},
    uuid TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX event_outbox_due ON event_outbox (next_attempt_at);

-- Every response action taken on a node, with its outcome, for `vigil tenant status`.
CREATE TABLE response_actions (
    id {id},
    agent_id TEXT NOT NULL,
    event_uuid TEXT NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX response_actions_agent ON response_actions (agent_id, id);

-- Known-good measurement sets an operator recorded for a hardware class: what a node
-- of that class may be relearnt to.
CREATE TABLE known_good (
    name TEXT PRIMARY KEY,
    class TEXT NOT NULL,
    measurements TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);

-- Earlier versions of a node's policies, kept when a relearn replaced them.
CREATE TABLE policy_versions (
    id {id},
    agent_id TEXT NOT NULL,
    tpm_policy TEXT NOT NULL,
    runtime_policy TEXT,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX policy_versions_agent ON policy_versions (agent_id, id);
