//! The agent end to end on a real swtpm (manufactured with an EK certificate), against
//! an in-process Vigil registrar, over real sockets and mTLS: registration and
//! activation, identity and integrity quotes verified by `vigil-core` (and once by
//! `tpm2_checkquote`), IMA emulation replayed against the quoted PCR 10 and checked
//! against a runtime policy before and after a file changes, `ima_ml_entry`, payload
//! delivery with rust-keylime's `payload.zip`, revocation notices. Bad input on every
//! route: `bad_input.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use vigil_agent::{Agent, Config, Registration};
use vigil_core::failure::Failure;
use vigil_core::ima::keyring::ImaKeyrings;
use vigil_core::ima::validate::PolicyValidator;
use vigil_core::ima::{AcceptAll, EntryValidator, EntryVerdict, ImaConfig, ImaEntry, ImaReplay};
use vigil_core::payload::{encrypt_share, BootstrapKey};
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::data_pcr_value;
use vigil_core::revocation::{RevocationKey, RevocationMessage, RevocationNotice};
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier, VerifiedQuote};
use vigil_core::HashAlg;
use vigil_service::client::{Answer, Client, ClientError, Endpoint};
use vigil_testkit::Swtpm;

const PAYLOAD_ZIP: &str =
    "../../../shared/testdata/rust-keylime/keylime-agent/test-data/payload.zip";
const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
const BANK: HashAlg = HashAlg::Sha256;

struct Env {
    agent: Option<Agent>,
    registrar: Option<vigil_registrar::Registrar>,
    ca: vigil_tls::ca::CaDir,
    config: Config,
    files: PathBuf,
    dir: tempfile::TempDir,
    tpm: Swtpm,
}

impl Env {
    async fn start(test: &str, tools: &[&str]) -> Option<Self> {
        let tpm = Swtpm::manufactured(test, tools)?;
        let dir = tempfile::tempdir().unwrap();
        let ca = vigil_tls::ca::init(
            &dir.path().join("cv_ca"),
            &["localhost".into(), "127.0.0.1".into()],
            false,
        )
        .unwrap();
        let registrar = vigil_registrar::Registrar::start(&vigil_registrar::Config {
            port: 0,
            tls_port: 0,
            state_dir: dir.path().join("registrar"),
            tls_dir: dir.path().join("cv_ca"),
            ..vigil_registrar::Config::default()
        })
        .await
        .expect("registrar");
        let files = dir.path().join("measured");
        std::fs::create_dir_all(files.join("bin")).unwrap();
        std::fs::write(files.join("bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
        std::fs::write(files.join("config"), b"setting = 1\n").unwrap();
        let actions = dir.path().join("actions");
        std::fs::create_dir_all(&actions).unwrap();
        let config = Config {
            uuid: UUID.into(),
            port: 0,
            contact_port: 0,
            registrar_port: registrar.http_addr().port(),
            tpm_tcti: tpm.tcti(),
            state_dir: dir.path().join("agent"),
            trusted_client_ca: vec![ca.ca_cert()],
            ima_emulate: vec![files.clone()],
            ima_emulate_interval: 0,
            measuredboot_ml_path: dir.path().join("no-uefi-log"),
            revocation_actions_dir: actions,
            revocation_actions: vec!["record.sh".into()],
            registration_retry_max: 1,
            ops_port: Some(0),
            ..Config::default()
        };
        let agent = Agent::start(&config).await.expect("agent starts");
        Some(Self {
            agent: Some(agent),
            registrar: Some(registrar),
            ca,
            config,
            files,
            dir,
            tpm,
        })
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().unwrap()
    }

    fn addr(&self) -> SocketAddr {
        self.agent().addr()
    }

    /// The agent over TLS, its certificate trusted as the only CA, presenting
    /// `identity`'s certificate.
    fn tls(&self, identity: Option<&str>) -> Endpoint {
        let cert = self.config.state_dir.join("server-cert.crt");
        let id = identity.map(|n| (self.ca.cert(n), self.ca.key(n)));
        let config =
            vigil_tls::client_config(&cert, id.as_ref().map(|(c, k)| (c.as_path(), k.as_path())))
                .unwrap();
        Endpoint::addr(self.addr()).with_tls(Arc::new(config))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        request(
            &self.tls(Some("client")),
            method,
            path,
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
        .await
        .expect("mTLS request")
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let a = self.call("GET", path, None).await;
        (a.status, a.json())
    }

    async fn wait_active(&self) {
        let mut rx = self.agent().registration();
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if matches!(*rx.borrow_and_update(), Registration::Active { .. }) {
                    return;
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("registered within 60 s");
    }

    fn ak(&self) -> AkPublicKey {
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(self.config.state_dir.join("ak.json")).unwrap(),
        )
        .unwrap();
        let public = base64_decode(v["public"].as_str().unwrap());
        AkPublicKey::from_spki_or_tpm2b(&public).unwrap()
    }

    async fn stop(mut self) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await;
        }
        if let Some(r) = self.registrar.take() {
            r.shutdown().await;
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn verify(env: &Env, results: &Value, nonce: &str) -> VerifiedQuote {
    let quote = KeylimeQuote::parse(results["quote"].as_str().unwrap()).unwrap();
    QuoteVerifier::new(env.ak())
        .verify(&quote, nonce.as_bytes(), BANK)
        .expect("quote verifies")
}

fn policy_for(files: &[(&str, &[u8])], boot_aggregate: &str) -> RuntimePolicy {
    let mut digests = serde_json::Map::new();
    for (path, content) in files {
        digests.insert((*path).into(), json!([BANK.hash(content).to_hex()]));
    }
    digests.insert("boot_aggregate".into(), json!([boot_aggregate]));
    let doc = json!({
        "meta": {"version": 1, "generator": 1},
        "release": 0,
        "digests": digests,
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": ""
    });
    RuntimePolicy::from_json(doc.to_string().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_quotes_and_emulates_ima() {
    let Some(env) = Env::start("agent_e2e", &["tpm2_checkquote"]).await else {
        return;
    };
    env.wait_active().await;
    // The registrar holds the agent, active, with the agent's own certificate.
    let reg = env.registrar.as_ref().unwrap();
    let admin = Endpoint::addr(reg.https_addr())
        .with_tls(Arc::new(
            vigil_tls::client_config(
                &env.ca.ca_cert(),
                Some((&env.ca.cert("client"), &env.ca.key("client"))),
            )
            .unwrap(),
        ))
        .with_server_name(rustls_pki_types::ServerName::try_from("localhost").unwrap());
    let a = request(&admin, "GET", &format!("/v2.6/agents/{UUID}"), None)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.json());
    let rec = &a.json()["results"];
    assert_eq!(rec["port"], env.addr().port());
    assert!(rec["mtls_cert"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // Identity quote: PCR 16 only, bound to the served NK.
    let (code, v) = env.get("/v2.6/quotes/identity?nonce=abcDEF123").await;
    assert_eq!(code, 200, "{v}");
    let r = &v["results"];
    assert_eq!(
        (
            r["hash_alg"].as_str(),
            r["enc_alg"].as_str(),
            r["sign_alg"].as_str()
        ),
        (Some("sha256"), Some("rsa2048"), Some("rsassa"))
    );
    let pubkey = r["pubkey"].as_str().unwrap().to_owned();
    let q = verify(&env, r, "abcDEF123");
    assert_eq!(q.pcrs.keys().copied().collect::<Vec<_>>(), vec![16]);
    assert_eq!(q.pcrs[&16], data_pcr_value(BANK, &pubkey));
    let (_, pk) = env.get("/v2.6/keys/pubkey").await;
    assert_eq!(pk["results"]["pubkey"], pubkey.as_str());
    // Before 2.5, enc_alg is unsized.
    let (_, v) = env.get("/v2.1/quotes/identity?nonce=x1").await;
    assert_eq!(v["results"]["enc_alg"], "rsa");

    // tpm2_checkquote agrees on one.
    let quote = KeylimeQuote::parse(r["quote"].as_str().unwrap()).unwrap();
    let [msg, sig, pcrs] = quote.to_push_parts().map(|p| base64_decode(&p));
    for (name, bytes) in [("q.msg", &msg), ("q.sig", &sig), ("q.pcrs", &pcrs)] {
        std::fs::write(env.tpm.path(name), bytes).unwrap();
    }
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(env.config.state_dir.join("ak.json")).unwrap(),
    )
    .unwrap();
    let ak_spki = env.ak_spki_pem(&base64_decode(v["public"].as_str().unwrap()));
    std::fs::write(env.tpm.path("ak.pem"), ak_spki).unwrap();
    // Run directly, not through the harness (which flushes the TPM's transient objects
    // afterwards, the agent's AK included): tpm2_checkquote needs no TPM.
    let out = std::process::Command::new("tpm2_checkquote")
        .current_dir(env.tpm.path("."))
        .args([
            "-u",
            "ak.pem",
            "-m",
            "q.msg",
            "-s",
            "q.sig",
            "-f",
            "q.pcrs",
            "-g",
            "sha256",
            "-q",
            &hex::encode("abcDEF123"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tpm2_checkquote: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Integrity quote with PCR 10: the emulated list replays to the quoted value and
    // passes a policy made of the measured files.
    let (code, v) = env
        .get("/v2.6/quotes/integrity?nonce=n1&mask=0x400&partial=0&ima_ml_entry=0")
        .await;
    assert_eq!(code, 200, "{v}");
    let r = &v["results"];
    let q = verify(&env, r, "n1");
    assert_eq!(q.pcrs.keys().copied().collect::<Vec<_>>(), vec![10, 16]);
    assert_eq!(r["ima_measurement_list_entry"], 0);
    assert!(r["boottime"].as_u64().unwrap() > 0);
    assert!(r.get("mb_measurement_list").is_none());
    let list = r["ima_measurement_list"].as_str().unwrap().to_owned();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].ends_with(" boot_aggregate"));
    let boot_aggregate = lines[0]
        .split(' ')
        .nth(3)
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_owned();
    let tool = env.files.join("bin/tool");
    let config = env.files.join("config");
    let (tool_s, config_s) = (tool.to_str().unwrap(), config.to_str().unwrap());
    let policy = policy_for(
        &[
            (tool_s, b"#!/bin/sh\necho tool\n"),
            (config_s, b"setting = 1\n"),
        ],
        &boot_aggregate,
    );
    let check = |list: &str, pcr10| {
        let mut keyrings = ImaKeyrings::new();
        let mut named = Naming {
            inner: PolicyValidator::new(&policy, &[], &mut keyrings),
            failed: Vec::new(),
        };
        let mut replay = ImaReplay::new(ImaConfig::new(BANK), None, Some(pcr10), &mut named);
        replay.feed_text(list);
        let verdict = replay.finish();
        (verdict, named.failed)
    };
    let (verdict, failed) = check(&list, q.pcrs[&10]);
    assert!(verdict.is_ok(), "{verdict:?}");
    assert!(failed.is_empty());
    assert_eq!(verdict.pcr_match, Some(3));
    // ima_ml_entry: from entry 2; past the end → from 0; at the end → empty.
    let (_, v) = env
        .get("/v2.6/quotes/integrity?nonce=n2&mask=0x400&partial=1&ima_ml_entry=2")
        .await;
    assert_eq!(v["results"]["ima_measurement_list_entry"], 2);
    assert_eq!(
        v["results"]["ima_measurement_list"],
        format!("{}\n", lines[2])
    );
    assert!(v["results"].get("pubkey").is_none());
    let (_, v) = env
        .get("/v2.6/quotes/integrity?nonce=n3&mask=0x400&partial=1&ima_ml_entry=99")
        .await;
    assert_eq!(v["results"]["ima_measurement_list_entry"], 0);
    assert_eq!(v["results"]["ima_measurement_list"], list.as_str());
    let (_, v) = env
        .get("/v2.6/quotes/integrity?nonce=n4&mask=0x400&partial=1&ima_ml_entry=3")
        .await;
    assert_eq!(v["results"]["ima_measurement_list"], "");

    // A measured file changes: nothing until it is measured again, then the new entry
    // extends PCR 10 and the policy check names the file.
    std::fs::write(&tool, b"#!/bin/sh\necho tampered\n").unwrap();
    assert_eq!(env.agent().ima_rescan().await.unwrap(), 1);
    assert_eq!(env.agent().ima_rescan().await.unwrap(), 0);
    let (_, v) = env
        .get("/v2.6/quotes/integrity?nonce=n5&mask=0x400&partial=0&ima_ml_entry=0")
        .await;
    let q = verify(&env, &v["results"], "n5");
    let list = v["results"]["ima_measurement_list"].as_str().unwrap();
    assert_eq!(list.lines().count(), 4);
    let mut plain = ImaReplay::new(ImaConfig::new(BANK), None, Some(q.pcrs[&10]), AcceptAll);
    plain.feed_text(list);
    assert_eq!(plain.finish().pcr_match, Some(4));
    let (verdict, failed) = check(list, q.pcrs[&10]);
    assert!(!verdict.is_ok());
    assert_eq!(verdict.pcr_match, Some(4));
    assert_eq!(
        verdict.failure.events()[0].event_id,
        "ima.validation.ima-ng.runtime_policy_hash"
    );
    assert_eq!(failed, vec![tool_s.to_owned()]);

    env.stop().await;
}

/// Remembers the name of every entry the policy refused.
struct Naming<V> {
    inner: V,
    failed: Vec<String>,
}

impl<V: EntryValidator> EntryValidator for Naming<V> {
    fn validate(
        &mut self,
        entry: &ImaEntry<'_>,
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict {
        let before = failure.events().len();
        let verdict = self.inner.validate(entry, line_no, failure);
        if failure.events().len() > before {
            self.failed.push(entry.name.to_owned());
        }
        verdict
    }
}

impl Env {
    /// The AK's public key as SPKI PEM, for tpm2_checkquote.
    fn ak_spki_pem(&self, tpm2b: &[u8]) -> String {
        let public = vigil_core::tpm::public::TpmPublic::parse_tpm2b(tpm2b).unwrap();
        let der = public.to_spki_der().unwrap();
        der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &der).unwrap()
    }
}

/// `healthz`, `readyz` and `metrics` on the plain-HTTP ops port without a client
/// certificate (and on the mTLS API port with one); the quotes counted as served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_and_quote_metrics() {
    let Some(env) = Env::start("agent_ops", &[]).await else {
        return;
    };
    let ops = Endpoint::addr(env.agent().ops_addr().expect("ops_port is set"));
    let scrape = |endpoint: Endpoint| async move {
        let a = request(&endpoint, "GET", "/metrics", None).await.unwrap();
        assert_eq!(a.status, 200);
        vigil_testkit::scrape::Scrape::parse(std::str::from_utf8(&a.body).unwrap())
    };
    let quotes = |s: &vigil_testkit::scrape::Scrape, kind: &str, outcome: &str| {
        s.value(
            "vigil_agent_quotes_total",
            &[("kind", kind), ("outcome", outcome)],
        )
    };
    for path in ["/healthz", "/vigil/v1/healthz/"] {
        let a = request(&ops, "GET", path, None).await.unwrap();
        assert_eq!(
            (a.status, &a.json()["results"]["healthy"]),
            (200, &json!(true))
        );
    }
    let a = request(&ops, "GET", "/vigil/v1/readyz", None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json()["results"],
        json!({"ready": true, "checks": {"tpm": "ok", "tls": "ok"}})
    );
    // Only the operator's endpoints there; Keylime's API stays behind mTLS.
    assert_eq!(
        request(&ops, "GET", "/version", None).await.unwrap().status,
        404
    );
    assert_eq!(
        quotes(&scrape(ops.clone()).await, "identity", "ok"),
        Some(0.0)
    );

    let (code, _) = env.get("/v2.6/quotes/identity?nonce=1234567890").await;
    assert_eq!(code, 200);
    let (code, _) = env.get("/v2.6/quotes/identity").await;
    assert_eq!(code, 400);
    let s = scrape(ops).await;
    assert_eq!(quotes(&s, "identity", "ok"), Some(1.0));
    assert_eq!(quotes(&s, "identity", "refused"), Some(1.0));
    assert_eq!(quotes(&s, "integrity", "ok"), Some(0.0));
    // The API port serves them too, to a client with a certificate.
    let s = scrape(env.tls(Some("client"))).await;
    assert_eq!(quotes(&s, "identity", "ok"), Some(1.0));
    env.stop().await;
}

/// One request with the client's default limits.
pub(crate) async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    let method = hyper::Method::from_bytes(method.as_bytes()).expect("method");
    Client::default()
        .request(endpoint, method, path, body)
        .await
}

async fn wait_for<T: Clone>(
    rx: &mut tokio::sync::watch::Receiver<T>,
    ok: impl Fn(&T) -> bool,
) -> T {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let v = rx.borrow_and_update().clone();
            if ok(&v) {
                return v;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("in time")
}

fn marker_dir(dir: &Path) -> PathBuf {
    let d = dir.join("marks");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh `RevocationNotifier` key.
fn revocation_key() -> RevocationKey {
    use aws_lc_rs::encoding::AsDer;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    RevocationKey::from_pkcs8_der(pair.as_der().unwrap().as_ref()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_then_revocation() {
    let Some(env) = Env::start("agent_payload", &[]).await else {
        return;
    };
    // rust-keylime's payload.zip writes a timestamp into $KEYLIME_TEST_DIR.
    let marks = marker_dir(env.dir.path());
    std::env::set_var("KEYLIME_TEST_DIR", &marks);
    let (_, pk) = env.get("/v2.6/keys/pubkey").await;
    let nk =
        rsa::RsaPublicKey::from_public_key_pem(pk["results"]["pubkey"].as_str().unwrap()).unwrap();
    let k = BootstrapKey::generate(&mut OsRng);
    let (u, v) = k.split(&mut OsRng);
    let zip = std::fs::read(PAYLOAD_ZIP).unwrap();
    let payload = k.encrypt_payload(&zip, &mut OsRng);
    let a = env
        .call(
            "POST",
            "/v2.6/keys/ukey",
            Some(json!({
                "auth_tag": k.auth_tag(UUID),
                "encrypted_key": encrypt_share(&nk, &u, &mut OsRng).unwrap(),
                "payload": payload,
            })),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marks.join("timestamp").exists(), "ran before V");
    let (code, _) = env.get("/v2.6/keys/verify?challenge=abc").await;
    assert_eq!(code, 400);
    // A V that does not match the tag changes nothing.
    let wrong = BootstrapKey::generate(&mut OsRng).split(&mut OsRng).1;
    let a = env
        .call(
            "POST",
            "/v2.6/keys/vkey",
            Some(json!({"encrypted_key": encrypt_share(&nk, &wrong, &mut OsRng).unwrap()})),
        )
        .await;
    assert_eq!(a.status, 200);
    let (code, _) = env.get("/v2.6/keys/verify?challenge=abc").await;
    assert_eq!(code, 400);
    let a = env
        .call(
            "POST",
            "/v2.6/keys/vkey",
            Some(json!({"encrypted_key": encrypt_share(&nk, &v, &mut OsRng).unwrap()})),
        )
        .await;
    assert_eq!(a.status, 200);
    let mut runs = env.agent().payload_runs();
    wait_for(&mut runs, |n| *n >= 1).await;
    assert!(marks.join("timestamp").is_file(), "autorun.sh ran");
    let (code, v) = env.get("/v2.6/keys/verify?challenge=abc123").await;
    assert_eq!(code, 200);
    assert_eq!(v["results"]["hmac"], k.answer_challenge("abc123"));

    // Revocation: the notifier's key is delivered (here: written where the payload
    // would put it); the action gets the message as a JSON file.
    let action = env.config.revocation_actions_dir.join("record.sh");
    let seen = marks.join("revocation.json");
    std::fs::write(
        &action,
        format!("#!/bin/sh\ncp \"$1\" {}\n", seen.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&action, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let key = revocation_key();
    let pem = key
        .public_key()
        .unwrap()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(env.config.revocation_cert(), pem).unwrap();
    let message = RevocationMessage {
        kind: "revocation".into(),
        ip: json!("127.0.0.1"),
        agent_id: "other-node".into(),
        port: json!(9002),
        tpm_policy: json!("{}"),
        meta_data: json!("{}"),
        event_time: "Mon Aug  3 08:08:39 2026".into(),
        event_id: Some("ima.validation.ima-ng.not_in_allowlist".into()),
        severity_label: None,
        context: None,
    };
    let impostor = revocation_key();
    let bad = RevocationNotice::sign(&message, Some(&impostor)).unwrap();
    let a = env
        .call(
            "POST",
            "/v2.6/notifications/revocation",
            Some(serde_json::to_value(&bad).unwrap()),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.json());
    let unsigned = RevocationNotice::sign(&message, None).unwrap();
    let a = env
        .call(
            "POST",
            "/v2.6/notifications/revocation",
            Some(serde_json::to_value(&unsigned).unwrap()),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(!seen.exists());
    let good = RevocationNotice::sign(&message, Some(&key)).unwrap();
    let a = env
        .call(
            "POST",
            "/v2.6/notifications/revocation",
            Some(serde_json::to_value(&good).unwrap()),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json());
    let mut revs = env.agent().revocations();
    let ran = wait_for(&mut revs, |v| !v.is_empty()).await;
    assert_eq!(ran, vec![vec!["record.sh".to_owned()]]);
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(got["agent_id"], "other-node");
    assert_eq!(got["event_id"], "ima.validation.ima-ng.not_in_allowlist");
    env.stop().await;
}

/// The verifier's response actions (`POST /vigil/v1/actions`): signed with the node's
/// revocation key, for this agent, recent; dry-run by default, so the agent only says
/// what it would run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_actions_are_verified_and_dry_run_by_default() {
    let Some(env) = Env::start("agent_response_actions", &[]).await else {
        return;
    };
    let key = revocation_key();
    let pem = key
        .public_key()
        .unwrap()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let cert = env.config.revocation_cert();
    std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
    std::fs::write(cert, pem).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let request = |agent: &str, signer: &RevocationKey| {
        let message = RevocationMessage {
            kind: "vigil_quarantine".into(),
            ip: Value::Null,
            agent_id: agent.into(),
            port: Value::Null,
            tpm_policy: Value::Null,
            meta_data: Value::Null,
            event_time: "Mon Aug  3 08:08:39 2026".into(),
            event_id: Some("7c9e6679-7425-40de-944b-e07fc1f90ae7".into()),
            severity_label: None,
            context: Some(json!({ "time_ms": now_ms }).to_string()),
        };
        serde_json::to_value(RevocationNotice::sign(&message, Some(signer)).unwrap()).unwrap()
    };
    let impostor = revocation_key();
    let a = env
        .call("POST", "/vigil/v1/actions", Some(request(UUID, &impostor)))
        .await;
    assert_eq!(a.status, 400, "{}", a.json());
    let a = env
        .call(
            "POST",
            "/vigil/v1/actions",
            Some(request("other-node", &key)),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.json());
    let a = env
        .call("POST", "/vigil/v1/actions", Some(request(UUID, &key)))
        .await;
    assert_eq!(a.status, 200, "{}", a.json());
    let r = &a.json()["results"];
    assert_eq!(r["outcome"], "dry_run", "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("would run /usr/libexec/vigil/quarantine.sh"),
        "{r}"
    );
    env.stop().await;
}
