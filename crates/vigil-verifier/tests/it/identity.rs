//! Workload identity (issue 21, docs/spire.md): `keylime/spire-keylime-plugin`'s calls,
//! exactly and in its order, against Vigil's agent and verifier on swtpm.
//!
//! The plugin's agent side reads `GET /v2.2/agent/info` (`agent_uuid`, `tpm_hash_alg`)
//! over plain HTTP and later `GET /v2.2/quotes/identity?nonce=N` (`quote`); its server
//! side reads `GET /v2.2/agents/{uuid}` (`operational_state`, 3 or 4 accepted) with the
//! verifier's client certificate, enrols an unknown node with `POST /v2.2/agents/{uuid}`
//! (the variant the issue describes), sends a 32-character base32 nonce and checks
//! `GET /v2.2/verify/identity?agent_uuid=&hash_alg=&nonce=&quote=` for `valid` = 1.
//!
//! - `keylime_plugin_flow`: a fresh quote of an attested node is `valid: 1`; a quote
//!   over another nonce and a quote from another node's TPM are `valid: 0` with a
//!   reason; an unknown UUID is 404 at both the status and the verify call; a node
//!   whose attestation failed is refused at the status call (`operational_state` 9).

use crate::support::{self, wait_for, Client, Pki, B64};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use vigil_testkit::Swtpm;

/// The plugin's API version (`common.KeylimeAPIVersion`).
const API: &str = "v2.2";
const UUID: &str = "5f3a0c8e-0d1b-4e0e-9a51-1d3b2c4e0021";
const OTHER_UUID: &str = "5f3a0c8e-0d1b-4e0e-9a51-1d3b2c4e0022";

/// `GET path` over plain HTTP (the plugin's `http.DefaultClient` to the agent):
/// (status, body JSON or Null).
async fn plain_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The plugin's nonce: 32 characters of base32 (`A-Z2-7`) from random bytes.
fn base32_nonce() -> String {
    use rand_core::RngCore as _;
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect()
}

/// Percent-encodes a query value as Go's `url.Values.Encode` does.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One node: an agent (plain HTTP, as the plugin reaches it) on its own swtpm,
/// measuring the files of `files` by IMA emulation.
struct Node {
    agent: vigil_agent::Agent,
    files: PathBuf,
    state: PathBuf,
    _tpm: Swtpm,
}

impl Node {
    /// A node on a fresh swtpm, `manufactured` with an EK certificate or not.
    async fn start(
        test: &str,
        uuid: &str,
        registrar: SocketAddr,
        dir: &Path,
        manufactured: bool,
    ) -> Option<Self> {
        let tpm = if manufactured {
            Swtpm::manufactured(test, &[])?
        } else {
            Swtpm::start(test, &[])?
        };
        let files = dir.join(format!("{uuid}-files"));
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("tool"), b"#!/bin/sh\necho tool\n").unwrap();
        let state = dir.join(uuid);
        let agent = vigil_agent::Agent::start(&vigil_agent::Config {
            uuid: uuid.into(),
            port: 0,
            contact_port: 0,
            registrar_port: registrar.port(),
            tpm_tcti: tpm.tcti(),
            state_dir: state.clone(),
            enable_agent_mtls: false,
            ima_emulate: vec![files.clone()],
            ima_emulate_interval: 0,
            measuredboot_ml_path: dir.join("no-uefi-log"),
            registration_retry_max: 1,
            ..vigil_agent::Config::default()
        })
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
        Some(Self {
            agent,
            files,
            state,
            _tpm: tpm,
        })
    }

    /// A runtime policy allowing every entry of the emulated IMA log.
    fn runtime_policy(&self) -> Value {
        let log = std::fs::read_to_string(self.state.join("ima_emulated_measurements")).unwrap();
        let mut digests = serde_json::Map::new();
        for line in log.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let digest = f[3].strip_prefix("sha256:").expect("ima-ng sha256");
            digests.insert(f[4].to_owned(), json!([digest]));
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

    /// The plugin's agent side, first call: `agent_uuid` and `tpm_hash_alg`.
    async fn info(&self) -> (String, String) {
        let (code, r) = plain_get(self.agent.addr(), &format!("/{API}/agent/info")).await;
        assert_eq!(code, 200, "{r}");
        let s = |k: &str| r["results"][k].as_str().expect(k).to_owned();
        (s("agent_uuid"), s("tpm_hash_alg"))
    }

    /// The plugin's agent side, second call: the identity quote over `nonce`.
    async fn quote(&self, nonce: &str) -> String {
        let path = format!("/{API}/quotes/identity?nonce={}", query_escape(nonce));
        let (code, r) = plain_get(self.agent.addr(), &path).await;
        assert_eq!(code, 200, "{r}");
        r["results"]["quote"].as_str().expect("quote").to_owned()
    }
}

/// The plugin's server side: the verifier reached with a client certificate of its CA.
struct ServerSide {
    client: Client,
    verifier: SocketAddr,
}

impl ServerSide {
    /// `GET /agents/{uuid}`: (status, `operational_state`).
    async fn state(&self, uuid: &str) -> (u16, Option<u64>) {
        let (code, r) = self
            .client
            .call(self.verifier, "GET", &format!("/{API}/agents/{uuid}"), None)
            .await;
        (code, r["results"]["operational_state"].as_u64())
    }

    /// `GET /verify/identity` with the parameters in `url.Values.Encode`'s order:
    /// (status, results).
    async fn verify(&self, uuid: &str, hash_alg: &str, nonce: &str, quote: &str) -> (u16, Value) {
        let path = format!(
            "/{API}/verify/identity?agent_uuid={}&hash_alg={}&nonce={}&quote={}",
            query_escape(uuid),
            query_escape(hash_alg),
            query_escape(nonce),
            query_escape(quote)
        );
        let (code, r) = self.client.call(self.verifier, "GET", &path, None).await;
        (code, r["results"].clone())
    }

    /// The whole exchange for `node`: `Ok(SPIFFE ID)` as the plugin issues it, or why
    /// the plugin refuses.
    async fn attest(&self, node: &Node) -> Result<String, String> {
        let (uuid, hash_alg) = node.info().await;
        match self.state(&uuid).await {
            (200, Some(3 | 4)) => {}
            other => return Err(format!("not in a verified state: {other:?}")),
        }
        let nonce = base32_nonce();
        let quote = node.quote(&nonce).await;
        match self.verify(&uuid, &hash_alg, &nonce, &quote).await {
            (200, r) if r["valid"] == 1 => {
                Ok(format!("spiffe://example.org/spire/agent/keylime/{uuid}"))
            }
            other => Err(format!("identity check failed: {other:?}")),
        }
    }
}

/// A registrar, two nodes (`node` with an EK certificate) registered with it, and a
/// verifier reaching nodes over plain HTTP.
struct Deployment {
    pki: Pki,
    registrar: vigil_registrar::Registrar,
    verifier: vigil_verifier::Verifier,
    node: Node,
    other: Node,
    _dir: tempfile::TempDir,
}

impl Deployment {
    async fn start(
        test: &str,
        db: &str,
        config: impl FnOnce(vigil_verifier::Config, SocketAddr) -> vigil_verifier::Config,
    ) -> Option<Self> {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let registrar = vigil_registrar::Registrar::start(&vigil_registrar::Config {
            port: 0,
            tls_port: 0,
            state_dir: dir.path().join("registrar"),
            tls_dir: pki.tls_dir(),
            ..vigil_registrar::Config::default()
        })
        .await
        .expect("registrar starts");
        let node = Node::start(test, UUID, registrar.http_addr(), dir.path(), true).await?;
        let other = Node::start(test, OTHER_UUID, registrar.http_addr(), dir.path(), false).await?;
        let verifier = support::start(&config(
            vigil_verifier::Config {
                enable_agent_mtls: false,
                ..pki.config(db)
            },
            registrar.https_addr(),
        ))
        .await;
        Some(Self {
            pki,
            registrar,
            verifier,
            node,
            other,
            _dir: dir,
        })
    }

    /// The enrolment of `node` reached at `port`, as the tenant (or the plugin
    /// variant) posts it.
    async fn enrolment(&self, uuid: &str, node: &Node, port: u16) -> Value {
        let mut enrolment = support::real_agent_enrolment(
            &self.pki,
            self.registrar.https_addr(),
            uuid,
            port,
            json!({"mask": "0x0"}).to_string(),
            B64.encode(node.runtime_policy().to_string()),
            Value::Null,
        )
        .await;
        enrolment["mtls_cert"] = Value::Null;
        enrolment["runtime_policy_name"] = json!(format!("{uuid}-policy"));
        enrolment
    }

    async fn enrol(&self, client: &Client, uuid: &str, enrolment: Value) {
        let (code, r) = client
            .call(
                self.verifier.addr(),
                "POST",
                &format!("/{API}/agents/{uuid}"),
                Some(enrolment),
            )
            .await;
        assert_eq!(code, 200, "enrolment: {r}");
    }

    async fn wait_state(&self, client: &Client, what: &str, done: impl Fn(&Value) -> bool) {
        wait_for(30, what, || async {
            let (code, r) = client
                .call(
                    self.verifier.addr(),
                    "GET",
                    &format!("/{API}/agents/{UUID}"),
                    None,
                )
                .await;
            (code == 200 && done(&r["results"])).then_some(())
        })
        .await;
    }

    /// A file outside the node's policy is measured: its next round fails.
    async fn tamper(&self) {
        std::fs::write(self.node.files.join("intruder"), b"#!/bin/sh\necho pwned\n").unwrap();
        assert!(self.node.agent.ima_rescan().await.unwrap() > 0);
    }

    async fn stop(self) {
        self.node.agent.shutdown().await;
        self.other.agent.shutdown().await;
        self.verifier.shutdown().await;
        self.registrar.shutdown().await;
    }
}

async fn keylime_plugin_flow(db: String) {
    let Some(d) = Deployment::start("keylime_plugin_flow", &db, |c, _| c).await else {
        return;
    };
    let (node, other) = (&d.node, &d.other);
    // The plugin presents the CA's server certificate as its client certificate.
    let server = ServerSide {
        client: Client::new(&d.pki.tls_dir(), true),
        verifier: d.verifier.addr(),
    };

    // Not yet known to the verifier: 404, and the plugin variant enrols it.
    assert_eq!(server.state(UUID).await, (404, None));
    let enrolment = d.enrolment(UUID, node, node.agent.addr().port()).await;
    d.enrol(&server.client, UUID, enrolment).await;
    d.wait_state(&server.client, "the first successful round", |s| {
        s["attestation_count"].as_u64() >= Some(1)
    })
    .await;

    // A fresh quote of the attested node: valid 1, and the plugin's SPIFFE ID.
    assert_eq!(
        server.attest(node).await,
        Ok(format!("spiffe://example.org/spire/agent/keylime/{UUID}"))
    );

    // A quote over another nonce than the one checked.
    let (_, hash_alg) = node.info().await;
    let nonce = base32_nonce();
    let stale = node.quote(&base32_nonce()).await;
    let (code, r) = server.verify(UUID, &hash_alg, &nonce, &stale).await;
    assert_eq!((code, &r["valid"]), (200, &json!(0)), "{r}");
    assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");

    // A quote from another node's TPM, over the right nonce, claimed for this node.
    let foreign = other.quote(&nonce).await;
    let (code, r) = server.verify(UUID, &hash_alg, &nonce, &foreign).await;
    assert_eq!((code, &r["valid"]), (200, &json!(0)), "{r}");

    // An unknown UUID (the other node is registered but not enrolled): 404 at both calls.
    assert_eq!(server.state(OTHER_UUID).await, (404, None));
    let (code, _) = server.verify(OTHER_UUID, &hash_alg, &nonce, &foreign).await;
    assert_eq!(code, 404);
    assert!(server.attest(other).await.is_err());

    // The node fails attestation (a file outside its policy is measured): refused at
    // the status call.
    d.tamper().await;
    wait_for(30, "the failed round", || async {
        let (code, state) = server.state(UUID).await;
        (code == 200 && state == Some(9)).then_some(())
    })
    .await;
    let refused = server
        .attest(node)
        .await
        .expect_err("a failed node is refused");
    assert!(refused.contains("Some(9)"), "{refused}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylime_plugin_flow_sqlite() {
    vigil_testkit::db::with_sqlite(keylime_plugin_flow).await;
}

/// A fresh nonce from `POST /vigil/v1/identity/nonce`.
async fn vigil_nonce(client: &Client, d: &Deployment) -> String {
    let (code, r) = client
        .call(d.verifier.addr(), "POST", "/vigil/v1/identity/nonce", None)
        .await;
    assert_eq!(code, 200, "{r}");
    r["results"]["nonce"].as_str().expect("a nonce").to_owned()
}

/// `POST /vigil/v1/identity/verify` for `uuid` with `nonce` and `quote`:
/// (status, body).
async fn vigil_verify(
    client: &Client,
    d: &Deployment,
    uuid: &str,
    nonce: &str,
    quote: &str,
) -> (u16, Value) {
    let body = json!({"agent_uuid": uuid, "nonce": nonce, "quote": quote, "hash_alg": "sha256"});
    client
        .call(
            d.verifier.addr(),
            "POST",
            "/vigil/v1/identity/verify",
            Some(body),
        )
        .await
}

/// Vigil's own identity routes: the identity role, the selectors of an attested node
/// and `identity/verify`'s refusals — a replayed nonce, a nonce the verifier never
/// issued, a quote over another nonce, a
/// quote for another node's UUID, a node enrolled but never attested, a node unknown
/// to the verifier, a failed node — each with its reason; the eviction hook runs for
/// the identity issued once the node fails.
async fn vigil_identity_routes(db: String) {
    let evict_log = tempfile::NamedTempFile::new().unwrap();
    let log_path = evict_log.path().to_owned();
    let setup = |c: vigil_verifier::Config, registrar: SocketAddr| vigil_verifier::Config {
        identity_clients: vec!["spire-server".into()],
        identity_trust_domain: "example.org".into(),
        identity_registrar: registrar.to_string(),
        identity_evict_command: vec![
            "sh".into(),
            "-c".into(),
            format!("echo \"evict $0 $1\" >> {}", log_path.display()),
            "{spiffe_id}".into(),
            "{uuid}".into(),
        ],
        ..c
    };
    let Some(d) = Deployment::start("vigil_identity_routes", &db, setup).await else {
        return;
    };
    let tls_dir = d.pki.tls_dir();
    vigil_tls::ca::issue(
        &vigil_tls::ca::CaDir::new(&tls_dir),
        "spire-server",
        vigil_tls::ca::Kind::Client,
        &[],
        false,
    )
    .unwrap();
    let admin = Client::new(&tls_dir, true);
    let spire = Client::named(&tls_dir, Some("spire-server"));
    let anonymous = Client::new(&tls_dir, false);

    // Labels given at enrolment become selectors.
    let mut enrolment = d.enrolment(UUID, &d.node, d.node.agent.addr().port()).await;
    enrolment["vigil_labels"] = serde_json::json!({"rack": "7"});
    d.enrol(&admin, UUID, enrolment).await;
    // The other node enrolled where it cannot be reached: enrolled, never attested.
    d.enrol(
        &admin,
        OTHER_UUID,
        d.enrolment(OTHER_UUID, &d.other, 1).await,
    )
    .await;
    d.wait_state(&admin, "the first successful round", |s| {
        s["attestation_count"].as_u64() >= Some(1)
    })
    .await;

    // The identity role: no certificate, and an admin certificate not listed.
    let selectors = format!("/vigil/v1/identity/{UUID}/selectors");
    let (code, r) = anonymous
        .call(d.verifier.addr(), "GET", &selectors, None)
        .await;
    assert_eq!(code, 403, "{r}");
    assert!(
        r["status"]
            .as_str()
            .unwrap()
            .contains("requires a client certificate"),
        "{r}"
    );
    let (code, r) = admin.call(d.verifier.addr(), "GET", &selectors, None).await;
    assert_eq!(code, 403, "{r}");
    assert!(
        r["status"]
            .as_str()
            .unwrap()
            .contains("CN=client is not authorised"),
        "{r}"
    );

    // The selectors of the attested node.
    let (code, r) = spire.call(d.verifier.addr(), "GET", &selectors, None).await;
    assert_eq!(code, 200, "{r}");
    let list: Vec<&str> = r["results"]["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        list[..4],
        [
            format!("vigil:uuid:{UUID}").as_str(),
            "vigil:status:trusted",
            "vigil:label:rack:7",
            format!("vigil:runtime_policy:{UUID}-policy").as_str(),
        ],
        "{r}"
    );
    assert!(
        list.iter()
            .any(|s| s.starts_with("vigil:ek_cert_issuer:") && s.contains("CN=")),
        "{r}"
    );
    assert!(
        r["results"]["last_successful_attestation"].as_i64() > Some(0),
        "{r}"
    );

    // A nonce needs the identity role too.
    let (code, _) = anonymous
        .call(d.verifier.addr(), "POST", "/vigil/v1/identity/nonce", None)
        .await;
    assert_eq!(code, 403);

    // A fresh quote over a nonce from the verifier: the SPIFFE ID and the selectors.
    let nonce = vigil_nonce(&spire, &d).await;
    let quote = d.node.quote(&nonce).await;
    let (code, r) = vigil_verify(&spire, &d, UUID, &nonce, &quote).await;
    assert_eq!(code, 200, "{r}");
    let spiffe_id = format!("spiffe://example.org/spire/agent/vigil/{UUID}");
    assert_eq!(r["results"]["spiffe_id"], spiffe_id.as_str(), "{r}");
    assert_eq!(r["results"]["selectors"][1], "vigil:status:trusted", "{r}");

    // The same nonce and quote again: replayed.
    let (code, r) = vigil_verify(&spire, &d, UUID, &nonce, &quote).await;
    assert_eq!(code, 403, "{r}");
    assert!(
        r["status"].as_str().unwrap().contains("already used"),
        "{r}"
    );
    // A nonce this verifier never issued.
    let own = base32_nonce();
    let own_quote = d.node.quote(&own).await;
    let (code, r) = vigil_verify(&spire, &d, UUID, &own, &own_quote).await;
    assert_eq!(code, 403, "{r}");
    assert!(
        r["status"]
            .as_str()
            .unwrap()
            .contains("was not issued by this verifier"),
        "{r}"
    );
    // A quote over another nonce than the one sent.
    let fresh = vigil_nonce(&spire, &d).await;
    let (code, r) = vigil_verify(&spire, &d, UUID, &fresh, &quote).await;
    assert_eq!(code, 403, "{r}");
    assert!(
        r["status"].as_str().unwrap().contains("is not valid"),
        "{r}"
    );
    // This node's quote for the other node's UUID.
    let nonce = vigil_nonce(&spire, &d).await;
    let quote = d.node.quote(&nonce).await;
    let (code, r) = vigil_verify(&spire, &d, OTHER_UUID, &nonce, &quote).await;
    assert_eq!(code, 403, "{r}");
    assert!(
        r["status"].as_str().unwrap().contains("is not valid"),
        "{r}"
    );
    // The other node's own quote: enrolled, never attested.
    let nonce = vigil_nonce(&spire, &d).await;
    let quote = d.other.quote(&nonce).await;
    let (code, r) = vigil_verify(&spire, &d, OTHER_UUID, &nonce, &quote).await;
    assert_eq!(code, 409, "{r}");
    assert!(
        r["status"]
            .as_str()
            .unwrap()
            .contains("has not been attested"),
        "{r}"
    );
    // A node the verifier does not know.
    let unknown = "5f3a0c8e-0d1b-4e0e-9a51-1d3b2c4e0099";
    let (code, _) = vigil_verify(&spire, &d, unknown, &base32_nonce(), &quote).await;
    assert_eq!(code, 404);

    // The node fails: refused with the reason, its selectors say failed, and the
    // identity issued above is evicted by the hook.
    d.tamper().await;
    d.wait_state(&admin, "the failed round", |s| s["operational_state"] == 9)
        .await;
    let nonce = vigil_nonce(&spire, &d).await;
    let quote = d.node.quote(&nonce).await;
    let (code, r) = vigil_verify(&spire, &d, UUID, &nonce, &quote).await;
    assert_eq!(code, 403, "{r}");
    assert!(
        r["status"]
            .as_str()
            .unwrap()
            .contains("failed attestation (Invalid Quote)"),
        "{r}"
    );
    let (code, r) = spire.call(d.verifier.addr(), "GET", &selectors, None).await;
    assert_eq!(
        (code, &r["results"]["selectors"][1]),
        (200, &json!("vigil:status:failed")),
        "{r}"
    );
    let logged = wait_for(30, "the eviction hook", || async {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        (!log.is_empty()).then_some(log)
    })
    .await;
    assert_eq!(logged.trim(), format!("evict {spiffe_id} {UUID}"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_identity_routes_sqlite() {
    vigil_testkit::db::with_sqlite(vigil_identity_routes).await;
}
