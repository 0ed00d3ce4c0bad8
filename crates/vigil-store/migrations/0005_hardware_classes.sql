-- Hardware classes (the provisioning trust gate): a class names a kind of machine and
-- the PCR values its firmware and boot chain may show (vigil_core::policy::golden's
-- JSON form), optionally with the measured-boot and runtime policies, by name, its
-- nodes are meant to use. changed_at: when its values last changed (epoch seconds):
-- evidence judged before then does not answer the gate.
CREATE TABLE hardware_classes (
    name           TEXT PRIMARY KEY CHECK (name <> ''),
    description    TEXT NOT NULL,
    golden         TEXT NOT NULL,
    mb_policy      TEXT,
    runtime_policy TEXT,
    changed_at     BIGINT NOT NULL
);

-- A node's class (RESTRICT: a class in use cannot be deleted) and its labels (a JSON
-- object of string values, e.g. rack = 7; NULL for none), for selecting nodes to gate
-- at once.
ALTER TABLE verifier_agents ADD COLUMN hardware_class TEXT
    REFERENCES hardware_classes (name) ON DELETE RESTRICT;
ALTER TABLE verifier_agents ADD COLUMN labels TEXT;
-- When the node's class was last set (epoch seconds; 0 = never): evidence judged before
-- then does not answer the gate.
ALTER TABLE verifier_agents ADD COLUMN class_since BIGINT NOT NULL DEFAULT 0;
CREATE INDEX verifier_agents_hardware_class ON verifier_agents (hardware_class);
