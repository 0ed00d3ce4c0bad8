//! systemd's readiness protocol (`sd_notify(3)`): a service started by a `Type=notify`
//! unit sends `READY=1` once it serves and `STOPPING=1` when it begins to shut down, as
//! one datagram each to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! socket name written with a leading `@`). Without the variable (a service started by
//! hand or by a test) nothing is sent.
//!
//! Implemented over std's `UnixDatagram` rather than libsystemd: the protocol is one
//! `sendto` of a text line, and the services link no C library for it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// The environment variable systemd sets to the socket it listens on.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The longest socket path a `sockaddr_un` holds (108 bytes, less the final NUL).
const MAX_SOCKET_NAME: usize = 107;

/// What a service tells systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Listening and serving: systemd's start job completes, units ordered after this
    /// one start.
    Ready,
    /// Shutting down: systemd shows the unit as deactivating.
    Stopping,
}

impl State {
    /// The datagram's text.
    pub fn message(self) -> &'static str {
        match self {
            Self::Ready => "READY=1",
            Self::Stopping => "STOPPING=1",
        }
    }
}

/// Why a notification could not be sent. Each variant names the socket.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor `@name`, or is too long.
    #[error("{NOTIFY_SOCKET}={socket:?} is not an absolute socket path or an @abstract name of at most {MAX_SOCKET_NAME} bytes")]
    BadSocket {
        /// The variable's value.
        socket: OsString,
    },
    /// The socket could not be made or the datagram not sent.
    #[error("cannot send {message} to {NOTIFY_SOCKET}={socket:?}: {source}")]
    Send {
        /// The datagram's text.
        message: &'static str,
        /// The variable's value.
        socket: OsString,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Sends `state` to `socket` (a `$NOTIFY_SOCKET` value: `/path` or `@abstract`).
pub fn notify_to(socket: &OsStr, state: State) -> Result<(), NotifyError> {
    let message = state.message();
    let bytes = socket.as_bytes();
    let bad = || NotifyError::BadSocket {
        socket: socket.to_owned(),
    };
    if bytes.len() > MAX_SOCKET_NAME {
        return Err(bad());
    }
    let send_error = |source| NotifyError::Send {
        message,
        socket: socket.to_owned(),
        source,
    };
    let sender = UnixDatagram::unbound().map_err(send_error)?;
    let sent = match bytes.split_first() {
        Some((b'@', name)) => send_abstract(&sender, name, message),
        Some((b'/', _)) => sender.send_to(message.as_bytes(), PathBuf::from(socket)),
        _ => return Err(bad()),
    };
    sent.map(drop).map_err(send_error)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sender: &UnixDatagram, name: &[u8], message: &str) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(message.as_bytes(), &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// Sends `state` to `$NOTIFY_SOCKET` if it is set. A failure is logged, never fatal:
/// systemd then reports the start as timed out, which names the problem better than a
/// service that refuses to run without it.
pub fn notify(state: State) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    match notify_to(&socket, state) {
        Ok(()) => tracing::debug!("told systemd {}", state.message()),
        Err(e) => tracing::warn!("{e}"),
    }
}

/// [`notify`] with [`State::Ready`]: the service's listeners are bound.
pub fn ready() {
    notify(State::Ready);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), State::Ready).unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("vigil-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
            let listener = UnixDatagram::bind_addr(&addr).unwrap();
            notify_to(OsStr::new(&format!("@{name}")), State::Stopping).unwrap();
            let n = listener.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
    }

    #[test]
    fn bad_sockets_are_named() {
        for socket in ["relative/path", "", &format!("/{}", "x".repeat(200))] {
            let e = notify_to(OsStr::new(socket), State::Ready).unwrap_err();
            assert!(matches!(e, NotifyError::BadSocket { .. }), "{socket}: {e}");
        }
        let e = notify_to(OsStr::new("/nonexistent/vigil/notify"), State::Ready).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot send READY=1 to NOTIFY_SOCKET=\"/nonexistent/vigil/notify\""),
            "{e}"
        );
    }
}
