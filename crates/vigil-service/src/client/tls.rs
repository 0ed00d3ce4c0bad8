//! The client's TLS streams, on rustls's unbuffered API: the buffers are the stream's
//! own, allocated while bytes wait and freed as soon as none do.
//!
//! A kept connection between two requests then holds its session (keys, sequence
//! numbers, the peer's certificate) and its socket, and no buffer: rustls's buffered
//! connection keeps a 4 KiB record buffer for as long as the connection lives once it
//! has read, and a verifier keeps one connection per node it attests.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use vigil_tls::CertPin;

/// The most received bytes held unprocessed: a handshake message (rustls joins them up
/// to 64 KiB) and the record under way. A peer cannot make the stream hold more.
const MAX_INCOMING: usize = 0x1_0000 + 0x4800;
/// Bytes read from the socket at a time.
const READ_SIZE: usize = 4096;
/// Plaintext taken from the caller per write: four records.
const MAX_WRITE: usize = 0x1_0000;

/// A TLS client stream over TCP.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedClientConnection,
    /// Received bytes not processed yet (a partial record or handshake message).
    incoming: Vec<u8>,
    /// TLS bytes to send, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes the caller has not read yet, from `taken` on.
    plaintext: Vec<u8>,
    taken: usize,
    /// The peer sent `close_notify`: reads end there.
    peer_closed: bool,
    /// The certificate the peer must present, until it has been compared.
    pin: Option<CertPin>,
    /// The session failed (a bad record, a refused certificate).
    failed: bool,
}

/// Where processing the received bytes stopped.
enum Step {
    /// Decrypted bytes are in `plaintext`.
    Plaintext,
    /// Everything received is processed: the peer's next bytes are needed.
    NeedMore,
    /// `n` bytes of the caller's data are encrypted into `outgoing`.
    Written(usize),
    /// The peer closed the session.
    Closed,
}

fn tls_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The peer's certificate is not the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the peer presented a certificate other than the one pinned (its registered mtls_cert)")]
struct PinRefused;

/// rustls's errors for an output buffer too small, which say how large it must be.
trait Shortfall: std::fmt::Display {
    fn required_size(&self) -> Option<usize>;
}

impl Shortfall for EncodeError {
    fn required_size(&self) -> Option<usize> {
        match self {
            Self::InsufficientSize(InsufficientSizeError { required_size }) => Some(*required_size),
            _ => None,
        }
    }
}

impl Shortfall for EncryptError {
    fn required_size(&self) -> Option<usize> {
        match self {
            Self::InsufficientSize(InsufficientSizeError { required_size }) => Some(*required_size),
            _ => None,
        }
    }
}

/// Appends what `fill` writes (a record rustls encodes or encrypts) to `outgoing`, grown
/// by the size rustls asks for when offered no room.
fn append<E: Shortfall>(
    outgoing: &mut Vec<u8>,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> io::Result<()> {
    let needed = match fill(&mut []) {
        // Nothing to write.
        Ok(_) => return Ok(()),
        Err(e) => e.required_size().ok_or_else(|| tls_error(e.to_string()))?,
    };
    let at = outgoing.len();
    outgoing.resize(at + needed, 0);
    let n = fill(&mut outgoing[at..]).map_err(|e| tls_error(e.to_string()))?;
    outgoing.truncate(at + n);
    Ok(())
}

impl TlsStream {
    /// Makes the TLS handshake with `name` over `tcp`; with `pin`, the server must
    /// present that certificate (whatever `config`'s verifier accepts).
    pub(crate) async fn connect(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        pin: Option<CertPin>,
        tcp: TcpStream,
    ) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut stream = Self {
            tcp,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plaintext: Vec::new(),
            taken: 0,
            peer_closed: false,
            pin,
            failed: false,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match self.drive(None)? {
                // Sent with the handshake's last flight: kept for the first read.
                Step::Plaintext | Step::Written(_) => {}
                Step::NeedMore => {
                    ready!(self.poll_send(cx))?;
                    if self.conn.is_handshaking() {
                        ready!(self.poll_receive(cx))?;
                    }
                }
                Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the peer closed the connection during the TLS handshake",
                    )))
                }
            }
        }
    }

    /// Processes the received bytes until rustls needs the peer's next bytes (or, with
    /// `write`, until `write` is encrypted). Handshake records and alerts made on the
    /// way are queued in `outgoing`; decrypted bytes are appended to `plaintext`.
    ///
    /// A session that failed stays failed: what was received is dropped (processing it
    /// again would fail again) and every later call is an error.
    fn drive(&mut self, write: Option<&[u8]>) -> io::Result<Step> {
        if self.failed {
            return Err(tls_error("the TLS session failed earlier"));
        }
        let step = self.process(write);
        if step.is_err() {
            self.failed = true;
            self.send_alert();
            self.incoming = Vec::new();
        }
        step
    }

    /// Tells the peer why the session failed, if the socket takes it at once. rustls
    /// queued an alert; it is taken from its queue with nothing received offered
    /// (processing the received bytes again would fail again, and rustls may still
    /// refer to them).
    fn send_alert(&mut self) {
        if self.check_pin().is_err() || !self.conn.wants_write() {
            return;
        }
        let status = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut record)) = status.state {
            let _ = append(&mut self.outgoing, |buf| record.encode(buf));
        }
        if self.sent < self.outgoing.len() {
            let _ = self.tcp.try_write(&self.outgoing[self.sent..]);
        }
    }

    fn process(&mut self, write: Option<&[u8]>) -> io::Result<Step> {
        let Self {
            conn,
            incoming,
            outgoing,
            plaintext,
            peer_closed,
            ..
        } = self;
        loop {
            let status = conn.process_tls_records(incoming);
            let mut discard = status.discard;
            let step = match status.state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        plaintext.extend_from_slice(record.payload);
                    }
                    // Data arriving while the caller writes is kept for its next read.
                    write.is_none().then_some(Step::Plaintext)
                }
                ConnectionState::EncodeTlsData(mut record) => {
                    append(outgoing, |buf| record.encode(buf))?;
                    None
                }
                // Sent before the stream next waits for the peer or takes the caller's
                // data: every poll sends `outgoing` first.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::WriteTraffic(mut traffic) => match write {
                    None => Some(Step::NeedMore),
                    Some(data) => {
                        append(outgoing, |buf| traffic.encrypt(data, buf))?;
                        Some(Step::Written(data.len()))
                    }
                },
                ConnectionState::BlockedHandshake => Some(Step::NeedMore),
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    // The session can still carry what the caller writes.
                    write.is_none().then_some(Step::Closed)
                }
                ConnectionState::Closed => {
                    *peer_closed = true;
                    if write.is_some() {
                        return Err(io::ErrorKind::BrokenPipe.into());
                    }
                    Some(Step::Closed)
                }
                other => return Err(tls_error(format!("unexpected TLS state {other:?}"))),
            };
            incoming.drain(..discard);
            if incoming.is_empty() {
                *incoming = Vec::new();
            }
            if let Some(step) = step {
                return Ok(step);
            }
        }
    }

    /// Compares the peer's certificate with the pin, once rustls has it. Every send
    /// calls this first, and rustls records the server's certificate before it makes
    /// the client's next flight: nothing goes to a peer whose certificate is not the
    /// pinned one (not the client's certificate, not an alert).
    fn check_pin(&mut self) -> io::Result<()> {
        let Some(want) = self.pin else {
            return Ok(());
        };
        let Some(certs) = self.conn.peer_certificates() else {
            return Ok(());
        };
        if certs.first().is_some_and(|cert| want.matches(cert)) {
            self.pin = None;
            return Ok(());
        }
        self.failed = true;
        self.outgoing.truncate(self.sent);
        Err(tls_error(PinRefused))
    }

    /// Sends what `outgoing` holds; frees it once sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_pin()?;
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads the peer's next bytes into `incoming`. The buffer grows only once the
    /// socket has bytes: a stream polled while idle allocates nothing.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            let at = self.incoming.len();
            if at >= MAX_INCOMING {
                return Poll::Ready(Err(tls_error("more than 80 KiB of TLS data unprocessed")));
            }
            self.incoming.resize(at + READ_SIZE, 0);
            let read = self.tcp.try_read(&mut self.incoming[at..]);
            self.incoming.truncate(at + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection without a TLS close_notify",
                    )))
                }
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Queues the session's `close_notify` (once; rustls sends it at most once).
    fn queue_close_notify(&mut self) -> io::Result<()> {
        let Self {
            conn,
            incoming,
            outgoing,
            ..
        } = self;
        let status = conn.process_tls_records(incoming);
        let discard = status.discard;
        let queued = match status.state {
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                append(outgoing, |buf| traffic.queue_close_notify(buf))
            }
            _ => Ok(()),
        };
        incoming.drain(..discard);
        queued
    }

    /// Moves decrypted bytes into `buf`; frees `plaintext` once all are taken.
    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.plaintext.len() - self.taken);
        buf.put_slice(&self.plaintext[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plaintext.len() {
                this.take_plaintext(buf);
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_send(cx))?;
            match this.drive(None)? {
                Step::Plaintext | Step::Written(_) => {}
                Step::Closed => return Poll::Ready(Ok(())),
                Step::NeedMore => {
                    // What processing queued (a key update, an alert) goes first.
                    ready!(this.poll_send(cx))?;
                    ready!(this.poll_receive(cx))?;
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One batch at a time: what was encrypted before is sent first.
        ready!(this.poll_send(cx))?;
        let data = &buf[..buf.len().min(MAX_WRITE)];
        let Step::Written(n) = this.drive(Some(data))? else {
            return Poll::Ready(Err(tls_error("the TLS session cannot carry data")));
        };
        // Sent now as far as the socket takes it; the rest on the next poll.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        // A failed session is not processed again (see `drive`); it gets no close_notify.
        if !this.failed && !this.conn.is_handshaking() {
            this.queue_close_notify()?;
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::task::Waker;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A CA's server over TLS on loopback, running `serve` on the first connection;
    /// the client configuration pins the server's certificate.
    async fn server<F, Fut>(serve: F) -> (Arc<rustls::ClientConfig>, TcpStream, tempfile::TempDir)
    where
        F: FnOnce(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let dir = tempfile::tempdir().unwrap();
        let ca = vigil_tls::ca::init(dir.path(), &["127.0.0.1".into()], false).unwrap();
        let config = vigil_tls::server_config(
            &ca.cert("server"),
            &ca.key("server"),
            &[&ca.ca_cert()],
            vigil_tls::ClientAuth::Optional,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            if let Ok(tls) = acceptor.accept(tcp).await {
                serve(tls).await;
            }
        });
        let cert = CertificateDer::from_pem_file(ca.cert("server")).unwrap();
        let pinned = Arc::new(vigil_tls::pinned_client_config(cert, None).unwrap());
        (pinned, TcpStream::connect(addr).await.unwrap(), dir)
    }

    fn name() -> ServerName<'static> {
        ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Whether a read would wait (the stream is idle), polled once without waiting.
    fn would_wait(s: &mut TlsStream) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(s).poll_read(&mut cx, &mut buf).is_pending()
    }

    #[tokio::test]
    async fn answers_of_several_records_come_whole_and_an_idle_stream_holds_no_buffer() {
        let (config, tcp, _dir) = server(|mut tls| async move {
            for _ in 0..2 {
                let mut request = [0u8; 4];
                tls.read_exact(&mut request).await.unwrap();
                // Three records and a bit.
                tls.write_all(&vec![request[0]; 50_000]).await.unwrap();
                tls.flush().await.unwrap();
            }
            std::future::pending::<()>().await;
        })
        .await;
        let mut s = TlsStream::connect(config, name(), None, tcp).await.unwrap();
        for round in [b'a', b'b'] {
            s.write_all(&[round; 4]).await.unwrap();
            s.flush().await.unwrap();
            let mut answer = vec![0u8; 50_000];
            s.read_exact(&mut answer).await.unwrap();
            assert!(answer.iter().all(|&b| b == round));
            assert!(would_wait(&mut s), "nothing more was sent");
            let held = s.incoming.capacity() + s.outgoing.capacity() + s.plaintext.capacity();
            assert_eq!(held, 0, "an idle stream holds {held} bytes of buffers");
        }
    }

    #[tokio::test]
    async fn close_notify_ends_reads_and_a_bare_close_is_an_error() {
        let (config, tcp, _dir) = server(|mut tls| async move {
            tls.write_all(b"bye").await.unwrap();
            tls.shutdown().await.unwrap();
        })
        .await;
        let mut s = TlsStream::connect(config, name(), None, tcp).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");

        // The socket closed without the session's close_notify: a truncation.
        let (config, tcp, _dir) = server(|tls| async move {
            let (tcp, _) = tls.into_inner();
            drop(tcp);
        })
        .await;
        let mut s = TlsStream::connect(config, name(), None, tcp).await.unwrap();
        let e = s.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        assert!(!would_wait(&mut s), "a closed stream is not idle");
    }

    #[tokio::test]
    async fn shutdown_sends_close_notify() {
        let (seen, saw) = tokio::sync::oneshot::channel();
        let (config, tcp, _dir) = server(|mut tls| async move {
            // Ok only if the stream ended with the session's close_notify.
            let mut got = Vec::new();
            let _ = seen.send(tls.read_to_end(&mut got).await.map(|_| got));
        })
        .await;
        let mut s = TlsStream::connect(config, name(), None, tcp).await.unwrap();
        s.write_all(b"last").await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(saw.await.unwrap().unwrap(), b"last");
    }

    #[tokio::test]
    async fn a_certificate_other_than_the_pinned_one_fails_the_handshake() {
        let (_, tcp, dir) = server(|_| async {}).await;
        // The CA's client certificate is not the server's.
        let other = vigil_tls::ca::CaDir::new(dir.path()).cert("client");
        let other = CertificateDer::from_pem_file(other).unwrap();
        let config = Arc::new(vigil_tls::pinned_client_config(other, None).unwrap());
        let e = TlsStream::connect(config, name(), None, tcp)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    /// A connection to [`server`] pinned to the CA's certificate `pinned` ("server" or
    /// "client"), with the shared configuration that leaves the check to the stream,
    /// and whether the server's handshake completed.
    async fn pin_checked(
        pinned: &str,
    ) -> (io::Result<TlsStream>, tokio::sync::oneshot::Receiver<()>) {
        let (tx, accepted) = tokio::sync::oneshot::channel();
        let (_, tcp, dir) = server(move |_| async move {
            let _ = tx.send(());
        })
        .await;
        let der = vigil_tls::ca::CaDir::new(dir.path()).cert(pinned);
        let pin = CertPin::of(&CertificateDer::from_pem_file(der).unwrap());
        let config = vigil_tls::PinCheckedConfig::new(None).unwrap();
        let stream = TlsStream::connect(config.rustls().clone(), name(), Some(pin), tcp).await;
        (stream, accepted)
    }

    #[tokio::test]
    async fn a_shared_configuration_connects_to_the_pinned_certificate() {
        let (stream, accepted) = pin_checked("server").await;
        stream.unwrap();
        accepted.await.expect("the server completed the handshake");
    }

    #[tokio::test]
    async fn a_shared_configuration_sends_nothing_more_to_another_certificate() {
        // Pinned to the CA's client certificate, which is not the server's.
        let (stream, accepted) = pin_checked("client").await;
        let e = stream.err().unwrap();
        assert!(e.get_ref().is_some_and(|e| e.is::<PinRefused>()), "{e}");
        // The client's last flight (its Finished) never left: the server's handshake
        // did not complete.
        assert!(
            accepted.await.is_err(),
            "the server completed the handshake"
        );
    }

    #[tokio::test]
    async fn a_peer_that_does_not_speak_tls_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let (config, _, _dir) = server(|_| async {}).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let e = TlsStream::connect(config, name(), None, tcp)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
