//! Differential test of the IMA replay against Keylime 7.14.3.
//!
//! The cases and Keylime's answers come from `tests/keylime/ima_replay_cases.py`, run with
//! the Keylime venv's Python (`VIGIL_KEYLIME_PYTHON`, set by sourcing the env file of
//! `scripts/keylime-reference.sh`; scripts/test.sh does). `VIGIL_IMA_DIFF=FILE` reuses
//! a file that script wrote instead (e.g. for other seeds). Without either the test is
//! skipped locally and fails under CI.
//! Every case must give Keylime's running PCR, event ids and contexts, and incremental
//! state. The only tolerated difference is where Keylime raises instead of answering
//! (a non-numeric PCR column on the line where the quote matches), which Vigil reports
//! as the `ima.validation.ima_pcr` failure it also is.

use serde_json::{json, Value};
use vigil_core::hash::{Digest, HashAlg};
use vigil_core::ima::{process_measurement_list, AcceptAll, ImaAttestState, ImaConfig, ImaVerdict};

fn events(v: &ImaVerdict) -> Vec<Value> {
    v.failure
        .events()
        .iter()
        .map(|e| json!([e.event_id, e.context]))
        .collect()
}

fn config(bank: &str, log_alg: &str) -> ImaConfig {
    ImaConfig {
        bank: bank.parse().unwrap(),
        log_hash_alg: log_alg.parse().unwrap(),
        // Keylime ran without a config file, where this falls back to true.
        ignore_tomtou_errors: true,
    }
}

fn quoted(case: &Value) -> Option<Digest> {
    case["pcrval"]
        .as_str()
        .map(|h| Digest::from_hex(h).unwrap())
}

/// Keylime raised; accept only the known case (it calls `int()` on the PCR column).
fn known_keylime_exception(res: &Value) -> bool {
    res["exception"]
        .as_str()
        .is_some_and(|e| e.starts_with("ValueError(\"invalid literal for int()"))
}

/// Keylime's answers: from `VIGIL_IMA_DIFF`, or made now with the reference venv.
fn keylime_answers() -> Option<Value> {
    let text = if let Ok(path) = std::env::var("VIGIL_IMA_DIFF") {
        std::fs::read_to_string(path).unwrap()
    } else {
        let python = crate::skip::keylime_python("ima_keylime_diff")?;
        let out = std::env::temp_dir().join(format!("vigil-ima-diff-{}.json", std::process::id()));
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/keylime/ima_replay_cases.py"
        );
        // Without a verifier config Keylime's ignore_tomtou_errors falls back to true,
        // which `config()` mirrors; keep the reference install's config out of it.
        let status = std::process::Command::new(python)
            .args([script, "--seed", "1", "--out"])
            .arg(&out)
            .env_remove("KEYLIME_VERIFIER_CONFIG")
            .status()
            .expect("run tests/keylime/ima_replay_cases.py");
        assert!(status.success(), "tests/keylime/ima_replay_cases.py failed");
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        text
    };
    Some(serde_json::from_str(&text).unwrap())
}

#[test]
fn matches_keylime() {
    let Some(doc) = keylime_answers() else {
        return;
    };
    let mut checked = 0;
    let mut raised = 0;

    for (i, case) in doc["single"].as_array().unwrap().iter().enumerate() {
        let kl = &case["keylime"];
        if kl.get("exception").is_some() {
            assert!(known_keylime_exception(kl), "case {i}: {kl}");
            raised += 1;
            continue;
        }
        let cfg = config(
            case["bank"].as_str().unwrap(),
            case["log_alg"].as_str().unwrap(),
        );
        let mut state = ImaAttestState::new();
        let text = case["text"].as_str().unwrap();
        let v = process_measurement_list(cfg, Some(&mut state), text, quoted(case), AcceptAll);
        assert_eq!(v.running_pcr.to_hex(), kl["running"], "case {i}: {text:?}");
        assert_eq!(json!(events(&v)), kl["events"], "case {i}: {text:?}");
        assert_eq!(json!(state.next_entry), kl["next"], "case {i}: {text:?}");
        checked += 1;
    }

    for (s, scenario) in doc["incremental"].as_array().unwrap().iter().enumerate() {
        let bank: HashAlg = scenario["bank"].as_str().unwrap().parse().unwrap();
        let mut state = ImaAttestState::new();
        for (i, step) in scenario["steps"].as_array().unwrap().iter().enumerate() {
            let kl = &step["keylime"];
            if kl.get("exception").is_some() {
                assert!(known_keylime_exception(kl), "scenario {s} step {i}: {kl}");
                raised += 1;
                // Keylime's state is unchanged by the raise; ours cannot follow it.
                break;
            }
            let start = step["start"].as_u64().unwrap();
            let begin = state.begin_batch(start, 0);
            let mut got = Vec::new();
            if let Some(e) = begin.failure_event() {
                // The script records this one without its context.
                got.push(json!([e.event_id, null]));
            }
            let text = step["text"].as_str().unwrap();
            let v = process_measurement_list(
                config(bank.name(), "sha1"),
                Some(&mut state),
                text,
                quoted(step),
                AcceptAll,
            );
            got.extend(events(&v));
            let ctx = format!("scenario {s} step {i}");
            assert_eq!(v.running_pcr.to_hex(), kl["running"], "{ctx}");
            assert_eq!(json!(got), kl["events"], "{ctx}");
            assert_eq!(json!(state.next_entry), kl["next"], "{ctx}");
            let qp = state
                .quote_progress
                .map(|q| json!([q.match_line, q.log_length]))
                .unwrap_or(Value::Null);
            assert_eq!(qp, kl["quote_progress"], "{ctx}");
            checked += 1;
        }
    }
    eprintln!("{checked} cases agree with Keylime; {raised} where Keylime raised");
    assert!(checked > 0);
}
