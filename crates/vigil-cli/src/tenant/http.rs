//! The tenant's side of Keylime's REST APIs: the shared client of `vigil-service` (one
//! request per connection, as Keylime's tenant does, plain or over rustls, with a
//! timeout and a body limit) answering the status code and the JSON envelope, and the
//! tenant's TLS files.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde_json::Value;
use vigil_service::client::{self, ClientError, Endpoint, Limits};

/// Largest response body read (a bulk status of many nodes, or a large policy).
const MAX_BODY: usize = 256 << 20;

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

/// A service that cannot be reached, or whose TLS handshake failed: which service,
/// why (each cause once), and what to check.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {hint}")]
pub(crate) struct Unreachable {
    /// The client's error, rendered with its causes.
    reason: String,
    /// What to check, naming the options.
    hint: String,
    /// Nothing answered (as opposed to an answer that could not be trusted or read):
    /// `vigil tenant status` exits 3 for it.
    pub(crate) no_answer: bool,
}

/// Who a [`Client`] talks to, for messages: "the verifier", and the options that set
/// its address.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// "the verifier", "the registrar", "the node".
    pub(crate) name: &'static str,
    /// What runs there and the options that say where: "is the verifier running there?
    /// check -v/--verifier-ip and --verifier-port".
    pub(crate) hint: String,
}

/// A server to talk to: `host:port`, plain or TLS (the certificate checked for the
/// host, or pinned).
#[derive(Clone)]
pub(crate) struct Client {
    endpoint: Endpoint,
    client: client::Client,
    peer: Peer,
    /// The host as given, for messages.
    host: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr())
            .field("tls", &self.endpoint.is_https())
            .finish()
    }
}

impl Client {
    /// A client for `peer` at `host:port` (a name, or an IP address with or without
    /// brackets); TLS when `tls` is given. `timeout` bounds the connection and each
    /// whole request.
    pub(crate) fn new(
        peer: Peer,
        host: &str,
        port: u16,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Self {
        Self {
            endpoint: Endpoint::host(host, port).with_optional_tls(tls),
            client: client::Client::new(Limits {
                connect_timeout: timeout,
                timeout,
                body_limit: MAX_BODY,
            }),
            peer,
            host: host.to_owned(),
        }
    }

    /// `host:port` (IPv6 in brackets), for messages.
    pub(crate) fn addr(&self) -> String {
        self.endpoint.authority()
    }

    /// The URL scheme, for messages.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.endpoint.is_https() {
            "https"
        } else {
            "http"
        }
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Result<Response, Unreachable> {
        self.request("GET", path, None).await
    }

    /// One request with an optional JSON body.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Response, Unreachable> {
        let method =
            hyper::Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::Request {
                peer: self.endpoint.to_string(),
                message: format!("bad method {method}: {e}"),
            });
        let answer = match method {
            Ok(method) => {
                self.client
                    .request(&self.endpoint, method, path, body.map(String::into_bytes))
                    .await
            }
            Err(e) => Err(e),
        }
        .map_err(|e| self.unreachable(&e))?;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        Ok(Response {
            status: answer.status,
            body: answer.json(),
            text,
        })
    }
}

impl Client {
    /// `e` with what to check. The client's errors already show their cause in their
    /// message, so the cause is not chained again (it would print twice).
    fn unreachable(&self, e: &ClientError) -> Unreachable {
        let no_answer = matches!(
            e,
            ClientError::Resolve { .. }
                | ClientError::Connect { .. }
                | ClientError::ConnectTimeout { .. }
                | ClientError::Timeout { .. }
        );
        let hint = match e {
            ClientError::Tls { .. } if self.endpoint.is_https() => format!(
                "{} must present a certificate from the tenant's CA (--tls-dir) that names \
                 {} (`vigil ca init --san`); connect by a name it lists, or pass \
                 --tls-no-name-check to accept any name",
                self.peer.name, self.host
            ),
            _ => self.peer.hint.clone(),
        };
        Unreachable {
            reason: format!("cannot reach {}: {e}", self.peer.name),
            hint,
            no_answer,
        }
    }
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
    /// chain to `ca` and name the address they are reached by, unless `check_names` is
    /// false (Keylime's clients' habit, asked for with --tls-no-name-check); the client
    /// certificate is presented.
    pub(crate) fn service_config(
        &self,
        check_names: bool,
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        use anyhow::Context;
        let identity = Some((self.cert.as_path(), self.key.as_path()));
        let config = if check_names {
            vigil_tls::client_config(&self.ca, identity)
        } else {
            vigil_tls::danger::client_config_any_name(&self.ca, identity)
        }
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
