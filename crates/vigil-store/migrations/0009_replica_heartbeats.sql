-- Verifier replicas sharing nodes by leases (agent_leases) say they are alive: each
-- writes its row at every lease tick, until seen_until. The live replicas (unexpired
-- rows) and the leases each holds give every replica its fair share of the nodes, so a
-- joining replica is handed nodes gradually and a replica claims no more than its
-- share while another is under its own.
CREATE TABLE verifier_replicas (
    holder     TEXT PRIMARY KEY,
    seen_until BIGINT NOT NULL
);
