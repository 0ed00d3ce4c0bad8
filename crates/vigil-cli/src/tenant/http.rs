//! A small HTTP/1.1 client for Keylime's REST APIs: one request per connection (as
//! Keylime's tenant does), plain or over rustls, with a timeout, answering the status
//! code and the JSON envelope.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;

/// Largest response body read (a bulk status of many nodes, or a large policy).
const MAX_BODY: usize = 256 << 20;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No TCP connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (wrong CA, name or client certificate).
    #[error("TLS handshake with {addr} failed: {message}")]
    Tls {
        /// host:port.
        addr: String,
        /// rustls' reason.
        message: String,
    },
    /// The exchange failed after connecting.
    #[error("{addr}: {message}")]
    Exchange {
        /// host:port.
        addr: String,
        /// What failed.
        message: String,
    },
    /// No answer in time.
    #[error("{addr} did not answer within {secs} s")]
    Timeout {
        /// host:port.
        addr: String,
        /// The timeout.
        secs: u64,
    },
}

/// An answer: status code and body (`Value::Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// The HTTP status code.
    pub(crate) status: u16,
    /// The parsed body.
    pub(crate) body: Value,
    /// The raw body text (for messages when it is not JSON).
    pub(crate) text: String,
}

impl Response {
    /// The envelope's `results` (an empty object when absent).
    pub(crate) fn results(&self) -> &Value {
        static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        self.body
            .get("results")
            .unwrap_or_else(|| EMPTY.get_or_init(|| Value::Object(Default::default())))
    }

    /// The envelope's `status` text, or the raw body when there is none.
    pub(crate) fn status_text(&self) -> String {
        match self.body.get("status").and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None if self.text.is_empty() => format!("HTTP {}", self.status),
            None => self.text.chars().take(300).collect(),
        }
    }
}

/// A server to talk to: `host:port`, plain or TLS.
#[derive(Clone)]
pub(crate) struct Client {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Client {
    /// A client for `host:port`; TLS when `tls` is given.
    pub(crate) fn new(
        host: &str,
        port: u16,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Self {
        Self {
            host: host.trim_matches(|c| c == '[' || c == ']').to_owned(),
            port,
            tls,
            timeout,
        }
    }

    /// `host:port` (IPv6 in brackets), for messages.
    pub(crate) fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL scheme, for messages.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Result<Response, HttpError> {
        self.request("GET", path, None).await
    }

    /// One request with an optional JSON body.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Response, HttpError> {
        let addr = self.addr();
        let fut = self.exchange(method, path, body);
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                addr,
                secs: self.timeout.as_secs(),
            }),
        }
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Response, HttpError> {
        let addr = self.addr();
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &addr)
            .header("accept", "application/json");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::Exchange {
                addr: addr.clone(),
                message: format!("bad request {method} {path}: {e}"),
            })?;
        match &self.tls {
            None => send(TokioIo::new(tcp), req, &addr).await,
            Some(config) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| HttpError::Tls {
                    addr: addr.clone(),
                    message: format!("'{}' is not a valid server name: {e}", self.host),
                })?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| HttpError::Tls {
                        addr: addr.clone(),
                        message: e.to_string(),
                    })?;
                send(TokioIo::new(stream), req, &addr).await
            }
        }
    }
}

async fn send<IO>(
    io: IO,
    req: hyper::Request<Full<Bytes>>,
    addr: &str,
) -> Result<Response, HttpError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |message: String| HttpError::Exchange {
        addr: addr.to_owned(),
        message,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| fail(format!("HTTP handshake: {e}")))?;
    let driver = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| fail(format!("request failed: {e}")))?;
    let status = resp.status().as_u16();
    let bytes = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| fail(format!("reading the answer: {e}")))?
        .to_bytes();
    driver.abort();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Response { status, body, text })
}

/// The TLS material of the tenant in Keylime's `cv_ca` layout.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    /// `cacert.crt`: the CA the verifier and registrar certificates chain to.
    pub(crate) ca: std::path::PathBuf,
    /// `client-cert.crt`.
    pub(crate) cert: std::path::PathBuf,
    /// `client-private.pem`.
    pub(crate) key: std::path::PathBuf,
}

impl TlsFiles {
    /// The files of `dir`.
    pub(crate) fn in_dir(dir: &std::path::Path) -> Self {
        Self {
            ca: dir.join("cacert.crt"),
            cert: dir.join("client-cert.crt"),
            key: dir.join("client-private.pem"),
        }
    }

    /// The client identity (chain and key).
    pub(crate) fn identity(
        &self,
    ) -> anyhow::Result<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )> {
        use anyhow::Context;
        use rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!("cannot read the client certificate {}", self.cert.display())
            })?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("cannot read the client key {}", self.key.display()))?;
        Ok((chain, key))
    }

    /// A configuration for the verifier and the registrar: their certificates must
    /// chain to `ca` (names are not checked, as in Keylime), and the client
    /// certificate is presented.
    pub(crate) fn service_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        use anyhow::Context;
        let config = vigil_tls::client_config_any_name(&self.ca, Some((&self.cert, &self.key)))
            .with_context(|| {
                format!(
                    "cannot load the tenant's TLS files (CA {}, certificate {}, key {}); \
                     create them with `vigil ca init` or point --tls-dir at a Keylime cv_ca",
                    self.ca.display(),
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        Ok(Arc::new(config))
    }
}
