//! The verifier's HTTP client: one request per connection to a node (or a webhook),
//! over TLS that trusts exactly the node's enrolled `mtls_cert` and presents the
//! verifier's client certificate — Keylime's `generate_agent_tls_context`, which makes
//! the node's certificate the only CA and checks no host name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// The largest answer read from a node: an IMA log of a few million entries.
pub(crate) const MAX_ANSWER: usize = 512 << 20;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// Connection, TLS or protocol failure, or the timeout.
    #[error("{0}")]
    Unreachable(String),
}

/// The verifier's client identity (certificate chain and key), loaded once.
#[derive(Debug)]
pub(crate) struct ClientIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// The DER of the first certificate in `pem` (or `pem` itself if it is DER).
pub(crate) fn cert_der(pem_or_der: &[u8]) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    if let Ok(c) = CertificateDer::from_pem_slice(pem_or_der) {
        return Some(c);
    }
    // A DER certificate starts with a SEQUENCE tag.
    (pem_or_der.first() == Some(&0x30)).then(|| CertificateDer::from(pem_or_der.to_vec()))
}

/// A client configuration trusting exactly `node_cert`, presenting `identity`.
pub(crate) fn pinned_config(
    node_cert: CertificateDer<'static>,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let identity = identity.map(|id| (id.chain.clone(), id.key.clone_key()));
    vigil_tls::pinned_client_config(node_cert, identity).map(Arc::new)
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// One request on a fresh connection, TLS if `tls` is given, bounded by `timeout`.
pub(crate) async fn request(
    addr: SocketAddr,
    host: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: hyper::Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Answer, RequestError> {
    tokio::time::timeout(
        timeout,
        request_inner(addr, host, tls, method, path_and_query, body),
    )
    .await
    .map_err(|_| RequestError::Unreachable(format!("no answer from {addr} within {timeout:?}")))?
}

async fn request_inner(
    addr: SocketAddr,
    host: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: hyper::Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, RequestError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        RequestError::Unreachable(format!("{what} {addr}: {e}"))
    };
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| fail("cannot connect to", &e))?;
    let _ = tcp.set_nodelay(true);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| fail("bad request for", &e))?;
    match tls {
        Some(config) => {
            let name = ServerName::from(addr.ip());
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| fail("TLS handshake with", &e))?;
            send(TokioIo::new(stream), req, addr).await
        }
        None => send(TokioIo::new(tcp), req, addr).await,
    }
}

async fn send<T>(
    io: T,
    req: hyper::Request<Full<Bytes>>,
    addr: SocketAddr,
) -> Result<Answer, RequestError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        RequestError::Unreachable(format!("{what} {addr}: {e}"))
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| fail("HTTP handshake with", &e))?;
    let driver = tokio::spawn(conn);
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| fail("request to", &e));
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let status = res.status().as_u16();
    let body = Limited::new(res.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| fail("reading the answer of", &*e));
    driver.abort();
    Ok(Answer {
        status,
        body: body?,
    })
}
