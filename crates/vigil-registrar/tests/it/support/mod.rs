//! A registrar in-process on ephemeral ports, with a fresh CA from `vigil-tls`, and a
//! minimal HTTP/1.1 client (plain, TLS, or mTLS) to drive it over real sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use serde_json::Value;
use vigil_registrar::{Config, Registrar};
use vigil_tls::ca::CaDir;

/// Keylime's test EK and AK (tpm2-tools TPM2B_PUBLIC files).
pub(crate) const KEYLIME_FILES: &str = "../../../shared/testdata/keylime/test-data/files";

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn keylime_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYLIME_FILES}/{name}")).expect("Keylime test file")
}

/// Makes an EK (`ek_alg`: `rsa` or `ecc`) and an RSA AK under it in `tpm` with
/// tpm2-tools: `ek.ctx`/`ek.pub`, `ak.ctx`/`ak.pub` in its scratch directory.
pub(crate) fn make_ek_ak(tpm: &vigil_testkit::Swtpm, ek_alg: &str) {
    tpm.tool(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", ek_alg, "-u", "ek.pub"],
    );
    tpm.tool(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
            "ak.pub", "-n", "ak.name",
        ],
    );
}

/// Opens a registrar's `blob` (base64 credential) with the TPM's `ak.ctx`/`ek.ctx` and
/// returns the auth tag that activates `agent_id`.
pub(crate) fn tpm_auth_tag(tpm: &vigil_testkit::Swtpm, blob_b64: &str, agent_id: &str) -> String {
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob_b64)
        .expect("blob is base64");
    let cred = tpm.path("blob.cred");
    std::fs::write(&cred, &blob).expect("write credential");
    let secret = tpm
        .activate("ak.ctx", "ek.ctx", &cred)
        .unwrap_or_else(|o| panic!("tpm2_activatecredential failed: {o:?}"));
    vigil_core::tpm::credential::auth_tag(&secret, agent_id)
}

/// A running registrar and its CA.
pub(crate) struct Env {
    pub(crate) registrar: Option<Registrar>,
    pub(crate) ca: CaDir,
    pub(crate) config: Config,
    pub(crate) dir: tempfile::TempDir,
}

impl Env {
    /// Starts a registrar on `db` with a new CA; `tweak` adjusts the configuration.
    pub(crate) async fn start(db: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_ca(db, None, tweak).await
    }

    /// [`Self::start`] with an existing CA directory (e.g. a Keylime peer's `cv_ca`)
    /// instead of a new one.
    pub(crate) async fn start_with_ca(
        db: &str,
        ca: Option<CaDir>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca.unwrap_or_else(|| {
            vigil_tls::ca::init(
                &dir.path().join("cv_ca"),
                &["localhost".into(), "127.0.0.1".into()],
                false,
            )
            .expect("CA")
        });
        let mut config = Config {
            tls_dir: ca.dir().to_owned(),
            port: 0,
            tls_port: 0,
            state_dir: dir.path().to_owned(),
            database_url: db.to_owned(),
            ..Config::default()
        };
        tweak(&mut config);
        let registrar = Registrar::start(&config).await.expect("start registrar");
        Self {
            registrar: Some(registrar),
            ca,
            config,
            dir,
        }
    }

    fn reg(&self) -> &Registrar {
        self.registrar.as_ref().expect("running")
    }

    /// Stops and starts again on the same database and TLS material (new ports).
    pub(crate) async fn restart(&mut self) {
        self.registrar.take().expect("running").shutdown().await;
        self.registrar = Some(Registrar::start(&self.config).await.expect("restart"));
    }

    pub(crate) async fn stop(mut self) {
        if let Some(r) = self.registrar.take() {
            r.shutdown().await;
        }
    }

    /// A request on the plain-HTTP port.
    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        request(self.reg().http_addr(), None, method, path, body)
            .await
            .expect("HTTP request")
    }

    /// A request on the HTTPS port with the CA's `client` certificate.
    pub(crate) async fn admin(&self, method: &str, path: &str) -> (u16, Value) {
        let tls = self.client_tls(Some("client"));
        request(self.reg().https_addr(), Some(tls), method, path, None)
            .await
            .expect("mTLS request")
    }

    /// A request on the HTTPS port as `identity` (a certificate name in the CA
    /// directory) or without a client certificate.
    pub(crate) async fn https(
        &self,
        identity: Option<&str>,
        method: &str,
        path: &str,
    ) -> Result<(u16, Value), String> {
        let tls = self.client_tls(identity);
        request(self.reg().https_addr(), Some(tls), method, path, None).await
    }

    pub(crate) fn client_tls(&self, identity: Option<&str>) -> Arc<rustls::ClientConfig> {
        let cert = identity.map(|n| (self.ca.cert(n), self.ca.key(n)));
        Arc::new(
            vigil_tls::client_config(
                &self.ca.ca_cert(),
                cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .expect("client TLS config"),
        )
    }

    pub(crate) fn https_addr(&self) -> SocketAddr {
        self.reg().https_addr()
    }

    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.reg().http_addr()
    }
}

/// One HTTP/1.1 request; the status and the JSON body (`Null` when not JSON).
pub(crate) async fn request(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), String> {
    let endpoint = match tls {
        Some(config) => vigil_service::client::Endpoint::addr(addr)
            .with_tls(config)
            .with_server_name(rustls::pki_types::ServerName::try_from("localhost").expect("name")),
        None => vigil_service::client::Endpoint::addr(addr),
    };
    let method = hyper::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let answer = vigil_service::client::Client::default()
        .request(&endpoint, method, path, body)
        .await
        .map_err(|e| e.to_string())?;
    Ok((answer.status, answer.json()))
}

/// `GET path` on `addr` (TLS without a client certificate when `tls` is given): the
/// status and the body as text (the metrics).
pub(crate) async fn text(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    path: &str,
) -> (u16, String) {
    let endpoint = match tls {
        Some(config) => vigil_service::client::Endpoint::addr(addr)
            .with_tls(config)
            .with_server_name(rustls::pki_types::ServerName::try_from("localhost").expect("name")),
        None => vigil_service::client::Endpoint::addr(addr),
    };
    let answer = vigil_service::client::Client::default()
        .request(&endpoint, hyper::Method::GET, path, None)
        .await
        .expect("GET");
    let text = String::from_utf8(answer.body.to_vec()).expect("UTF-8 body");
    (answer.status, text)
}

/// The `status` text of an envelope, checking the envelope's shape on the way.
pub(crate) fn status_text(code: u16, v: &Value) -> String {
    assert_eq!(v["code"], code, "envelope code: {v}");
    assert!(v["results"].is_object(), "envelope results: {v}");
    v["status"].as_str().expect("status text").to_owned()
}

/// Declares each test body once and runs it on SQLite and PostgreSQL.
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
