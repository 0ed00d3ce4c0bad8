//! [`evaluate_round`]: one node answer checked into a [`RoundOutcome`], in Keylime's
//! order (`process_quote_response` then `check_quote`, compat §3.3), from the node's
//! stored state (IMA offset and running PCR, the last accepted clock, the cached
//! public key).

use serde_json::json;

use super::node::{NodeAttestation, QuoteAlgs, RoundOutcome};
use crate::failure::{Component, Event, Failure};
use crate::hash::{Digest, HashAlg};
use crate::ima::keyring::ImaKeyrings;
use crate::ima::validate::PolicyValidator;
use crate::ima::{process_measurement_list, AcceptAll, BatchStart, ImaConfig, IMA_PCR};
use crate::policy::runtime::RuntimePolicy;
use crate::policy::tpm::{check_pcrs, ImaPcr, MeasuredBootPcrs, PcrCheck, TpmPolicy};
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
}

/// What the answer is judged against.
#[derive(Clone, Copy)]
pub struct RoundPolicy<'a> {
    /// Verifies quotes of the node's AK (built once from `ak_tpm`).
    pub verifier: &'a QuoteVerifier,
    /// The nonce sent with the request.
    pub nonce: &'a [u8],
    /// `accept_tpm_hash_algs`.
    pub accept_hash_algs: &'a [String],
    /// `accept_tpm_encryption_algs`.
    pub accept_enc_algs: &'a [String],
    /// `accept_tpm_signing_algs`.
    pub accept_sign_algs: &'a [String],
    /// The PCR policy.
    pub tpm_policy: &'a TpmPolicy,
    /// The runtime policy; `None` accepts every IMA entry (replay only).
    pub runtime_policy: Option<&'a RuntimePolicy>,
    /// Boot aggregates from the node's UEFI log, accepted for `boot_aggregate`.
    pub boot_aggregates: &'a [Digest],
    /// Measured-boot PCRs to compare, when a valid non-empty policy applies.
    pub measured_boot: Option<MeasuredBootPcrs<'a>>,
    /// The verifier's `ignore_tomtou_errors`.
    pub ignore_tomtou_errors: bool,
}

/// Keylime's `is_accepted`: a direct match, or equal after the `ecc`→`ecc256`,
/// `rsa`→`rsa2048` aliases.
fn is_accepted(alg: &str, accepted: &[String]) -> bool {
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
/// 1. the public key must be sent or cached (`no_pubkey`);
/// 2. `hash_alg`, `enc_alg`, `sign_alg` must be accepted (`invalid_*_alg`);
/// 3. IMA offset: entry 0 resets, another entry than expected is
///    `invalid_ima_entry_nb`, a changed boot time skips the round ([`RoundOutcome::rebooted`]);
/// 4. the quote: signature, nonce, PCR digest, then the clock against the last accepted
///    quote (`quote_validation`; the clock only once there is one);
/// 5. PCR 16, IMA replay of PCR 10 from the stored running value, measured boot,
///    `tpm_policy` (`check_pcrs`).
///
/// `keyrings` are the node's IMA keyrings; learnt keys are cleared whenever the IMA
/// state restarts from entry 0, as Keylime's `reset_ima_attestation` does.
pub fn evaluate_round(
    node: &NodeAttestation,
    answer: &QuoteAnswer<'_>,
    policy: &RoundPolicy<'_>,
    keyrings: &mut ImaKeyrings,
) -> RoundOutcome {
    let Some(public_key) = answer.public_key.or(node.public_key()) else {
        return fail(quote_event(
            "no_pubkey",
            Event::message(
                "agent did not provide public key and no key or encrypted_v was cached at CV",
            ),
        ));
    };
    let bank = HashAlg::from_name(answer.hash_alg)
        .filter(|_| is_accepted(answer.hash_alg, policy.accept_hash_algs));
    let Some(bank) = bank else {
        return fail(quote_event(
            "invalid_hash_alg",
            json!({
                "message": format!("TPM Quote is using an unaccepted hash algorithm: {}", answer.hash_alg),
                "data": answer.hash_alg,
            }),
        ));
    };
    if !is_accepted(answer.enc_alg, policy.accept_enc_algs) {
        return fail(quote_event(
            "invalid_enc_alg",
            json!({
                "message": format!("TPM Quote is using an unaccepted encryption algorithm: {}", answer.enc_alg),
                "data": answer.enc_alg,
            }),
        ));
    }
    if !is_accepted(answer.sign_alg, policy.accept_sign_algs) {
        return fail(quote_event(
            "invalid_sign_alg",
            json!({
                "message": format!("TPM Quote is using an unaccepted signing algorithm: {}", answer.sign_alg),
                "data": answer.sign_alg,
            }),
        ));
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
            return RoundOutcome::rebooted();
        }
        BatchStart::Fresh => keyrings.clear_learned(),
        BatchStart::Continue | BatchStart::UnexpectedEntry { .. } => {}
    }
    if let Some(event) = start.failure_event() {
        failure.push(event);
    }

    let outcome = |failure: Failure, ima, bank| {
        RoundOutcome::failed(failure)
            .with_algs(algs.clone())
            .with_public_key(public_key)
            .with_ima(ima, bank)
    };

    let quote = match KeylimeQuote::parse(answer.quote) {
        Ok(q) => q,
        Err(e) => {
            failure.push(quote_event(
                "quote_validation",
                json!({"message": "Quote data validation", "error": e.to_string()}),
            ));
            return outcome(failure, ima, ima_bank);
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
            return outcome(failure, ima, ima_bank);
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
                    PolicyValidator::new(p, policy.boot_aggregates, keyrings),
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
    let pcrs = check_pcrs(
        bank,
        &verified.pcrs,
        &PcrCheck {
            tpm_policy: policy.tpm_policy,
            data: Some(public_key),
            ima: &ima_pcr,
            measured_boot: policy.measured_boot,
        },
    );
    failure.merge(pcrs.failure);
    let outcome = outcome(failure, ima, ima_bank).with_clock(verified.clock_info);
    match ima_counts {
        Some(counts) => outcome.with_ima_counts(counts),
        None => outcome,
    }
}
