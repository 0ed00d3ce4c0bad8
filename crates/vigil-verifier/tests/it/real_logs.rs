//! The agent without IMA emulation, serving real logs from configured paths, attested
//! end to end with a runtime policy and a measured-boot policy.
//!
//! swtpm has no firmware or kernel in front of it, so the test plays their part: before
//! the agent starts it extends swtpm's SHA-256 PCRs 0–7 with the digests of a real UEFI
//! event log and PCR 10 with the SHA-256 template hash of every entry of a real kernel
//! IMA list, then checks that PCRs 0–7 equal the log's replay. The agent serves both
//! files from `ima_ml_path` and `measuredboot_ml_path`, as it serves securityfs on a
//! real node.
//!
//! The logs: rust-keylime's 826-line `ima-ng` list (its `boot_aggregate` is the all-zero
//! value of a kernel that found no TPM, which the runtime policy lists as it does any
//! digest; the verifier does not recompute it from PCRs), and tpm2-tools'
//! `event-bootorder.bin`, a shim + GRUB + kernel boot with Secure Boot off. Other logs do
//! not fit: Keylime's Fedora 41 log starts at locality 3 (PCR 0 starts at 3, which
//! extends on an already started swtpm cannot reproduce), `event-arch-linux.bin` has no
//! kernel or initrd digest the `example` policy requires, and `event.bin` has no boot
//! loader at all.
//!
//! The policies are made by the functions behind `vigil policy create measured-boot`
//! (`create_refstate` over the log) and `vigil policy create runtime -m` (a
//! `PolicyDraft` fed `ima_log_digests`), and the verifier runs with `measured_boot_policy_name =
//! "example"`. The node passes, then the test changes it as a changed machine would:
//! PCR 4 extended once more than the UEFI log says (another boot loader), or an IMA
//! entry the runtime policy does not allow appended to the list and PCR 10. swtpm
//! serves one connection at a time and the agent holds it, so the change is made with
//! the agent stopped, which is then started again on the same port and state (the
//! verifier retries meanwhile, and then sees the changed node).

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_for, Client, Pki, B64};
use vigil_core::eventlog;
use vigil_core::ima::{ImaEntry, ImaNgRecord};
use vigil_core::policy::measured_boot::{create_refstate, LogView, EXAMPLE_RELEVANT_PCRS};
use vigil_core::policy::runtime::create::{ima_log_digests, PolicyDraft};
use vigil_core::{Digest, HashAlg};
use vigil_testkit::Swtpm;
use vigil_tpm::Tpm;

use base64::Engine as _;

const IMA_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/rust-keylime/keylime-agent/test-data/ima/ascii_runtime_measurements"
);
const UEFI_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/tpm2-tools/event-bootorder.bin"
);
const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
const BANK: HashAlg = HashAlg::Sha256;
/// A measurement the runtime policy does not know, as the kernel would append it.
fn extra_entry() -> String {
    ImaNgRecord::new(
        HashAlg::Sha256,
        &[0x11; 32],
        "/usr/bin/intruder",
        HashAlg::Sha1,
    )
    .expect("an ima-ng record")
    .line
}

/// Starts the agent and waits for its registration.
async fn start_agent(config: &vigil_agent::Config) -> vigil_agent::Agent {
    let agent = vigil_agent::Agent::start(config)
        .await
        .expect("agent starts");
    let mut rx = agent.registration();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !matches!(
            *rx.borrow_and_update(),
            vigil_agent::Registration::Active { .. }
        ) {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the agent registered within 60 s");
    agent
}

/// A node: swtpm with PCRs 0–7 and 10 set from the logs, the agent serving the logs
/// from configured paths (no emulation), and a registrar.
struct Node {
    tpm: Swtpm,
    agent: Option<vigil_agent::Agent>,
    config: vigil_agent::Config,
    registrar: vigil_registrar::Registrar,
    _dir: tempfile::TempDir,
}

/// The PCR 10 extend of one `ima-ng` line in the SHA-256 bank: the template data's
/// hash, or all ones for a violation entry (as the kernel extends it).
fn ima_extend(line: &str) -> Digest {
    let entry = ImaEntry::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    if entry.template_hash.is_violation(HashAlg::Sha1) {
        Digest::from_slice(&[0xff; 32]).unwrap()
    } else {
        BANK.hash(&entry.template_data())
    }
}

/// Extends `tpm` as the firmware and the kernel would have for `uefi` and `ima`.
fn play_kernel(tpm: &Tpm, uefi: &[u8], ima: &str) {
    let log = eventlog::parse(uefi).expect("the UEFI log parses");
    for event in &log.events {
        if event.event_type == eventlog::EV_NO_ACTION {
            continue;
        }
        for &(alg, digest) in &event.digests {
            if HashAlg::from_tpm_alg_id(alg) == Some(BANK) {
                tpm.pcr_extend(event.pcr, BANK, &Digest::from_slice(digest).unwrap())
                    .unwrap();
            }
        }
    }
    // The log must account for PCRs 0–7 exactly, or the passing case proves nothing.
    let replayed = &log.replay()[&BANK];
    for (pcr, value) in tpm.pcr_read(BANK, &(0..8).collect::<Vec<_>>()).unwrap() {
        // A PCR no event extends stays zero.
        let expected = replayed.get(&pcr).cloned().unwrap_or_else(|| BANK.zero());
        assert_eq!(value, expected, "PCR {pcr} replays the log");
    }
    for line in ima.lines() {
        tpm.pcr_extend(10, BANK, &ima_extend(line)).unwrap();
    }
}

impl Node {
    async fn start(test: &str, pki: &Pki) -> Option<Self> {
        let tpm = Swtpm::manufactured(test, &[])?;
        let dir = tempfile::tempdir().unwrap();
        let uefi = std::fs::read(UEFI_LOG).expect("the UEFI log");
        let ima = std::fs::read_to_string(IMA_LOG).expect("rust-keylime IMA log");
        let kernel = Tpm::connect(&tpm.tcti()).expect("swtpm");
        play_kernel(&kernel, &uefi, &ima);
        drop(kernel);
        let (ima_path, uefi_path) = (dir.path().join("ima"), dir.path().join("uefi"));
        std::fs::write(&ima_path, &ima).unwrap();
        std::fs::write(&uefi_path, &uefi).unwrap();

        let registrar = vigil_registrar::Registrar::start(&vigil_registrar::Config {
            port: 0,
            tls_port: 0,
            state_dir: dir.path().join("registrar"),
            tls_dir: pki.tls_dir(),
            ..vigil_registrar::Config::default()
        })
        .await
        .expect("registrar starts");
        let config = vigil_agent::Config {
            uuid: UUID.into(),
            port: 0,
            contact_port: 0,
            registrar_port: registrar.http_addr().port(),
            tpm_tcti: tpm.tcti(),
            state_dir: dir.path().join("agent"),
            trusted_client_ca: vec![pki.tls_dir().join("cacert.crt")],
            ima_ml_path: ima_path,
            measuredboot_ml_path: uefi_path,
            registration_retry_max: 1,
            ..vigil_agent::Config::default()
        };
        let agent = start_agent(&config).await;
        // Started again on the same port, so that the enrolment stays valid.
        let config = vigil_agent::Config {
            port: agent.addr().port(),
            ..config
        };
        Some(Self {
            tpm,
            agent: Some(agent),
            config,
            registrar,
            _dir: dir,
        })
    }

    /// Stops the agent, lets `change` extend the TPM and edit the served IMA list (as the
    /// kernel would), and starts the agent again.
    async fn change(&mut self, change: impl FnOnce(&Tpm, &Path) + Send + 'static) {
        self.agent.take().expect("running").shutdown().await;
        let (tcti, ima) = (self.tpm.tcti(), self.config.ima_ml_path.clone());
        tokio::task::spawn_blocking(move || {
            let kernel = Tpm::connect(&tcti).expect("swtpm");
            change(&kernel, &ima);
        })
        .await
        .unwrap();
        self.agent = Some(start_agent(&self.config).await);
    }

    /// The tenant's enrolment: the AK and certificate from the registrar, the PCRs the
    /// `example` policy reads and PCR 10 quoted, the runtime and measured-boot policies.
    async fn enrolment(&self, pki: &Pki, runtime: &Value, mb: &Value) -> Value {
        let mask = EXAMPLE_RELEVANT_PCRS
            .iter()
            .chain(&[10])
            .fold(0u32, |m, &pcr| m | 1 << pcr);
        support::real_agent_enrolment(
            pki,
            self.registrar.https_addr(),
            UUID,
            self.config.port,
            json!({"mask": format!("{mask:#x}")}).to_string(),
            B64.encode(runtime.to_string()),
            Value::String(mb.to_string()),
        )
        .await
    }

    async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
        self.registrar.shutdown().await;
    }
}

/// `vigil policy create runtime -m IMA_LOG`: the CLI's draft, fed the log's digests.
fn runtime_policy(log: &str) -> Value {
    let mut draft = PolicyDraft::new();
    draft.add_digests(ima_log_digests(log));
    draft
        .finish("2026-01-01T00:00:00")
        .expect("a runtime policy from the IMA log")
}

/// `vigil policy create measured-boot -e UEFI_LOG --without-secureboot` (the machine
/// the log comes from booted with Secure Boot off).
fn mb_policy(uefi: &[u8]) -> Value {
    let log = eventlog::parse(uefi).unwrap();
    create_refstate(&LogView::new(&log), true)
        .expect("a reference state from the UEFI log")
        .refstate
}

async fn status(c: &Client, a: SocketAddr) -> Value {
    c.call(a, "GET", &format!("/v2.6/agents/{UUID}"), None)
        .await
        .1["results"]
        .clone()
}

/// Enrols a node made from the real logs, waits for two passing rounds, applies
/// `change` (see [`Node::change`]), and returns the status once the verifier failed the
/// node.
async fn pass_then_fail(
    db: &str,
    test: &str,
    change: impl FnOnce(&Tpm, &Path) + Send + 'static,
) -> Option<Value> {
    let pki = Pki::new();
    let mut node = Node::start(test, &pki).await?;
    let v = support::start(&vigil_verifier::Config {
        measured_boot_policy_name: "example".into(),
        // Room for the agent's restart: 30 retries, 0.5 s apart.
        max_retries: 30,
        retry_interval: 0.5,
        exponential_backoff: false,
        ..pki.config(db)
    })
    .await;
    let (a, c) = (v.addr(), pki.client(true));
    let runtime = runtime_policy(&std::fs::read_to_string(IMA_LOG).unwrap());
    let mb = mb_policy(&std::fs::read(UEFI_LOG).unwrap());
    let body = node.enrolment(&pki, &runtime, &mb).await;
    let (code, r) = c
        .call(a, "POST", &format!("/v2.6/agents/{UUID}"), Some(body))
        .await;
    assert_eq!(code, 200, "{r}");
    let s = wait_for(90, "two passing rounds", || async {
        let s = status(&c, a).await;
        assert_ne!(s["attestation_status"], "FAIL", "the real logs attest: {s}");
        (s["attestation_count"].as_u64().unwrap_or(0) >= 2).then_some(s)
    })
    .await;
    assert_eq!(s["attestation_status"], "PASS", "{s}");
    assert_eq!(s["operational_state"], 3, "{s}");
    assert_eq!(s["has_runtime_policy"], 1, "{s}");
    assert_eq!(s["has_mb_refstate"], 1, "{s}");
    node.change(change).await;
    let s = wait_for(90, "the verifier failed the node", || async {
        let s = status(&c, a).await;
        matches!(s["operational_state"].as_u64(), Some(7 | 9)).then_some(s)
    })
    .await;
    v.shutdown().await;
    node.stop().await;
    Some(s)
}

fn sqlite(dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        PathBuf::from(dir).join("cv.db").display()
    )
}

/// The real logs pass; PCR 4 extended once more than the UEFI log says (another boot
/// loader): the measured-boot check fails on PCR 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_logs_pass_then_pcr4_change_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pcr4 = |tpm: &Tpm, _: &Path| {
        tpm.pcr_extend(4, BANK, &BANK.hash(b"another boot loader"))
            .unwrap();
    };
    let Some(s) = pass_then_fail(&sqlite(dir.path()), "real_logs_pcr4", pcr4).await else {
        return;
    };
    assert_eq!(s["attestation_status"], "FAIL", "{s}");
    assert_eq!(s["operational_state"], 9, "{s}");
    assert_eq!(s["last_event_id"], "measured_boot.invalid_pcr_4", "{s}");
}

/// The real logs pass; an IMA entry the runtime policy does not allow, appended to the
/// list and PCR 10: the runtime check fails on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_logs_pass_then_appended_ima_entry_fails() {
    let dir = tempfile::tempdir().unwrap();
    let append = |tpm: &Tpm, ima: &Path| {
        let line = extra_entry();
        let mut f = std::fs::OpenOptions::new().append(true).open(ima).unwrap();
        std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()).unwrap();
        tpm.pcr_extend(10, BANK, &ima_extend(&line)).unwrap();
    };
    let Some(s) = pass_then_fail(&sqlite(dir.path()), "real_logs_ima", append).await else {
        return;
    };
    assert_eq!(s["attestation_status"], "FAIL", "{s}");
    assert_eq!(s["operational_state"], 9, "{s}");
    assert_eq!(
        s["last_event_id"], "ima.validation.ima-ng.not_in_allowlist",
        "{s}"
    );
    assert!(s.to_string().contains("/usr/bin/intruder"), "{s}");
}
