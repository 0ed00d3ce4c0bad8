//! Test harness: a `cv_ca` per test, the verifier in-process on port 0, an admin
//! HTTPS client, and a minimal node agent (Keylime's agent quote API) backed by a real
//! swtpm through vigil-tpm — test-only, to be replaced by `vigil-agent`.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use vigil_core::HashAlg;
use vigil_testkit::Swtpm;
use vigil_tpm::{AkAlg, EkAlg, EkSource, Tpm};
use vigil_verifier::{Config, Verifier};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A CA in Keylime's layout, with server and client certificates.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        vigil_tls::ca::init(
            &dir.path().join("cv_ca"),
            &["127.0.0.1".into(), "localhost".into()],
            false,
        )
        .unwrap();
        Self { dir }
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("cv_ca")
    }

    pub fn config(&self, database_url: &str) -> Config {
        Config {
            port: 0,
            state_dir: self.dir.path().to_owned(),
            database_url: database_url.to_owned(),
            quote_interval: 0.3,
            retry_interval: 0.2,
            max_retries: 2,
            request_timeout: 5.0,
            ..Config::default()
        }
    }

    /// An HTTPS client of the verifier, with the admin client certificate or without.
    pub fn client(&self, admin: bool) -> Client {
        Client::new(&self.tls_dir(), admin)
    }
}

pub struct Client {
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// A client trusting the CA in `tls_dir` (Keylime's `cv_ca` layout), presenting its
    /// `client` certificate when `admin`.
    pub fn new(tls_dir: &Path, admin: bool) -> Self {
        let d = tls_dir;
        let identity = admin.then(|| (d.join("client-cert.crt"), d.join("client-private.pem")));
        let config = vigil_tls::client_config(
            &d.join("cacert.crt"),
            identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap();
        Self {
            tls: Arc::new(config),
        }
    }

    /// One request; (status, body JSON or Null).
    pub async fn call(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, bytes) = self.raw(addr, method, path, body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `GET path`; (status, body as text): the metrics.
    pub async fn text(&self, addr: SocketAddr, path: &str) -> (u16, String) {
        let (status, bytes) = self.raw(addr, "GET", path, None).await;
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn raw(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Bytes) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    }
}

impl Client {
    /// One request written by hand (`Connection: close`) with `body` as given (any
    /// bytes), for requests the server may answer before reading their body: a write cut
    /// short by its answer is no error, the answer is read all the same.
    /// (status, body JSON or Null).
    pub async fn call_unread(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, Value) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let _ = tls.write_all(&request).await;
        let _ = tls.flush().await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = tls.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
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
        let json = serde_json::from_slice(&answer[split + 4..]).unwrap_or(Value::Null);
        (code, json)
    }
}

pub async fn start(config: &Config) -> Verifier {
    Verifier::start(config).await.expect("verifier starts")
}

/// The system clock plus an offset the test moves forward.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_secs: std::sync::atomic::AtomicU64,
}

impl OffsetClock {
    /// Moves the clock `secs` seconds forward.
    pub fn advance(&self, secs: u64) {
        self.offset_secs
            .fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl vigil_verifier::Clock for OffsetClock {
    fn now(&self) -> vigil_core::attestation::UnixTime {
        let offset = self.offset_secs.load(std::sync::atomic::Ordering::SeqCst);
        vigil_verifier::SystemClock
            .now()
            .saturating_add(Duration::from_secs(offset))
    }
}

/// Starts a verifier reading the time from `clock`.
pub async fn start_with_clock(config: &Config, clock: Arc<OffsetClock>) -> Verifier {
    Verifier::start_with(config, clock, Arc::new(vigil_verifier::OsNonces))
        .await
        .expect("verifier starts")
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct AgentState {
    lines: Vec<String>,
    /// `ima_ml_entry` of every quote request, in order.
    requests: Vec<u64>,
    vkey: Option<String>,
    revocations: Vec<Value>,
    /// How long a quote request waits before it is answered.
    delay: Duration,
}

/// A node: swtpm + AK + node key + an IMA log extended into PCR 10, serving Keylime's
/// agent API (`quotes/integrity`, `keys/vkey`, `notifications/revocation`) over TLS.
pub struct TestAgent {
    pub swtpm: Swtpm,
    tpm: Arc<Tpm>,
    state: Arc<Mutex<AgentState>>,
    pub ak_tpm: Vec<u8>,
    pub nk_pem: String,
    pub nk_private_der: Vec<u8>,
    pub cert_pem: String,
    cert_dir: tempfile::TempDir,
    pub addr: SocketAddr,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestAgent {
    /// `None` when swtpm is not installed (outside CI).
    pub async fn new(test: &str, verifier_ca: &Path) -> Option<Self> {
        let swtpm = Swtpm::manufactured(test, &[])?;
        let tpm = Tpm::connect(&swtpm.tcti()).unwrap();
        tpm.setup_ek(EkSource::Template(EkAlg::Rsa2048)).unwrap();
        let ak = tpm.create_ak(AkAlg::RSA_SHA256).unwrap();
        tpm.load_ak(&ak, None).unwrap();
        // The node key (NK): RSA-2048, generated by aws-lc (fast in debug builds).
        let nk = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let nk_pem = nk.public_key_pem();
        tpm.bind_data_pcr(HashAlg::Sha256, &nk_pem).unwrap();
        // The agent's TLS server certificate (what the tenant enrols as mtls_cert).
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        let cert = params.self_signed(&key).unwrap();
        let cert_dir = tempfile::tempdir().unwrap();
        std::fs::write(cert_dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(cert_dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let mut agent = Self {
            swtpm,
            tpm: Arc::new(tpm),
            state: Arc::new(Mutex::new(AgentState {
                lines: Vec::new(),
                requests: Vec::new(),
                vkey: None,
                revocations: Vec::new(),
                delay: Duration::ZERO,
            })),
            ak_tpm: ak.public,
            nk_pem,
            nk_private_der: nk.serialize_der(),
            cert_pem: cert.pem(),
            cert_dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            server: None,
        };
        agent.serve(verifier_ca, 0).await;
        Some(agent)
    }

    /// Serves on `port` (0: any), requiring the verifier's client certificate.
    pub async fn serve(&mut self, verifier_ca: &Path, port: u16) {
        let d = self.cert_dir.path();
        let tls = vigil_tls::server_config(
            &d.join("cert.pem"),
            &d.join("key.pem"),
            &[verifier_ca],
            vigil_tls::ClientAuth::Required,
        )
        .unwrap();
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let tpm = self.tpm.clone();
        let state = self.state.clone();
        let nk = self.nk_pem.clone();
        self.server = Some(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, tpm, state, nk) =
                    (acceptor.clone(), tpm.clone(), state.clone(), nk.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (tpm, state, nk) = (tpm.clone(), state.clone(), nk.clone());
                            async move {
                                let (code, body) = handle(req, &tpm, &state, &nk).await;
                                let body = json!({"code": code, "status": if code == 200 { "Success" } else { "Error" }, "results": body});
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(code)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(body.to_string())))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Stops answering (the port is closed).
    pub fn go_offline(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    /// Measures a file: appends its ima-ng entry and extends PCR 10.
    pub fn measure(&self, path: &str, content: &[u8]) {
        let digest = HashAlg::Sha256.hash(content).to_hex();
        self.record(&format!("ima-ng sha256:{digest} {path}"));
    }

    /// Appends the IMA entry `template digest name [data]` (a log line without its PCR
    /// and template hash, which are filled in) and extends PCR 10 with it.
    pub fn record(&self, entry: &str) {
        let placeholder = format!("10 {} {entry}", "0".repeat(40));
        let data = vigil_core::ima::ImaEntry::parse(&placeholder)
            .unwrap()
            .template_data();
        let mut st = self.state.lock().unwrap();
        self.tpm
            .pcr_extend(10, HashAlg::Sha256, &HashAlg::Sha256.hash(&data))
            .unwrap();
        st.lines
            .push(format!("10 {} {entry}", HashAlg::Sha1.hash(&data).to_hex()));
    }

    /// The answer body (`{"code","status","results"}`) to a `quotes/integrity` request,
    /// without HTTP: for measuring the verifier's round in-process.
    pub fn integrity_answer(&self, nonce: &str, mask: u32, partial: bool, entry: u64) -> Vec<u8> {
        let results = integrity(
            &self.tpm,
            &self.state,
            &self.nk_pem,
            nonce,
            mask,
            partial,
            entry,
        );
        json!({"code": 200, "status": "Success", "results": results})
            .to_string()
            .into_bytes()
    }

    /// Makes every quote request wait `delay` before it is answered (a slow node, so a
    /// round stays in flight long enough to be interrupted).
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn requests(&self) -> Vec<u64> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn vkey(&self) -> Option<String> {
        self.state.lock().unwrap().vkey.clone()
    }

    pub fn revocations(&self) -> Vec<Value> {
        self.state.lock().unwrap().revocations.clone()
    }

    /// A runtime policy allowing `files` (path, content), base64 as the tenant sends it.
    pub fn policy_b64(files: &[(&str, &[u8])]) -> String {
        B64.encode(Self::policy(files).to_string())
    }

    /// A runtime policy allowing `files` (path, content; a path may be listed with
    /// several contents).
    pub fn policy(files: &[(&str, &[u8])]) -> Value {
        let mut digests = serde_json::Map::new();
        for (p, c) in files {
            let list = digests.entry((*p).to_owned()).or_insert_with(|| json!([]));
            if let Value::Array(list) = list {
                list.push(json!(HashAlg::Sha256.hash(c).to_hex()));
            }
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

    /// The tenant's enrolment body for this node.
    pub fn enrolment(&self, runtime_policy_b64: &str) -> Value {
        json!({
            "v": B64.encode([7u8; 32]),
            "cloudagent_ip": "127.0.0.1",
            "cloudagent_port": self.addr.port(),
            "tpm_policy": "{\"mask\": \"0x400\"}",
            "runtime_policy": runtime_policy_b64,
            "runtime_policy_name": "",
            "mb_policy": null,
            "mb_policy_name": "",
            "ima_sign_verification_keys": "",
            "metadata": "{}",
            "revocation_key": "",
            "accept_tpm_hash_algs": ["sha256"],
            "accept_tpm_encryption_algs": ["rsa", "ecc"],
            "accept_tpm_signing_algs": ["rsassa", "ecschnorr"],
            "ak_tpm": B64.encode(&self.ak_tpm),
            "mtls_cert": self.cert_pem,
            "supported_version": "2.2",
        })
    }
}

/// The `results` of a `quotes/integrity` answer: a quote and the log from `entry`.
fn integrity(
    tpm: &Tpm,
    state: &Mutex<AgentState>,
    nk: &str,
    nonce: &str,
    mask: u32,
    partial: bool,
    entry: u64,
) -> Value {
    // The list and the quote under one lock, so PCR 10 matches the list sent.
    let st = &mut *state.lock().unwrap();
    let quote = tpm.quote(nonce.as_bytes(), mask, HashAlg::Sha256).unwrap();
    let from = usize::try_from(entry).unwrap().min(st.lines.len());
    let list: String = st.lines[from..].iter().map(|l| format!("{l}\n")).collect();
    let mut r = json!({
        "quote": quote.to_keylime_string(),
        "hash_alg": "sha256",
        "enc_alg": "rsa",
        "sign_alg": "rsassa",
        "ima_measurement_list": list,
        "ima_measurement_list_entry": entry,
    });
    if !partial {
        r["pubkey"] = json!(nk);
    }
    r
}

fn query(req: &hyper::Request<hyper::body::Incoming>, k: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (n, v) = kv.split_once('=')?;
        (n == k).then(|| v.to_owned())
    })
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    tpm: &Tpm,
    state: &Mutex<AgentState>,
    nk: &str,
) -> (u16, Value) {
    let path = req.uri().path().to_owned();
    if path == "/version" {
        return (
            200,
            json!({"supported_version": "2.2", "supported_versions": ["2.1", "2.2"]}),
        );
    }
    if path.ends_with("/quotes/integrity") {
        let nonce = query(&req, "nonce").unwrap_or_default();
        let mask = query(&req, "mask")
            .and_then(|m| u32::from_str_radix(m.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        let partial = query(&req, "partial").as_deref() == Some("1");
        let entry: u64 = query(&req, "ima_ml_entry")
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        let delay = {
            let st = &mut *state.lock().unwrap();
            st.requests.push(entry);
            st.delay
        };
        tokio::time::sleep(delay).await;
        return (200, integrity(tpm, state, nk, &nonce, mask, partial, entry));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path.ends_with("/keys/vkey") {
        state.lock().unwrap().vkey = body["encrypted_key"].as_str().map(str::to_owned);
        return (200, json!({}));
    }
    if path.ends_with("/notifications/revocation") {
        state.lock().unwrap().revocations.push(body);
        return (200, json!({}));
    }
    (404, json!({}))
}

/// Runs the async test body `$name(url)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                vigil_testkit::db::with_sqlite(|url| super::$name(url)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                vigil_testkit::db::with_postgres(|url| super::$name(url)).await;
            }
        }
    )*};
}
