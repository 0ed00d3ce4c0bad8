//! [`evaluate_round`]: one node answer checked into a [`RoundOutcome`], in Keylime's
//! order (`process_quote_response` then `check_quote`, compat §3.3), from the node's
//! stored state (IMA offset and running PCR, the last accepted clock, the cached
//! public key), measured boot included: the UEFI event log is replayed for the PCR
//! comparison and IMA's `boot_aggregate`, and the measured-boot policy runs on it.
//!
//! This is the one evaluation of evidence in Vigil: the verifier's polling rounds and
//! its one-shot `verify/evidence` both call it, so both give the same event ids.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde_json::{json, Value};

use super::node::{NodeAttestation, QuoteAlgs, RoundOutcome};
use crate::eventlog;
use crate::failure::{Component, Event, Failure};
use crate::hash::{Digest, HashAlg};
use crate::ima::keyring::ImaKeyrings;
use crate::ima::validate::PolicyValidator;
use crate::ima::{process_measurement_list, AcceptAll, BatchStart, ImaConfig, IMA_PCR};
use crate::policy::golden::GoldenPcrs;
use crate::policy::measured_boot::{bootlog_evaluate, LogView, MbPolicy};
use crate::policy::runtime::RuntimePolicy;
use crate::policy::tpm::{
    check_pcrs, ImaPcr, MeasuredBootPcrs, PcrCheck, TpmPolicy, MEASURED_BOOT_PCRS,
};
use crate::tpm::quote::{KeylimeQuote, QuoteVerifier};

/// The node's answer to `quotes/integrity`, as fields of its JSON `results`.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuoteAnswer<'a> {
    /// `quote`: Keylime's quote string (`r…:…:…`).
    pub quote: &'a str,
    /// `pubkey`, absent in a partial answer.
    pub public_key: Option<&'a str>,
    /// `hash_alg`.
    pub hash_alg: &'a str,
    /// `enc_alg`.
    pub enc_alg: &'a str,
    /// `sign_alg`.
    pub sign_alg: &'a str,
    /// `ima_measurement_list`, if sent.
    pub ima_measurement_list: Option<&'a str>,
    /// `ima_measurement_list_entry` (0 when absent).
    pub ima_measurement_list_entry: u64,
    /// `boottime` (0 when absent; rust-keylime never sends it).
    pub boottime: u64,
    /// `mb_measurement_list`: base64 of the binary UEFI event log, if sent.
    pub mb_measurement_list: Option<&'a str>,
}

/// The measured-boot policy a node is judged against.
#[derive(Clone, Copy, Debug)]
pub struct MeasuredBootPolicy<'a> {
    /// Which policy (the verifier's `measured_boot_policy_name`).
    pub policy: MbPolicy,
    /// The node's reference state (a non-empty one: an empty state means no policy).
    pub refstate: &'a Value,
    /// Whether the policy itself runs this round (`measured_boot_evaluate`: `once`
    /// until the first successful attestation, or `always`); the replayed PCRs are
    /// compared with the quote every round.
    pub evaluate_now: bool,
}

/// What the answer is judged against.
#[derive(Clone, Copy)]
pub struct RoundPolicy<'a> {
    /// Verifies quotes of the node's AK (built once from `ak_tpm`).
    pub verifier: &'a QuoteVerifier,
    /// The nonce sent with the request.
    pub nonce: &'a [u8],
    /// `accept_tpm_hash_algs`; `None` accepts every hash algorithm Vigil knows.
    pub accept_hash_algs: Option<&'a [String]>,
    /// `accept_tpm_encryption_algs`; `None` does not check the answer's `enc_alg`.
    pub accept_enc_algs: Option<&'a [String]>,
    /// `accept_tpm_signing_algs`; `None` does not check the answer's `sign_alg`.
    pub accept_sign_algs: Option<&'a [String]>,
    /// Whether PCR 16 must bind the node's public key (sent or cached), as in every
    /// polling round. `verify/evidence` has no key to bind and turns it off.
    pub bind_public_key: bool,
    /// The PCRs the verifier asked the node to quote (a bit per PCR, as the request's
    /// `mask`). Each must be in the quote (`pcr_validation.missing_requested_pcrs`); 0
    /// requires none (evidence that answers no request).
    pub requested_pcrs: u32,
    /// The PCR policy.
    pub tpm_policy: &'a TpmPolicy,
    /// The runtime policy; `None` accepts every IMA entry (replay only).
    pub runtime_policy: Option<&'a RuntimePolicy>,
    /// The measured-boot policy, when the node has a non-empty reference state.
    pub measured_boot: Option<MeasuredBootPolicy<'a>>,
    /// The verifier's `ignore_tomtou_errors`.
    pub ignore_tomtou_errors: bool,
    /// The golden PCR values of the node's hardware class, checked against every
    /// verified quote besides the node's own policies (Vigil's trust gate). The
    /// verifier requests their PCRs too.
    pub golden: Option<&'a GoldenPcrs>,
}

/// Keylime's `is_accepted`: a direct match, or equal after the `ecc`→`ecc256`,
/// `rsa`→`rsa2048` aliases. `None` accepts everything.
fn is_accepted(alg: &str, accepted: Option<&[String]>) -> bool {
    let Some(accepted) = accepted else {
        return true;
    };
    fn normalize(a: &str) -> &str {
        match a {
            "ecc" => "ecc256",
            "rsa" => "rsa2048",
            other => other,
        }
    }
    accepted
        .iter()
        .any(|a| a == alg || normalize(a) == normalize(alg))
}

fn quote_event(name: &str, context: serde_json::Value) -> Event {
    Event::new(Component::QuoteValidation, &[], name, context, false)
}

fn fail(event: Event) -> RoundOutcome {
    let mut f = Failure::new();
    f.push(event);
    RoundOutcome::failed(f)
}

/// Checks one answer of `node` into a [`RoundOutcome`] for
/// [`NodeAttestation::quote_received`]:
///
/// 1. the public key must be sent or cached (`no_pubkey`), when it is bound;
/// 2. `hash_alg`, `enc_alg`, `sign_alg` must be accepted (`invalid_*_alg`);
/// 3. IMA offset: entry 0 resets, another entry than expected is
///    `invalid_ima_entry_nb`, a changed boot time skips the round ([`RoundOutcome::rebooted`]);
/// 4. the quote: signature, nonce, PCR digest, then the clock against the last accepted
///    quote (`quote_validation`; the clock only once there is one);
/// 5. every requested PCR quoted, PCR 16, IMA replay of PCR 10 from the stored running value (with the boot
///    aggregates of the UEFI log, when sent), the measured-boot PCRs against the
///    replayed log, `tpm_policy` (`check_pcrs`), then the hardware class's golden
///    values (`pcr_validation.invalid_pcr_<n>` with the class, the value quoted and
///    the allowed ones);
/// 6. on a verified quote, the measured-boot policy over the log
///    (`measured_boot.policy_*`), when it runs this round. A log that cannot be read
///    is `measured_boot.parser.log.base64decode` or `…parser.tpm2_eventlog.error`.
///
/// `keyrings` are the node's IMA keyrings; learnt keys are cleared whenever the IMA
/// state restarts from entry 0, as Keylime's `reset_ima_attestation` does.
pub fn evaluate_round(
    node: &NodeAttestation,
    answer: &QuoteAnswer<'_>,
    policy: &RoundPolicy<'_>,
    keyrings: &mut ImaKeyrings,
) -> RoundOutcome {
    evaluate_round_memo(node, answer, policy, keyrings, &mut BootLogMemo::default())
}

/// [`evaluate_round`] for a node polled round after round: `memo` keeps what the
/// node's last UEFI event log replayed to, so a log sent again unchanged (the same
/// boot) is not decoded, parsed and replayed again — it is recognised by its SHA-256.
/// The replayed PCRs are still compared with every quote; the measured-boot policy,
/// when it runs this round, reads a freshly parsed log.
pub fn evaluate_round_memo(
    node: &NodeAttestation,
    answer: &QuoteAnswer<'_>,
    policy: &RoundPolicy<'_>,
    keyrings: &mut ImaKeyrings,
    memo: &mut BootLogMemo,
) -> RoundOutcome {
    let evaluate_now = policy.measured_boot.is_some_and(|mb| mb.evaluate_now);
    let boot = BootEvidence::read(answer, evaluate_now, memo);
    let relevant: BTreeSet<u32> = match policy.measured_boot {
        Some(mb) => {
            let r = mb.policy.relevant_pcrs();
            MEASURED_BOOT_PCRS
                .into_iter()
                .filter(|p| r.is_empty() || r.contains(p))
                .collect()
        }
        None => BTreeSet::new(),
    };
    let measured_boot = policy.measured_boot.map(|_| MeasuredBootPcrs {
        relevant: &relevant,
        replayed: boot.replayed.as_ref(),
    });
    let (mut outcome, quoted) = check_quote(
        node,
        answer,
        policy,
        &boot.aggregates,
        measured_boot,
        keyrings,
    );
    let mut failure = boot.failure;
    // The policy runs on a verified quote only.
    if let (Some(mb), Some(view), Some(quoted)) = (policy.measured_boot, &boot.view, quoted) {
        failure.merge(bootlog_evaluate(mb.policy, mb.refstate, view, &quoted));
    }
    if !failure.is_empty() && !outcome.rebooted {
        outcome.failure.merge(failure);
    }
    outcome
}

/// The last UEFI event log a node sent, by digest, and what replaying it gave in the
/// answer's bank: see [`evaluate_round_memo`]. Small (a digest and a few PCRs), kept
/// per node by the verifier.
#[derive(Debug, Default, Clone)]
pub struct BootLogMemo {
    /// SHA-256 of the answer's `hash_alg`, a NUL and the log's base64 text.
    key: Option<Digest>,
    replayed: Option<PackedPcrs>,
    aggregates: Vec<Digest>,
}

/// PCR values packed end to end (each: the index, little-endian, the digest's length
/// and its bytes): eight SHA-256 PCRs take 296 bytes, where a map of full-size digests
/// took most of a KiB, for every node a verifier holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PackedPcrs(Box<[u8]>);

impl PackedPcrs {
    fn pack(pcrs: &BTreeMap<u32, Digest>) -> Self {
        let mut packed = Vec::with_capacity(pcrs.values().map(|d| 5 + d.len()).sum());
        for (index, digest) in pcrs {
            packed.extend_from_slice(&index.to_le_bytes());
            // A digest is at most 64 bytes.
            packed.push(digest.len() as u8);
            packed.extend_from_slice(digest.as_bytes());
        }
        Self(packed.into_boxed_slice())
    }

    fn unpack(&self) -> BTreeMap<u32, Digest> {
        let mut pcrs = BTreeMap::new();
        let mut rest = &self.0[..];
        while let [a, b, c, d, len, tail @ ..] = rest {
            let (digest, next) = tail.split_at(usize::from(*len));
            // Packed from digests: the length fits.
            if let Ok(digest) = Digest::from_slice(digest) {
                pcrs.insert(u32::from_le_bytes([*a, *b, *c, *d]), digest);
            }
            rest = next;
        }
        pcrs
    }
}

impl BootLogMemo {
    fn key(hash_alg: &str, b64: &str) -> Digest {
        let mut h = HashAlg::Sha256.hasher();
        h.update(hash_alg.as_bytes());
        h.update(&[0]);
        h.update(b64.as_bytes());
        h.finalize()
    }
}

/// What the UEFI event log of an answer gives the round.
#[derive(Default)]
struct BootEvidence {
    /// The replayed PCRs of the answer's bank (for the measured-boot comparison).
    replayed: Option<BTreeMap<u32, Digest>>,
    /// Every bank's boot aggregate (accepted for IMA's `boot_aggregate`).
    aggregates: Vec<Digest>,
    /// The view the measured-boot policy reads, when it runs this round.
    view: Option<LogView>,
    /// A log that cannot be read.
    failure: Failure,
}

impl BootEvidence {
    /// The answer's log: decoded, parsed and replayed, unless `memo` holds this very
    /// log and the policy does not run (`evaluate_now`), which needs the parsed log.
    fn read(answer: &QuoteAnswer<'_>, evaluate_now: bool, memo: &mut BootLogMemo) -> Self {
        let mut boot = Self::default();
        let Some(b64) = answer.mb_measurement_list else {
            return boot;
        };
        let key = BootLogMemo::key(answer.hash_alg, b64);
        if !evaluate_now && memo.key.as_ref() == Some(&key) {
            boot.replayed = memo.replayed.as_ref().map(PackedPcrs::unpack);
            boot.aggregates.clone_from(&memo.aggregates);
            return boot;
        }
        // Remembered only once the log replayed.
        memo.key = None;
        let event = |sub: &[&str], name: &str, message: String| {
            Event::new(
                Component::MeasuredBoot,
                sub,
                name,
                Event::message(message),
                true,
            )
        };
        let bytes = match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            Ok(b) => b,
            Err(e) => {
                boot.failure.push(event(
                    &["parser", "log"],
                    "base64decode",
                    format!("the event log is not base64: {e}"),
                ));
                return boot;
            }
        };
        match eventlog::parse(&bytes) {
            Err(e) => boot.failure.push(event(
                &["parser", "tpm2_eventlog"],
                "error",
                format!("the event log cannot be parsed: {e}"),
            )),
            Ok(log) => {
                let banks = log.replay();
                boot.aggregates = eventlog::boot_aggregates(&banks)
                    .into_values()
                    .flatten()
                    .collect();
                boot.replayed =
                    HashAlg::from_name(answer.hash_alg).and_then(|b| banks.get(&b).cloned());
                if evaluate_now {
                    boot.view = Some(LogView::new(&log));
                }
                *memo = BootLogMemo {
                    key: Some(key),
                    replayed: boot.replayed.as_ref().map(PackedPcrs::pack),
                    aggregates: boot.aggregates.clone(),
                };
            }
        }
        boot
    }
}

/// The event for the requested PCRs a verified quote leaves out, if any. Keylime runs
/// only the checks whose PCR is quoted, so a node that quotes a genuine selection
/// without PCR 10 (or a measured-boot PCR) skips IMA (or measured boot) and passes;
/// Vigil refuses such a quote.
fn unquoted(requested: u32, quoted: &BTreeMap<u32, Digest>) -> Option<Event> {
    let missing: Vec<u32> = (0..32)
        .filter(|pcr| requested >> pcr & 1 == 1 && !quoted.contains_key(pcr))
        .collect();
    (!missing.is_empty()).then(|| {
        Event::new(
            Component::PcrValidation,
            &[],
            "missing_requested_pcrs",
            json!({
                "message": "PCRs the verifier requested are missing in the quote",
                "data": missing,
            }),
            true,
        )
    })
}

/// Steps 1 to 5 of [`evaluate_round`]; with the outcome, the PCRs of a verified quote.
fn check_quote(
    node: &NodeAttestation,
    answer: &QuoteAnswer<'_>,
    policy: &RoundPolicy<'_>,
    boot_aggregates: &[Digest],
    measured_boot: Option<MeasuredBootPcrs<'_>>,
    keyrings: &mut ImaKeyrings,
) -> (RoundOutcome, Option<BTreeSet<u32>>) {
    let public_key = answer.public_key.or(node.public_key());
    if policy.bind_public_key && public_key.is_none() {
        return (
            fail(quote_event(
                "no_pubkey",
                Event::message(
                    "agent did not provide public key and no key or encrypted_v was cached at CV",
                ),
            )),
            None,
        );
    }
    let bank = HashAlg::from_name(answer.hash_alg)
        .filter(|_| is_accepted(answer.hash_alg, policy.accept_hash_algs));
    let Some(bank) = bank else {
        let event = quote_event(
            "invalid_hash_alg",
            json!({
                "message": format!("TPM Quote is using an unaccepted hash algorithm: {}", answer.hash_alg),
                "data": answer.hash_alg,
            }),
        );
        return (fail(event), None);
    };
    if !is_accepted(answer.enc_alg, policy.accept_enc_algs) {
        let event = quote_event(
            "invalid_enc_alg",
            json!({
                "message": format!("TPM Quote is using an unaccepted encryption algorithm: {}", answer.enc_alg),
                "data": answer.enc_alg,
            }),
        );
        return (fail(event), None);
    }
    if !is_accepted(answer.sign_alg, policy.accept_sign_algs) {
        let event = quote_event(
            "invalid_sign_alg",
            json!({
                "message": format!("TPM Quote is using an unaccepted signing algorithm: {}", answer.sign_alg),
                "data": answer.sign_alg,
            }),
        );
        return (fail(event), None);
    }
    let algs = QuoteAlgs {
        hash_alg: answer.hash_alg.to_string(),
        enc_alg: answer.enc_alg.to_string(),
        sign_alg: answer.sign_alg.to_string(),
    };

    let mut failure = Failure::new();
    let mut ima = node.ima_state().clone();
    // A running PCR from another bank cannot be continued: start the log over.
    let mut ima_bank = node.ima_bank();
    if ima_bank.is_some_and(|b| b != bank) && answer.ima_measurement_list_entry != 0 {
        ima.reset();
        ima_bank = None;
    }
    let start = ima.begin_batch(answer.ima_measurement_list_entry, answer.boottime);
    match start {
        BatchStart::Rebooted => {
            keyrings.clear_learned();
            return (RoundOutcome::rebooted(), None);
        }
        BatchStart::Fresh => keyrings.clear_learned(),
        BatchStart::Continue | BatchStart::UnexpectedEntry { .. } => {}
    }
    if let Some(event) = start.failure_event() {
        failure.push(event);
    }

    let outcome = |failure: Failure, ima, bank| {
        let outcome = RoundOutcome::failed(failure).with_algs(algs.clone());
        match public_key {
            Some(key) => outcome.with_public_key(key),
            None => outcome,
        }
        .with_ima(ima, bank)
    };

    let quote = match KeylimeQuote::parse(answer.quote) {
        Ok(q) => q,
        Err(e) => {
            failure.push(quote_event(
                "quote_validation",
                json!({"message": "Quote data validation", "error": e.to_string()}),
            ));
            return (outcome(failure, ima, ima_bank), None);
        }
    };
    let verified = match node.tpm_clockinfo() {
        Some(previous) => policy
            .verifier
            .verify_with_clock(&quote, policy.nonce, bank, previous),
        None => policy.verifier.verify(&quote, policy.nonce, bank),
    };
    let verified = match verified {
        Ok(v) => v,
        Err(f) => {
            failure.merge(f);
            return (outcome(failure, ima, ima_bank), None);
        }
    };

    let mut ima_counts = None;
    let ima_pcr = match (verified.pcrs.get(&IMA_PCR), answer.ima_measurement_list) {
        (Some(quoted), Some(list)) => {
            let mut cfg = ImaConfig::new(bank);
            cfg.ignore_tomtou_errors = policy.ignore_tomtou_errors;
            if let Some(p) = policy.runtime_policy {
                cfg.log_hash_alg = p.log_hash_alg();
            }
            let verdict = match policy.runtime_policy {
                Some(p) => process_measurement_list(
                    cfg,
                    Some(&mut ima),
                    list,
                    Some(*quoted),
                    PolicyValidator::new(p, boot_aggregates, keyrings),
                ),
                None => {
                    process_measurement_list(cfg, Some(&mut ima), list, Some(*quoted), AcceptAll)
                }
            };
            if verdict.state_reset {
                keyrings.clear_learned();
                ima_bank = None;
            } else {
                ima_bank = Some(bank);
            }
            ima_counts = Some(verdict.counts);
            ImaPcr::Checked(verdict.failure)
        }
        _ => ImaPcr::NoList,
    };
    if let Some(event) = unquoted(policy.requested_pcrs, &verified.pcrs) {
        failure.push(event);
    }
    let pcrs = check_pcrs(
        bank,
        &verified.pcrs,
        &PcrCheck {
            tpm_policy: policy.tpm_policy,
            data: public_key.filter(|_| policy.bind_public_key),
            ima: &ima_pcr,
            measured_boot,
        },
    );
    failure.merge(pcrs.failure);
    if let Some(golden) = policy.golden {
        failure.merge(golden.check(bank, &verified.pcrs));
    }
    let quoted = verified.pcrs.keys().copied().collect();
    let outcome = outcome(failure, ima, ima_bank).with_clock(verified.clock_info);
    let outcome = match ima_counts {
        Some(counts) => outcome.with_ima_counts(counts),
        None => outcome,
    };
    (outcome, Some(quoted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_b64(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/tpm2-tools")
            .join(name);
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("test log"))
    }

    fn answer(log: &str) -> QuoteAnswer<'_> {
        QuoteAnswer {
            hash_alg: "sha256",
            mb_measurement_list: Some(log),
            ..QuoteAnswer::default()
        }
    }

    #[test]
    fn packed_pcrs_unpack_to_what_was_packed() {
        let pcrs: BTreeMap<u32, Digest> = [
            (0, HashAlg::Sha256.ones()),
            (7, HashAlg::Sha1.zero()),
            (u32::MAX, HashAlg::Sha512.ones()),
        ]
        .into();
        let packed = PackedPcrs::pack(&pcrs);
        assert_eq!(packed.0.len(), 3 * 5 + 32 + 20 + 64);
        assert_eq!(packed.unpack(), pcrs);
        assert!(PackedPcrs::pack(&BTreeMap::new()).unpack().is_empty());
    }

    #[test]
    fn an_unchanged_log_is_replayed_once_and_a_changed_one_again() {
        let (a, b) = (
            log_b64("event-bootorder.bin"),
            log_b64("event-uefiservices.bin"),
        );
        let mut memo = BootLogMemo::default();
        let first = BootEvidence::read(&answer(&a), false, &mut memo);
        let replayed_a = first.replayed.clone().expect("sha256 bank replayed");
        assert!(first.failure.is_empty() && first.view.is_none());
        assert!(!first.aggregates.is_empty());

        // The same log again: taken from the memo (a marker put there comes back).
        let marker: BTreeMap<u32, Digest> = [(0, HashAlg::Sha256.ones())].into();
        memo.replayed = Some(PackedPcrs::pack(&marker));
        let again = BootEvidence::read(&answer(&a), false, &mut memo);
        assert_eq!(again.replayed, Some(marker));
        assert_eq!(again.aggregates, first.aggregates);

        // Another log, or the policy running this round: parsed and replayed.
        let other = BootEvidence::read(&answer(&b), false, &mut memo);
        assert_ne!(other.replayed, Some(replayed_a.clone()));
        let now = BootEvidence::read(&answer(&a), true, &mut memo);
        assert_eq!(now.replayed, Some(replayed_a.clone()));
        assert!(now.view.is_some());

        // Another bank of the same log is another key.
        let sha1 = QuoteAnswer {
            hash_alg: "sha1",
            ..answer(&a)
        };
        let in_sha1 = BootEvidence::read(&sha1, false, &mut memo);
        assert_ne!(in_sha1.replayed, Some(replayed_a));

        // A log that cannot be read fails and forgets the last one.
        let bad = BootEvidence::read(&answer("not base64!"), false, &mut memo);
        assert!(!bad.failure.is_empty());
        assert!(memo.key.is_none());
    }
}
