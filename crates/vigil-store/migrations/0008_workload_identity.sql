-- Workload identity (docs/spire.md): the nonces the verifier issued for identity quotes
-- (each usable once, until it expires), and the identities issued on each node (evicted
-- when the node fails attestation). Kept in the database so that every replica sees a
-- nonce spent and a restart still evicts.
CREATE TABLE identity_nonces (
    nonce TEXT PRIMARY KEY,
    issued_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX identity_nonces_issued ON identity_nonces (issued_at);
CREATE TABLE issued_identities (
    agent_id TEXT NOT NULL,
    spiffe_id TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, spiffe_id)
);
