use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::*;
use crate::eventlog;

const KL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/keylime"
);

fn view(path: &str) -> LogView {
    let bytes = std::fs::read(path).unwrap();
    LogView::new(&eventlog::parse(&bytes).unwrap())
}

fn mb_log() -> LogView {
    view(&format!(
        "{KL}/test/data/create-mb-policy/binary_bios_measurements"
    ))
}

/// Keylime's example policy refuses events it does not list (a StartupLocality
/// `EV_NO_ACTION`, `EV_S_CRTM_CONTENTS`) and a dbx of several lists, so real logs rarely
/// pass it, even against their own reference state: drop the events it names, one at a
/// time, for tests that need a pass.
fn without_startup_locality(log: &LogView) -> LogView {
    let rs = create_refstate(log, true).unwrap().refstate;
    // The generator skips firmware applications (`FvVol(…)/FvFile(…)`); the policy
    // does not.
    let mut events: Vec<Value> = log
        .events()
        .iter()
        .filter(|e| {
            !e["Event"]["DevicePath"]
                .as_str()
                .is_some_and(|p| p.starts_with("FvVol("))
        })
        .cloned()
        .collect();
    for _ in 0..events.len() {
        let view = LogView(json!({ "events": events }));
        let Err(Rejection::Mismatch(reason)) = evaluate(MbPolicy::Example, &rs, &view) else {
            break;
        };
        let Some(i) = events
            .iter()
            .position(|e| reason.starts_with(&format!("{} ", pyrepr::repr(e, true))))
        else {
            break;
        };
        events.remove(i);
    }
    LogView(json!({ "events": events }))
}

fn all_pcrs() -> BTreeSet<u32> {
    (0..24).collect()
}

#[test]
fn created_refstate_accepts_its_own_log() {
    let log = mb_log();
    assert!(matches!(
        create_refstate(&log, false),
        Err(CreateError::SecureBootDisabled)
    ));
    let created = create_refstate(&log, true).unwrap();
    assert!(!created.has_secureboot);
    let rs = &created.refstate;
    assert_eq!(rs["has_secureboot"], json!(false));
    let k = &rs["kernels"][0];
    assert!(k["shim_authcode_sha256"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert!(k["vmlinuz_plain_sha256"].is_string());
    assert!(k["kernel_cmdline"].as_str().unwrap().contains("\\ "));
    let reason = evaluate(MbPolicy::Example, rs, &log)
        .unwrap_err()
        .to_string();
    assert!(
        reason.ends_with("'Event': {'StartupLocality': 3}} test was already run once"),
        "{reason}"
    );
    let log = without_startup_locality(&log);
    evaluate(MbPolicy::Example, rs, &log).unwrap();
    assert!(bootlog_evaluate(MbPolicy::Example, rs, &log, &all_pcrs()).is_empty());
}

#[test]
fn planted_faults_fail_with_keylime_reasons() {
    let log = without_startup_locality(&mb_log());
    let rs = create_refstate(&log, true).unwrap().refstate;

    let mut bad = rs.clone();
    bad["kernels"][0]["initrd_plain_sha256"] = json!(format!("0x{}", "ab".repeat(32)));
    let err = evaluate(MbPolicy::Example, &bad, &log).unwrap_err();
    let Rejection::Mismatch(reason) = err else {
        panic!("{err}")
    };
    assert!(
        reason.starts_with("[ipl9s [0] has no digest approved by {'sha256': {'abab"),
        "{reason}"
    );

    let mut bad = rs.clone();
    bad["has_secureboot"] = json!(true);
    bad["kernels"][0]["kernel_authcode_sha256"] = json!("0x00");
    let reason = evaluate(MbPolicy::Example, &bad, &log)
        .unwrap_err()
        .to_string();
    assert!(
        reason.contains("SecureBoot") || reason.contains("Enabled is not 'Yes'"),
        "{reason}"
    );

    let mut bad = rs.clone();
    bad["kernels"][0]["kernel_cmdline"] = json!("nope");
    let f = bootlog_evaluate(MbPolicy::Example, &bad, &log, &all_pcrs());
    assert_eq!(f.events().len(), 1);
    let e = &f.events()[0];
    assert_eq!(e.event_id, "measured_boot.policy_example");
    assert_eq!(e.context["context"], "Boot attestation failed");
    assert_eq!(e.context["policy"], "example");
    assert!(e.context["refstate"]
        .as_str()
        .unwrap()
        .starts_with("{'has_secureboot': False"));
    assert!(e.context["reason"]
        .as_str()
        .unwrap()
        .contains("does not match kernel_cmdline: nope"));
}

#[test]
fn missing_pcrs_and_builtins() {
    let log = mb_log();
    let rs = create_refstate(&log, true).unwrap().refstate;
    let quoted: BTreeSet<u32> = (0..8).collect();
    let f = bootlog_evaluate(MbPolicy::Example, &rs, &log, &quoted);
    assert_eq!(f.events()[0].event_id, "measured_boot.missing_pcrs");
    assert_eq!(f.events()[0].context["data"], json!([8, 9, 14]));
    assert!(bootlog_evaluate(MbPolicy::AcceptAll, &rs, &log, &quoted).is_empty());
    let f = bootlog_evaluate(MbPolicy::RejectAll, &rs, &log, &quoted);
    assert_eq!(f.events()[0].event_id, "measured_boot.policy_reject-all");
    assert_eq!(f.events()[0].context["reason"], "reject all");
    // An empty refstate is not evaluated at all.
    for empty in [json!({}), json!(null), json!([]), json!("")] {
        assert!(bootlog_evaluate(MbPolicy::RejectAll, &empty, &log, &quoted).is_empty());
    }
    assert_eq!(MbPolicy::Example.relevant_pcrs().len(), 11);
    assert!(MbPolicy::AcceptAll.relevant_pcrs().is_empty());
    assert!("nope".parse::<MbPolicy>().is_err());
}

#[test]
fn example_reference_state_is_valid_and_rejects_other_logs() {
    let text = std::fs::read_to_string(format!(
        "{KL}/keylime/mba/elchecking/example_reference_state.json"
    ))
    .unwrap();
    let rs: Value = serde_json::from_str(&text).unwrap();
    let parsed = RefState::from_json(&rs).unwrap();
    assert!(parsed.has_secureboot);
    assert!(!parsed.dbx.is_empty());
    let log = without_startup_locality(&mb_log());
    let reason = evaluate(MbPolicy::Example, &rs, &log)
        .unwrap_err()
        .to_string();
    assert!(reason.contains("Enabled is not 'Yes'"), "{reason}");
}

#[test]
fn malformed_refstates_name_the_field() {
    let log = mb_log();
    let rs = create_refstate(&log, true).unwrap().refstate;
    type Mutation = fn(&mut Value);
    let cases: Vec<(Mutation, &str)> = vec![
        (|v| *v = json!([1]), "$"),
        (
            |v| {
                v.as_object_mut().unwrap().remove("kernels");
            },
            "kernels",
        ),
        (
            |v| v["kernels"][0]["shim_authcode_sha256"] = json!("0xABC"),
            "kernels[0].shim_authcode_sha256",
        ),
        (
            |v| {
                v["kernels"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("vmlinuz_plain_sha256");
            },
            "kernels[0].vmlinuz_plain_sha256",
        ),
        (
            |v| {
                v.as_object_mut().unwrap().remove("scrtm_and_bios");
            },
            "scrtm_and_bios",
        ),
        (
            |v| v["scrtm_and_bios"][0]["platform_firmware"][1] = json!({"sha256": 5}),
            "scrtm_and_bios[0].platform_firmware[1].sha256",
        ),
        (
            |v| {
                v.as_object_mut().unwrap().remove("mokxdig");
            },
            "mokxdig",
        ),
        (
            |v| v["kernels"][0]["kernel_cmdline"] = json!("(unclosed"),
            "kernels[0].kernel_cmdline",
        ),
        (
            |v| v["pk"] = json!([{"SignatureOwner": "x", "SignatureData": "00"}]),
            "pk[0].SignatureData",
        ),
        (
            |v| v["mokdig"] = json!([{"sha256": "nothex"}]),
            "mokdig[0].sha256",
        ),
    ];
    for (mutate, field) in cases {
        let mut bad = rs.clone();
        mutate(&mut bad);
        let e = RefState::from_json(&bad).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        let f = bootlog_evaluate(MbPolicy::Example, &bad, &log, &all_pcrs());
        let reason = f.events()[0].context["reason"].as_str().unwrap().to_owned();
        assert!(reason.starts_with("policy evaluation failed: "), "{reason}");
    }
}

#[test]
fn keylime_unescape_is_reproduced() {
    assert_eq!(
        keylime_unescape("File(\\EFI\\fedora)"),
        "File(\\EFI\u{c}edora)"
    );
    assert_eq!(keylime_unescape("MokList\0"), "MokList");
    let log = mb_log();
    let paths: Vec<&str> = log
        .events()
        .iter()
        .filter_map(|e| e["Event"]["DevicePath"].as_str())
        .collect();
    assert!(
        paths.iter().any(|p| p.contains("\\EFI\u{c}edora")),
        "{paths:?}"
    );
}
