//! The verifier's records: each enrolled agent's enrolment data and attestation state
//! (Keylime's `verifiermain`, compat §6.3 and §9.1), plus what Keylime keeps only in
//! process memory and Vigil persists so a restart resumes where it stopped: the IMA
//! offset (next entry and running PCR per bank) and the failures of the last failed
//! round.
//!
//! A round's result is written by [`VerifierAgents::record_round`] in one transaction
//! (agent row, running PCRs, failure list), fenced by the caller's lease when verifier
//! replicas share the database.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{Fence, StoreError};

/// Which named policy an enrolment uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyRef<P> {
    /// An existing named policy; [`StoreError::NotFound`] if there is none.
    Named(String),
    /// A policy sent with the enrolment, created under its own name in the same
    /// transaction as the agent ([`StoreError::AlreadyExists`] if the name is taken).
    Inline(P),
}

/// A new enrolment (`POST /v2.x/agents/{id}` on the verifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The agent id (primary key).
    pub agent_id: String,
    /// The V bootstrap key half (base64), if the tenant sent one.
    pub v: Option<String>,
    /// The agent's address (pull mode).
    pub ip: Option<String>,
    /// The agent's port (pull mode).
    pub port: Option<u16>,
    /// The verifier that owns the agent (Keylime's `[verifier] uuid`).
    pub verifier_id: String,
    /// That verifier's address.
    pub verifier_ip: String,
    /// That verifier's port.
    pub verifier_port: u16,
    /// The initial operational state (Keylime: 1, Start).
    pub operational_state: u8,
    /// The agent's payload-encryption public key (PEM), if known.
    pub public_key: Option<String>,
    /// The PCR policy, JSON text including `mask`.
    pub tpm_policy: String,
    /// Free-form metadata, JSON text.
    pub meta_data: String,
    /// The runtime (IMA) policy, if any.
    pub runtime_policy: Option<PolicyRef<crate::NewRuntimePolicy>>,
    /// The measured-boot policy, if any.
    pub mb_policy: Option<PolicyRef<crate::NewMbPolicy>>,
    /// IMA signature verification keys, JSON text.
    pub ima_sign_verification_keys: String,
    /// The revocation key, if any.
    pub revocation_key: Option<String>,
    /// Accepted quote hash algorithms.
    pub accept_tpm_hash_algs: Vec<String>,
    /// Accepted encryption algorithms.
    pub accept_tpm_encryption_algs: Vec<String>,
    /// Accepted signing algorithms.
    pub accept_tpm_signing_algs: Vec<String>,
    /// The agent API version the verifier talks.
    pub supported_version: String,
    /// The AK public area (TPM2B_PUBLIC bytes).
    pub ak_tpm: Vec<u8>,
    /// The agent's mTLS server certificate (PEM).
    pub mtls_cert: Option<String>,
    /// Push mode: whether attestations are accepted.
    pub accept_attestations: bool,
    /// The node's hardware class ([`HardwareClass`](crate::HardwareClass) name), if any:
    /// its rounds are also judged against the class's golden PCR values.
    /// [`StoreError::NotFound`] if there is no such class.
    pub hardware_class: Option<String>,
    /// Free-form labels (`rack` → `7`), for selecting nodes (Vigil's gate).
    pub labels: BTreeMap<String, String>,
    /// When the class was set (epoch seconds; 0 = never): evidence judged before then
    /// does not answer the trust gate.
    pub class_since: i64,
}

/// Where incremental IMA attestation resumes: the next entry to read and the PCR value
/// per bank after the last verified entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImaProgress {
    /// Index of the next measurement-list entry to fetch (0 = from the start).
    pub next_entry: u64,
    /// Running PCR value per bank name (e.g. "sha256").
    pub running_pcrs: BTreeMap<String, Vec<u8>>,
}

/// One failure event of a round (compat §6.4), kept so operators see why a round failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    /// The event id, e.g. `ima.validation.ima-ng.not_in_allowlist`.
    pub event_id: String,
    /// The severity label the policy gave it, if computed.
    pub severity_label: Option<String>,
    /// Whether the event is recoverable.
    pub recoverable: bool,
    /// The event context, JSON text.
    pub context: String,
    /// The file an IMA event is about (Vigil's annotation, not in the context).
    pub file: Option<String>,
}

/// An enrolled agent with its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierAgent {
    /// What was enrolled (policies by name).
    pub enrolment: EnrolledAgent,
    /// The state the attestation rounds maintain.
    pub state: AgentState,
}

/// An agent as its status answer needs it ([`VerifierAgents::statuses`]): the
/// enrolment, the state machine's snapshot and what its policies hold, without the
/// per-round tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatusRecord {
    /// What was enrolled (policies by name).
    pub enrolment: EnrolledAgent,
    /// Keylime's operational state, 0–10.
    pub operational_state: u8,
    /// See [`AgentState::engine_state`].
    pub engine_state: Option<String>,
    /// The runtime policy's `generator`, if the agent has one.
    pub runtime_policy_generator: Option<i64>,
    /// The measured-boot policy's text, if the agent has one.
    pub mb_policy_text: Option<String>,
}

/// The enrolment data as stored (policies resolved to names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledAgent {
    /// See [`Enrolment::agent_id`].
    pub agent_id: String,
    /// See [`Enrolment::v`].
    pub v: Option<String>,
    /// See [`Enrolment::ip`].
    pub ip: Option<String>,
    /// See [`Enrolment::port`].
    pub port: Option<u16>,
    /// See [`Enrolment::verifier_id`].
    pub verifier_id: String,
    /// See [`Enrolment::verifier_ip`].
    pub verifier_ip: String,
    /// See [`Enrolment::verifier_port`].
    pub verifier_port: u16,
    /// See [`Enrolment::public_key`].
    pub public_key: Option<String>,
    /// See [`Enrolment::tpm_policy`].
    pub tpm_policy: String,
    /// See [`Enrolment::meta_data`].
    pub meta_data: String,
    /// The runtime policy's name, if any.
    pub runtime_policy: Option<String>,
    /// The measured-boot policy's name, if any.
    pub mb_policy: Option<String>,
    /// See [`Enrolment::ima_sign_verification_keys`].
    pub ima_sign_verification_keys: String,
    /// See [`Enrolment::revocation_key`].
    pub revocation_key: Option<String>,
    /// See [`Enrolment::accept_tpm_hash_algs`].
    pub accept_tpm_hash_algs: Vec<String>,
    /// See [`Enrolment::accept_tpm_encryption_algs`].
    pub accept_tpm_encryption_algs: Vec<String>,
    /// See [`Enrolment::accept_tpm_signing_algs`].
    pub accept_tpm_signing_algs: Vec<String>,
    /// See [`Enrolment::supported_version`].
    pub supported_version: String,
    /// See [`Enrolment::ak_tpm`].
    pub ak_tpm: Vec<u8>,
    /// See [`Enrolment::mtls_cert`].
    pub mtls_cert: Option<String>,
    /// See [`Enrolment::hardware_class`].
    pub hardware_class: Option<String>,
    /// See [`Enrolment::labels`].
    pub labels: BTreeMap<String, String>,
    /// See [`Enrolment::class_since`].
    pub class_since: i64,
}

/// The algorithms of the last quote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuoteAlgs {
    /// Hash algorithm (`""` until the first quote).
    pub hash_alg: String,
    /// Encryption algorithm.
    pub enc_alg: String,
    /// Signing algorithm.
    pub sign_alg: String,
}

/// The attestation state of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    /// Keylime's operational state, 0–10 (compat §6.1).
    pub operational_state: u8,
    /// Algorithms of the last quote.
    pub algs: QuoteAlgs,
    /// The agent's boot time as last seen (epoch seconds; 0 = unknown). A change means
    /// a reboot: the IMA progress restarts.
    pub boottime: i64,
    /// Where incremental IMA attestation resumes.
    pub ima: ImaProgress,
    /// IMA keyrings learned from the log, JSON text.
    pub learned_ima_keyrings: Option<String>,
    /// The last quote's TPMS_CLOCK_INFO, JSON text.
    pub tpm_clockinfo: Option<String>,
    /// Highest severity seen (index into the severity labels), if any failure.
    pub severity_level: Option<u8>,
    /// Event id of the failure that set `severity_level`.
    pub last_event_id: Option<String>,
    /// Successful attestations.
    pub attestation_count: u64,
    /// When the last quote arrived (epoch seconds, 0 = never).
    pub last_received_quote: i64,
    /// When the last attestation succeeded (epoch seconds, 0 = never).
    pub last_successful_attestation: i64,
    /// Push mode: whether attestations are accepted.
    pub accept_attestations: bool,
    /// Failed attestations since the last success.
    pub consecutive_attestation_failures: u64,
    /// The failures of the last failed round, in order.
    pub last_failures: Vec<FailureRecord>,
    /// The verifier engine's full per-node snapshot (JSON text), if a round was
    /// recorded with one: restored as is after a restart.
    pub engine_state: Option<String>,
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// The evidence verified: `attestation_count` + 1, failures since success reset.
    Passed {
        /// When (epoch seconds): becomes `last_successful_attestation`.
        at: i64,
    },
    /// The evidence failed verification: these failures replace the stored list.
    Failed {
        /// The round's failures, in order.
        failures: Vec<FailureRecord>,
    },
    /// No verdict (no quote, communication failure): counters untouched.
    NoVerdict,
}

/// One round to record with [`VerifierAgents::record_rounds`].
#[derive(Debug, Clone)]
pub struct RoundWrite {
    /// The agent the round is of.
    pub agent_id: String,
    /// What the round changed.
    pub update: RoundUpdate,
    /// The lease the write is fenced by, when replicas share the database.
    pub fence: Option<Fence>,
}

/// The result of one attestation round, written atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundUpdate {
    /// The new operational state.
    pub operational_state: u8,
    /// How the round ended.
    pub outcome: RoundOutcome,
    /// When a quote arrived in this round (epoch seconds), if one did.
    pub received_quote_at: Option<i64>,
    /// The algorithms of the quote, if one arrived.
    pub algs: Option<QuoteAlgs>,
    /// The new IMA progress (replaces next entry and every bank), if it moved.
    pub ima: Option<ImaProgress>,
    /// The agent's boot time, if observed.
    pub boottime: Option<i64>,
    /// The quote's clock info, JSON text, if observed.
    pub tpm_clockinfo: Option<String>,
    /// The learned keyrings, JSON text, if they changed.
    pub learned_ima_keyrings: Option<String>,
    /// A new `(severity_level, last_event_id)`, if the core's severity gating says to
    /// store one (Keylime writes it only when severity rises).
    pub severity: Option<(u8, String)>,
    /// The node's payload public key (PEM), if the round received a new one.
    pub public_key: Option<String>,
    /// The engine's snapshot (JSON text) after the round, if the caller keeps one.
    pub engine_state: Option<String>,
    /// Integrity events the round made, queued in the outbox with it.
    pub events: Vec<crate::NewEvent>,
    /// When the round was recorded (epoch seconds): the events' queue time.
    pub at: i64,
}

impl RoundUpdate {
    /// A round that only sets the operational state (stop, reactivate, terminate).
    pub fn state_only(operational_state: u8) -> Self {
        Self {
            operational_state,
            outcome: RoundOutcome::NoVerdict,
            received_quote_at: None,
            algs: None,
            ima: None,
            boottime: None,
            tpm_clockinfo: None,
            learned_ima_keyrings: None,
            severity: None,
            public_key: None,
            engine_state: None,
            events: Vec::new(),
            at: 0,
        }
    }
}

/// Persistence of verifier enrolments and attestation state.
#[async_trait]
pub trait VerifierAgents: Send + Sync {
    /// Enrols an agent, creating an inline policy in the same transaction.
    /// [`StoreError::AlreadyExists`] if the agent (or an inline policy's name) exists,
    /// [`StoreError::NotFound`] if a named policy does not; nothing is written then.
    async fn enrol(&self, enrolment: Enrolment) -> Result<(), StoreError>;

    /// The agent with its state, or `None`.
    async fn get(&self, agent_id: &str) -> Result<Option<VerifierAgent>, StoreError>;

    /// What the status answers of agents need, in one query, sorted by id: every agent,
    /// or those of `verifier_id`, or the one `agent_id`.
    async fn statuses(
        &self,
        verifier_id: Option<&str>,
        agent_id: Option<&str>,
    ) -> Result<Vec<AgentStatusRecord>, StoreError>;

    /// Agent ids, sorted; only those of `verifier_id` if given.
    async fn list(&self, verifier_id: Option<&str>) -> Result<Vec<String>, StoreError>;

    /// Records a round's result in one transaction. With a `fence`, the write happens
    /// only while that lease is still the current one ([`StoreError::LeaseLost`]
    /// otherwise). [`StoreError::NotFound`] if the agent is gone.
    async fn record_round(
        &self,
        agent_id: &str,
        update: RoundUpdate,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;

    /// Records several rounds (of different agents) in one transaction, as
    /// [`record_round`](Self::record_round) would one by one — one commit for many
    /// rounds is what lets one verifier keep up with thousands of nodes. Each round
    /// gets its own result, in `batch`'s order: a round whose lease moved or whose
    /// agent is gone is not written while the others are; on a database error every
    /// round is tried again in a transaction of its own.
    async fn record_rounds(&self, batch: Vec<RoundWrite>) -> Vec<Result<(), StoreError>>;

    /// Sets the agent's hardware class (`Some(None)` clears it; `class_since` becomes
    /// `at`) and replaces its labels, each only when given. [`StoreError::NotFound`]
    /// if the agent or the class is missing; nothing is written then.
    async fn set_class_and_labels(
        &self,
        agent_id: &str,
        hardware_class: Option<Option<&str>>,
        labels: Option<&BTreeMap<String, String>>,
        at: i64,
    ) -> Result<(), StoreError>;

    /// Ids of the agents whose labels include every `(key, value)` of `selector`,
    /// sorted (every agent for an empty selector).
    async fn with_labels(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, StoreError>;

    /// Deletes the agent, its IMA progress, failures and lease, and (as Keylime) the
    /// runtime and measured-boot policies named after it that no other agent uses.
    /// [`StoreError::NotFound`] if there is no such agent.
    async fn delete(&self, agent_id: &str) -> Result<(), StoreError>;
}

/// Encodes labels as the JSON object text stored in their column (NULL for none).
pub(crate) fn encode_labels(labels: &BTreeMap<String, String>) -> Option<String> {
    (!labels.is_empty()).then(|| {
        serde_json::Value::from_iter(
            labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))),
        )
        .to_string()
    })
}

/// Decodes a labels column.
pub(crate) fn decode_labels(text: Option<&str>) -> Result<BTreeMap<String, String>, StoreError> {
    text.map_or(Ok(BTreeMap::new()), |t| {
        serde_json::from_str(t).map_err(|e| StoreError::InvalidValue {
            field: "labels",
            reason: format!("not a JSON object of strings: {e}"),
        })
    })
}

/// Encodes an algorithm list as the JSON array text stored in its column.
pub(crate) fn encode_list(list: &[String]) -> String {
    serde_json::Value::from(list.to_vec()).to_string()
}

/// Decodes an algorithm-list column.
pub(crate) fn decode_list(field: &'static str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::InvalidValue {
        field,
        reason: format!("not a JSON array of strings: {e}"),
    })
}

/// The counter changes a round outcome makes, as bind values.
pub(crate) struct RoundCounts {
    pub(crate) passed: i64,
    pub(crate) passed_at: Option<i64>,
    pub(crate) reset_failures: bool,
    pub(crate) failed: i64,
}

impl RoundCounts {
    pub(crate) fn of(o: &RoundOutcome) -> Self {
        match o {
            RoundOutcome::Passed { at } => Self {
                passed: 1,
                passed_at: Some(*at),
                reset_failures: true,
                failed: 0,
            },
            RoundOutcome::Failed { .. } => Self {
                passed: 0,
                passed_at: None,
                reset_failures: false,
                failed: 1,
            },
            RoundOutcome::NoVerdict => Self {
                passed: 0,
                passed_at: None,
                reset_failures: false,
                failed: 0,
            },
        }
    }
}
