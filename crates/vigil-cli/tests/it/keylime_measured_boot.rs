//! Interop deployment 1m (docs/interop.md): Keylime 7.14.3's verifier attests the Vigil
//! agent with a measured-boot policy.
//!
//! swtpm has no firmware in front of it, so the test plays its part: before the agent
//! starts, swtpm's SHA-256 PCRs 0–7 are extended with the digests of a real UEFI event
//! log (tpm2-tools' `event-bootorder.bin`, shim + GRUB + kernel, Secure Boot off), which
//! the agent then serves from `measuredboot_ml_path` as it serves securityfs on a real
//! node (no emulation). `vigil policy create measured-boot -e LOG --without-secureboot`
//! makes the reference state; `keylime_tenant -c add --mb-policy FILE` enrols the node
//! with Keylime's verifier running its `example` policy. Keylime reaches `Get Quote`;
//! then PCR 4 is extended once more than the log says (another boot loader, the agent
//! stopped meanwhile: swtpm serves one connection at a time) and Keylime's verifier
//! fails the node on PCR 4.
//!
//! Without swtpm or the venv the test skips with a note, and fails under CI.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::keylime_import::wait_status;
use vigil_core::{eventlog, Digest, HashAlg};
use vigil_testkit::keylime::KeylimeEnv;
use vigil_testkit::Swtpm;
use vigil_tpm::Tpm;

const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0d301";
pub(crate) const UEFI_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/tpm2-tools/event-bootorder.bin"
);
const BANK: HashAlg = HashAlg::Sha256;
/// Keylime's operational states (`keylime/common/states.py`).
const GET_QUOTE: u64 = 3;
const FAILED: u64 = 7;
const INVALID_QUOTE: u64 = 9;
/// Longest wait for a state (Python services on a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(90);

/// Extends `tpm` as the firmware would have for the UEFI log `uefi`, and checks that
/// PCRs 0–7 then equal the log's replay (else a pass would prove nothing).
pub(crate) fn play_firmware(tpm: &Tpm, uefi: &[u8]) {
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
    let replayed = &log.replay()[&BANK];
    for (pcr, value) in tpm.pcr_read(BANK, &(0..8).collect::<Vec<_>>()).unwrap() {
        let expected = replayed.get(&pcr).cloned().unwrap_or_else(|| BANK.zero());
        assert_eq!(value, expected, "PCR {pcr} replays the log");
    }
}

async fn start_agent(
    config: &vigil_agent::Config,
    logs: impl Fn() -> String,
) -> vigil_agent::Agent {
    let agent = vigil_agent::Agent::start(config)
        .await
        .expect("agent starts");
    let mut rx = agent.registration();
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|r| matches!(r, vigil_agent::Registration::Active { .. })),
    )
    .await
    .unwrap_or_else(|_| panic!("not registered at Keylime's registrar:\n{}", logs()))
    .unwrap();
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_verifier_measured_boot_policy() {
    const TEST: &str = "keylime_verifier_measured_boot_policy";
    let Some(keylime) = KeylimeEnv::new(TEST) else {
        return;
    };
    let Some(tpm) = Swtpm::manufactured(TEST, &[]) else {
        return;
    };
    keylime.trust_ek_ca(&tpm);
    let uefi = std::fs::read(UEFI_LOG).expect("the UEFI log");
    let tcti = tpm.tcti();
    tokio::task::block_in_place(|| play_firmware(&Tpm::connect(&tcti).expect("swtpm"), &uefi));

    let (verifier, registrar) = tokio::task::block_in_place(|| {
        let registrar = keylime.registrar(&[]);
        let verifier = keylime.verifier(
            registrar.tls_port(),
            &[
                ("KEYLIME_VERIFIER_QUOTE_INTERVAL", "1"),
                ("KEYLIME_VERIFIER_MEASURED_BOOT_POLICY_NAME", "example"),
                // Room for the agent's restart below (90 s), on a loaded machine.
                ("KEYLIME_VERIFIER_MAX_RETRIES", "180"),
                ("KEYLIME_VERIFIER_RETRY_INTERVAL", "0.5"),
                ("KEYLIME_VERIFIER_EXPONENTIAL_BACKOFF", "False"),
            ],
        );
        (verifier, registrar)
    });
    let logs = || {
        format!(
            "--- Keylime registrar:\n{}\n--- Keylime verifier:\n{}",
            registrar.log(),
            verifier.log()
        )
    };

    let work = tempfile::tempdir().unwrap();
    let uefi_path = work.path().join("binary_bios_measurements");
    std::fs::write(&uefi_path, &uefi).unwrap();
    let ima_path = work.path().join("ascii_runtime_measurements");
    std::fs::write(&ima_path, "").unwrap();
    let config = vigil_agent::Config {
        uuid: UUID.into(),
        port: 0,
        contact_port: 0,
        registrar_port: registrar.port(),
        tpm_tcti: tcti.clone(),
        state_dir: work.path().join("agent"),
        trusted_client_ca: vec![keylime.ca().ca_cert()],
        ima_ml_path: ima_path,
        measuredboot_ml_path: uefi_path.clone(),
        registration_retry_max: 1,
        ..vigil_agent::Config::default()
    };
    let agent = start_agent(&config, logs).await;
    // Started again on the same port after the PCR 4 change, so the enrolment holds.
    let config = vigil_agent::Config {
        port: agent.addr().port(),
        ..config
    };

    let refstate = work.path().join("refstate.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["policy", "create", "measured-boot", "-e"])
        .arg(&uefi_path)
        .args(["--without-secureboot", "-o"])
        .arg(&refstate)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vigil policy create measured-boot: {out:?}"
    );

    let port = config.port.to_string();
    let refstate_arg = refstate.to_str().unwrap();
    let run = tokio::task::block_in_place(|| {
        keylime.tenant(
            registrar.tls_port(),
            verifier.port(),
            &[
                "-c",
                "add",
                "-u",
                UUID,
                "-t",
                "127.0.0.1",
                "-tp",
                &port,
                "--mb-policy",
                refstate_arg,
            ],
        )
    });
    assert!(
        run.success,
        "keylime_tenant -c add --mb-policy:\n{}\n{}",
        run.log,
        logs()
    );
    let kl_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, verifier.port()));
    let s = wait_status(
        &keylime,
        kl_addr,
        UUID,
        "attested",
        |s| s["operational_state"] == GET_QUOTE && s["attestation_count"].as_u64() >= Some(2),
        logs,
    )
    .await;
    assert_eq!(s["has_mb_refstate"], 1, "{s}");

    // Another boot loader: PCR 4 one extend past the log.
    agent.shutdown().await;
    tokio::task::block_in_place(|| {
        Tpm::connect(&tcti)
            .expect("swtpm")
            .pcr_extend(4, BANK, &BANK.hash(b"another boot loader"))
            .unwrap();
    });
    let agent = start_agent(&config, logs).await;
    let s = wait_status(
        &keylime,
        kl_addr,
        UUID,
        "failed",
        |s| {
            matches!(
                s["operational_state"].as_u64(),
                Some(FAILED | INVALID_QUOTE)
            )
        },
        logs,
    )
    .await;
    assert_eq!(s["operational_state"], INVALID_QUOTE, "{s}");
    assert_eq!(s["last_event_id"], "measured_boot.invalid_pcr_4", "{s}");
    agent.shutdown().await;
}
