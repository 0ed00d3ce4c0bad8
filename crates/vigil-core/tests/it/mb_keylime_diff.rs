//! Differential test of measured-boot policies against Keylime 7.14.3.
//!
//! Keylime's answers come from `tests/keylime/mb_oracle.py`, run with the Keylime venv's
//! Python (`VIGIL_KEYLIME_PYTHON`, set by sourcing the env file of
//! `scripts/keylime-reference.sh`; scripts/test.sh does). Without it the test is skipped
//! locally and fails under CI. Keylime parses each log with tpm2_eventlog and its
//! libefivar enrichment; Vigil with its own decoder.
//!
//! - Every `.bin` log of the test data, and logs planted from Keylime's
//!   `binary_bios_measurements` (events the policy refuses dropped, so that it can pass;
//!   then an initrd digest flipped, an event moved to a PCR where it is unexpected): Vigil's reference
//!   state equals `keylime-policy create measured-boot`'s (with and without `-i`), or
//!   both refuse the log.
//! - For each parsable log, reference states (the created one and planted faults: a
//!   dbx entry the log lacks, a PK key removed, a kernel digest and command line
//!   changed, Secure Boot required; Keylime's `example_reference_state.json`; malformed
//!   and empty ones) × policies (`example`, `accept-all`, `reject-all`) × quoted PCRs:
//!   Vigil's failure events equal Keylime's `bootlog_evaluate`'s — event id, context
//!   and reason text — except for unusable reference states, where both fail with
//!   `policy evaluation failed: …` but word the problem differently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use vigil_core::eventlog::{self, EventLog};
use vigil_core::policy::measured_boot::{
    bootlog_evaluate, create_refstate, evaluate, LogView, MbPolicy, Rejection,
};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

fn logs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        "keylime/test/data/create-mb-policy",
        "tpm2-tools",
        "rust-keylime/keylime/test-data",
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(TESTDATA).join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.is_file()
                    && (p.extension().is_some_and(|e| e == "bin")
                        || p.to_string_lossy().contains("binary_bios_measurements"))
            })
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

/// Byte range of event `n` (a crypto-agile `TCG_PCR_EVENT2`, n ≥ 1) in `bytes`.
fn event_range(bytes: &[u8], log: &EventLog<'_>, n: usize) -> std::ops::Range<usize> {
    let e = &log.events[n];
    let base = bytes.as_ptr() as usize;
    let first_digest = e.digests[0].1.as_ptr() as usize - base;
    // pcr, type, digest count, first algorithm id.
    let start = first_digest - 2 - 4 - 4 - 4;
    let end = e.data.as_ptr() as usize - base + e.data.len();
    start..end
}

fn view(bytes: &[u8]) -> Option<LogView> {
    eventlog::parse(bytes).ok().map(|l| LogView::new(&l))
}

fn event_num_of_reason(reason: &str) -> Option<usize> {
    let rest = reason.strip_prefix("{'EventNum': ")?;
    rest[..rest.find(',')?].parse().ok()
}

/// Drops the events Keylime's example policy refuses for this log's own reference state
/// (and the firmware applications its generator skips), one at a time.
fn passable(mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..64 {
        let log = eventlog::parse(&bytes).unwrap();
        let v = LogView::new(&log);
        let fv = v.events().iter().position(|e| {
            e["Event"]["DevicePath"]
                .as_str()
                .is_some_and(|p| p.starts_with("FvVol("))
        });
        let drop = fv.or_else(|| {
            let rs = create_refstate(&v, true).unwrap().refstate;
            match evaluate(MbPolicy::Example, &rs, &v) {
                Err(Rejection::Mismatch(reason)) => event_num_of_reason(&reason),
                _ => None,
            }
        });
        let Some(n) = drop else { break };
        let r = event_range(&bytes, &log, n);
        bytes.drain(r);
    }
    bytes
}

fn planted_logs(dir: &Path) -> Vec<PathBuf> {
    let src =
        Path::new(TESTDATA).join("keylime/test/data/create-mb-policy/binary_bios_measurements");
    let good = passable(std::fs::read(src).unwrap());
    let mut out = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        out.push(p);
    };
    write("passable.bin", &good);
    let log = eventlog::parse(&good).unwrap();
    let base = good.as_ptr() as usize;
    // The initrd's digest (PCR 9 EV_IPL naming an initramfs), one bit flipped.
    let initrd = log
        .events
        .iter()
        .find(|e| e.pcr == 9 && e.event_type == 0xd && e.data.windows(9).any(|w| w == b"initramfs"))
        .unwrap();
    let (_, d) = initrd
        .digests
        .iter()
        .find(|(alg, _)| *alg == 0x000b)
        .unwrap();
    let mut flipped = good.clone();
    flipped[d.as_ptr() as usize - base] ^= 1;
    // The PCR 4 EV_EFI_ACTION moved to PCR 3, where the policy expects none.
    let action = log
        .events
        .iter()
        .position(|e| e.pcr == 4 && e.event_type == 0x8000_0007)
        .unwrap();
    let r = event_range(&good, &log, action);
    let mut retyped = good.clone();
    retyped[r.start..r.start + 4].copy_from_slice(&3u32.to_le_bytes());
    write("initrd-flipped.bin", &flipped);
    write("unexpected-event.bin", &retyped);
    out
}

fn refstate_variants(created: Option<&Value>) -> Vec<(String, Value)> {
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(TESTDATA).join("keylime/keylime/mba/elchecking/example_reference_state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut out = vec![
        ("example_reference_state".to_owned(), example),
        ("empty".to_owned(), json!({})),
        ("kernels-not-a-list".to_owned(), json!({"kernels": 3})),
    ];
    let Some(rs) = created else { return out };
    out.push(("created".to_owned(), rs.clone()));
    let mut v = rs.clone();
    v["dbx"]
        .as_array_mut()
        .unwrap()
        .push(json!({"SignatureOwner": "77fa9abd-0359-4d32-bd60-28f4e78f784b", "SignatureData": format!("0x{}", "5a".repeat(32))}));
    out.push(("dbx-entry-missing-from-log".to_owned(), v));
    if rs["pk"].as_array().is_some_and(|a| !a.is_empty()) {
        let mut v = rs.clone();
        v["pk"].as_array_mut().unwrap().remove(0);
        out.push(("pk-key-removed".to_owned(), v));
    }
    if rs["kernels"].is_array() {
        let mut v = rs.clone();
        v["kernels"][0]["shim_authcode_sha256"] = json!(format!("0x{}", "00".repeat(32)));
        out.push(("shim-digest-changed".to_owned(), v));
        let mut v = rs.clone();
        v["kernels"][0]["kernel_cmdline"] = json!("nomodeset");
        out.push(("cmdline-changed".to_owned(), v));
        let mut v = rs.clone();
        v.as_object_mut().unwrap().remove("mokdig");
        out.push(("mokdig-missing".to_owned(), v));
    }
    let mut v = rs.clone();
    v["has_secureboot"] = json!(!rs["has_secureboot"].as_bool().unwrap_or(true));
    out.push(("secureboot-flipped".to_owned(), v));
    out
}

fn run_oracle(python: &std::ffi::OsStr, cases: &Value) -> Vec<Value> {
    let dir = std::env::temp_dir();
    let input = dir.join(format!("vigil-mb-cases-{}.json", std::process::id()));
    std::fs::write(&input, cases.to_string()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/keylime/mb_oracle.py"
    );
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&input)
        .output()
        .expect("run tests/keylime/mb_oracle.py");
    let _ = std::fs::remove_file(&input);
    assert!(
        out.status.success(),
        "mb_oracle.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn matches_keylime() {
    let Some(python) = crate::skip::keylime_python("mb_keylime_diff") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut all_logs = logs();
    all_logs.extend(planted_logs(tmp.path()));

    // Round 1: reference states.
    let mut cases = Vec::new();
    for log in &all_logs {
        for without in [false, true] {
            cases.push(json!({"op": "create", "log": log, "without_secureboot": without}));
        }
    }
    let kl = run_oracle(&python, &json!(cases));
    let mut created = Vec::new();
    let (mut compared, mut unparsed) = (0, 0);
    for (i, log) in all_logs.iter().enumerate() {
        let bytes = std::fs::read(log).unwrap();
        let v = view(&bytes);
        for (j, without) in [false, true].into_iter().enumerate() {
            let k = &kl[2 * i + j];
            let ctx = format!("{} without_secureboot={without}", log.display());
            let ours = v.as_ref().map(|v| create_refstate(v, without));
            if k["log_parsed"] != json!(true) {
                // Keylime's parser refuses it (tpm2_eventlog fails, or prints YAML that
                // does not load: duplicate keys in SHA-1 logs, ...).
                unparsed += 1;
                if log.to_string_lossy().contains("binary_bios_measurements-") {
                    // The bogus and empty logs: Vigil refuses them too, with a typed error.
                    assert!(eventlog::parse(&bytes).is_err(), "{ctx}");
                }
                if without {
                    created.push(Value::Null);
                }
                continue;
            }
            match (&k["refstate"], &ours) {
                (Value::Null, None | Some(Err(_))) => {}
                (theirs, Some(Ok(c))) => {
                    assert_eq!(&c.refstate, theirs, "{ctx}");
                    compared += 1;
                }
                (theirs, _) => panic!("{ctx}: Keylime made {theirs}, Vigil {ours:?}"),
            }
            if without {
                created.push(k["refstate"].clone());
            }
        }
    }
    eprintln!("{compared} reference states equal; Keylime could not parse {unparsed} cases");
    assert!(compared >= 8, "only {compared} reference states compared");

    // Round 2: evaluations, on every log Keylime's parser reads.
    let all: Vec<u32> = (0..24).collect();
    let few: Vec<u32> = (0..8).collect();
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (log, rs) in all_logs.iter().zip(&created) {
        let bytes = std::fs::read(log).unwrap();
        let Some(v) = view(&bytes) else { continue };
        let rs = (!rs.is_null()).then_some(rs);
        for (name, refstate) in refstate_variants(rs) {
            for policy in [MbPolicy::Example, MbPolicy::AcceptAll, MbPolicy::RejectAll] {
                for pcrs in [&all, &few] {
                    cases.push(
                        json!({"op": "evaluate", "log": log, "policy": policy.name(),
                        "refstate": refstate.to_string(), "pcrs": pcrs}),
                    );
                    let quoted: BTreeSet<u32> = pcrs.iter().copied().collect();
                    let f = bootlog_evaluate(policy, &refstate, &v, &quoted);
                    ours.push((
                        format!("{} {name} {policy} {} pcrs", log.display(), pcrs.len()),
                        f,
                    ));
                }
            }
        }
    }
    let kl = run_oracle(&python, &json!(cases));
    let (mut same, mut failing, mut skipped, mut example_passes) = (0, 0, 0, 0);
    for ((ctx, f), k) in ours.iter().zip(&kl) {
        if !k["error"].is_null() {
            // Keylime's parser refused the log (tpm2_eventlog or its YAML).
            skipped += 1;
            continue;
        }
        let theirs = k["failures"].as_array().unwrap();
        let mine: Vec<Value> = f
            .events()
            .iter()
            .map(|e| json!({"event_id": e.event_id, "context": e.context, "recoverable": e.recoverable}))
            .collect();
        assert_eq!(mine.len(), theirs.len(), "{ctx}: {mine:?} vs {theirs:?}");
        for (m, t) in mine.iter().zip(theirs) {
            assert_eq!(m["event_id"], t["event_id"], "{ctx}");
            let reason = m["context"]["reason"].as_str().unwrap_or_default();
            if reason.starts_with("policy evaluation failed: ") {
                let theirs = t["context"]["reason"].as_str().unwrap();
                assert!(
                    theirs.starts_with("policy evaluation failed: "),
                    "{ctx}: {theirs}"
                );
                assert_eq!(m["context"]["refstate"], t["context"]["refstate"], "{ctx}");
            } else {
                assert_eq!(m, t, "{ctx}");
            }
        }
        if !mine.is_empty() {
            failing += 1;
        } else if ctx.contains(" created example ") {
            example_passes += 1;
        }
        same += 1;
    }
    eprintln!(
        "{same} evaluations agree ({failing} failing), {skipped} logs Keylime could not parse"
    );
    eprintln!(
        "{example_passes} logs pass the example policy against their own reference state in both"
    );
    assert!(
        same > 100 && failing > 50 && same - failing > 20,
        "{same} {failing}"
    );
    assert!(example_passes >= 1);
}
