//! Test harness: a `cv_ca` per test, the verifier in-process on port 0, an admin
//! HTTPS client; the nodes (Keylime's agent quote API on a real swtpm, honest or
//! malicious) are `vigil_testkit::node`'s.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
pub use vigil_testkit::node::{Tamper, TestAgent};
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
        Self::named(tls_dir, admin.then_some("client"))
    }

    /// A client trusting the CA in `tls_dir`, presenting the certificate `NAME-cert.crt`
    /// of that directory when a `name` is given.
    pub fn named(tls_dir: &Path, name: Option<&str>) -> Self {
        let d = tls_dir;
        let identity = name.map(|n| {
            (
                d.join(format!("{n}-cert.crt")),
                d.join(format!("{n}-private.pem")),
            )
        });
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

/// What the tenant enrols for a real `vigil-agent` registered at `registrar`: its AK
/// and certificate read back from the registrar, reached at `127.0.0.1:port`, with this
/// `tpm_policy`, runtime policy (base64, or empty) and measured-boot policy.
pub async fn real_agent_enrolment(
    pki: &Pki,
    registrar: SocketAddr,
    id: &str,
    port: u16,
    tpm_policy: String,
    runtime_policy: String,
    mb_policy: Value,
) -> Value {
    use base64::Engine as _;
    let (code, r) = pki
        .client(true)
        .call(registrar, "GET", &format!("/v2.6/agents/{id}"), None)
        .await;
    assert_eq!(code, 200, "{r}");
    serde_json::json!({
        "v": B64.encode([7u8; 32]),
        "cloudagent_ip": "127.0.0.1",
        "cloudagent_port": port,
        "tpm_policy": tpm_policy,
        "runtime_policy": runtime_policy,
        "mb_policy": mb_policy,
        "mb_policy_name": "",
        "ima_sign_verification_keys": "",
        "metadata": "{}",
        "revocation_key": "",
        "accept_tpm_hash_algs": ["sha256"],
        "accept_tpm_encryption_algs": ["rsa", "ecc"],
        "accept_tpm_signing_algs": ["rsassa", "ecschnorr"],
        "ak_tpm": r["results"]["aik_tpm"],
        "mtls_cert": r["results"]["mtls_cert"],
        "supported_version": "2.6",
    })
}
