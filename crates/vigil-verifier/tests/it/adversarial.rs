//! A malicious node against the verifier (issue 16 §6): a node that attested honestly
//! turns malicious behind its own certificate and TPM ([`Tamper`]), and for every kind
//! of tampering the verifier must
//!
//! - never report it trusted again: its state ends INVALID_QUOTE or FAILED as Keylime's
//!   would, its `attestation_status` is not PASS, and no tampered answer ever counted
//!   as a successful round (the successes are at most the genuine answers it served);
//! - name the check that caught it (`last_event_id`);
//! - keep attesting an honest node enrolled beside it, during and after the attack.
//!
//! On SQLite: the verdicts are the core's and the store is not what is attacked.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::{wait_for, Pki, Tamper, TestAgent};
use vigil_core::HashAlg;

const FILES: [(&str, &[u8]); 2] = [("/usr/bin/a", b"a v1"), ("/usr/bin/b", b"b v1")];
/// Allowed files the malicious node measures once it turns, so its next answer carries
/// IMA entries to doctor.
const LATER: [(&str, &[u8]); 2] = [("/usr/bin/c", b"c v1"), ("/usr/bin/d", b"d v1")];

/// Keylime's operational states.
const INVALID_QUOTE: u64 = 9;
const FAILED: u64 = 7;
/// A quote that does not verify: Keylime's event id, typo included.
const QUOTE_VALIDATION: &str = "qoute_validation.quote_validation";

/// One attack: what the node does and what the verifier must conclude.
struct Case {
    /// Names the swtpm and the test.
    name: &'static str,
    tamper: Tamper,
    /// What the node measures once it is malicious (extending PCR 10 honestly).
    measure: &'static [(&'static str, &'static [u8])],
    state: u64,
    event: &'static str,
    /// How many tampered answers may pass: an IMA entry the quote does not cover yet is
    /// left for the next round (Keylime's allowance for a log that runs ahead of the
    /// quote), and refused when the next quote still does not cover it.
    grace: u64,
    /// The verifier's `max_answer_size`, when the case sets one.
    max_answer_size: Option<usize>,
}

async fn status(pki: &Pki, addr: SocketAddr, id: &str) -> Value {
    pki.client(true)
        .call(addr, "GET", &format!("/v2.6/agents/{id}"), None)
        .await
        .1["results"]
        .clone()
}

fn count(s: &Value) -> u64 {
    s["attestation_count"].as_u64().unwrap_or(0)
}

async fn wait_count(pki: &Pki, addr: SocketAddr, id: &str, at_least: u64) -> Value {
    wait_for(60, &format!("{id} attested {at_least} times"), || async {
        let s = status(pki, addr, id).await;
        (count(&s) >= at_least).then_some(s)
    })
    .await
}

async fn node(test: &str, pki: &Pki) -> Option<TestAgent> {
    let agent = TestAgent::new(test, &pki.tls_dir().join("cacert.crt")).await?;
    for (p, c) in FILES {
        agent.measure(p, c);
    }
    Some(agent)
}

async fn attack(case: Case) {
    let pki = Pki::new();
    let Some(honest) = node(&format!("{}_honest", case.name), &pki).await else {
        return;
    };
    let Some(evil) = node(case.name, &pki).await else {
        return;
    };
    let db_dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        db_dir.path().join("cv.db").display()
    );
    let mut config = pki.config(&db);
    // Short enough that a slow or endless body fails in a few seconds, long enough for
    // a genuine answer from swtpm on a loaded machine.
    config.request_timeout = 2.0;
    if let Some(limit) = case.max_answer_size {
        config.max_answer_size = limit;
    }
    let v = support::start(&config).await;
    let (a, c) = (v.addr(), pki.client(true));
    let policy = TestAgent::policy_b64(&[FILES[0], FILES[1], LATER[0], LATER[1]]);
    for (id, n) in [("honest", &honest), ("evil", &evil)] {
        let (code, r) = c
            .call(
                a,
                "POST",
                &format!("/v2.6/agents/{id}"),
                Some(n.enrolment(&policy)),
            )
            .await;
        assert_eq!(code, 200, "{r}");
    }
    // Both attest honestly first: the verdict below is about the tampering only.
    wait_count(&pki, a, "honest", 2).await;
    let s = wait_count(&pki, a, "evil", 2).await;
    assert_eq!(s["attestation_status"], "PASS", "{s}");

    evil.set_tamper(case.tamper.clone());
    for (p, content) in case.measure {
        evil.measure(p, content);
    }
    let s = wait_for(60, "the malicious node refused", || async {
        let s = status(&pki, a, "evil").await;
        matches!(
            s["operational_state"].as_u64(),
            Some(INVALID_QUOTE | FAILED)
        )
        .then_some(s)
    })
    .await;
    let served = evil.served();
    let what = format!("{:?}: {s}", case.tamper);
    assert_eq!(s["operational_state"], case.state, "{what}");
    assert_eq!(s["last_event_id"], case.event, "{what}");
    assert_eq!(s["attestation_status"], "FAIL", "{what}");
    assert!(served.tampered >= 1, "{served:?} {what}");
    assert!(
        count(&s) <= served.genuine + case.grace,
        "a tampered answer counted as a success: {served:?} {what}"
    );

    // The honest node is attested on while the malicious one stays refused.
    let before = count(&status(&pki, a, "honest").await);
    let h = wait_count(&pki, a, "honest", before + 2).await;
    assert_eq!(h["attestation_status"], "PASS", "{h}");
    let after = status(&pki, a, "evil").await;
    assert_eq!(after["operational_state"], case.state, "{after}");
    assert_eq!(after["attestation_status"], "FAIL", "{after}");
    assert_eq!(count(&after), count(&s), "{after}");
    v.shutdown().await;
}

/// The allowed digest of `/usr/bin/c`, for passing off another content as it.
fn allowed_c() -> String {
    HashAlg::Sha256.hash(LATER[0].1).to_hex()
}

/// One test per attack, each with its own verifier and two nodes.
macro_rules! attacks {
    ($($name:ident: $case:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            attack($case).await;
        }
    )*};
}

attacks! {
    quote_signature_altered: Case {
        name: "adv_quote_signature",
        tamper: Tamper::QuoteSignature,
        measure: &[],
        state: INVALID_QUOTE,
        event: QUOTE_VALIDATION,
        grace: 0,
        max_answer_size: None,
    };
    quote_attest_altered: Case {
        name: "adv_quote_attest",
        tamper: Tamper::QuoteAttest,
        measure: &[],
        state: INVALID_QUOTE,
        event: QUOTE_VALIDATION,
        grace: 0,
        max_answer_size: None,
    };
    pcr_selection_moved: Case {
        name: "adv_moved_selection",
        tamper: Tamper::MovedSelection,
        measure: &[],
        state: INVALID_QUOTE,
        event: "pcr_validation.missing_requested_pcrs",
        grace: 0,
        max_answer_size: None,
    };
    nonce_replayed: Case {
        name: "adv_replayed_nonce",
        tamper: Tamper::ReplayedNonce,
        measure: &[],
        state: INVALID_QUOTE,
        event: QUOTE_VALIDATION,
        grace: 0,
        max_answer_size: None,
    };
    nonce_foreign: Case {
        name: "adv_foreign_nonce",
        tamper: Tamper::ForeignNonce,
        measure: &[],
        state: INVALID_QUOTE,
        event: QUOTE_VALIDATION,
        grace: 0,
        max_answer_size: None,
    };
    ima_entry_removed: Case {
        name: "adv_ima_removed",
        tamper: Tamper::ImaEntryRemoved,
        measure: &LATER,
        state: INVALID_QUOTE,
        event: "ima.pcr_mismatch",
        grace: 0,
        max_answer_size: None,
    };
    ima_digest_changed: Case {
        name: "adv_ima_digest",
        tamper: Tamper::ImaDigest(allowed_c()),
        measure: &[("/usr/bin/c", b"c trojaned")],
        state: INVALID_QUOTE,
        event: "ima.validation.ima_hash",
        grace: 0,
        max_answer_size: None,
    };
    ima_entries_reordered: Case {
        name: "adv_ima_reordered",
        tamper: Tamper::ImaReordered,
        measure: &LATER,
        state: INVALID_QUOTE,
        event: "ima.pcr_mismatch",
        grace: 0,
        max_answer_size: None,
    };
    ima_forged_entry_appended: Case {
        name: "adv_ima_forged",
        tamper: Tamper::ImaForged(format!("ima-ng sha256:{} /usr/bin/c", allowed_c())),
        measure: &[],
        state: INVALID_QUOTE,
        event: "ima.quote_progress",
        grace: 1,
        max_answer_size: None,
    };
    envelope_malformed: Case {
        name: "adv_malformed",
        tamper: Tamper::MalformedEnvelope,
        measure: &[],
        state: FAILED,
        event: "internal.verifier.exception",
        grace: 0,
        max_answer_size: None,
    };
    envelope_wrong_types: Case {
        name: "adv_wrong_types",
        tamper: Tamper::WrongTypes,
        measure: &LATER,
        state: FAILED,
        event: "internal.verifier.exception",
        grace: 0,
        max_answer_size: None,
    };
    // Below the verifier's answer limit: read and judged, its padding being IMA entries
    // that PCR 10 does not cover.
    body_large_below_the_limit: Case {
        name: "adv_large",
        tamper: Tamper::Oversized(8 << 20),
        measure: &[],
        state: INVALID_QUOTE,
        event: "ima.quote_progress",
        grace: 1,
        max_answer_size: None,
    };
    // Over the limit: refused before it is read whole, as its own failure.
    body_oversized: Case {
        name: "adv_oversized",
        tamper: Tamper::Oversized(8 << 20),
        measure: &[],
        state: FAILED,
        event: "internal.verifier.answer_too_large",
        grace: 0,
        max_answer_size: Some(1 << 20),
    };
    body_endless: Case {
        name: "adv_endless",
        tamper: Tamper::EndlessBody,
        measure: &[],
        state: FAILED,
        event: "internal.verifier.answer_too_large",
        grace: 0,
        max_answer_size: Some(1 << 20),
    };
    body_slower_than_the_timeout: Case {
        name: "adv_slow",
        tamper: Tamper::SlowBody(Duration::from_millis(50)),
        measure: &[],
        state: FAILED,
        event: "internal.verifier.not_reachable",
        grace: 0,
        max_answer_size: None,
    };
}
