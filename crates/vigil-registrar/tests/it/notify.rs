//! systemd readiness (`vigil_service::notify`): the `vigil-registrar` binary, started as
//! a `Type=notify` unit starts it (`NOTIFY_SOCKET` naming a datagram socket), sends
//! `READY=1` once it serves and `STOPPING=1` at SIGTERM, then exits 0.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Long enough for a debug build on a loaded machine; only a bound, not a measure.
const WAIT: Duration = Duration::from_secs(60);

fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = socket
        .recv(&mut buf)
        .expect("a notification before the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_then_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca =
        vigil_tls::ca::init(&dir.path().join("cv_ca"), &["localhost".into()], false).expect("CA");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-registrar"))
        .env("NOTIFY_SOCKET", &path)
        .env("VIGIL_REGISTRAR_STATE_DIR", dir.path())
        .env("VIGIL_REGISTRAR_TLS_DIR", ca.dir())
        .env("VIGIL_REGISTRAR_PORT", "0")
        .env("VIGIL_REGISTRAR_TLS_PORT", "0")
        .stdout(Stdio::null())
        .spawn()
        .expect("start vigil-registrar");
    let ready = next(&socket);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = next(&socket);
    let status = child.wait().expect("wait");
    assert!(killed.is_ok_and(|s| s.success()));
    assert_eq!(
        (ready.as_str(), stopping.as_str()),
        ("READY=1", "STOPPING=1")
    );
    assert!(status.success(), "{status}");
}
