//! Interop deployment 2 (docs/interop.md): Keylime 7.14.3's `keylime_tenant`, unchanged,
//! as the only client of Vigil's registrar, verifier and agent.
//!
//! Everything runs in this process on loopback except the tenant and swtpm: the agent
//! (IMA emulation over two files) registers with the registrar from a swtpm
//! manufactured with an EK certificate, whose local CA is the tenant's
//! `tpm_cert_store` (`require_ek_cert` is on, as in Keylime's default `tenant.conf`).
//!
//! - `keylime_tenant_drives_vigil`: `add` with a policy file (identity quote and EK
//!   certificate checked by the tenant), `cvstatus`, `cvlist`, `addruntimepolicy`,
//!   `listruntimepolicy`, `showruntimepolicy`, `update` with a new policy file and with
//!   the named policy, `deleteruntimepolicy` refused while in use, `delete`, and the
//!   policy deleted afterwards.
//! - `keylime_tenant_payload_and_failure`: `add -f FILE --verify` (U and V meet in the
//!   agent, which decrypts the payload), `bulkinfo`, a measured file changed and the
//!   failure as `cvstatus` shows it, `delete` of the failed node.
//! - `keylime_tenant_cert_and_revocation`: `add --cert DIR` (Keylime's certificate
//!   package, its `RevocationNotifier` key handed to the verifier), `status`, a measured
//!   file changed and the signed revocation notice verified by the agent, the response
//!   rules' quarantine and shutdown requests verified by the agent and answered in
//!   dry-run, `reactivate`.
//! - `keylime_tenant_mb_policies`: the measured-boot policy commands (verifier only).
//!
//! Needs swtpm and the Keylime reference venv (`VIGIL_KEYLIME_PYTHON`); without them it
//! skips with a note, except under `CI`, where it fails.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_for, Client};
use vigil_testkit::keylime::{KeylimeEnv, TenantRun};
use vigil_testkit::Swtpm;

/// The agent's id: the tenant wants a UUID.
const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0b001";
/// The named runtime policy pushed with `addruntimepolicy`.
const POLICY: &str = "tenant-policy";

/// The fields of Keylime 7.14.3's status object, in its order
/// (`cloud_verifier_common.process_get_status`, compat §6.3).
const KEYLIME_STATUS_FIELDS: [&str; 25] = [
    "operational_state",
    "v",
    "ip",
    "port",
    "tpm_policy",
    "meta_data",
    "has_mb_refstate",
    "has_runtime_policy",
    "accept_tpm_hash_algs",
    "accept_tpm_encryption_algs",
    "accept_tpm_signing_algs",
    "hash_alg",
    "enc_alg",
    "sign_alg",
    "verifier_id",
    "verifier_ip",
    "verifier_port",
    "severity_level",
    "last_event_id",
    "attestation_count",
    "last_received_quote",
    "last_successful_attestation",
    "attestation_status",
    "attestation_period",
    "maximum_attestation_interval",
];

/// The three Vigil services, the swtpm under the agent and the Keylime environment.
struct Deployment {
    keylime: KeylimeEnv,
    registrar: vigil_registrar::Registrar,
    verifier: vigil_verifier::Verifier,
    agent: vigil_agent::Agent,
    agent_state: PathBuf,
    /// The directory the agent measures.
    files: PathBuf,
    _dir: tempfile::TempDir,
    _tpm: Swtpm,
}

impl Deployment {
    async fn start(test: &str, db: &str) -> Option<Self> {
        let keylime = KeylimeEnv::new(test)?;
        let tpm = Swtpm::manufactured(test, &[])?;
        // The manufacturer's CA certificates (not its keys) are the tenant's trust store.
        let store = keylime.dir().join("tpm_cert_store");
        std::fs::create_dir_all(&store).unwrap();
        let ca_dir = tpm.ca_dir().expect("manufactured TPM");
        for e in std::fs::read_dir(ca_dir).unwrap() {
            let name = e.unwrap().file_name();
            if name.to_string_lossy().ends_with("cert.pem") {
                std::fs::copy(ca_dir.join(&name), store.join(&name)).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = keylime.ca().dir().to_owned();
        let registrar = vigil_registrar::Registrar::start(&vigil_registrar::Config {
            port: 0,
            tls_port: 0,
            state_dir: dir.path().join("registrar"),
            tls_dir: tls_dir.clone(),
            ..vigil_registrar::Config::default()
        })
        .await
        .expect("registrar starts");
        // Response rules: the node's agent is asked to quarantine and shut down a node
        // whose runtime fails (dry-run on the agent's side, its default).
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            "[[rules]]\nname = \"contain\"\nkinds = [\"runtime\"]\n\
             actions = [{ action = \"quarantine\" }, { action = \"shutdown\" }]\n",
        )
        .unwrap();
        let verifier = vigil_verifier::Verifier::start(&vigil_verifier::Config {
            response_rules: rules,
            port: 0,
            state_dir: dir.path().join("verifier"),
            database_url: db.to_owned(),
            tls_dir,
            quote_interval: 1.0,
            retry_interval: 0.5,
            max_retries: 2,
            request_timeout: 5.0,
            ..vigil_verifier::Config::default()
        })
        .await
        .expect("verifier starts");
        let files = dir.path().join("measured");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("tool"), b"#!/bin/sh\necho tool\n").unwrap();
        std::fs::write(files.join("config"), b"setting = 1\n").unwrap();
        let agent_state = dir.path().join("agent");
        let agent = vigil_agent::Agent::start(&vigil_agent::Config {
            uuid: UUID.into(),
            port: 0,
            contact_port: 0,
            registrar_port: registrar.http_addr().port(),
            tpm_tcti: tpm.tcti(),
            state_dir: agent_state.clone(),
            trusted_client_ca: vec![keylime.ca().ca_cert()],
            ima_emulate: vec![files.clone()],
            ima_emulate_interval: 0,
            measuredboot_ml_path: dir.path().join("no-uefi-log"),
            registration_retry_max: 1,
            ..vigil_agent::Config::default()
        })
        .await
        .expect("agent starts");
        Some(Self {
            keylime,
            registrar,
            verifier,
            agent,
            agent_state,
            files,
            _dir: dir,
            _tpm: tpm,
        })
    }

    async fn wait_registered(&self) {
        let mut rx = self.agent.registration();
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
    }

    /// Runs `keylime_tenant` against this registrar and verifier.
    fn tenant(&self, args: &[&str]) -> TenantRun {
        let (registrar, verifier) = (self.registrar.https_addr(), self.verifier.addr());
        // `delete` (and `update`, which deletes first) may get Keylime's 202 when a
        // round is in flight; the tenant then polls `cvstatus` until the node is gone,
        // `max_retries` times `retry_interval` apart (not exponential below 1 s).
        // `add --verify` polls the agent the same way until V has arrived.
        // `--cert` opens (or makes) a Keylime CA with `[ca] password`, which must not be
        // `default` (the tenant would ask for it on the terminal).
        let polling = [
            ("KEYLIME_TENANT_MAX_RETRIES", "25"),
            ("KEYLIME_TENANT_RETRY_INTERVAL", "0.2"),
            ("KEYLIME_CA_PASSWORD", "vigil-test"),
        ];
        tokio::task::block_in_place(|| {
            self.keylime
                .tenant_with(registrar.port(), verifier.port(), &polling, args)
        })
    }

    /// The verifier's answer to an admin `GET` (checked without the tenant).
    async fn get(&self, path: &str) -> (u16, Value) {
        Client::new(self.keylime.ca().dir(), true)
            .call(self.verifier.addr(), "GET", path, None)
            .await
    }

    /// The node's status once it has at least `count` successful rounds.
    async fn wait_attested(&self, count: u64) -> Value {
        self.wait_status(&format!("{count} successful rounds"), |s| {
            s["attestation_count"].as_u64() >= Some(count)
        })
        .await
    }

    /// The node's status (from the verifier's API) once `done` holds for it.
    async fn wait_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/v2.6/agents/{UUID}");
        wait_for(60, what, || async {
            let (code, v) = self.get(&path).await;
            let s = &v["results"];
            (code == 200 && done(s)).then(|| s.clone())
        })
        .await
    }

    fn verifier_addr(&self) -> SocketAddr {
        self.verifier.addr()
    }

    async fn stop(self) {
        self.agent.shutdown().await;
        self.verifier.shutdown().await;
        self.registrar.shutdown().await;
    }
}

/// A runtime policy (Keylime's format, version 1, generator 3 as `keylime-policy create`
/// writes, so Keylime counts it in `has_runtime_policy`) allowing every entry of the
/// agent's emulated IMA log, plus `extra` (path, SHA-256 hex) entries; written to `path`.
fn write_policy(log: &Path, extra: &[(&str, &str)], path: &Path) -> Value {
    let mut digests = serde_json::Map::new();
    let log = std::fs::read_to_string(log).expect("emulated IMA log");
    for line in log.lines() {
        // `10 <template hash> ima-ng sha256:<digest> <path>`
        let f: Vec<&str> = line.split(' ').collect();
        let digest = f[3].strip_prefix("sha256:").expect("ima-ng sha256 digest");
        digests.insert(f[4].to_owned(), json!([digest]));
    }
    for (p, d) in extra {
        digests.insert((*p).to_owned(), json!([d]));
    }
    let policy = json!({
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": digests,
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    });
    std::fs::write(path, policy.to_string()).unwrap();
    policy
}

fn assert_ok(run: &TenantRun, what: &str) {
    assert!(run.success, "keylime_tenant {what} failed:\n{}", run.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_tenant_drives_vigil() {
    vigil_testkit::db::with_sqlite(|db| async move {
        let Some(d) = Deployment::start("keylime_tenant_drives_vigil", &db).await else {
            return;
        };
        d.wait_registered().await;
        let log = d.agent_state.join("ima_emulated_measurements");
        // Three policies allowing the node's files, told apart by one more allowed file.
        let policy = |name: &str, extra: Option<&str>| {
            let path = d.keylime.dir().join(format!("{name}.json"));
            let extra: Vec<(&str, &str)> = extra.map(|x| ("/opt/extra", x)).into_iter().collect();
            write_policy(&log, &extra, &path);
            path.to_str().unwrap().to_owned()
        };
        let (new_digest, named_digest) = ("cd".repeat(32), "ab".repeat(32));
        let inline = policy("inline", None);
        let updated = policy("updated", Some(&new_digest));
        let named = policy("named", Some(&named_digest));

        // add with a runtime policy file: registrar lookup, the agent's identity quote
        // and EK certificate checked by the tenant, then the verifier's POST.
        let run = d.tenant(&["-c", "add", "-u", UUID, "--runtime-policy", &inline]);
        assert_ok(&run, "add");
        assert!(run.log.contains("validated"), "{}", run.log);
        d.wait_attested(2).await;

        // cvstatus: Keylime's fields and values (plus Vigil's `vigil` object).
        let run = d.tenant(&["-c", "cvstatus", "-u", UUID]);
        assert_ok(&run, "cvstatus");
        let all = run.block("Agent Info from").expect("cvstatus JSON");
        let s = &all[UUID];
        let keys: Vec<&str> = s
            .as_object()
            .expect("status object")
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "vigil")
            .collect();
        let mut want = KEYLIME_STATUS_FIELDS.to_vec();
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want, "status fields: {s}");
        assert_eq!(s["operational_state"], "Get Quote", "{s}");
        assert_eq!(s["attestation_status"], "PASS");
        assert!(s["attestation_count"].as_u64().unwrap() >= 2, "{s}");
        assert_eq!(s["severity_level"], Value::Null);
        assert_eq!(s["last_event_id"], Value::Null);
        assert_eq!(s["v"], Value::Null, "no payload: the tenant sends no V");
        assert_eq!(s["ip"], "127.0.0.1");
        assert_eq!(s["port"], d.agent.addr().port());
        assert_eq!(
            (
                s["has_runtime_policy"].as_u64(),
                s["has_mb_refstate"].as_u64()
            ),
            (Some(1), Some(0))
        );
        // As the agent reported them: agent API 2.5+ names the key size, as rust-keylime.
        assert_eq!(
            (
                s["hash_alg"].as_str(),
                s["enc_alg"].as_str(),
                s["sign_alg"].as_str()
            ),
            (Some("sha256"), Some("rsa2048"), Some("rsassa"))
        );
        assert_eq!(s["verifier_id"], "default");
        assert_eq!(s["verifier_ip"], "127.0.0.1");
        assert_eq!(s["verifier_port"], d.verifier_addr().port());
        assert_eq!(s["meta_data"], "{}");
        // The tenant adds PCR 10 to the mask for a runtime policy.
        let tpm_policy: Value = serde_json::from_str(s["tpm_policy"].as_str().unwrap()).unwrap();
        assert_eq!(tpm_policy["mask"], "0x400", "{tpm_policy}");
        assert_eq!(
            (
                s["attestation_period"].as_str(),
                s["maximum_attestation_interval"].as_str()
            ),
            (Some("1s"), Some("5s"))
        );
        let last = s["last_successful_attestation"].as_u64().unwrap();
        assert!(
            last > 0 && s["last_received_quote"].as_u64() >= Some(last),
            "{s}"
        );

        // cvlist: Keylime's list of one-element lists.
        let run = d.tenant(&["-c", "cvlist"]);
        assert_ok(&run, "cvlist");
        let list = run.block("Agent list from").expect("cvlist JSON");
        assert_eq!(list, json!({"uuids": [[UUID]]}));

        // Policies by name: push, then list and show (printed as Python dicts).
        let run = d.tenant(&[
            "-c",
            "addruntimepolicy",
            "--runtime-policy-name",
            POLICY,
            "--runtime-policy",
            &named,
        ]);
        assert_ok(&run, "addruntimepolicy");
        let run = d.tenant(&["-c", "listruntimepolicy"]);
        assert_ok(&run, "listruntimepolicy");
        // The inline policy of `add` is stored under the agent's id, as in Keylime.
        assert!(
            run.log
                .contains(&format!("'runtimepolicy names': ['{UUID}', '{POLICY}']"))
                || run
                    .log
                    .contains(&format!("'runtimepolicy names': ['{POLICY}', '{UUID}']")),
            "{}",
            run.log
        );
        let run = d.tenant(&["-c", "showruntimepolicy", "--runtime-policy-name", POLICY]);
        assert_ok(&run, "showruntimepolicy");
        assert!(
            run.log.contains(&format!("'name': '{POLICY}'")),
            "{}",
            run.log
        );
        assert!(
            run.log.contains(&named_digest),
            "the named policy's text: {}",
            run.log
        );

        // update with a new inline policy: delete, then add again. The inline policy
        // of the first enrolment went with it (as in Keylime), so its name is free.
        let run = d.tenant(&["-c", "update", "-u", UUID, "--runtime-policy", &updated]);
        assert_ok(&run, "update with a new policy");
        let s = d.wait_attested(1).await;
        assert_eq!(s["operational_state"], 3, "{s}");
        let (code, v) = d.get(&format!("/v2.6/allowlists/{UUID}")).await;
        assert_eq!(code, 200);
        let text = v["results"]["runtime_policy"].as_str().unwrap();
        assert!(
            text.contains(&new_digest),
            "the new policy is enrolled: {v}"
        );

        // update to the named policy pushed with addruntimepolicy.
        let run = d.tenant(&["-c", "update", "-u", UUID, "--runtime-policy-name", POLICY]);
        assert_ok(&run, "update with a named policy");
        let s = d.wait_attested(1).await;
        assert_eq!(s["operational_state"], 3, "{s}");
        let (code, v) = d.get("/v2.6/allowlists/").await;
        assert_eq!(code, 200);
        assert_eq!(v["results"]["runtimepolicy names"], json!([POLICY]), "{v}");

        // The policy is in use: Keylime's 409, which the tenant reports as a failure.
        let run = d.tenant(&["-c", "deleteruntimepolicy", "--runtime-policy-name", POLICY]);
        assert!(
            !run.success,
            "deleting a policy in use must fail:\n{}",
            run.log
        );
        assert!(
            run.log.contains(&format!(
                "'code': 409, 'status': \"Can't delete allowlist as it's currently in use by agent {UUID}\""
            )),
            "{}",
            run.log
        );

        // delete: the node is gone from the verifier, then the policy can go.
        let run = d.tenant(&["-c", "delete", "-u", UUID]);
        assert_ok(&run, "delete");
        let (code, _) = d.get(&format!("/v2.6/agents/{UUID}")).await;
        assert_eq!(code, 404, "the tenant's delete removed the node");
        let run = d.tenant(&["-c", "deleteruntimepolicy", "--runtime-policy-name", POLICY]);
        assert_ok(&run, "deleteruntimepolicy");
        let (code, v) = d.get("/v2.6/allowlists/").await;
        assert_eq!(code, 200);
        assert_eq!(v["results"]["runtimepolicy names"], json!([]), "{v}");
        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_tenant_payload_and_failure() {
    vigil_testkit::db::with_sqlite(|db| async move {
        let Some(d) = Deployment::start("keylime_tenant_payload_and_failure", &db).await else {
            return;
        };
        d.wait_registered().await;
        let log = d.agent_state.join("ima_emulated_measurements");
        let policy = d.keylime.dir().join("policy.json");
        write_policy(&log, &[], &policy);
        let payload = d.keylime.dir().join("payload.txt");
        std::fs::write(&payload, b"a secret for the node\n").unwrap();

        // add with a payload and --verify: U (and the encrypted payload) go to the agent
        // from the tenant, V from the verifier after its first good quote, and the
        // tenant waits until the agent proves it derived K.
        let run = d.tenant(&[
            "-c",
            "add",
            "-u",
            UUID,
            "--runtime-policy",
            policy.to_str().unwrap(),
            "-f",
            payload.to_str().unwrap(),
            "--verify",
        ]);
        assert_ok(&run, "add -f --verify");
        assert!(run.log.contains("Successful key derivation"), "{}", run.log);
        let delivered = d.agent_state.join("secure/unzipped/decrypted_payload");
        assert_eq!(
            std::fs::read(&delivered).expect("the payload was delivered"),
            b"a secret for the node\n"
        );
        d.wait_attested(1).await;

        // bulkinfo: every node's status, the state as Keylime's string; V is shown.
        let run = d.tenant(&["-c", "bulkinfo"]);
        assert_ok(&run, "bulkinfo");
        let bulk = run.block("Bulk Agent Info").expect("bulkinfo JSON");
        let s = &bulk[UUID];
        assert_eq!(s["operational_state"], "Get Quote", "{bulk}");
        assert_eq!(
            s["v"].as_str().map(str::len),
            Some(44),
            "base64 of 32 bytes: {s}"
        );

        // A measured file changes: Keylime's failure fields, as cvstatus shows them.
        let tool = d.files.join("tool");
        std::fs::write(&tool, b"#!/bin/sh\necho tampered\n").unwrap();
        assert_eq!(d.agent.ima_rescan().await.unwrap(), 1);
        d.wait_status("Invalid Quote", |s| s["operational_state"] == 9)
            .await;
        let run = d.tenant(&["-c", "cvstatus", "-u", UUID]);
        assert_ok(&run, "cvstatus");
        let all = run.block("Agent Info from").expect("cvstatus JSON");
        let s = &all[UUID];
        assert_eq!(s["operational_state"], "Invalid Quote", "{s}");
        assert_eq!(s["attestation_status"], "FAIL");
        // Keylime's default severity policy: every event is `emergency`, level 6.
        assert_eq!(s["severity_level"], 6);
        assert_eq!(
            s["last_event_id"],
            "ima.validation.ima-ng.runtime_policy_hash"
        );

        // An Invalid Quote node is deleted at once (Keylime's 200, no polling).
        let run = d.tenant(&["-c", "delete", "-u", UUID]);
        assert_ok(&run, "delete");
        assert!(run.log.contains("deleted from the CV"), "{}", run.log);
        let (code, _) = d.get(&format!("/v2.6/agents/{UUID}")).await;
        assert_eq!(code, 404);
        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_tenant_mb_policies() {
    // Only the verifier: these commands reach nothing else.
    let Some(keylime) = KeylimeEnv::new("keylime_tenant_mb_policies") else {
        return;
    };
    vigil_testkit::db::with_sqlite(|db| async move {
        let dir = tempfile::tempdir().unwrap();
        let verifier = vigil_verifier::Verifier::start(&vigil_verifier::Config {
            port: 0,
            state_dir: dir.path().to_owned(),
            database_url: db,
            tls_dir: keylime.ca().dir().to_owned(),
            ..vigil_verifier::Config::default()
        })
        .await
        .expect("verifier starts");
        let port = verifier.addr().port();
        // The registrar port is not used by these commands; it only has to be valid.
        let tenant = |args: &[&str]| tokio::task::block_in_place(|| keylime.tenant(1, port, args));
        let (v1, v2) = (dir.path().join("mb1.json"), dir.path().join("mb2.json"));
        std::fs::write(&v1, r#"{"has_secureboot": false}"#).unwrap();
        std::fs::write(&v2, r#"{"has_secureboot": true}"#).unwrap();
        let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());

        let name = ["--mb-policy-name", "boot"];
        let run = tenant(&[&["-c", "addmbpolicy", "--mb-policy", v1][..], &name].concat());
        assert_ok(&run, "addmbpolicy");
        // A second add under the name: Keylime's 409, a failure for the tenant.
        let run = tenant(&[&["-c", "addmbpolicy", "--mb-policy", v1][..], &name].concat());
        assert!(
            !run.success && run.log.contains("'code': 409"),
            "{}",
            run.log
        );
        let run = tenant(&[&["-c", "updatembpolicy", "--mb-policy", v2][..], &name].concat());
        assert_ok(&run, "updatembpolicy");
        let run = tenant(&["-c", "listmbpolicy"]);
        assert_ok(&run, "listmbpolicy");
        assert!(
            run.log.contains("'mbpolicy names': ['boot']"),
            "{}",
            run.log
        );
        let run = tenant(&[&["-c", "showmbpolicy"][..], &name].concat());
        assert_ok(&run, "showmbpolicy");
        assert!(run.log.contains("'name': 'boot'"), "{}", run.log);
        assert!(
            run.log.contains(r#""has_secureboot": true"#),
            "the updated policy: {}",
            run.log
        );
        let run = tenant(&[&["-c", "deletembpolicy"][..], &name].concat());
        assert_ok(&run, "deletembpolicy");
        let (code, v) = Client::new(keylime.ca().dir(), true)
            .call(verifier.addr(), "GET", "/v2.6/mbpolicies/", None)
            .await;
        assert_eq!((code, &v["results"]["mbpolicy names"]), (200, &json!([])));
        verifier.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_tenant_cert_and_revocation() {
    vigil_testkit::db::with_sqlite(|db| async move {
        let Some(d) = Deployment::start("keylime_tenant_cert_and_revocation", &db).await else {
            return;
        };
        d.wait_registered().await;
        let log = d.agent_state.join("ima_emulated_measurements");
        let policy = d.keylime.dir().join("policy.json");
        write_policy(&log, &[], &policy);
        // A CA the tenant makes on first use (Keylime's ca_util), apart from cv_ca.
        let ca = d.keylime.dir().join("tenant-ca");
        let run = d.tenant(&[
            "-c",
            "add",
            "-u",
            UUID,
            "--runtime-policy",
            policy.to_str().unwrap(),
            "--cert",
            ca.to_str().unwrap(),
            "--verify",
        ]);
        assert_ok(&run, "add --cert --verify");
        assert!(run.log.contains("Successful key derivation"), "{}", run.log);
        // The package was unzipped by the agent: the node's certificate and the
        // RevocationNotifier certificate the agent checks notices with.
        let unzipped = d.agent_state.join("secure/unzipped");
        for f in [
            format!("{UUID}-cert.crt"),
            "RevocationNotifier-cert.crt".into(),
        ] {
            assert!(unzipped.join(&f).is_file(), "{f} delivered");
        }
        d.wait_attested(1).await;

        // status: the registrar's record, then the verifier's, with the package's
        // certificate serial and subject as metadata.
        let run = d.tenant(&["-c", "status", "-u", UUID]);
        assert_ok(&run, "status");
        let reg = run
            .block("Agent Info from Registrar")
            .expect("registrar part");
        assert_eq!(reg[UUID]["operational_state"], "Registered", "{reg}");
        let cv = run
            .block("Agent Info from Verifier")
            .expect("verifier part");
        let s = &cv[UUID];
        assert_eq!(s["operational_state"], "Get Quote", "{s}");
        let meta: Value = serde_json::from_str(s["meta_data"].as_str().unwrap()).unwrap();
        assert!(
            meta["cert_serial"].is_number() && meta["subject"].is_string(),
            "{meta}"
        );

        // A measured file changes: the verifier signs a revocation notice with the
        // package's RevocationNotifier key, and the agent verifies it.
        let mut notices = d.agent.revocations();
        std::fs::write(d.files.join("config"), b"setting = 2\n").unwrap();
        assert_eq!(d.agent.ima_rescan().await.unwrap(), 1);
        tokio::time::timeout(Duration::from_secs(60), notices.wait_for(|n| !n.is_empty()))
            .await
            .expect("a verified revocation notice within 60 s")
            .unwrap();
        d.wait_status("Invalid Quote", |s| s["operational_state"] == 9)
            .await;
        // The rules' actions: signed requests the agent verified with the package's
        // RevocationNotifier certificate and, in dry-run, only described.
        let path = format!("/vigil/v1/agents/{UUID}/actions");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let actions = loop {
            let (_, r) = d.get(&path).await;
            let list = r["results"]["actions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if list.len() >= 2 || std::time::Instant::now() > deadline {
                break list;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for name in ["quarantine", "shutdown"] {
            let a = actions
                .iter()
                .find(|a| a["action"] == name)
                .unwrap_or_else(|| panic!("no {name} action: {actions:?}"));
            assert_eq!(a["outcome"], "dry_run", "{a}");
            assert!(a["detail"].as_str().unwrap().contains("would run"), "{a}");
        }

        // reactivate: polling starts again (and fails again on the same log).
        let run = d.tenant(&["-c", "reactivate", "-u", UUID]);
        assert_ok(&run, "reactivate");
        assert!(run.log.contains("re-activated"), "{}", run.log);
        let run = d.tenant(&["-c", "delete", "-u", UUID]);
        assert_ok(&run, "delete");
        d.stop().await;
    })
    .await;
}
