//! Migration from Keylime (docs/migration.md): a node enrolled through Keylime 7.14.3's
//! own services goes on being attested by Vigil's, without re-enrolment.
//!
//! - `keylime_database_and_cv_ca_carry_over` (Keylime's services on SQLite) and
//!   `keylime_postgres_database_carries_over` (on PostgreSQL, through psycopg2, in a
//!   schema of the test's own): Keylime's verifier makes its `cv_ca` (`tls_dir =
//!   generate`, its own `ca_util`); Keylime's registrar and the Vigil agent (swtpm, IMA
//!   emulation, trusting that CA, serving a real UEFI log as in deployment 1m) use
//!   it; `keylime_tenant -c add` enrols the node with a runtime and a measured-boot
//!   policy and Keylime's verifier attests it. Keylime is stopped; `vigil
//!   store import-keylime` reads its databases (a dry run first, then the import, then
//!   again: refused, named, unless `--replace`); Vigil's registrar and verifier start
//!   on the imported store with `tls_dir` = Keylime's `cv_ca`, and the verifier reaches
//!   the agent over mTLS with Keylime's client certificate and attests it (`Get
//!   Quote`); a measured file changed → `Invalid Quote`, so the imported runtime policy
//!   is the one in force.
//!
//! Without swtpm, the venv (or PostgreSQL) the tests skip with a note, and fail under CI.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_service::client::{Client, Endpoint};
use vigil_testkit::keylime::{free_port, KeylimeEnv};
use vigil_testkit::Swtpm;

use crate::keylime_measured_boot::{play_firmware, UEFI_LOG};

const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0d201";
/// Keylime's operational states (`keylime/common/states.py`).
const GET_QUOTE: u64 = 3;
const INVALID_QUOTE: u64 = 9;
/// Longest wait for a state (Python services on a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(90);

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A verifier's status object for node `uuid`, over HTTPS with `cv_ca`'s client
/// certificate (Keylime's verifier and Vigil's answer the same API), polled until
/// `done` holds for it; `logs` explain a timeout.
pub(crate) async fn wait_status(
    keylime: &KeylimeEnv,
    addr: SocketAddr,
    uuid: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
    logs: impl Fn() -> String,
) -> Value {
    let ca = keylime.ca();
    let endpoint = Endpoint::addr(addr).with_tls(Arc::new(
        vigil_tls::client_config(&ca.ca_cert(), Some((&ca.cert("client"), &ca.key("client"))))
            .expect("Keylime's cv_ca client certificate loads"),
    ));
    let deadline = Instant::now() + WAIT;
    loop {
        let a = Client::default()
            .request(
                &endpoint,
                hyper::Method::GET,
                &format!("/v2.6/agents/{uuid}"),
                None,
            )
            .await
            .expect("verifier status");
        let s = a.json()["results"].clone();
        if a.status == 200 && done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within {WAIT:?}: {} {s}\n{}",
            a.status,
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The node's status once it is in `state` with at least one attestation.
async fn wait_state(
    keylime: &KeylimeEnv,
    addr: SocketAddr,
    state: u64,
    logs: impl Fn() -> String,
) -> Value {
    let done =
        |s: &Value| s["operational_state"] == state && s["attestation_count"].as_u64() >= Some(1);
    wait_status(
        keylime,
        addr,
        UUID,
        &format!("in state {state}"),
        done,
        logs,
    )
    .await
}

fn vigil(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// Keylime's services on SQLite (their default files in `KEYLIME_DIR`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_database_and_cv_ca_carry_over() {
    carry_over("keylime_database_and_cv_ca_carry_over", None).await;
}

/// Keylime's services on PostgreSQL (one schema of the test's own, for both: Keylime
/// keeps an alembic version table per service), through SQLAlchemy and psycopg2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_postgres_database_carries_over() {
    vigil_testkit::db::with_postgres(|url| async move {
        // `…?options[search_path]=SCHEMA` (sqlx's spelling) → libpq's, which both
        // psycopg2 (Keylime) and sqlx (the import) take.
        let (base, schema) = url
            .rsplit_once("options[search_path]=")
            .expect("the testkit's PostgreSQL URL names a schema");
        // SQLAlchemy's URL, driver named (its default is psycopg 3, Debian ships
        // psycopg2); the import takes it as Keylime's configuration spells it.
        let base = base
            .replacen("postgres://", "postgresql+psycopg2://", 1)
            .replacen("postgresql://", "postgresql+psycopg2://", 1);
        let sep = if base.ends_with(['?', '&']) { "" } else { "?" };
        carry_over(
            "keylime_postgres_database_carries_over",
            Some(format!("{base}{sep}options=-c%20search_path%3D{schema}")),
        )
        .await;
    })
    .await;
}

/// The whole migration; Keylime's services on `keylime_db` (a PostgreSQL URL) or, with
/// `None`, on SQLite.
async fn carry_over(test: &'static str, keylime_db: Option<String>) {
    let Some(keylime) = KeylimeEnv::without_ca(test) else {
        return;
    };
    let Some(tpm) = Swtpm::manufactured(test, &[]) else {
        return;
    };
    keylime.trust_ek_ca(&tpm);
    // A boot as the firmware would have measured it (deployment 1m), so the node is
    // enrolled with a measured-boot policy too.
    let uefi = std::fs::read(UEFI_LOG).expect("the UEFI log");
    tokio::task::block_in_place(|| {
        play_firmware(&vigil_tpm::Tpm::connect(&tpm.tcti()).expect("swtpm"), &uefi);
    });

    // Keylime's verifier first: it makes cv_ca, which its registrar then reads. With
    // API 2.1+ the tenant hands the verifier the AK and mTLS certificate, so the
    // verifier never calls the registrar (its port here is a placeholder).
    let (kl_verifier, kl_registrar) = tokio::task::block_in_place(|| {
        let mut verifier_env = vec![
            ("KEYLIME_VERIFIER_TLS_DIR", "generate"),
            ("KEYLIME_VERIFIER_QUOTE_INTERVAL", "1"),
            ("KEYLIME_VERIFIER_MEASURED_BOOT_POLICY_NAME", "example"),
        ];
        let mut registrar_env = vec![];
        if let Some(db) = &keylime_db {
            verifier_env.push(("KEYLIME_VERIFIER_DATABASE_URL", db.as_str()));
            registrar_env.push(("KEYLIME_REGISTRAR_DATABASE_URL", db.as_str()));
        }
        let verifier = keylime.verifier(free_port(), &verifier_env);
        (verifier, keylime.registrar(&registrar_env))
    });
    let ca = keylime.ca();
    for f in [
        ca.ca_cert(),
        ca.cert("server"),
        ca.key("server"),
        ca.cert("client"),
        ca.key("client"),
    ] {
        assert!(
            f.is_file(),
            "Keylime's verifier did not write {}",
            f.display()
        );
    }
    assert!(
        !ca.ca_key().exists(),
        "Keylime keeps its CA key in private.yml, not a PEM file"
    );

    let work = tempfile::tempdir().unwrap();
    let measured = work.path().join("measured");
    std::fs::create_dir_all(&measured).unwrap();
    let tool = measured.join("tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
    std::fs::write(measured.join("app.conf"), "setting = 1\n").unwrap();
    let uefi_path = work.path().join("binary_bios_measurements");
    std::fs::write(&uefi_path, &uefi).unwrap();
    let state_dir = work.path().join("agent");
    let agent = vigil_agent::Agent::start(&vigil_agent::Config {
        uuid: UUID.into(),
        port: 0,
        contact_port: 0,
        registrar_port: kl_registrar.port(),
        tpm_tcti: tpm.tcti(),
        state_dir: state_dir.clone(),
        trusted_client_ca: vec![ca.ca_cert()],
        ima_emulate: vec![measured],
        ima_emulate_interval: 0,
        measuredboot_ml_path: uefi_path.clone(),
        registration_retry_max: 1,
        ..vigil_agent::Config::default()
    })
    .await
    .expect("agent starts");
    let mut rx = agent.registration();
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|r| matches!(r, vigil_agent::Registration::Active { .. })),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not registered at Keylime's registrar:\n{}",
            kl_registrar.log()
        )
    })
    .unwrap();

    let policy = work.path().join("policy.json");
    let ima_log = state_dir.join("ima_emulated_measurements");
    let (code, out) = vigil(&[
        "policy",
        "create",
        "runtime",
        "-m",
        p(&ima_log),
        "-o",
        p(&policy),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let refstate = work.path().join("refstate.json");
    let (code, out) = vigil(&[
        "policy",
        "create",
        "measured-boot",
        "-e",
        p(&uefi_path),
        "--without-secureboot",
        "-o",
        p(&refstate),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let port = agent.addr().port().to_string();
    let run = tokio::task::block_in_place(|| {
        keylime.tenant(
            kl_registrar.tls_port(),
            kl_verifier.port(),
            &[
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
                "--mb-policy",
                p(&refstate),
            ],
        )
    });
    assert!(
        run.success,
        "keylime_tenant -c add:\n{}\n{}",
        run.log,
        kl_verifier.log()
    );
    let kl_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, kl_verifier.port()));
    wait_state(&keylime, kl_addr, GET_QUOTE, || kl_verifier.log()).await;

    // Keylime stops; its databases are imported.
    drop(kl_verifier);
    drop(kl_registrar);
    let sources = match &keylime_db {
        Some(db) => vec![db.clone()],
        None => ["reg_data.sqlite", "cv_data.sqlite"]
            .map(|f| p(&keylime.dir().join(f)).to_owned())
            .to_vec(),
    };
    let url = format!(
        "sqlite://{}?mode=rwc",
        work.path().join("vigil.sqlite").display()
    );
    let import = |extra: &[&str]| {
        let mut args = vec!["store", "import-keylime"];
        args.extend(sources.iter().map(String::as_str));
        args.extend(["--to", url.as_str()]);
        args.extend_from_slice(extra);
        vigil(&args)
    };
    let (code, out) = import(&["--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        format!("would import: registrarmain {UUID}"),
        format!("would import: allowlists {UUID}"),
        format!("would import: verifiermain {UUID}"),
        "(dry run: nothing written)".to_owned(),
    ] {
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }
    let (code, out) = import(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("imported: verifiermain {UUID}")),
        "{out}"
    );
    let (code, out) = import(&["--json"]);
    assert_eq!(code, Some(1), "{out}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    // The policies are the same as Vigil now holds: kept; the records are refused.
    let hows: Vec<_> = report["imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["table"].as_str().unwrap(), i["how"].as_str().unwrap()))
        .collect();
    assert_eq!(hows, [("allowlists", "same"), ("mbpolicies", "same")]);
    assert_eq!(
        report["not_imported"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(
        report["not_imported"][0],
        serde_json::json!({
            "table": "registrarmain",
            "id": UUID,
            "reason": "Vigil's registrar store already holds it (--replace overwrites)",
        })
    );

    // Vigil's services on the imported store, with Keylime's cv_ca as their TLS files.
    let vigil_state = work.path().join("vigil");
    let registrar = vigil_registrar::Registrar::start(&vigil_registrar::Config {
        port: 0,
        tls_port: 0,
        state_dir: vigil_state.join("registrar"),
        database_url: url.clone(),
        tls_dir: ca.dir().to_owned(),
        ..vigil_registrar::Config::default()
    })
    .await
    .expect("Vigil's registrar starts on Keylime's cv_ca");
    let verifier = vigil_verifier::Verifier::start(&vigil_verifier::Config {
        port: 0,
        state_dir: vigil_state.join("verifier"),
        database_url: url.clone(),
        tls_dir: ca.dir().to_owned(),
        measured_boot_policy_name: "example".into(),
        quote_interval: 1.0,
        retry_interval: 0.5,
        request_timeout: 5.0,
        ..vigil_verifier::Config::default()
    })
    .await
    .expect("Vigil's verifier starts on Keylime's cv_ca");

    // The registrar answers for the node Keylime's registrar activated.
    let (code, out) = vigil(&[
        "tenant",
        "regstatus",
        "-u",
        UUID,
        "--registrar-port",
        &registrar.https_addr().port().to_string(),
        "--tls-dir",
        p(ca.dir()),
        "--json",
    ]);
    assert_eq!(code, Some(0), "vigil tenant regstatus: {out}");

    // Attested by Vigil without re-enrolment, then the imported policy catches a change.
    let logs = || String::new();
    // Both imported policies in force: the boot replays against the reference state.
    let s = wait_state(&keylime, verifier.addr(), GET_QUOTE, logs).await;
    assert_eq!(
        (&s["has_runtime_policy"], &s["has_mb_refstate"]),
        (&Value::from(1), &Value::from(1)),
        "{s}"
    );
    std::fs::write(&tool, "#!/bin/sh\necho tampered\n").unwrap();
    assert_eq!(agent.ima_rescan().await.unwrap(), 1);
    let s = wait_state(&keylime, verifier.addr(), INVALID_QUOTE, logs).await;
    assert_eq!(
        s["last_event_id"], "ima.validation.ima-ng.runtime_policy_hash",
        "{s}"
    );

    agent.shutdown().await;
    verifier.shutdown().await;
    registrar.shutdown().await;
}
