//! Interop deployment 1 (docs/interop.md): the Vigil agent in a Keylime 7.14.3
//! deployment. Keylime's registrar and verifier (`vigil_testkit::keylime`), the agent in
//! process on a manufactured swtpm (EK certificate from a local CA) with IMA emulation,
//! everything on loopback with one CA (`KEYLIME_DIR/cv_ca`) for the mTLS between them.
//!
//! - `keylime_tenant_drives_vigil_agent`: the agent registers with Keylime's registrar
//!   on its own; `keylime_tenant` sees it there (`regstatus`) and enrols it (`add`) with
//!   a runtime policy made by `keylime-policy` from the agent's IMA log, its EK
//!   certificate checked against the swtpm CA in `tpm_cert_store`, and a `--cert
//!   default` package with `--include` (an `autorun.sh` that writes a marker, a
//!   revocation action in `action_list`). Keylime's verifier attests the agent
//!   (`Get Quote`, `attestation_count` rising, seen with `cvstatus`), delivers V, and
//!   the payload runs. A measured file is tampered with: Keylime's verifier reports
//!   `Invalid Quote` with the failure id Vigil's verifier gives, and its signed
//!   revocation notice makes the agent run the payload's action.
//! - `vigil_tenant_drives_keylime_services`: the same deployment driven by `vigil
//!   tenant add/status/delete` and a policy from `vigil policy create runtime -m`, with
//!   first a policy that lacks one measured file: Keylime's verifier refuses the first
//!   quote, V is never sent and the payload never runs; after `delete` and an `add`
//!   with the right policy it does.
//!
//! Polling reads the verifier's status over its REST API (cheap); each state that
//! matters is then asserted once through the tenant under test. Without swtpm or the
//! venv the tests skip with a note, and fail under CI.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_agent::{Agent, Config, Registration};
use vigil_service::client::{Client, Endpoint};
use vigil_testkit::keylime::{KeylimeEnv, KeylimeService, TenantRun};
use vigil_testkit::Swtpm;

/// The event id both Keylime's verifier and Vigil's give a file whose digest the
/// runtime policy does not list.
const FAILURE_ID: &str = "ima.validation.ima-ng.runtime_policy_hash";
/// ... and a file the runtime policy does not name at all.
const NOT_IN_POLICY_ID: &str = "ima.validation.ima-ng.not_in_allowlist";
/// Keylime's operational states (`keylime/common/states.py`).
const GET_QUOTE: u64 = 3;
const INVALID_QUOTE: u64 = 9;
/// `--cert` makes or opens a Keylime CA whose key store needs a password; without one
/// in the configuration the tenant prompts.
const CA_PASSWORD: (&str, &str) = ("KEYLIME_CA_PASSWORD", "vigil-test-ca");
/// Longest wait for a state (Python services on a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(90);
/// What the payload's `autorun.sh` writes into the marker file.
const MARKER_TEXT: &str = "autorun ran";

/// One Keylime deployment with the Vigil agent. Fields drop in order: the services'
/// process groups are killed before their directory goes, swtpm last.
struct Deployment {
    agent: Option<Agent>,
    verifier: KeylimeService,
    registrar: KeylimeService,
    keylime: KeylimeEnv,
    uuid: &'static str,
    /// A measured file, tampered with by [`Self::tamper`].
    tool: PathBuf,
    /// The `--include` directory: `autorun.sh`, `action_list`, `revoked.sh`.
    include: PathBuf,
    /// Written by the payload's `autorun.sh`.
    marker: PathBuf,
    /// The revocation message, copied there by the payload's `revoked.sh`.
    revoked: PathBuf,
    state_dir: PathBuf,
    work: tempfile::TempDir,
    tpm: Swtpm,
}

impl Deployment {
    async fn start(test: &str, uuid: &'static str) -> Option<Self> {
        let keylime = KeylimeEnv::new(test)?;
        let tpm = Swtpm::manufactured(test, &[])?;
        // The tenant's EK check (require_ek_cert, the default) against the swtpm's CA.
        keylime.trust_ek_ca(&tpm);
        let (registrar, verifier) = tokio::task::block_in_place(|| {
            let registrar = keylime.registrar(&[]);
            let verifier = keylime.verifier(
                registrar.tls_port(),
                &[("KEYLIME_VERIFIER_QUOTE_INTERVAL", "1")],
            );
            (registrar, verifier)
        });

        let work = tempfile::tempdir().unwrap();
        let measured = work.path().join("measured");
        std::fs::create_dir_all(measured.join("bin")).unwrap();
        std::fs::create_dir_all(measured.join("etc")).unwrap();
        let tool = measured.join("bin/tool");
        std::fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
        std::fs::write(measured.join("bin/helper"), "#!/bin/sh\necho helper\n").unwrap();
        std::fs::write(measured.join("etc/app.conf"), "setting = 1\n").unwrap();

        let marker = work.path().join("autorun-ran");
        let revoked = work.path().join("revocation.json");
        let include = work.path().join("include");
        std::fs::create_dir_all(&include).unwrap();
        std::fs::write(
            include.join("autorun.sh"),
            format!("#!/bin/sh\necho '{MARKER_TEXT}' > '{}'\n", marker.display()),
        )
        .unwrap();
        std::fs::write(include.join("action_list"), "revoked.sh\n").unwrap();
        std::fs::write(
            include.join("revoked.sh"),
            format!("#!/bin/sh\ncp \"$1\" '{}'\n", revoked.display()),
        )
        .unwrap();

        let state_dir = work.path().join("agent");
        let config = Config {
            uuid: uuid.into(),
            port: 0,
            contact_port: 0,
            registrar_port: registrar.port(),
            tpm_tcti: tpm.tcti(),
            state_dir: state_dir.clone(),
            trusted_client_ca: vec![keylime.ca().ca_cert()],
            ima_emulate: vec![measured],
            // Re-measured by the test (`Agent::ima_rescan`), so the tamper is seen at
            // a known moment.
            ima_emulate_interval: 0,
            measuredboot_ml_path: work.path().join("no-uefi-log"),
            // Only the payload's actions.
            revocation_actions_dir: work.path().join("no-actions"),
            registration_retry_max: 1,
            ..Config::default()
        };
        let agent = Agent::start(&config).await.expect("agent starts");
        Some(Self {
            agent: Some(agent),
            verifier,
            registrar,
            keylime,
            uuid,
            tool,
            include,
            marker,
            revoked,
            state_dir,
            work,
            tpm,
        })
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().unwrap()
    }

    fn agent_port(&self) -> String {
        self.agent().addr().port().to_string()
    }

    /// The agent's emulated IMA list (what a policy is made from).
    fn ima_log(&self) -> PathBuf {
        self.state_dir.join("ima_emulated_measurements")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Every log that explains a failure: Keylime's services and the swtpm's.
    fn logs(&self) -> String {
        format!(
            "--- Keylime registrar:\n{}\n--- Keylime verifier:\n{}\n--- swtpm:\n{}",
            tail(&self.registrar.log()),
            tail(&self.verifier.log()),
            tail(&std::fs::read_to_string(self.tpm.path("swtpm.log")).unwrap_or_default()),
        )
    }

    async fn wait_registered(&self) {
        let mut rx = self.agent().registration();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match &*rx.borrow_and_update() {
                Registration::Active { .. } => return,
                Registration::Refused(why) => {
                    panic!(
                        "Keylime's registrar refused the agent: {why}\n{}",
                        self.logs()
                    )
                }
                Registration::Pending => {}
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!("not registered within {WAIT:?}\n{}", self.logs());
            }
        }
    }

    /// `keylime_tenant` against this deployment's services.
    fn keylime_tenant(&self, args: &[&str]) -> TenantRun {
        tokio::task::block_in_place(|| {
            self.keylime.tenant_with(
                self.registrar.tls_port(),
                self.verifier.port(),
                &[CA_PASSWORD],
                args,
            )
        })
    }

    /// `vigil tenant` against this deployment's services: exit code, stdout, stderr.
    fn vigil_tenant(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let registrar_port = self.registrar.tls_port().to_string();
        let verifier_port = self.verifier.port().to_string();
        let tls_dir = self.keylime.dir().join("cv_ca");
        let store = self.keylime.dir().join("tpm_cert_store");
        let state = self.path("vigil");
        let mut all = vec!["tenant"];
        all.extend_from_slice(args);
        all.extend([
            "--registrar-port",
            &registrar_port,
            "--verifier-port",
            &verifier_port,
            "--tls-dir",
            p(&tls_dir),
            "--state-dir",
            p(&state),
        ]);
        if matches!(args.first(), Some(&"add")) {
            all.extend(["--tpm-cert-store", p(&store)]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(&all)
            .env_remove("VIGIL_STATE_DIR")
            .output()
            .expect("run vigil");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The verifier's status object for the agent, read over its REST API with the
    /// CA's client certificate.
    async fn verifier_status(&self) -> Value {
        let ca = self.keylime.ca();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.verifier.port()));
        let endpoint = Endpoint::addr(addr).with_tls(Arc::new(
            vigil_tls::client_config(&ca.ca_cert(), Some((&ca.cert("client"), &ca.key("client"))))
                .unwrap(),
        ));
        let a = Client::default()
            .request(
                &endpoint,
                hyper::Method::GET,
                &format!("/v2.6/agents/{}", self.uuid),
                None,
            )
            .await
            .expect("verifier status");
        assert_eq!(a.status, 200, "{}\n{}", a.json(), self.logs());
        a.json()["results"].clone()
    }

    /// Polls the verifier until `done(status)`; that status.
    async fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.verifier_status().await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "not {what} within {WAIT:?}: {status}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Attested: in `Get Quote` with at least `count` attestations.
    async fn wait_attested(&self, count: u64) -> Value {
        self.wait_status("attested", |s| {
            s["operational_state"] == GET_QUOTE && s["attestation_count"].as_u64() >= Some(count)
        })
        .await
    }

    /// Refused: `Invalid Quote`, with `event_id` (the one Vigil's verifier gives) as
    /// the last event.
    async fn wait_refused(&self, event_id: &str) -> Value {
        let s = self
            .wait_status("Invalid Quote", |s| s["operational_state"] == INVALID_QUOTE)
            .await;
        assert_eq!(s["last_event_id"], event_id, "{s}");
        s
    }

    /// Waits until the payload has run once; asserts its `autorun.sh` wrote the marker.
    async fn wait_payload(&self) {
        let mut rx = self.agent().payload_runs();
        tokio::time::timeout(WAIT, rx.wait_for(|runs| *runs >= 1))
            .await
            .unwrap_or_else(|_| panic!("the payload did not run within {WAIT:?}\n{}", self.logs()))
            .unwrap();
        let text = std::fs::read_to_string(&self.marker).expect("autorun.sh wrote the marker");
        assert_eq!(text.trim(), MARKER_TEXT);
    }

    fn assert_payload_not_run(&self) {
        assert_eq!(*self.agent().payload_runs().borrow(), 0);
        assert!(!self.marker.exists(), "autorun.sh ran");
    }

    /// Changes a measured file and has the agent measure it again: one new entry.
    async fn tamper(&self) {
        std::fs::write(&self.tool, "#!/bin/sh\necho tampered\n").unwrap();
        assert_eq!(self.agent().ima_rescan().await.unwrap(), 1);
    }

    /// Waits until a verified revocation notice ran the payload's `revoked.sh`;
    /// asserts the action got Keylime's message about this agent.
    async fn wait_revocation_action(&self) {
        let mut rx = self.agent().revocations();
        let ran = tokio::time::timeout(WAIT, rx.wait_for(|r| !r.is_empty()))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no verified revocation notice within {WAIT:?}\n{}",
                    self.logs()
                )
            })
            .unwrap()
            .clone();
        assert_eq!(ran, vec![vec!["revoked.sh".to_owned()]]);
        let msg: Value = serde_json::from_str(
            &std::fs::read_to_string(&self.revoked).expect("revoked.sh copied the message"),
        )
        .unwrap();
        assert_eq!(msg["type"], "revocation", "{msg}");
        assert_eq!(msg["agent_id"], self.uuid, "{msg}");
        assert_eq!(msg["event_id"], FAILURE_ID, "{msg}");
    }

    async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The last lines of a log, enough to see why something failed.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The status object of `uuid` a `keylime_tenant` run logged: `regstatus` logs the
/// response envelope, `cvstatus` only `{uuid: status}`.
fn tenant_status(run: &TenantRun, uuid: &str) -> Value {
    assert!(run.success, "keylime_tenant failed:\n{}", run.log);
    run.json()
        .into_iter()
        .find_map(|v| {
            let in_envelope = v.get("results").and_then(|r| r.get(uuid)).cloned();
            in_envelope.or_else(|| v.get(uuid).cloned())
        })
        .unwrap_or_else(|| panic!("no status of {uuid} in:\n{}", run.log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_tenant_drives_vigil_agent() {
    const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0d101";
    let Some(d) = Deployment::start("keylime_tenant_drives_vigil_agent", UUID).await else {
        return;
    };
    d.wait_registered().await;

    // Keylime's registrar answers only for activated agents.
    let run = d.keylime_tenant(&["-c", "regstatus", "-u", UUID]);
    let reg = tenant_status(&run, UUID);
    assert_eq!(reg["operational_state"], "Registered", "{reg}");
    assert_eq!(reg["port"].to_string(), d.agent_port(), "{reg}");
    let served_cert = std::fs::read_to_string(d.state_dir.join("server-cert.crt")).unwrap();
    assert_eq!(reg["mtls_cert"], served_cert.as_str());
    assert!(
        reg["ekcert"].is_string(),
        "the EK certificate from NV: {reg}"
    );

    // A runtime policy from the agent's IMA list, made by Keylime's own tool.
    let policy = d.path("policy.json");
    let out = d
        .keylime
        .command("keylime-policy")
        .args(["create", "runtime", "-m", p(&d.ima_log()), "-o", p(&policy)])
        .output()
        .unwrap();
    assert!(out.status.success(), "keylime-policy: {out:?}");

    d.assert_payload_not_run();
    let port = d.agent_port();
    let run = d.keylime_tenant(&[
        "-c",
        "add",
        "-u",
        UUID,
        "-t",
        "127.0.0.1",
        "-tp",
        &port,
        "--runtime-policy",
        p(&policy),
        "--cert",
        "default",
        "--include",
        p(&d.include),
    ]);
    assert!(
        run.success,
        "keylime_tenant -c add:\n{}\n{}",
        run.log,
        d.logs()
    );

    // Attested again and again; V arrived after the first good quote and the payload
    // ran.
    d.wait_attested(3).await;
    d.wait_payload().await;
    let run = d.keylime_tenant(&["-c", "cvstatus", "-u", UUID]);
    let st = tenant_status(&run, UUID);
    assert_eq!(st["operational_state"], "Get Quote", "{st}");
    assert!(st["attestation_count"].as_u64().unwrap() >= 3, "{st}");

    // Tampered: Keylime's verifier names the same failure as Vigil's, and its signed
    // notice runs the payload's revocation action.
    d.tamper().await;
    d.wait_refused(FAILURE_ID).await;
    let run = d.keylime_tenant(&["-c", "cvstatus", "-u", UUID]);
    let st = tenant_status(&run, UUID);
    assert_eq!(st["operational_state"], "Invalid Quote", "{st}");
    assert_eq!(st["last_event_id"], FAILURE_ID, "{st}");
    d.wait_revocation_action().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_tenant_drives_keylime_services() {
    const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0d102";
    let Some(d) = Deployment::start("vigil_tenant_drives_keylime_services", UUID).await else {
        return;
    };
    d.wait_registered().await;
    let json = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, out, err) = d.vigil_tenant(&all);
        assert_eq!(code, Some(0), "vigil tenant {args:?}: {err}\n{}", d.logs());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    // `status --json` exits 0 attested, 1 failed: the status object either way.
    let status = |expected: i32| -> Value {
        let (code, out, err) = d.vigil_tenant(&["status", "-u", UUID, "--json"]);
        assert_eq!(
            code,
            Some(expected),
            "vigil tenant status: {err}\n{}",
            d.logs()
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let reg = json(&["regstatus", "-u", UUID])[UUID].clone();
    assert_eq!(reg["port"].to_string(), d.agent_port(), "{reg}");
    assert!(reg["ekcert"].is_string(), "{reg}");

    // Policies from the agent's IMA list by Vigil: a good one, and one made from the
    // list without the tool's entry.
    let log = std::fs::read_to_string(d.ima_log()).unwrap();
    let tool = p(&d.tool);
    let partial = d.path("partial-ima-log");
    std::fs::write(
        &partial,
        log.lines()
            .filter(|l| !l.ends_with(tool))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    let (good, bad) = (d.path("policy.json"), d.path("policy-without-tool.json"));
    for (list, out) in [(d.ima_log(), &good), (partial, &bad)] {
        let o = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["policy", "create", "runtime", "-m", p(&list), "-o", p(out)])
            .output()
            .unwrap();
        assert!(o.status.success(), "vigil policy create: {o:?}");
    }
    let add = |policy: &Path| {
        let (code, _, err) = d.vigil_tenant(&[
            "add",
            "-u",
            UUID,
            "--runtime-policy",
            p(policy),
            "--cert",
            "default",
            "--include",
            p(&d.include),
        ]);
        assert_eq!(code, Some(0), "vigil tenant add: {err}\n{}", d.logs());
    };

    // The first quote fails the policy: no V, so the payload never runs.
    add(&bad);
    d.wait_refused(NOT_IN_POLICY_ID).await;
    d.assert_payload_not_run();
    let (code, _, err) = d.vigil_tenant(&["delete", "-u", UUID]);
    assert_eq!(code, Some(0), "vigil tenant delete: {err}");

    // The right policy: attested, then the payload runs.
    add(&good);
    d.wait_attested(3).await;
    d.wait_payload().await;
    let st = status(0);
    assert_eq!(st[UUID]["operational_state"], "Get Quote", "{st}");
    assert!(st[UUID]["attestation_count"].as_u64().unwrap() >= 3, "{st}");

    d.tamper().await;
    d.wait_refused(FAILURE_ID).await;
    let st = status(1);
    assert_eq!(st[UUID]["operational_state"], "Invalid Quote", "{st}");
    assert_eq!(st[UUID]["last_event_id"], FAILURE_ID, "{st}");
    d.wait_revocation_action().await;

    let (code, _, err) = d.vigil_tenant(&["delete", "-u", UUID]);
    assert_eq!(code, Some(0), "vigil tenant delete: {err}");
    let (code, _, _) = d.vigil_tenant(&["status", "-u", UUID]);
    assert_eq!(code, Some(1), "deleted at Keylime's verifier");
    d.stop().await;
}
