//! A node's state as the store's rows, and back: the one place that maps a
//! [`NodeAttestation`] to a [`RoundUpdate`] and restores one from a stored record.

use std::sync::Arc;

use vigil_core::attestation::{
    AttestationConfig, NodeAttestation, NodeSnapshot, OperationalState, UnixTime,
};
use vigil_core::events::{BootMark, Difference};
use vigil_store::{
    AgentStatusRecord, FailureRecord, ImaProgress, QuoteAlgs, RoundUpdate, VerifierAgent,
};

/// A stored node as its state machine: restored from its snapshot, or (a record
/// written before any round) created as enrolled. `fresh` says it was created, so the
/// caller starts polling it unless the tenant stopped it.
pub(crate) struct Restored {
    pub(crate) node: NodeAttestation,
    pub(crate) fresh: bool,
    /// The snapshot it was restored from (what the store holds): a node restored
    /// unchanged needs no write before its first round.
    pub(crate) stored: Option<NodeSnapshot>,
}

/// A node as stored: what its state machine is restored from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredNode<'a> {
    /// The state machine's snapshot (JSON), if a round was recorded with one.
    pub(crate) engine_state: Option<&'a str>,
    /// Keylime's operational state column.
    pub(crate) operational_state: u8,
    /// The enrolment's V (base64), if any.
    pub(crate) v: Option<&'a str>,
}

impl<'a> From<&'a VerifierAgent> for StoredNode<'a> {
    fn from(agent: &'a VerifierAgent) -> Self {
        Self {
            engine_state: agent.state.engine_state.as_deref(),
            operational_state: agent.state.operational_state,
            v: agent.enrolment.v.as_deref(),
        }
    }
}

impl<'a> From<&'a AgentStatusRecord> for StoredNode<'a> {
    fn from(record: &'a AgentStatusRecord) -> Self {
        Self {
            engine_state: record.engine_state.as_deref(),
            operational_state: record.operational_state,
            v: record.enrolment.v.as_deref(),
        }
    }
}

/// Restores the state machine of a stored node as of `now`.
pub(crate) fn restore(
    attestation: &Arc<AttestationConfig>,
    stored: StoredNode<'_>,
    now: UnixTime,
) -> Restored {
    let snapshot = stored
        .engine_state
        .and_then(|s| serde_json::from_str::<NodeSnapshot>(s).ok());
    if let Some(snap) = snapshot {
        return Restored {
            node: NodeAttestation::restore(attestation.clone(), snap.clone(), now),
            fresh: false,
            stored: Some(snap),
        };
    }
    let v_present = stored.v.is_some_and(|v| !v.is_empty());
    let mut node = NodeAttestation::new(attestation.clone(), v_present);
    let stopped = OperationalState::from_code(u64::from(stored.operational_state))
        .is_ok_and(|s| s == OperationalState::TenantFailed);
    if stopped {
        // Cannot be ignored: a new node is not terminated.
        let _ = node.stop(now);
    }
    Restored {
        node,
        fresh: true,
        stored: None,
    }
}

/// What the store holds for a node, as last written by its task: a write is skipped
/// when nothing changed, and the keyrings are written only when they changed.
#[derive(Default)]
pub(crate) struct Written {
    pub(crate) snapshot: Option<NodeSnapshot>,
    pub(crate) learned_keyrings: Option<String>,
}

/// What one input changed besides the state machine, for the store.
#[derive(Default)]
pub(crate) struct RoundNote {
    /// When a quote was received (seconds).
    pub(crate) quote_at: Option<i64>,
    /// The round's verdict, when it had one (a reboot round has none).
    pub(crate) verdict: Option<bool>,
    /// The failing events of a failed round.
    pub(crate) failures: Option<Vec<FailureRecord>>,
    /// Changed measurements a relearn rule adopted while judging the round.
    pub(crate) relearned: Option<Adopted>,
    /// A relearn rule matched but not every change was covered: the rule, and the
    /// values no known-good set covers.
    pub(crate) relearn_refused: Option<(String, Vec<Difference>)>,
}

/// Measurements adopted by a relearn: the node's new policies, to store.
#[derive(Debug)]
pub(crate) struct Adopted {
    /// The rule that asked for it.
    pub(crate) rule: String,
    /// The known-good sets that cover the changes.
    pub(crate) sets: Vec<String>,
    /// The changes adopted.
    pub(crate) changes: Vec<Difference>,
    /// The new TPM policy (JSON text).
    pub(crate) tpm_policy: String,
    /// The new runtime policy (JSON text), when files changed.
    pub(crate) runtime_policy: Option<String>,
}

impl RoundNote {
    /// The failing events of the node's last round, as the store records them.
    pub(crate) fn failures_of(node: &NodeAttestation) -> Vec<FailureRecord> {
        node.last_failures()
            .iter()
            .map(|f| FailureRecord {
                event_id: f.event_id.clone(),
                severity_label: Some(f.severity_label.clone()),
                recoverable: f.recoverable,
                context: f.context.to_string(),
                file: f.file.clone(),
            })
            .collect()
    }
}

/// The update to write after an input, or `None` when nothing changed since `last`.
/// `keyrings` are the node's learnt IMA keyrings in Keylime's JSON: they are written
/// with the IMA offset they belong to, in the same transaction, so a restart resumes
/// the log with the keys its earlier entries taught.
pub(crate) fn round_update(
    snap: &NodeSnapshot,
    last: &Written,
    note: RoundNote,
    keyrings: &str,
) -> Option<RoundUpdate> {
    let keyrings_changed = last.learned_keyrings.as_deref().unwrap_or("{}") != keyrings;
    if last.snapshot.as_ref() == Some(snap) && note.quote_at.is_none() && !keyrings_changed {
        return None;
    }
    let prev = last.snapshot.as_ref();
    let outcome = match (note.verdict, note.failures) {
        (Some(true), _) => vigil_store::RoundOutcome::Passed {
            at: i64::try_from(snap.last_successful_attestation).unwrap_or(i64::MAX),
        },
        (Some(false), Some(failures)) => vigil_store::RoundOutcome::Failed { failures },
        _ => vigil_store::RoundOutcome::NoVerdict,
    };
    let ima_changed = prev.is_none_or(|p| p.ima != snap.ima || p.ima_bank != snap.ima_bank);
    let ima = ima_changed.then(|| ImaProgress {
        next_entry: snap.ima.next_entry,
        running_pcrs: match (snap.ima_bank, snap.ima.running_pcr) {
            (Some(bank), Some(pcr)) => [(bank.name().to_owned(), pcr.as_bytes().to_vec())].into(),
            _ => Default::default(),
        },
    });
    let severity = (prev.is_none_or(|p| p.severity_level != snap.severity_level))
        .then(|| snap.severity_level.zip(snap.last_event_id.clone()))
        .flatten();
    Some(RoundUpdate {
        operational_state: snap.operational_state.code(),
        outcome,
        received_quote_at: note.quote_at,
        algs: (!snap.algs.hash_alg.is_empty()).then(|| QuoteAlgs {
            hash_alg: snap.algs.hash_alg.clone(),
            enc_alg: snap.algs.enc_alg.clone(),
            sign_alg: snap.algs.sign_alg.clone(),
        }),
        ima,
        boottime: i64::try_from(snap.ima.boottime).ok(),
        tpm_clockinfo: snap
            .tpm_clockinfo
            .as_ref()
            .and_then(|c| serde_json::to_string(c).ok()),
        learned_ima_keyrings: keyrings_changed.then(|| keyrings.to_owned()),
        severity,
        public_key: snap.public_key.clone(),
        engine_state: serde_json::to_string(snap).ok(),
        events: Vec::new(),
        at: 0,
    })
}

/// What a node's boot is recognised by in its snapshot: the IMA boot time and the TPM
/// reset count of the last verified quote.
pub(crate) fn boot_mark(snap: &NodeSnapshot) -> BootMark {
    BootMark {
        boottime: snap.ima.boottime,
        reset_count: snap.tpm_clockinfo.as_ref().map(|c| c.reset_count),
    }
}

/// The node's verdict as the store last recorded it: failed while failures since the
/// last success are counted, passed once it ever passed, none before its first verdict.
pub(crate) fn stored_verdict(state: &vigil_store::AgentState) -> Option<bool> {
    if state.consecutive_attestation_failures > 0 {
        Some(false)
    } else if state.attestation_count > 0 {
        Some(true)
    } else {
        None
    }
}

/// The update recording a tenant's decision about a node no task attests here.
pub(crate) fn state_only(node: &NodeAttestation) -> RoundUpdate {
    RoundUpdate {
        engine_state: serde_json::to_string(&node.snapshot()).ok(),
        ..RoundUpdate::state_only(node.state().code())
    }
}
