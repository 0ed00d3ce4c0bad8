//! One round's evidence, from the node's JSON answer to a [`RoundOutcome`]: the answer
//! is read into a [`QuoteAnswer`], and everything else is `vigil-core`'s —
//! [`evaluate_round`] (quote, PCRs, IMA) and the measured-boot replay and policy
//! (`eventlog`, `policy::measured_boot`). No I/O: the benchmark calls it directly.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde_json::Value;
use vigil_core::attestation::{
    evaluate_round, NodeAttestation, QuoteAnswer, RoundOutcome, RoundPolicy,
};
use vigil_core::eventlog;
use vigil_core::failure::{Component, Event};
use vigil_core::ima::keyring::ImaKeyrings;
use vigil_core::policy::measured_boot::{bootlog_evaluate, LogView, MbPolicy};
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::{MeasuredBootPcrs, TpmPolicy, MEASURED_BOOT_PCRS};
use vigil_core::tpm::quote::QuoteVerifier;
use vigil_core::{Digest, HashAlg};

/// The `results` of a `quotes/integrity` answer, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// `quote`.
    pub quote: String,
    /// `pubkey`, absent in a partial answer.
    pub pubkey: Option<String>,
    /// `hash_alg`.
    pub hash_alg: String,
    /// `enc_alg`.
    pub enc_alg: String,
    /// `sign_alg`.
    pub sign_alg: String,
    /// `ima_measurement_list`.
    pub ima_measurement_list: Option<String>,
    /// `ima_measurement_list_entry` (0 when absent).
    pub ima_measurement_list_entry: u64,
    /// `boottime` (0 when absent).
    pub boottime: u64,
    /// `mb_measurement_list`: base64 of the binary UEFI event log.
    pub mb_measurement_list: Option<String>,
}

/// Reads the node's answer body (`{"code","status","results":{…}}`). An error is
/// Keylime's `exception` event (the answer is unusable).
pub fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let r = v
        .get("results")
        .and_then(Value::as_object)
        .ok_or("answer has no results object")?;
    let s = |k: &str| -> Result<Option<String>, String> {
        match r.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("results.{k} is not a string")),
        }
    };
    let n = |k: &str| -> Result<u64, String> {
        match r.get(k) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("results.{k} is not a non-negative integer")),
        }
    };
    Ok(Answer {
        quote: s("quote")?.ok_or("results.quote is missing")?,
        pubkey: s("pubkey")?,
        hash_alg: s("hash_alg")?.unwrap_or_default(),
        enc_alg: s("enc_alg")?.unwrap_or_default(),
        sign_alg: s("sign_alg")?.unwrap_or_default(),
        ima_measurement_list: s("ima_measurement_list")?,
        ima_measurement_list_entry: n("ima_measurement_list_entry")?,
        boottime: n("boottime")?,
        mb_measurement_list: s("mb_measurement_list")?,
    })
}

/// What a node's answers are judged against.
#[derive(Clone, Copy)]
pub struct Judge<'a> {
    /// The AK's verifier.
    pub verifier: &'a QuoteVerifier,
    /// The PCR policy.
    pub tpm_policy: &'a TpmPolicy,
    /// The PCR mask the quote was requested with.
    pub mask: u32,
    /// The runtime policy, if any.
    pub runtime_policy: Option<&'a RuntimePolicy>,
    /// The measured-boot policy and reference state, if the node has a non-empty one.
    pub mb: Option<(MbPolicy, &'a Value)>,
    /// Whether the measured-boot policy is evaluated this round (`once`/`always`).
    pub mb_evaluate_now: bool,
    /// `accept_tpm_hash_algs`.
    pub accept_hash_algs: &'a [String],
    /// `accept_tpm_encryption_algs`.
    pub accept_enc_algs: &'a [String],
    /// `accept_tpm_signing_algs`.
    pub accept_sign_algs: &'a [String],
    /// `ignore_tomtou_errors`.
    pub ignore_tomtou_errors: bool,
}

fn mb_event(sub: &[&str], name: &str, message: String) -> Event {
    Event::new(
        Component::MeasuredBoot,
        sub,
        name,
        Event::message(message),
        true,
    )
}

/// Judges one answer of `node` to a request made with `nonce`.
pub fn judge(
    node: &NodeAttestation,
    answer: &Answer,
    nonce: &[u8],
    j: &Judge<'_>,
    keyrings: &mut ImaKeyrings,
) -> RoundOutcome {
    let mut mb_failure = vigil_core::failure::Failure::new();
    let bank = HashAlg::from_name(&answer.hash_alg);
    // The UEFI log, when sent: replayed PCRs (for the PCR comparison and IMA's
    // boot_aggregate) and the view the measured-boot policy reads.
    let mut replayed: Option<BTreeMap<u32, Digest>> = None;
    let mut aggregates: Vec<Digest> = Vec::new();
    let mut view: Option<LogView> = None;
    if let Some(b64) = &answer.mb_measurement_list {
        match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            Err(e) => mb_failure.push(mb_event(
                &["parser", "log"],
                "base64decode",
                format!("the event log is not base64: {e}"),
            )),
            Ok(bytes) => match eventlog::parse(&bytes) {
                Err(e) => mb_failure.push(mb_event(
                    &["parser", "tpm2_eventlog"],
                    "error",
                    format!("the event log cannot be parsed: {e}"),
                )),
                Ok(log) => {
                    let banks = log.replay();
                    aggregates = eventlog::boot_aggregates(&banks)
                        .into_values()
                        .flatten()
                        .collect();
                    replayed = bank.and_then(|b| banks.get(&b).cloned());
                    if j.mb.is_some() && j.mb_evaluate_now {
                        view = Some(LogView::new(&log));
                    }
                }
            },
        }
    }
    let relevant: BTreeSet<u32> = match j.mb {
        Some((policy, _)) => {
            let r = policy.relevant_pcrs();
            MEASURED_BOOT_PCRS
                .into_iter()
                .filter(|p| r.is_empty() || r.contains(p))
                .collect()
        }
        None => BTreeSet::new(),
    };
    let measured_boot = j.mb.map(|_| MeasuredBootPcrs {
        relevant: &relevant,
        replayed: replayed.as_ref(),
    });
    let policy = RoundPolicy {
        verifier: j.verifier,
        nonce,
        accept_hash_algs: j.accept_hash_algs,
        accept_enc_algs: j.accept_enc_algs,
        accept_sign_algs: j.accept_sign_algs,
        tpm_policy: j.tpm_policy,
        runtime_policy: j.runtime_policy,
        boot_aggregates: &aggregates,
        measured_boot,
        ignore_tomtou_errors: j.ignore_tomtou_errors,
    };
    let qa = QuoteAnswer {
        quote: &answer.quote,
        public_key: answer.pubkey.as_deref(),
        hash_alg: &answer.hash_alg,
        enc_alg: &answer.enc_alg,
        sign_alg: &answer.sign_alg,
        ima_measurement_list: answer.ima_measurement_list.as_deref(),
        ima_measurement_list_entry: answer.ima_measurement_list_entry,
        boottime: answer.boottime,
    };
    let mut outcome = evaluate_round(node, &qa, &policy, keyrings);
    // The policy runs on a verified quote only (the clock is set once it verified).
    if let (Some((mb_policy, refstate)), Some(view), true) =
        (j.mb, view.as_ref(), outcome.clock_info.is_some())
    {
        let quoted: BTreeSet<u32> = (0..24)
            .filter(|i| j.mask & (1 << i) != 0)
            .chain([vigil_core::policy::tpm::DATA_PCR])
            .collect();
        mb_failure.merge(bootlog_evaluate(mb_policy, refstate, view, &quoted));
    }
    if !mb_failure.is_empty() && !outcome.rebooted {
        outcome.failure.merge(mb_failure);
    }
    outcome
}
