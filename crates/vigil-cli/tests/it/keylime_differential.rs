//! Differential test against Keylime 7.14.3: Vigil's `vigil ima check` must reach the
//! same verdict as Keylime's own `process_measurement_list` (same failure event ids and
//! contexts in the same order, same quoted-PCR match) on seeded, generated IMA logs
//! with planted faults.
//!
//! Needs the reference venv: `. "$(bash scripts/keylime-reference.sh)"` sets
//! `VIGIL_KEYLIME_PYTHON` (scripts/test.sh does this). Without it the test is skipped
//! locally and fails under CI, so CI can never silently stop comparing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const SEED: u64 = 7;
const CASES: usize = 500;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run_json(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.code().is_some(),
        "{cmd:?} was killed by a signal"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{cmd:?} did not print JSON ({e}); stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn ima_verdicts_match_keylime() {
    let Some(bin) = vigil_testkit::keylime::venv_bin("ima_verdicts_match_keylime") else {
        return;
    };
    let python = bin.join("python");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = repo_root();
    let gen = Command::new("python3")
        .arg(root.join("tests/keylime/gen_ima_cases.py"))
        .args([
            "--seed",
            &SEED.to_string(),
            "--count",
            &CASES.to_string(),
            "--out",
        ])
        .arg(dir.path())
        .status()
        .expect("run gen_ima_cases.py");
    assert!(gen.success(), "case generator failed");
    let cases_file = dir.path().join("cases.json");
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&cases_file).expect("cases.json"))
            .expect("cases.json is JSON");
    let oracle = run_json(
        Command::new(python)
            .arg(root.join("tests/keylime/ima_oracle.py"))
            .arg(&cases_file),
    );
    let oracle = oracle.as_array().expect("oracle prints a list");
    assert_eq!(oracle.len(), cases.len());

    let mut mismatches = Vec::new();
    let mut failing_cases = 0;
    for (case, keylime) in cases.iter().zip(oracle) {
        assert!(
            keylime["error"].is_null(),
            "Keylime raised on {case}: {}",
            keylime["error"]
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
        cmd.args(["ima", "check", "--json", "--log"])
            .arg(case["log"].as_str().expect("log"))
            .arg("--policy")
            .arg(case["policy"].as_str().expect("policy"));
        if let Some(pcr) = case["pcr"].as_str() {
            cmd.args(["--pcr", pcr, "--bank", case["bank"].as_str().expect("bank")]);
        }
        let mut vigil = run_json(&mut cmd);
        // Vigil adds the entry's line and file to a failure (as its text output shows
        // them); the rest is Keylime's event, compared whole.
        for failure in vigil["failures"].as_array_mut().into_iter().flatten() {
            if let Some(f) = failure.as_object_mut() {
                f.remove("line");
                f.remove("file");
            }
        }
        let keylime_failures = &keylime["failures"];
        if !keylime_failures.as_array().expect("list").is_empty() {
            failing_cases += 1;
        }
        if vigil["failures"] != *keylime_failures || vigil["pcr_match"] != keylime["pcr_match"] {
            mismatches.push(format!(
                "case {}\n  faults: {}\n  keylime: pcr_match={} failures={}\n  vigil:   pcr_match={} failures={}",
                case["log"], case["faults"], keylime["pcr_match"], keylime_failures,
                vigil["pcr_match"], vigil["failures"]
            ));
        } else {
            // The verdict follows from the failures: trusted exactly when there are none.
            assert_eq!(
                vigil["trusted"].as_bool(),
                Some(keylime_failures.as_array().expect("list").is_empty()),
                "{}",
                case["log"]
            );
        }
    }
    // The generator must exercise failures, or this test proves little.
    assert!(
        failing_cases > CASES / 3,
        "only {failing_cases} cases failed in Keylime"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from Keylime:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}
