//! Connections to nodes never resume a TLS session: rust-keylime's agent (OpenSSL)
//! requires a client certificate and issues session tickets, but sets no session id
//! context, so OpenSSL aborts every resumed handshake. The node here is `openssl
//! s_server` set up the same way (`-Verify 1`, tickets on, `-context ''`), so the test
//! first shows that it refuses a resumed handshake, then that the configuration the
//! verifier, the tenant and the revocation notifier use connects again and again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vigil_tls::ca;

/// `openssl s_server`, killed (by its own pid) when dropped.
struct OpensslNode {
    child: Child,
    addr: SocketAddr,
}

impl Drop for OpensslNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a node like rust-keylime's agent: client certificate required (chained to
/// `client_ca`), TLS 1.3 session tickets issued, no session id context; `-www` answers
/// each request with a status page.
fn start_node(cert: &Path, key: &Path, client_ca: &Path) -> Option<OpensslNode> {
    if Command::new("openssl").arg("version").output().is_err() {
        crate::skip::skip(
            "TLS resumption against an OpenSSL node",
            "no openssl binary (scripts/setup.sh installs it)",
        );
        return None;
    }
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-Verify", "1", "-context", ""])
        .arg("-accept")
        .arg(addr.to_string())
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .arg("-CAfile")
        .arg(client_ca)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = OpensslNode { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(node)
}

/// One HTTP request over a new TLS connection; the answer's first line.
fn get(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<String, std::io::Error> {
    let name = ServerName::try_from("node").unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        // s_server closes without close_notify; the answer is complete by then.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        other => {
            other?;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn node_connections_work_with_an_openssl_node_that_refuses_resumption() {
    let tmp = tempfile::tempdir().unwrap();
    let cv_ca = ca::init(&tmp.path().join("cv_ca"), &[], false).unwrap();
    let (node_cert, node_key) = (tmp.path().join("node.crt"), tmp.path().join("node.key"));
    ca::self_signed("node", &["127.0.0.1".into()], &node_cert, &node_key).unwrap();
    let Some(node) = start_node(&node_cert, &node_key, &cv_ca.ca_cert()) else {
        return;
    };
    let pinned = CertificateDer::from_pem_file(&node_cert).unwrap();
    let identity = || {
        (
            vec![CertificateDer::from_pem_file(cv_ca.cert("client")).unwrap()],
            PrivateKeyDer::from_pem_file(cv_ca.key("client")).unwrap(),
        )
    };

    // The node really refuses a resumed handshake: the same configuration with rustls'
    // default session cache connects once, then fails as with rust-keylime's agent.
    let mut resuming = vigil_tls::pinned_client_config(pinned.clone(), Some(identity())).unwrap();
    resuming.resumption = rustls::client::Resumption::default();
    let resuming = Arc::new(resuming);
    assert_eq!(get(&resuming, node.addr).unwrap(), "HTTP/1.0 200 ok");
    let err = get(&resuming, node.addr).unwrap_err();
    assert!(
        err.to_string().contains("InternalError"),
        "expected the node's internal_error alert, got: {err}"
    );

    // Vigil's configuration for nodes makes a full handshake every time.
    let vigil = Arc::new(vigil_tls::pinned_client_config(pinned, Some(identity())).unwrap());
    for round in 0..4 {
        assert_eq!(
            get(&vigil, node.addr).unwrap_or_else(|e| panic!("connection {round}: {e}")),
            "HTTP/1.0 200 ok"
        );
    }
}
