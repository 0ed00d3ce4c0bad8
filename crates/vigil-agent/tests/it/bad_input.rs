//! Every REST route of the agent against a table of bad inputs, over mTLS on a real
//! swtpm: malformed JSON, wrong types, missing fields, bodies over the limit, bad
//! base64 and ciphertexts, bad query strings (nonces, masks, `partial`, challenges),
//! wrong methods, unknown paths and versions, clients without an accepted certificate.
//! Each gets rust-keylime's 4xx and text within a bound — never a 5xx, never a hang —
//! and changes nothing: no key share is taken, no payload runs, no revocation action
//! runs, the node key and the agent's identity read back the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vigil_agent::{Agent, Config};
use vigil_service::client::Endpoint;
use vigil_testkit::Swtpm;

use crate::agent::request;

/// TLS to the agent: the client configuration and the name the handshake checks.
struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: rustls_pki_types::ServerName<'static>,
}

const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
/// The agent's request body limit (a payload is at most 1 MiB before base64).
const MAX_BODY: usize = 4 << 20;

/// An agent on a manufactured swtpm, with no registrar (registration retries in the
/// background; the API serves meanwhile).
struct Env {
    agent: Agent,
    ca: vigil_tls::ca::CaDir,
    config: Config,
    dir: tempfile::TempDir,
    _tpm: Swtpm,
}

impl Env {
    async fn start(test: &str) -> Option<Self> {
        let tpm = Swtpm::manufactured(test, &[])?;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = vigil_tls::ca::init(
            &dir.path().join("cv_ca"),
            &["localhost".into(), "127.0.0.1".into()],
            false,
        )
        .expect("CA");
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let measured = dir.path().join("measured");
        std::fs::create_dir_all(&measured).expect("measured dir");
        std::fs::write(measured.join("tool"), b"#!/bin/sh\n").expect("measured file");
        let config = Config {
            uuid: UUID.into(),
            port: 0,
            contact_port: 0,
            registrar_port: closed,
            tpm_tcti: tpm.tcti(),
            state_dir: dir.path().join("agent"),
            trusted_client_ca: vec![ca.ca_cert()],
            ima_emulate: vec![measured],
            ima_emulate_interval: 0,
            measuredboot_ml_path: dir.path().join("no-uefi-log"),
            revocation_actions_dir: dir.path().join("actions"),
            registration_retry_max: 1,
            ..Config::default()
        };
        let agent = Agent::start(&config).await.expect("agent starts");
        Some(Self {
            agent,
            ca,
            config,
            dir,
            _tpm: tpm,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.agent.addr()
    }

    /// TLS trusting the agent's certificate, as `identity` (a certificate of `ca`).
    fn tls(&self, ca: &vigil_tls::ca::CaDir, identity: Option<&str>) -> ClientTls {
        let server = self.config.state_dir.join("server-cert.crt");
        let id = identity.map(|n| (ca.cert(n), ca.key(n)));
        ClientTls {
            config: Arc::new(
                vigil_tls::client_config(
                    &server,
                    id.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                )
                .expect("client TLS config"),
            ),
            server_name: rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name"),
        }
    }

    /// One request written by hand (`Connection: close`), bounded in time: a write cut
    /// short by an answer given before the body was read is no error, the answer is
    /// read all the same. The status and the JSON body (`Null` when not JSON).
    async fn send(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let tls = self.tls(&self.ca, Some("client"));
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(self.addr())
                .await
                .expect("connect");
            let mut stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(tls.server_name.clone(), tcp)
                .await
                .expect("TLS handshake");
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body);
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
            let mut answer = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                answer.extend_from_slice(&buf[..n]);
            }
            answer
        };
        let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path} hung"));
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        let status_line = String::from_utf8_lossy(&answer[..split]);
        let code = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: {status_line}"));
        (
            code,
            serde_json::from_slice(&answer[split + 4..]).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, b"").await
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// What must not change.
async fn state(env: &Env) -> Value {
    let mut out = json!({});
    for path in [
        "/v2.6/keys/pubkey",
        "/v2.6/agent/info",
        "/version",
        "/v2.6/keys/verify?challenge=abc",
    ] {
        let (code, v) = env.get(path).await;
        out[path] = json!([code, v]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_bad_input() {
    let Some(env) = Env::start("agent_bad_input").await else {
        return;
    };
    let before = state(&env).await;
    let (code, v) = env.get("/version").await;
    assert_eq!(code, 200);
    assert_eq!(v["results"]["supported_version"], "2.6");
    assert_eq!(
        v["results"]["supported_versions"].as_array().unwrap().len(),
        6
    );
    let (code, v) = env.get("/v2.6/agent/info").await;
    assert_eq!(code, 200);
    assert_eq!(v["results"]["agent_uuid"], UUID);
    assert_eq!(v["results"]["tpm_hash_alg"], "sha256");
    assert_eq!(
        before["/v2.6/keys/verify?challenge=abc"][1]["status"],
        "Bootstrap key not yet available."
    );

    let tag = "ab".repeat(48);
    let garbage_share = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([0u8; 256])
    };
    let oversized = {
        let mut b = bytes(&json!({"encrypted_key": "x"}));
        b.extend(std::iter::repeat_n(b' ', MAX_BODY));
        b
    };
    let long_nonce = format!("/v2.6/quotes/identity?nonce={}", "a".repeat(65));
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        // Quotes: query strings.
        ("GET", "/v2.6/quotes/identity", vec![], 400, "missing field `nonce`"),
        ("GET", "/v2.6/quotes/identity?nonce=abc!", vec![], 400, "nonce should be strictly alphanumeric"),
        ("GET", "/v2.6/quotes/identity?nonce=%00", vec![], 400, "nonce should be strictly alphanumeric"),
        ("GET", "/v2.6/quotes/identity?nonce=%FF", vec![], 400, "nonce should be strictly alphanumeric"),
        ("GET", "/v2.6/quotes/identity?nonce=a%20b", vec![], 400, "nonce should be strictly alphanumeric"),
        ("GET", &long_nonce, vec![], 400, "Nonce is too long"),
        ("GET", "/v2.6/quotes/identity?%ZZ&&==", vec![], 400, "missing field `nonce`"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&partial=1", vec![], 400, "missing field `mask`"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&mask=0x1", vec![], 400, "missing field `partial`"),
        ("GET", "/v2.6/quotes/integrity?mask=0x1&partial=1", vec![], 400, "missing field `nonce`"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&mask=zz&partial=0", vec![], 400, "mask should be a hex"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&mask=0x&partial=0", vec![], 400, "mask should be a hex"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&mask=0x100000000&partial=0", vec![], 400, "mask should be a hex"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&mask=0x-1&partial=0", vec![], 400, "mask should be strictly alphanumeric"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&mask=0x1000000&partial=0", vec![], 400, "above 23"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&mask=0x1&partial=2", vec![], 400, "'partial'"),
        ("GET", "/v2.6/quotes/integrity?nonce=a&mask=0x1&partial=", vec![], 400, "'partial'"),
        ("GET", "/v2.6/quotes/integrity?nonce=a!&mask=0x1&partial=1", vec![], 400, "nonce should be strictly alphanumeric"),
        ("GET", "/v2.6/quotes/other", vec![], 400, "only /identity and /integrity"),
        // Keys: the challenge, and the shares' bodies.
        ("GET", "/v2.6/keys/verify", vec![], 400, "missing field `challenge`"),
        ("GET", "/v2.6/keys/verify?challenge=", vec![], 400, "strictly alphanumeric"),
        ("GET", "/v2.6/keys/verify?challenge=a-b", vec![], 400, "strictly alphanumeric"),
        ("GET", "/v2.6/keys/verify?challenge=abc", vec![], 400, "Bootstrap key not yet available."),
        ("POST", "/v2.6/keys/ukey", vec![], 400, "Json deserialize error"),
        ("POST", "/v2.6/keys/ukey", b"{".to_vec(), 400, "Json deserialize error"),
        ("POST", "/v2.6/keys/ukey", b"[]".to_vec(), 400, "expected a JSON object"),
        ("POST", "/v2.6/keys/ukey", b"null".to_vec(), 400, "expected a JSON object"),
        ("POST", "/v2.6/keys/ukey", oversized.clone(), 400, "body over"),
        ("POST", "/v2.6/keys/ukey", b"{}".to_vec(), 400, "missing field `auth_tag`"),
        ("POST", "/v2.6/keys/ukey", bytes(&json!({"auth_tag": 5})), 400, "field `auth_tag` must be a string"),
        ("POST", "/v2.6/keys/ukey", bytes(&json!({"auth_tag": "00", "encrypted_key": "x"})), 400, "auth_tag must be a hex HMAC-SHA384"),
        ("POST", "/v2.6/keys/ukey", bytes(&json!({"auth_tag": "z".repeat(96), "encrypted_key": "x"})), 400, "auth_tag must be a hex HMAC-SHA384"),
        ("POST", "/v2.6/keys/ukey", bytes(&json!({"auth_tag": tag})), 400, "missing field `encrypted_key`"),
        ("POST", "/v2.6/keys/ukey", bytes(&json!({"auth_tag": tag, "encrypted_key": 5})), 400, "field `encrypted_key` must be a string"),
        ("POST", "/v2.6/keys/ukey", bytes(&json!({"auth_tag": tag, "encrypted_key": "%%%"})), 400, "Unable to decrypt encrypted_key"),
        ("POST", "/v2.6/keys/ukey", bytes(&json!({"auth_tag": tag, "encrypted_key": garbage_share})), 400, "Unable to decrypt encrypted_key"),
        ("POST", "/v2.6/keys/ukey", bytes(&json!({"auth_tag": tag, "encrypted_key": "x", "payload": 5})), 400, "field `payload` must be a string"),
        ("POST", "/v2.6/keys/vkey", vec![], 400, "Json deserialize error"),
        ("POST", "/v2.6/keys/vkey", b"{".to_vec(), 400, "Json deserialize error"),
        ("POST", "/v2.6/keys/vkey", oversized.clone(), 400, "body over"),
        ("POST", "/v2.6/keys/vkey", b"{}".to_vec(), 400, "missing field `encrypted_key`"),
        ("POST", "/v2.6/keys/vkey", bytes(&json!({"encrypted_key": ["x"]})), 400, "field `encrypted_key` must be a string"),
        ("POST", "/v2.6/keys/vkey", bytes(&json!({"encrypted_key": "%%%"})), 400, "Unable to decrypt encrypted_key"),
        ("POST", "/v2.6/keys/vkey", bytes(&json!({"encrypted_key": garbage_share})), 400, "Unable to decrypt encrypted_key"),
        ("POST", "/v2.6/keys/other", b"{}".to_vec(), 400, "only /ukey and /vkey"),
        ("GET", "/v2.6/keys/ukey", vec![], 400, "only /pubkey and /verify"),
        ("GET", "/v2.6/keys/../keys/pubkey", vec![], 400, "only /pubkey and /verify"),
        // Revocation notices.
        ("POST", "/v2.6/notifications/revocation", vec![], 400, "Json deserialize error"),
        ("POST", "/v2.6/notifications/revocation", b"{".to_vec(), 400, "Json deserialize error"),
        ("POST", "/v2.6/notifications/revocation", oversized.clone(), 400, "body over"),
        ("POST", "/v2.6/notifications/revocation", b"{}".to_vec(), 400, "missing field `msg`"),
        ("POST", "/v2.6/notifications/revocation", bytes(&json!({"msg": 5})), 400, "field `msg` must be a string"),
        ("POST", "/v2.6/notifications/revocation", bytes(&json!({"msg": "{}"})), 400, "Invalid revocation message signature"),
        ("POST", "/v2.6/notifications/revocation", bytes(&json!({"msg": "x", "signature": "%%"})), 400, "Invalid revocation message signature"),
        ("POST", "/v2.6/notifications/other", b"{}".to_vec(), 400, "only /revocation"),
        // Wrong methods: 405 (with Allow).
        ("POST", "/v2.6/quotes/identity?nonce=a", vec![], 405, "Method is not supported in /quotes/ interface"),
        ("DELETE", "/v2.6/quotes/integrity", vec![], 405, "Method is not supported in /quotes/ interface"),
        ("PUT", "/v2.6/keys/ukey", vec![], 405, "Method is not supported in /keys/ interface"),
        ("DELETE", "/v2.6/keys/pubkey", vec![], 405, "Method is not supported in /keys/ interface"),
        ("GET", "/v2.6/notifications/revocation", vec![], 405, "Method is not supported in /notifications/"),
        ("POST", "/v2.6/agent/info", vec![], 405, "Method is not supported in /agent interface"),
        ("PATCH", "/version", vec![], 405, "Method is not supported"),
        ("DELETE", "/nothing", vec![], 405, "Method is not supported"),
        ("PUT", "/v2.6/nothing", vec![], 405, "Method is not supported"),
        // Unknown paths and versions: rust-keylime's 400s.
        ("POST", "/version", vec![], 400, "Not Implemented: Use /v2.6 interface"),
        ("GET", "/nothing", vec![], 400, "Not Implemented: Use /version or /v2.6 interfaces"),
        ("GET", "/", vec![], 400, "Not Implemented: Use /version or /v2.6 interfaces"),
        ("GET", "/v2/keys/pubkey", vec![], 400, "Not Implemented: Use /version or /v2.6 interfaces"),
        ("GET", "/2.6/keys/pubkey", vec![], 400, "Not Implemented: Use /version or /v2.6 interfaces"),
        ("GET", "/v1.0/quotes/identity?nonce=a", vec![], 400, "API version not supported: v1.0"),
        ("GET", "/v2.0/keys/pubkey", vec![], 400, "API version not supported: v2.0"),
        ("GET", "/v9.99/keys/pubkey", vec![], 400, "API version not supported: v9.99"),
        ("GET", "/v2.06/keys/pubkey", vec![], 400, "API version not supported: v2.06"),
        ("GET", "/v2.1/agent/info", vec![], 400, "Not Implemented: Use /agent, /keys, or /quotes"),
        ("GET", "/v2.6/agent/other", vec![], 400, "only /info is supported"),
        ("GET", "/v2.6/nothing", vec![], 400, "Not Implemented: Use /agent, /keys, or /quotes"),
        ("GET", "/v2.6/%2E%2E/version", vec![], 400, "Not Implemented: Use /agent, /keys, or /quotes"),
        ("POST", "/v2.6/nothing", b"{}".to_vec(), 400, "Not Implemented: Use /keys or /notifications"),
    ];
    for (method, path, body, code, text) in &cases {
        let (got, v) = env.send(method, path, body).await;
        assert_eq!(got, *code, "{method} {path}: {v}");
        assert_eq!(v["code"], *code, "{method} {path}: {v}");
        assert_eq!(v["results"], json!({}), "{method} {path}");
        let status = v["status"].as_str().unwrap_or_default();
        assert!(
            status.contains(text),
            "{method} {path}: expected '{text}' in {v}"
        );
    }

    // By design not a 4xx (as rust-keylime): an unusable `ima_ml_entry` asks for the
    // whole list.
    for entry in ["-1", "abc", "99999999999999999999999"] {
        let (code, v) = env
            .get(&format!(
                "/v2.6/quotes/integrity?nonce=a&mask=0x400&partial=1&ima_ml_entry={entry}"
            ))
            .await;
        assert_eq!(code, 200, "{entry}: {v}");
        assert_eq!(v["results"]["ima_measurement_list_entry"], 0, "{entry}");
    }

    // No client certificate, or one from another CA: no TLS session at all.
    let no_cert = env.tls(&env.ca, None);
    assert!(request(
        &Endpoint::addr(env.addr()).with_tls(no_cert.config.clone()),
        "GET",
        "/version",
        None
    )
    .await
    .is_err());
    let other = vigil_tls::ca::init(&env.dir.path().join("other_ca"), &[], false).unwrap();
    let foreign = env.tls(&other, Some("client"));
    assert!(request(
        &Endpoint::addr(env.addr()).with_tls(foreign.config.clone()),
        "GET",
        "/version",
        None
    )
    .await
    .is_err());

    // Nothing changed: no share taken (no bootstrap key), no payload, no revocation.
    assert_eq!(state(&env).await, before);
    assert_eq!(*env.agent.payload_runs().borrow(), 0);
    assert!(env.agent.revocations().borrow().is_empty());
    env.agent.shutdown().await;
}
