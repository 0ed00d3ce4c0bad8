//! A node's answer body to `quotes/integrity`: the envelope parser, then, for whatever
//! parses, one whole round (quote, nonce, requested PCRs, PCR 16, IMA replay against a
//! runtime policy, the UEFI log when sent) with a fixed AK and nonce. The corpus starts
//! from genuine answers of the swtpm node whose AK is `fuzz/data/` (`seed-genuine-*`),
//! so mutations that keep the quote intact reach every step after the signature.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vigil_core::attestation::{
    evaluate_round, AttestationConfig, NodeAnswer, NodeAttestation, RoundPolicy,
};
use vigil_core::ima::keyring::ImaKeyrings;
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::TpmPolicy;
use vigil_core::tpm::quote::{AkPublicKey, QuoteVerifier};

/// The nonce the seeds were quoted over.
const NONCE: &[u8] = b"fuzz-nonce-0123456789";

struct Fixed {
    verifier: QuoteVerifier,
    tpm_policy: TpmPolicy,
    runtime_policy: RuntimePolicy,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let ak = AkPublicKey::from_spki_or_tpm2b(include_bytes!("../data/node_answer_ak.tpm2b"))
            .expect("the fixed AK");
        Fixed {
            verifier: QuoteVerifier::new(ak),
            tpm_policy: TpmPolicy::from_json(r#"{"mask": "0x400"}"#).expect("the fixed TPM policy"),
            runtime_policy: RuntimePolicy::from_json(include_bytes!(
                "../data/node_answer_policy.json"
            ))
            .expect("the fixed runtime policy"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = NodeAnswer::parse(data) else {
        return;
    };
    let _ = answer.ima_entries();
    let f = fixed();
    let node = NodeAttestation::new(Arc::new(AttestationConfig::default()), false);
    let policy = RoundPolicy {
        verifier: &f.verifier,
        nonce: NONCE,
        accept_hash_algs: None,
        accept_enc_algs: None,
        accept_sign_algs: None,
        bind_public_key: true,
        requested_pcrs: 0x400,
        tpm_policy: &f.tpm_policy,
        runtime_policy: Some(&f.runtime_policy),
        measured_boot: None,
        golden: None,
        ignore_tomtou_errors: false,
    };
    let _ = evaluate_round(
        &node,
        &answer.as_quote_answer(),
        &policy,
        &mut ImaKeyrings::new(),
    );
});
