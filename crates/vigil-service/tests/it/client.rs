//! The outbound client against real servers on loopback: `serve` with an axum router
//! (plain, and TLS with certificates from a `vigil-tls` CA), and bare TCP peers for an
//! answer without a length and a peer that never answers. IPv6 literals, the body
//! limit, the timeout, https with a CA and with a pinned certificate, and refused
//! certificates.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use hyper::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use vigil_service::client::{Client, ClientError, Endpoint, Limits};
use vigil_service::server::{serve, Peer};

/// A running server; dropping it stops the accept loop.
struct Server {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

fn app() -> Router {
    Router::new()
        .route("/x", get(|| async { "hello" }))
        .route("/big", get(|| async { vec![b'a'; 64 << 10] }))
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/peer",
            get(|peer: Peer| async move { format!("https={} client={:?}", peer.https, peer.client) }),
        )
        .route(
            "/host",
            get(|headers: axum::http::HeaderMap| async move {
                format!("{:?}", headers.get("host"))
            }),
        )
}

async fn start(bind: SocketAddr, tls: Option<rustls::ServerConfig>) -> Server {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    tokio::spawn(serve(listener, acceptor, app(), stopped));
    Server { addr, _stop: stop }
}

/// The app over TLS on loopback with the CA's server certificate, client
/// certificates from the CA optional.
async fn start_tls(ca: &vigil_tls::ca::CaDir) -> Server {
    let server = vigil_tls::server_config(
        &ca.cert("server"),
        &ca.key("server"),
        &[&ca.ca_cert()],
        vigil_tls::ClientAuth::Optional,
    )
    .unwrap();
    start(loopback(), Some(server)).await
}

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn text(a: &vigil_service::client::Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

#[tokio::test]
async fn plain_http_get_and_post() {
    let s = start(loopback(), None).await;
    let client = Client::default();
    let e = Endpoint::addr(s.addr);
    let a = client.request(&e, Method::GET, "/x", None).await.unwrap();
    assert_eq!((a.status, text(&a)), (200, "hello".into()));
    let a = client
        .request(&e, Method::POST, "/echo", Some(b"{\"a\":1}".to_vec()))
        .await
        .unwrap();
    assert_eq!((a.status, a.json()["a"].clone()), (200, 1.into()));
    let a = client
        .request(&e, Method::GET, "/peer", None)
        .await
        .unwrap();
    assert_eq!(text(&a), "https=false client=None");
    let a = client
        .request(&e, Method::GET, "/nothing", None)
        .await
        .unwrap();
    assert_eq!(a.status, 404);
    // A name resolved asynchronously.
    let by_name = Endpoint::host("localhost", s.addr.port());
    let a = client
        .request(&by_name, Method::GET, "/x", None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn ipv6_literal_urls() {
    let s = start((Ipv6Addr::LOCALHOST, 0).into(), None).await;
    let url = format!("http://[::1]:{}/host?q=1", s.addr.port());
    let (e, target) = Endpoint::url(&url).unwrap();
    assert_eq!(target, "/host?q=1");
    let a = Client::default()
        .request(&e, Method::GET, &target, None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(text(&a), format!("Some(\"[::1]:{}\")", s.addr.port()));
}

#[tokio::test]
async fn an_answer_over_the_limit_is_too_large() {
    let s = start(loopback(), None).await;
    let limits = Limits {
        body_limit: 1024,
        ..Limits::default()
    };
    let client = Client::new(limits);
    // Refused from its Content-Length.
    let e = client
        .request(&Endpoint::addr(s.addr), Method::GET, "/big", None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::TooLarge { limit: 1024, .. }),
        "{e:?}"
    );
    // No length: refused once the limit is crossed.
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
            .await;
        let _ = tcp.write_all(&[b'a'; 64 << 10]).await;
    });
    let e = client
        .request(&Endpoint::addr(addr), Method::GET, "/", None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::TooLarge { limit: 1024, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("exceeds 1024 bytes"), "{e}");
    // Within the limit: read whole.
    let a = Client::default()
        .request(&Endpoint::addr(s.addr), Method::GET, "/big", None)
        .await
        .unwrap();
    assert_eq!(a.body.len(), 64 << 10);
}

#[tokio::test]
async fn a_peer_that_never_answers_times_out() {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    });
    let timeout = Duration::from_millis(300);
    let client = Client::new(Limits {
        timeout,
        ..Limits::default()
    });
    let t = Instant::now();
    let e = client
        .request(&Endpoint::addr(addr), Method::GET, "/", None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout { timeout: t, .. } if t == timeout),
        "{e:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    held.abort();
    // Nobody listening: a connection error, not a timeout.
    let closed = {
        let l = TcpListener::bind(loopback()).await.unwrap();
        l.local_addr().unwrap()
    };
    let e = client
        .request(&Endpoint::addr(closed), Method::GET, "/", None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
}

#[tokio::test]
async fn https_without_a_configuration_is_refused_before_connecting() {
    let (e, target) = Endpoint::url("https://127.0.0.1:1/hook").unwrap();
    let err = Client::default()
        .request(&e, Method::POST, &target, Some(b"{}".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NoTls { .. }), "{err:?}");
}

#[tokio::test]
async fn https_with_a_ca_a_pinned_certificate_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca =
        vigil_tls::ca::init(dir.path(), &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    let s = start_tls(&ca).await;
    let client = Client::default();

    // Checked against the CA, for the address and for a name.
    let with_ca = Arc::new(
        vigil_tls::client_config(&ca.ca_cert(), Some((&ca.cert("client"), &ca.key("client"))))
            .unwrap(),
    );
    let e = Endpoint::addr(s.addr).with_tls(with_ca.clone());
    assert_eq!(e.to_string(), format!("https://{}", s.addr));
    let a = client
        .request(&e, Method::GET, "/peer", None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert!(
        text(&a).starts_with("https=true client=Some("),
        "{}",
        text(&a)
    );
    let url = format!("https://localhost:{}/x", s.addr.port());
    let (e, target) = Endpoint::url(&url).unwrap();
    let a = client
        .request(&e.with_tls(with_ca.clone()), Method::GET, &target, None)
        .await
        .unwrap();
    assert_eq!(text(&a), "hello");

    // A name the certificate does not carry is refused.
    let e = Endpoint::addr(s.addr)
        .with_tls(with_ca)
        .with_server_name(ServerName::try_from("elsewhere.example").unwrap());
    let err = client
        .request(&e, Method::GET, "/x", None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");

    // Pinned to the server's certificate (as the verifier talks to nodes): no name.
    let cert = CertificateDer::from_pem_file(ca.cert("server")).unwrap();
    let pinned = Arc::new(vigil_tls::pinned_client_config(cert, None).unwrap());
    let e = Endpoint::addr(s.addr).with_tls(pinned);
    let a = client
        .request(&e, Method::GET, "/peer", None)
        .await
        .unwrap();
    assert_eq!(text(&a), "https=true client=None");

    // Another CA's certificate is refused.
    let other = vigil_tls::ca::init(&dir.path().join("other"), &[], false).unwrap();
    let foreign = Arc::new(vigil_tls::client_config(&other.ca_cert(), None).unwrap());
    let err = client
        .request(
            &Endpoint::addr(s.addr).with_tls(foreign),
            Method::GET,
            "/x",
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
}

/// `request_kept` sends every request on the one connection it keeps, unless the peer
/// answers `Connection: close` (and closes): then each request gets a connection of its
/// own and nothing is kept.
#[tokio::test]
async fn kept_connections_are_reused_until_the_peer_closes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for (close, connections) in [(false, 1), (true, 3)] {
        let listener = TcpListener::bind(loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    loop {
                        let mut request = Vec::new();
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let how = if close { "close" } else { "keep-alive" };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: {how}\r\n\r\nok"
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        let client = Client::new(Limits::default());
        let endpoint = Endpoint::addr(addr);
        let mut slot = None;
        for _ in 0..3 {
            let a = client
                .request_kept(&mut slot, &endpoint, Method::GET, "/q", None)
                .await
                .unwrap();
            assert_eq!(text(&a), "ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            connections,
            "close: {close}"
        );
        assert_eq!(slot.is_some(), !close, "close: {close}");
    }
}

/// Over TLS too, a kept connection carries request after request — large answers
/// (several TLS records) included — and stays in the slot between them.
#[tokio::test]
async fn kept_tls_connections_carry_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = vigil_tls::ca::init(dir.path(), &["127.0.0.1".into()], false).unwrap();
    let s = start_tls(&ca).await;
    let cert = CertificateDer::from_pem_file(ca.cert("server")).unwrap();
    let pinned = Arc::new(vigil_tls::pinned_client_config(cert, None).unwrap());
    let endpoint = Endpoint::addr(s.addr).with_tls(pinned);
    let client = Client::default();
    let mut slot = None;
    for path in ["/x", "/big", "/x", "/big"] {
        let a = client
            .request_kept(&mut slot, &endpoint, Method::GET, path, None)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        assert!(slot.is_some(), "the connection was not kept after {path}");
    }
}
