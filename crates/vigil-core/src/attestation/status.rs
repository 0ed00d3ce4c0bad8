//! The agent status object of `GET /v2.x/agents/{id}` (Keylime's `process_get_status`,
//! compat §6.3), every field in Keylime's order, plus Vigil's additions under one
//! `vigil` key that Keylime clients ignore.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::node::{NodeAttestation, Reachability};
use super::severity::RatedEvent;
use super::state::{AttestationStatus, OperationalState};
use super::time::UnixTime;

/// The enrolment fields the status object shows; they live in the store, not in the
/// engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusEnrolment {
    /// The V key half (base64), shown as is (admin-only route).
    pub v: Option<String>,
    /// The node's address.
    pub ip: Option<String>,
    /// The node's port.
    pub port: Option<u16>,
    /// The tpm_policy, JSON text with `mask`.
    pub tpm_policy: String,
    /// Metadata, JSON text.
    pub meta_data: String,
    /// Whether a measured-boot policy is stored.
    pub has_mb_refstate: bool,
    /// Whether a non-empty runtime policy is stored (generator above the empty one).
    pub has_runtime_policy: bool,
    /// Accepted hash algorithms.
    pub accept_tpm_hash_algs: Vec<String>,
    /// Accepted encryption algorithms.
    pub accept_tpm_encryption_algs: Vec<String>,
    /// Accepted signing algorithms.
    pub accept_tpm_signing_algs: Vec<String>,
    /// The owning verifier's id.
    pub verifier_id: String,
    /// Its address.
    pub verifier_ip: String,
    /// Its port.
    pub verifier_port: u16,
}

/// Vigil's additions to the status object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VigilStatus {
    /// Keylime's name of the state (`GET_QUOTE`).
    pub state_name: &'static str,
    /// Whether the node answers: an unreachable node is not an untrusted one.
    pub reachability: Reachability,
    /// The failures of the last failed round, highest-severity first in Keylime's
    /// order of discovery (event id, label, context).
    pub last_failures: Vec<RatedEvent>,
    /// Events of that round not kept.
    pub last_failures_omitted: u64,
    /// The next IMA entry the verifier will ask for.
    pub ima_next_entry: u64,
    /// No successful round within the verifier's staleness limit: the node is not
    /// currently attested, whatever its state says ([`NodeStatus::with_staleness`]).
    pub stale: bool,
}

/// The status object. Serialise it for the `results` of the response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeStatus {
    /// State number.
    pub operational_state: OperationalState,
    /// The V key half.
    pub v: Option<String>,
    /// Node address.
    pub ip: Option<String>,
    /// Node port.
    pub port: Option<u16>,
    /// PCR policy, JSON text.
    pub tpm_policy: String,
    /// Metadata, JSON text.
    pub meta_data: String,
    /// 1 if a measured-boot policy is stored.
    pub has_mb_refstate: u8,
    /// 1 if a runtime policy is stored.
    pub has_runtime_policy: u8,
    /// Accepted hash algorithms.
    pub accept_tpm_hash_algs: Vec<String>,
    /// Accepted encryption algorithms.
    pub accept_tpm_encryption_algs: Vec<String>,
    /// Accepted signing algorithms.
    pub accept_tpm_signing_algs: Vec<String>,
    /// Last quote's hash algorithm (`""` before the first).
    pub hash_alg: String,
    /// Last quote's encryption algorithm.
    pub enc_alg: String,
    /// Last quote's signing algorithm.
    pub sign_alg: String,
    /// Owning verifier.
    pub verifier_id: String,
    /// Its address.
    pub verifier_ip: String,
    /// Its port.
    pub verifier_port: u16,
    /// Highest severity level so far (`null` before any failure).
    pub severity_level: Option<u8>,
    /// The event that set it.
    pub last_event_id: Option<String>,
    /// Successful rounds.
    pub attestation_count: u64,
    /// Epoch seconds, 0 = never.
    pub last_received_quote: u64,
    /// Epoch seconds, 0 = never.
    pub last_successful_attestation: u64,
    /// `PASS`/`FAIL`/`PENDING`.
    pub attestation_status: AttestationStatus,
    /// `"2s"`.
    pub attestation_period: String,
    /// `"10s"`.
    pub maximum_attestation_interval: String,
    /// Vigil's additions; absent when built with [`NodeStatus::keylime_only`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vigil: Option<VigilStatus>,
}

impl NodeStatus {
    /// The status of `node` enrolled as `enrolment`, with Vigil's additions.
    pub fn new(enrolment: StatusEnrolment, node: &NodeAttestation) -> Self {
        let config = node.config();
        let algs = node.algs().clone();
        let state = node.state();
        Self {
            operational_state: state,
            v: enrolment.v,
            ip: enrolment.ip,
            port: enrolment.port,
            tpm_policy: enrolment.tpm_policy,
            meta_data: enrolment.meta_data,
            has_mb_refstate: u8::from(enrolment.has_mb_refstate),
            has_runtime_policy: u8::from(enrolment.has_runtime_policy),
            accept_tpm_hash_algs: enrolment.accept_tpm_hash_algs,
            accept_tpm_encryption_algs: enrolment.accept_tpm_encryption_algs,
            accept_tpm_signing_algs: enrolment.accept_tpm_signing_algs,
            hash_alg: algs.hash_alg,
            enc_alg: algs.enc_alg,
            sign_alg: algs.sign_alg,
            verifier_id: enrolment.verifier_id,
            verifier_ip: enrolment.verifier_ip,
            verifier_port: enrolment.verifier_port,
            severity_level: node.severity_level(),
            last_event_id: node.last_event_id().map(str::to_string),
            attestation_count: node.attestation_count(),
            last_received_quote: node.last_received_quote(),
            last_successful_attestation: node.last_successful_attestation(),
            attestation_status: state.attestation_status(),
            attestation_period: config.attestation_period(),
            maximum_attestation_interval: config.maximum_attestation_interval(),
            vigil: Some(VigilStatus {
                state_name: state.name(),
                reachability: node.reachability(),
                last_failures: node.last_failures().to_vec(),
                last_failures_omitted: node.last_failures_omitted(),
                ima_next_entry: node.ima_state().next_entry,
                stale: false,
            }),
        }
    }

    /// Marks a node whose last successful round is older than `limit` at `now` as not
    /// currently attested: a `PASS` becomes `TIMEOUT` (Keylime's value for "no
    /// attestation within the allowed interval") and `vigil.stale` is set. A node whose
    /// polling stalled for any reason (a replica that stopped attesting it, a node that
    /// keeps timing out) is then never reported as passing.
    pub fn with_staleness(mut self, now: UnixTime, limit: Duration) -> Self {
        let age = now
            .as_secs()
            .saturating_sub(self.last_successful_attestation);
        let stale = self.attestation_status == AttestationStatus::Pass && age > limit.as_secs();
        if stale {
            self.attestation_status = AttestationStatus::Timeout;
            if let Some(v) = &mut self.vigil {
                v.stale = true;
            }
        }
        self
    }

    /// Without Vigil's additions: exactly Keylime's fields.
    pub fn keylime_only(mut self) -> Self {
        self.vigil = None;
        self
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
