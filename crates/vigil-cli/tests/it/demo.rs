//! `vigil demo` end to end, as an operator runs it: swtpm, vigil-registrar,
//! vigil-verifier and vigil-agent as processes, the node attested, then the unknown
//! script and the modified file caught, and every process stopped by its PID.
//!
//! The services are other packages' binaries, which cargo builds only for their own
//! tests: `cargo test --workspace` has them next to `vigil` already, and this test asks
//! cargo to build them (a no-op then) so that `cargo test -p vigil-cli --test it demo::`
//! does not run stale ones. Without swtpm the test skips with a note, except under CI.

use std::path::{Path, PathBuf};
use std::process::Command;

const SERVICES: [&str; 3] = ["vigil-registrar", "vigil-verifier", "vigil-agent"];
/// The SPIRE plugin pair `vigil demo identity` loads (package `vigil-spire`).
const PLUGINS: [&str; 2] = ["vigil-spire-agent", "vigil-spire-server"];

fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    for var in ["VIGIL_DEMO_TIMEOUT", "VIGIL_DEMO_BIN_DIR", "VIGIL_DEMO_DIR"] {
        c.env_remove(var);
    }
    c
}

/// The directory of the service binaries, built by cargo with this test's profile.
fn service_binaries() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_vigil"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet"]);
    for s in SERVICES {
        build.args(["-p", s]);
    }
    build.args(["-p", "vigil-spire"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build of {SERVICES:?} failed");
    for s in SERVICES.iter().chain(&PLUGINS) {
        assert!(dir.join(s).is_file(), "{} missing after cargo build", s);
    }
    dir
}

#[test]
fn the_identity_demo_issues_refuses_and_evicts() {
    if !vigil_testkit::require("vigil demo identity", vigil_testkit::MANUFACTURE_TOOLS) {
        return;
    }
    let bin_dir = service_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = vigil()
        .args(["demo", "identity", "--dir"])
        .arg(&dir)
        .args(["--timeout", "60", "--bin-dir"])
        .arg(&bin_dir)
        .output()
        .expect("run vigil demo identity");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let id = "spiffe://example.org/spire/agent/vigil/d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    for line in [
        format!("SPIFFE ID: {id}"),
        "selector vigil:status:trusted".to_owned(),
        "selector vigil:ek_cert_issuer:CN=".to_owned(),
        format!("-> verdict 2: the node holds {id} (can re-attest: true)"),
        "-> the reference flow agrees, and a replayed nonce is refused".to_owned(),
        "refused (403): nonce".to_owned(),
        "failed attestation (Invalid Quote): no identity is issued".to_owned(),
        format!("spire-server agent evict -spiffeID {id}"),
        format!("-> verdict 3: the tampered node is refused and {id} is evicted"),
        "demo: every step as expected".to_owned(),
    ] {
        assert!(stdout.contains(&line), "no {line:?} in:\n{stdout}");
    }
}

#[test]
fn the_demo_attests_a_node_and_catches_a_script_and_a_modified_file() {
    if !vigil_testkit::require("vigil demo", vigil_testkit::MANUFACTURE_TOOLS) {
        return;
    }
    let bin_dir = service_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = vigil()
        .arg("demo")
        .arg("--dir")
        .arg(&dir)
        .args(["--timeout", "60", "--bin-dir"])
        .arg(&bin_dir)
        .output()
        .expect("run vigil demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let node = dir.canonicalize().unwrap().join("node");
    let script = node.join("bad-script.sh").display().to_string();
    let file = node.join("backup.sh").display().to_string();
    for line in [
        "-> verdict 1: the node is trusted (3 quotes verified)".to_owned(),
        // The unknown script: Keylime's message, the state and the event id.
        format!("File not found in allowlist: {script}"),
        "state: Invalid Quote, event: ima.validation.ima-ng.not_in_allowlist".to_owned(),
        format!("-> verdict 2: the node is refused: {script} is not in its runtime policy"),
        // The modified file: named by the status and the verifier's log.
        "state: Invalid Quote, event: ima.validation.ima-ng.runtime_policy_hash".to_owned(),
        format!("file: {file}"),
        format!("verifier log: Hash not found in runtime policy: {file}"),
        format!("-> verdict 3: the node is refused: {file} no longer matches its runtime policy"),
        "demo: every step as expected".to_owned(),
    ] {
        assert!(stdout.contains(&line), "no {line:?} in:\n{stdout}");
    }
    // Everything it started is stopped, by PID.
    let stopped = stdout
        .split("== Stopping everything the demo started, by PID")
        .nth(1)
        .expect("the stop step");
    let pids: Vec<&str> = stopped
        .lines()
        .filter_map(|l| l.split("(pid ").nth(1)?.strip_suffix(')'))
        .collect();
    assert_eq!(pids.len(), 4, "{stopped}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
    assert!(!dir.join("pids").exists());
}

/// `vigil demo gate`: the good node released with an affirming token verified
/// offline, the odd one held on PCR 4, a round on demand, the rack checked at once;
/// six processes stopped.
#[test]
fn the_gate_demo_releases_one_node_and_holds_the_other() {
    if !vigil_testkit::require("vigil demo gate", vigil_testkit::MANUFACTURE_TOOLS) {
        return;
    }
    let bin_dir = service_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = vigil()
        .args(["demo", "gate", "--dir"])
        .arg(&dir)
        .args(["--timeout", "60", "--bin-dir"])
        .arg(&bin_dir)
        .output()
        .expect("run vigil demo gate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for line in [
        "-----BEGIN PUBLIC KEY-----",
        "valid: node 6a1c8a5e-0000-4000-8000-00000000000a, ear_status affirming",
        "-> released: trusted, EAR affirming, verified offline with the public key",
        "pcr_validation.invalid_pcr_4: quoted",
        "-> held: PCR 4 (the boot loader) is outside the class",
        "-> a new quote was taken on demand, not at the 300 s interval",
        "-> exit 1: one node of the rack is not trusted",
        "-> released: PCR 4 now has two allowed values (both boot loaders)",
        "demo gate: every step as expected",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    let stopped = stdout
        .split("== Stopping everything the demo started, by PID")
        .nth(1)
        .expect("the stop step");
    let pids: Vec<&str> = stopped
        .lines()
        .filter_map(|l| l.split("(pid ").nth(1)?.strip_suffix(')'))
        .collect();
    assert_eq!(pids.len(), 6, "{stopped}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
}

/// `vigil demo response`: the unplanned change caught, its event in the file and on
/// NATS, the quarantine in dry-run, the operator's relearn, the planned update recorded
/// from the canary and adopted; six processes stopped and the demo's stream deleted.
/// Needs NATS JetStream on 127.0.0.1:4222 (skipped without it, except under CI).
#[test]
fn the_response_demo_quarantines_an_unplanned_change_and_relearns_a_planned_one() {
    if !vigil_testkit::require("vigil demo response", vigil_testkit::MANUFACTURE_TOOLS) {
        return;
    }
    if std::net::TcpStream::connect(("127.0.0.1", 4222)).is_err() {
        vigil_testkit::skip(
            "vigil demo response",
            "no NATS server on 127.0.0.1:4222; start nats-server -js",
        );
        return;
    }
    let bin_dir = service_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = vigil()
        .args(["demo", "response", "--dir"])
        .arg(&dir)
        .args(["--timeout", "60", "--bin-dir"])
        .arg(&bin_dir)
        .output()
        .expect("run vigil demo response");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for line in [
        "-> both nodes are trusted (Get Quote), class demo-web",
        "state: Invalid Quote, event: ima.validation.ima-ng.runtime_policy_hash",
        "kind runtime, policy_evaluation_passed: false",
        "(the same event, 1 message)",
        "-> Invalid Quote; a runtime event with policy_evaluation_passed: false, in the file and on NATS",
        "quarantine (rule quarantine-runtime): dry_run: dry-run: would run",
        "agent log: dry-run: would run /usr/libexec/vigil/quarantine.sh to drop the network except to the control plane",
        "relearnt: 1 changed value(s) adopted, node reactivated",
        "-> the production node is trusted again (Get Quote)",
        "the relearn rule matched and refused: not every change is in a known-good set",
        "-> app-2.0: opt/app/app.sh's new digest, for class demo-web",
        "kind relearned, policy_evaluation_passed: true",
        "detail: sets [\"app-2.0\"], rule relearn-planned-updates",
        "-> relearned from app-2.0: the production node stayed in Get Quote",
        "demo response: every step as expected",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    let stopped = stdout
        .split("== Stopping everything the demo started, by PID")
        .nth(1)
        .expect("the stop step");
    let pids: Vec<&str> = stopped
        .lines()
        .filter_map(|l| l.split("(pid ").nth(1)?.strip_suffix(')'))
        .collect();
    assert_eq!(pids.len(), 6, "{stopped}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
    assert!(stopped.contains("deleted"), "{stopped}");
}

#[test]
fn the_demo_refuses_a_foreign_directory_and_missing_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("precious"), "data").unwrap();
    // Stand-ins for the service binaries, so this check does not depend on the other
    // test's `cargo build` having finished: the directory is refused before any runs.
    let bins = tempfile::tempdir().unwrap();
    for s in SERVICES {
        std::fs::write(bins.path().join(s), "").unwrap();
    }
    let out = vigil()
        .arg("demo")
        .arg("--dir")
        .arg(tmp.path())
        .arg("--bin-dir")
        .arg(bins.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is not empty and not a previous demo's directory"),
        "{err}"
    );
    assert!(tmp.path().join("precious").exists(), "nothing is wiped");

    let out = vigil()
        .arg("demo")
        .arg("--dir")
        .arg(tmp.path().join("new"))
        .arg("--bin-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("vigil-registrar not found"), "{err}");
    assert!(!tmp.path().join("new").exists(), "nothing is created");
}
