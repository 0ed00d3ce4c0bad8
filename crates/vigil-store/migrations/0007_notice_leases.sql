-- Revocation notice deliveries are leased like agents (agent_leases): the replica that
-- records a delivery holds it until lease_expires_at and renews it while it lives, so a
-- replica that dies with deliveries not yet made leaves them to another one once the
-- lease expires. 0 = not leased (a verifier without leases, or rows from before).
ALTER TABLE pending_notices ADD COLUMN holder TEXT;
ALTER TABLE pending_notices ADD COLUMN lease_expires_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX pending_notices_lease ON pending_notices (lease_expires_at);
