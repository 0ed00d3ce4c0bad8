//! The accept loop every service runs: HTTP/1.1 over TCP or TLS (or a unix socket,
//! [`serve_unix`]), with handshake and
//! header timeouts and a graceful drain on shutdown, handing each request to the
//! service's axum router with a [`Peer`] extension saying how it arrived and who the
//! client is.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};
use tracing::{debug, warn};

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    /// The request's [`Peer`]: a plain-HTTP peer without a certificate when [`serve`]
    /// did not set one (a router called directly, in tests).
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Infallible> {
        Ok(parts.extensions.get::<Self>().cloned().unwrap_or_default())
    }
}

/// Accepts connections on `listener` (TLS when `tls` is given) and serves `app` on
/// each until `stop` changes, then lets requests in flight finish for up to
/// [`DRAIN_TIMEOUT`]. `app` is an axum router, or a router behind a layer that must
/// run before routing (a path rewrite).
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: S,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<hyper::Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    backoff(&e).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let result = match tls {
                None => connection(tcp, Peer::default(), app, watcher).await,
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
                        vigil_tls::peer_subject(c).unwrap_or_else(|| "(unreadable subject)".into())
                    });
                    let transport = Peer {
                        https: true,
                        client,
                        client_cert,
                    };
                    connection(stream, transport, app, watcher).await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    drain(graceful).await;
}

/// Accepts connections on the unix socket `listener` (plain HTTP: whoever may open the
/// socket file is the client) and serves `app` on each until `stop` changes, then
/// drains as [`serve`] does. The peer's uid is logged with each connection.
pub async fn serve_unix<S>(listener: UnixListener, app: S, mut stop: watch::Receiver<bool>)
where
    S: Service<hyper::Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    backoff(&e).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        debug!(?uid, "local connection");
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, Peer::default(), app, watcher).await {
                debug!(?uid, "local connection ended: {e}");
            }
        });
    }
    drop(listener);
    drain(graceful).await;
}

/// Out of file descriptors and the like: back off instead of spinning.
async fn backoff(e: &std::io::Error) {
    warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves HTTP/1.1 on one connection, each request carrying `transport`.
async fn connection<I, S>(
    io: I,
    transport: Peer,
    app: S,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<hyper::Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(transport.clone());
            app.clone().oneshot(req.map(Body::new))
        });
    watcher
        .watch(http.serve_connection(TokioIo::new(io), service))
        .await
}

/// Lets requests in flight finish for up to [`DRAIN_TIMEOUT`].
async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing anyway");
    }
}
