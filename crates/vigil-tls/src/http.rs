//! HTTP/1.1 over TCP or TLS, shared by Vigil's services and their clients:
//!
//! - [`serve`]: the accept loop every service runs (handshake and header timeouts,
//!   graceful drain on shutdown), handing each request to an axum router with a
//!   [`Peer`] extension saying how it arrived and who the client is;
//! - [`request`]: one request to a service (plain, TLS or mTLS), for the agent's
//!   registration client, the tenant and tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`request`] waits for a whole exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How a request arrived; [`serve`] inserts it into every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Over TLS.
    pub https: bool,
    /// The verified client certificate's subject (RFC 4514), if the client sent one.
    pub client: Option<String>,
    /// The verified client certificate itself (DER).
    pub client_cert: Option<CertificateDer<'static>>,
}

/// Accepts connections on `listener` (TLS when `tls` is given) and serves `app` on
/// each until `stop` changes, then lets requests in flight finish for up to
/// [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let service = |transport: Peer| {
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(transport.clone());
                    app.clone().oneshot(req.map(axum::body::Body::new))
                })
            };
            let result = match tls {
                None => {
                    let conn = http.serve_connection(TokioIo::new(tcp), service(Peer::default()));
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                debug!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned());
                    let client = client_cert.as_ref().map(|c| {
                        crate::peer_subject(c).unwrap_or_else(|| "(unreadable subject)".into())
                    });
                    let transport = Peer {
                        https: true,
                        client,
                        client_cert,
                    };
                    let conn = http.serve_connection(TokioIo::new(stream), service(transport));
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing anyway");
    }
}

/// Why a [`request`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate refused either way, protocol error).
    #[error("TLS with {addr}: {source}")]
    Tls {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection closed, malformed response).
    #[error("HTTP with {addr}: {message}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// hyper's message.
        message: String,
    },
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("no answer from {addr} within {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// The address.
        addr: SocketAddr,
    },
}

/// TLS settings of a [`request`]: the client configuration and the name the server's
/// certificate must carry (a DNS name or an IP address).
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// Roots and, for mTLS, the client identity ([`crate::client_config`]).
    pub config: Arc<rustls::ClientConfig>,
    /// The server name to verify.
    pub server_name: ServerName<'static>,
}

/// An answer: the status and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one HTTP/1.1 request (`body` as JSON) to `addr` and reads the answer.
pub async fn request(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, RequestError> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        request_inner(addr, tls, method, path, body),
    )
    .await
    .map_err(|_| RequestError::Timeout { addr })?
}

async fn request_inner(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, RequestError> {
    let http_err = |message: String| RequestError::Http { addr, message };
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| RequestError::Connect { addr, source })?;
    let host = match tls {
        Some(t) => t.server_name.to_str().into_owned(),
        None => addr.ip().to_string(),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    // Only a request with a body says it is JSON: Keylime answers an empty 400 to a
    // JSON content type with an empty body.
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| http_err(e.to_string()))?;
    match tls {
        None => send(addr, TokioIo::new(tcp), req).await,
        Some(t) => {
            let stream = tokio_rustls::TlsConnector::from(t.config.clone())
                .connect(t.server_name.clone(), tcp)
                .await
                .map_err(|source| RequestError::Tls { addr, source })?;
            send(addr, TokioIo::new(stream), req).await
        }
    }
}

async fn send<IO>(
    addr: SocketAddr,
    io: IO,
    req: hyper::Request<Full<Bytes>>,
) -> Result<Answer, RequestError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http_err = |message: String| RequestError::Http { addr, message };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| http_err(format!("handshake: {e}")))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| http_err(format!("request: {e}")))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http_err(format!("body: {e}")))?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body,
    })
}
