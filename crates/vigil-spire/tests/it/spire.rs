//! The SPIRE plugin pair end to end on swtpm, driven by `vigil_spire::host` playing
//! SPIRE's side (handshake, `Init`, `Configure` with HCL, the `AidAttestation` and
//! `Attest` streams relayed): a Vigil registrar, verifier and agent (its identity on the
//! node-local socket only), the plugin binaries as SPIRE would start them.
//!
//! - `plugin_pair_issues_and_refuses`: the attested node gets
//!   `spiffe://example.org/spire/agent/vigil/<uuid>` with Vigil's selectors and
//!   `CanReattest`; after a measured file changes and the node fails, the same flow is
//!   refused with Vigil's reason and the eviction hook runs for the issued identity.
//! - `plugins_refuse_to_run_without_a_host`: started by hand, each binary says so and
//!   exits 1.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use vigil_service::client::{Client, Endpoint};
use vigil_spire::host::{self, PluginProcess};
use vigil_testkit::Swtpm;

const UUID: &str = "7a1b2c3d-0000-4000-8000-00000000e021";
const AGENT_PLUGIN: &str = env!("CARGO_BIN_EXE_vigil-spire-agent");
const SERVER_PLUGIN: &str = env!("CARGO_BIN_EXE_vigil-spire-server");

/// An HTTPS call with the CA's `name` certificate: (status, body JSON).
async fn call(
    tls_dir: &Path,
    name: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let tls = vigil_tls::client_config(
        &tls_dir.join("cacert.crt"),
        Some((
            &tls_dir.join(format!("{name}-cert.crt")),
            &tls_dir.join(format!("{name}-private.pem")),
        )),
    )
    .unwrap();
    let endpoint = Endpoint::addr(addr).with_tls(Arc::new(tls));
    let answer = Client::default()
        .request(
            &endpoint,
            method.parse().unwrap(),
            path,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .unwrap();
    (answer.status, answer.json())
}

/// A runtime policy allowing every entry of the emulated IMA log at `log`.
fn runtime_policy(log: &Path) -> Value {
    let log = std::fs::read_to_string(log).unwrap();
    let mut digests = serde_json::Map::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        digests.insert(
            f[4].to_owned(),
            json!([f[3].strip_prefix("sha256:").unwrap()]),
        );
    }
    json!({
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": digests,
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    })
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_pair_issues_and_refuses() {
    let Some(tpm) = Swtpm::manufactured("plugin_pair_issues_and_refuses", &[]) else {
        return;
    };
    vigil_testkit::db::with_sqlite(|db| async move {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("cv_ca");
        let ca = vigil_tls::ca::init(&tls_dir, &["127.0.0.1".into(), "localhost".into()], false).unwrap();
        vigil_tls::ca::issue(&ca, "spire-server", vigil_tls::ca::Kind::Client, &[], false).unwrap();
        let registrar = vigil_registrar::Registrar::start(&vigil_registrar::Config {
            port: 0,
            tls_port: 0,
            state_dir: dir.path().join("registrar"),
            tls_dir: tls_dir.clone(),
            ..vigil_registrar::Config::default()
        })
        .await
        .expect("registrar starts");

        // The node: its identity routes only on the socket.
        let files = dir.path().join("measured");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("tool"), b"#!/bin/sh\necho tool\n").unwrap();
        let socket = dir.path().join("agent.sock");
        let state = dir.path().join("agent");
        let agent = vigil_agent::Agent::start(&vigil_agent::Config {
            uuid: UUID.into(),
            port: 0,
            contact_port: 0,
            registrar_port: registrar.http_addr().port(),
            tpm_tcti: tpm.tcti(),
            state_dir: state.clone(),
            enable_agent_mtls: false,
            ima_emulate: vec![files.clone()],
            ima_emulate_interval: 0,
            measuredboot_ml_path: dir.path().join("no-uefi-log"),
            registration_retry_max: 1,
            serve_identity_socket: true,
            identity_socket: socket.clone(),
            identity_socket_mode: "0600".into(),
            identity_socket_group: String::new(),
            identity_on_network: false,
            ..vigil_agent::Config::default()
        })
        .await
        .expect("agent starts");
        let mut rx = agent.registration();
        tokio::time::timeout(Duration::from_secs(60), async {
            while !matches!(*rx.borrow_and_update(), vigil_agent::Registration::Active { .. }) {
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("the agent registered");

        let evict_log = dir.path().join("evicted");
        let verifier = vigil_verifier::Verifier::start(&vigil_verifier::Config {
            port: 0,
            state_dir: dir.path().join("verifier"),
            database_url: db.clone(),
            tls_dir: tls_dir.clone(),
            quote_interval: 0.3,
            retry_interval: 0.2,
            max_retries: 2,
            request_timeout: 5.0,
            enable_agent_mtls: false,
            identity_clients: vec!["spire-server".into()],
            identity_registrar: registrar.https_addr().to_string(),
            identity_evict_command: vec![
                "sh".into(),
                "-c".into(),
                format!("echo \"$0\" >> {}", evict_log.display()),
                "{spiffe_id}".into(),
            ],
            ..vigil_verifier::Config::default()
        })
        .await
        .expect("verifier starts");

        // Enrolled as the tenant would, with a policy allowing the node's files.
        let (code, r) = call(&tls_dir, "client", registrar.https_addr(), "GET", &format!("/v2.6/agents/{UUID}"), None).await;
        assert_eq!(code, 200, "{r}");
        let policy = runtime_policy(&state.join("ima_emulated_measurements"));
        let enrolment = json!({
            "cloudagent_ip": "127.0.0.1",
            "cloudagent_port": agent.addr().port(),
            "tpm_policy": json!({"mask": "0x0"}).to_string(),
            "runtime_policy": base64::engine::general_purpose::STANDARD.encode(policy.to_string()),
            "runtime_policy_name": "node-policy",
            "mb_policy": null,
            "mb_policy_name": "",
            "ima_sign_verification_keys": "",
            "metadata": "{}",
            "revocation_key": "",
            "accept_tpm_hash_algs": ["sha256"],
            "accept_tpm_encryption_algs": ["rsa", "ecc"],
            "accept_tpm_signing_algs": ["rsassa", "ecschnorr"],
            "ak_tpm": r["results"]["aik_tpm"],
            "mtls_cert": null,
            "supported_version": "2.6",
        });
        let status_path = format!("/v2.6/agents/{UUID}");
        let (code, r) = call(&tls_dir, "client", verifier.addr(), "POST", &status_path, Some(enrolment)).await;
        assert_eq!(code, 200, "{r}");
        let state_is = |done: fn(&Value) -> bool| {
            let tls_dir = tls_dir.clone();
            let status_path = status_path.clone();
            let addr = verifier.addr();
            move || {
                let (tls_dir, status_path) = (tls_dir.clone(), status_path.clone());
                async move {
                    let (code, r) = call(&tls_dir, "client", addr, "GET", &status_path, None).await;
                    (code == 200 && done(&r["results"])).then_some(())
                }
            }
        };
        wait_for("the first successful round", state_is(|s| s["attestation_count"].as_u64() >= Some(1))).await;

        // SPIRE loads both plugins and configures them.
        let agent_side = PluginProcess::start(Path::new(AGENT_PLUGIN)).await.unwrap();
        let server_side = PluginProcess::start(Path::new(SERVER_PLUGIN)).await.unwrap();
        let names = agent_side
            .init_and_configure("example.org", &format!("socket_path = \"{}\"\n", socket.display()))
            .await
            .unwrap();
        assert!(names.contains(&"spire.plugin.agent.nodeattestor.v1.NodeAttestor".to_owned()), "{names:?}");
        let server_hcl = format!(
            "verifier_address = \"{}\"\nca_cert = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            verifier.addr(),
            tls_dir.join("cacert.crt").display(),
            tls_dir.join("spire-server-cert.crt").display(),
            tls_dir.join("spire-server-private.pem").display(),
        );
        // A configuration error is named.
        let e = server_side.init_and_configure("example.org", "verifier_adress = \"x\"").await.unwrap_err();
        assert!(e.to_string().contains("verifier_adress"), "{e}");
        server_side.init_and_configure("example.org", &server_hcl).await.unwrap();

        // The attested node: its SPIFFE ID and selectors.
        let attributes = host::attest(&agent_side, &server_side).await.expect("the node is attested");
        let spiffe_id = format!("spiffe://example.org/spire/agent/vigil/{UUID}");
        assert_eq!(attributes.spiffe_id, spiffe_id);
        assert!(attributes.can_reattest);
        let selectors = &attributes.selector_values;
        for want in [format!("uuid:{UUID}"), "status:trusted".into(), "runtime_policy:node-policy".into()] {
            assert!(selectors.contains(&want), "{want} in {selectors:?}");
        }
        assert!(selectors.iter().any(|s| s.starts_with("ek_cert_issuer:")), "{selectors:?}");

        // The node fails: the same flow is refused with Vigil's reason, and the identity
        // issued above is evicted.
        std::fs::write(files.join("intruder"), b"#!/bin/sh\necho pwned\n").unwrap();
        assert!(agent.ima_rescan().await.unwrap() > 0);
        wait_for("the failed round", state_is(|s| s["operational_state"] == 9)).await;
        let refused = host::attest(&agent_side, &server_side).await.expect_err("a failed node is refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
        assert!(refused.message().contains("failed attestation (Invalid Quote)"), "{refused}");
        let evicted = wait_for("the eviction hook", || async {
            std::fs::read_to_string(&evict_log).ok().filter(|s| !s.is_empty())
        })
        .await;
        assert_eq!(evicted.trim(), spiffe_id);

        agent_side.shutdown().await;
        server_side.shutdown().await;
        agent.shutdown().await;
        verifier.shutdown().await;
        registrar.shutdown().await;
    })
    .await;
}

#[test]
fn plugins_refuse_to_run_without_a_host() {
    for binary in [AGENT_PLUGIN, SERVER_PLUGIN] {
        let out = std::process::Command::new(binary)
            .env_remove("NodeAttestor")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{binary}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("SPIRE starts it"), "{err}");
    }
}
