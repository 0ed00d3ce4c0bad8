-- Vigil store, initial schema, one source for every backend: the types of byte columns
-- and surrogate ids are placeholders in braces, spelt per dialect by src/migrations.rs.

-- Registrar (Keylime's `registrarmain`).
CREATE TABLE registrar_agents (
    agent_id    TEXT PRIMARY KEY,
    ek_tpm      {bytes},
    ekcert      {bytes},
    aik_tpm     {bytes} NOT NULL,
    iak_tpm     {bytes},
    iak_cert    {bytes},
    idevid_tpm  {bytes},
    idevid_cert {bytes},
    key         TEXT,
    active      BOOLEAN NOT NULL DEFAULT FALSE,
    ip          TEXT,
    port        BIGINT,
    mtls_cert   TEXT,
    regcount    BIGINT NOT NULL DEFAULT 0
);

-- Named runtime policies (Keylime's `allowlists`).
CREATE TABLE runtime_policies (
    id         {id},
    name       TEXT NOT NULL UNIQUE,
    checksum   TEXT NOT NULL,
    generator  BIGINT,
    tpm_policy TEXT,
    ima_policy TEXT
);

-- Named measured-boot policies (Keylime's `mbpolicies`).
CREATE TABLE mb_policies (
    id        {id},
    name      TEXT NOT NULL UNIQUE,
    checksum  TEXT NOT NULL,
    mb_policy TEXT
);

-- Verifier enrolment and attestation state (Keylime's `verifiermain`).
CREATE TABLE verifier_agents (
    agent_id                         TEXT PRIMARY KEY,
    v                                TEXT,
    ip                               TEXT,
    port                             BIGINT,
    verifier_id                      TEXT NOT NULL,
    verifier_ip                      TEXT NOT NULL,
    verifier_port                    BIGINT NOT NULL,
    operational_state                BIGINT NOT NULL CHECK (operational_state BETWEEN 0 AND 10),
    public_key                       TEXT,
    tpm_policy                       TEXT NOT NULL,
    meta_data                        TEXT NOT NULL,
    -- RESTRICT: a policy in use cannot be deleted (409 in the service).
    runtime_policy_id                BIGINT REFERENCES runtime_policies (id) ON DELETE RESTRICT,
    mb_policy_id                     BIGINT REFERENCES mb_policies (id) ON DELETE RESTRICT,
    ima_sign_verification_keys       TEXT NOT NULL,
    revocation_key                   TEXT,
    accept_tpm_hash_algs             TEXT NOT NULL,
    accept_tpm_encryption_algs       TEXT NOT NULL,
    accept_tpm_signing_algs          TEXT NOT NULL,
    supported_version                TEXT NOT NULL,
    ak_tpm                           {bytes} NOT NULL,
    mtls_cert                        TEXT,
    hash_alg                         TEXT NOT NULL DEFAULT '',
    enc_alg                          TEXT NOT NULL DEFAULT '',
    sign_alg                         TEXT NOT NULL DEFAULT '',
    boottime                         BIGINT NOT NULL DEFAULT 0,
    ima_next_entry                   BIGINT NOT NULL DEFAULT 0,
    learned_ima_keyrings             TEXT,
    tpm_clockinfo                    TEXT,
    severity_level                   BIGINT,
    last_event_id                    TEXT,
    attestation_count                BIGINT NOT NULL DEFAULT 0,
    last_received_quote              BIGINT NOT NULL DEFAULT 0,
    last_successful_attestation      BIGINT NOT NULL DEFAULT 0,
    accept_attestations              BOOLEAN NOT NULL DEFAULT TRUE,
    consecutive_attestation_failures BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX verifier_agents_verifier_id ON verifier_agents (verifier_id);
CREATE INDEX verifier_agents_runtime_policy ON verifier_agents (runtime_policy_id);
CREATE INDEX verifier_agents_mb_policy ON verifier_agents (mb_policy_id);

-- Running IMA PCR value per bank after the last verified entry (incremental attestation).
CREATE TABLE ima_running_pcrs (
    agent_id TEXT NOT NULL REFERENCES verifier_agents (agent_id) ON DELETE CASCADE,
    bank     TEXT NOT NULL CHECK (bank <> ''),
    value    {bytes} NOT NULL,
    PRIMARY KEY (agent_id, bank)
);

-- Failure events of the agent's last failed round, in order.
CREATE TABLE agent_failures (
    agent_id       TEXT NOT NULL REFERENCES verifier_agents (agent_id) ON DELETE CASCADE,
    seq            BIGINT NOT NULL,
    event_id       TEXT NOT NULL CHECK (event_id <> ''),
    severity_label TEXT,
    recoverable    BOOLEAN NOT NULL,
    context        TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);

-- Which verifier replica attests which agent, until when.
CREATE TABLE agent_leases (
    agent_id   TEXT PRIMARY KEY REFERENCES verifier_agents (agent_id) ON DELETE CASCADE,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    epoch      BIGINT NOT NULL
);
CREATE INDEX agent_leases_holder ON agent_leases (holder);
