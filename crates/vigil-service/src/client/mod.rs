//! The one outbound HTTP/1.1 client of Vigil: the agent registering with a registrar,
//! the tenant talking to the services and nodes, the verifier's webhook and its
//! requests to nodes, over TCP or rustls with the caller's `ClientConfig`.
//! [`Client::request`] makes one request per connection; [`Client::request_kept`]
//! keeps the connection in the caller's [`KeptConnection`] slot for the next request
//! to the same peer, as long as the peer keeps it open (the verifier polling a node:
//! a TLS handshake per round is most of a round's CPU). Keeping a connection is not
//! TLS session resumption: the one session stays open, and a peer that closes it (or
//! answers `Connection: close`) gets a fresh connection and a full handshake next time.
//! The exchange itself is [`http1`]'s: a kept connection is its stream and nothing
//! else, so a verifier can keep one to each of thousands of nodes; its TLS is [`tls`]'s,
//! whose buffers exist only while bytes wait.
//!
//! Every request is bounded: [`Limits::connect_timeout`] for name resolution, the TCP
//! connection and the TLS handshake, [`Limits::timeout`] for the whole exchange, and
//! [`Limits::body_limit`] for the answer's body, whose excess is its own error
//! ([`ClientError::TooLarge`]) so a caller can tell an oversized answer from a peer
//! that cannot be reached.

mod http1;
mod tls;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{HeaderMap, Method};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use vigil_tls::{CertPin, PinCheckedConfig};

use http1::Http1Error;
use tls::TlsStream;

/// How long a request may take and how much it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Name resolution, TCP connection and TLS handshake together.
    pub connect_timeout: Duration,
    /// The whole exchange, connection included.
    pub timeout: Duration,
    /// The largest answer body read, in bytes.
    pub body_limit: usize,
}

impl Default for Limits {
    /// 10 s to connect, 60 s in all, 64 MiB of body.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            body_limit: 64 << 20,
        }
    }
}

/// Why a request got no usable answer. Each variant names the peer (`http://host:port`)
/// or the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL cannot be used: not `http` or `https`, no host.
    #[error("invalid URL {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `https` endpoint without a TLS configuration.
    #[error("{peer}: https needs a TLS configuration")]
    NoTls {
        /// The peer.
        peer: String,
    },
    /// The host name does not resolve.
    #[error("cannot resolve {peer}: {source}")]
    Resolve {
        /// The peer.
        peer: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No TCP connection to any of the peer's addresses.
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        /// The peer.
        peer: String,
        /// The last address's error.
        #[source]
        source: std::io::Error,
    },
    /// The host cannot be a TLS server name.
    #[error("{peer}: '{host}' is not a valid TLS server name")]
    ServerName {
        /// The peer.
        peer: String,
        /// The host.
        host: String,
    },
    /// The TLS handshake failed (certificate refused either way, protocol error).
    #[error("TLS handshake with {peer} failed: {source}")]
    Tls {
        /// The peer.
        peer: String,
        /// rustls' reason.
        #[source]
        source: std::io::Error,
    },
    /// The request cannot be built (a path or header with control characters).
    #[error("bad request to {peer}: {message}")]
    Request {
        /// The peer.
        peer: String,
        /// Why.
        message: String,
    },
    /// The HTTP exchange failed after connecting (connection closed, malformed answer).
    #[error("HTTP with {peer}: {reason}")]
    Http {
        /// The peer.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer's body is larger than [`Limits::body_limit`].
    #[error("the answer of {peer} exceeds {limit} bytes")]
    TooLarge {
        /// The peer.
        peer: String,
        /// The limit.
        limit: usize,
    },
    /// No connection (or TLS session) within [`Limits::connect_timeout`].
    #[error("no connection to {peer} within {timeout:?}")]
    ConnectTimeout {
        /// The peer.
        peer: String,
        /// The limit.
        timeout: Duration,
    },
    /// No whole answer within [`Limits::timeout`].
    #[error("no answer from {peer} within {timeout:?}")]
    Timeout {
        /// The peer.
        peer: String,
        /// The limit.
        timeout: Duration,
    },
}

/// The host part of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Where a request goes: a host (an address, or a name resolved at each request) and
/// port, plain or over TLS.
#[derive(Clone)]
pub struct Endpoint {
    host: Host,
    port: u16,
    https: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The certificate the peer must present, checked by the stream (with a
    /// [`PinCheckedConfig`]).
    pin: Option<CertPin>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("peer", &self.to_string())
            .field("tls", &self.tls.is_some())
            .field("pin", &self.pin)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl fmt::Display for Endpoint {
    /// `http://host:port` or `https://host:port` (an IPv6 address in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

impl Endpoint {
    /// Plain HTTP to `addr`.
    pub fn addr(addr: SocketAddr) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
            https: false,
            tls: None,
            pin: None,
            server_name: None,
        }
    }

    /// Plain HTTP to `host` (an IP address, bracketed or not, or a name resolved
    /// asynchronously at each request) and `port`.
    pub fn host(host: &str, port: u16) -> Self {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.to_owned()),
        };
        Self {
            host,
            port,
            https: false,
            tls: None,
            pin: None,
            server_name: None,
        }
    }

    /// The endpoint of an `http://` or `https://` URL (IPv6 literals in brackets; the
    /// scheme's port by default) and the request target (path and query). An `https`
    /// endpoint needs [`with_tls`](Self::with_tls) before a request.
    pub fn url(url: &str) -> Result<(Self, String), ClientError> {
        let bad = |reason: &str| ClientError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let https = match parsed.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Host::Ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => Host::Ip(ip.into()),
            Some(url::Host::Domain(name)) => Host::Name(name.to_owned()),
            None => return Err(bad("no host")),
        };
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| bad("no port"))?;
        let target = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        let endpoint = Self {
            host,
            port,
            https,
            tls: None,
            pin: None,
            server_name: None,
        };
        Ok((endpoint, target))
    }

    /// Over TLS with `config`. The server name verified is the host (an IP address
    /// or a DNS name) unless [`with_server_name`](Self::with_server_name) says
    /// otherwise; a pinned configuration (a node's certificate) checks no name.
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.https = true;
        self.tls = Some(config);
        self
    }

    /// Over TLS to a peer that must present exactly the certificate `pin` names, with
    /// the one configuration all such peers share: the stream compares the peer's
    /// certificate with `pin` before it sends anything after the server's flight.
    pub fn with_pinned_tls(mut self, config: &PinCheckedConfig, pin: CertPin) -> Self {
        self.https = true;
        self.tls = Some(config.rustls().clone());
        self.pin = Some(pin);
        self
    }

    /// [`with_tls`](Self::with_tls) if `config` is given, else unchanged.
    pub fn with_optional_tls(self, config: Option<Arc<rustls::ClientConfig>>) -> Self {
        match config {
            Some(c) => self.with_tls(c),
            None => self,
        }
    }

    /// The name the server's certificate must carry, when it is not the host (a
    /// service reached at 127.0.0.1 with a certificate for `localhost`).
    pub fn with_server_name(mut self, name: ServerName<'static>) -> Self {
        self.server_name = Some(name);
        self
    }

    /// Whether requests go over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `host:port`, an IPv6 address in brackets: the `Host` header.
    pub fn authority(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            Host::Ip(ip) => format!("{ip}:{}", self.port),
            Host::Name(name) => format!("{name}:{}", self.port),
        }
    }

    fn server_name(&self) -> Result<ServerName<'static>, ClientError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        match &self.host {
            Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
            Host::Name(name) => {
                ServerName::try_from(name.clone()).map_err(|_| ClientError::ServerName {
                    peer: self.to_string(),
                    host: name.clone(),
                })
            }
        }
    }

    /// The addresses to try, in order.
    async fn resolve(&self) -> Result<Vec<SocketAddr>, ClientError> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), self.port))
                    .await
                    .map_err(|source| ClientError::Resolve {
                        peer: self.to_string(),
                        source,
                    })?
                    .collect();
                if addrs.is_empty() {
                    return Err(ClientError::Resolve {
                        peer: self.to_string(),
                        source: std::io::Error::other("no address"),
                    });
                }
                Ok(addrs)
            }
        }
    }
}

/// An answer: status, headers and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body (at most [`Limits::body_limit`] bytes).
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The client: [`Limits`] applied to every request. Cheap to copy; holds no
/// connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client {
    limits: Limits,
}

/// An open connection to one peer, kept between requests by [`Client::request_kept`]:
/// the stream and nothing else. Dropping it closes the connection.
pub struct KeptConnection {
    stream: Stream,
    /// The peer (`https://host:port`), TLS configuration and pin it was opened for: a
    /// request to another peer, with another configuration or pin (a node re-enrolled
    /// with a new certificate) does not use it.
    peer: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    pin: Option<CertPin>,
}

impl fmt::Debug for KeptConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptConnection")
            .field("peer", &self.peer)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl KeptConnection {
    fn serves(&self, endpoint: &Endpoint, peer: &str) -> bool {
        let same_tls = match (&self.tls, &endpoint.tls) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_tls && self.pin == endpoint.pin && self.peer == peer
    }
}

impl Client {
    /// A client with these limits.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sends one request on a fresh connection and reads the whole answer. A `body`
    /// is sent as JSON (`Content-Type: application/json`); a request without one has
    /// no content type, since Keylime answers 400 to a JSON content type with an
    /// empty body.
    pub async fn request(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        self.request_with_headers(endpoint, method, path_and_query, body, &[])
            .await
    }

    /// [`request`](Self::request) with extra request headers (a webhook's signature).
    pub async fn request_with_headers(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let timeout = self.limits.timeout;
        let exchange = async {
            let peer = endpoint.to_string();
            let request = build(endpoint, &peer, &method, path_and_query, body, headers)?;
            let mut stream = self.open(endpoint, &peer).await?;
            self.send_on(&peer, &mut stream, &request, &method)
                .await
                .map(|(answer, _)| answer)
                .map_err(|r| r.into_error(&peer))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                peer: endpoint.to_string(),
                timeout,
            })?
    }

    /// [`request`](Self::request) on the connection in `slot` when it is open to the
    /// same peer, else on a fresh one, which is left in `slot` afterwards unless the
    /// peer closes it. A request on a kept connection the peer closed meanwhile (its
    /// idle timeout racing this request) is made once more on a fresh connection, so
    /// use this for idempotent requests only.
    pub async fn request_kept(
        &self,
        slot: &mut Option<KeptConnection>,
        endpoint: &Endpoint,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let timeout = self.limits.timeout;
        tokio::time::timeout(
            timeout,
            self.exchange_kept(slot, endpoint, method, path_and_query, body),
        )
        .await
        .map_err(|_| {
            // A request cut short leaves the connection mid-exchange: not reusable.
            *slot = None;
            ClientError::Timeout {
                peer: endpoint.to_string(),
                timeout,
            }
        })?
    }

    async fn exchange_kept(
        &self,
        slot: &mut Option<KeptConnection>,
        endpoint: &Endpoint,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let peer = endpoint.to_string();
        let request = build(endpoint, &peer, &method, path_and_query, body, &[])?;
        if let Some(mut kept) = slot.take().filter(|k| k.serves(endpoint, &peer)) {
            match self
                .send_on(&peer, &mut kept.stream, &request, &method)
                .await
            {
                Ok((answer, reusable)) => {
                    if reusable {
                        *slot = Some(kept);
                    }
                    return Ok(answer);
                }
                // Closed by the peer before it answered: once more, on a new connection.
                Err(Retry::ClosedBeforeAnswer) => {}
                Err(Retry::No(e)) => return Err(e),
            }
        }
        let mut stream = self.open(endpoint, &peer).await?;
        let (answer, reusable) = self
            .send_on(&peer, &mut stream, &request, &method)
            .await
            .map_err(|r| r.into_error(&peer))?;
        if reusable {
            *slot = Some(KeptConnection {
                stream,
                peer,
                tls: endpoint.tls.clone(),
                pin: endpoint.pin,
            });
        }
        Ok(answer)
    }

    /// A new connection (TCP, and TLS when the endpoint has it) within
    /// [`Limits::connect_timeout`].
    async fn open(&self, endpoint: &Endpoint, peer: &str) -> Result<Stream, ClientError> {
        let connect_timeout = self.limits.connect_timeout;
        tokio::time::timeout(connect_timeout, self.connect(endpoint))
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                peer: peer.to_owned(),
                timeout: connect_timeout,
            })?
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Stream, ClientError> {
        let peer = endpoint.to_string();
        // Checked before any traffic: an https endpoint never falls back to plain.
        let tls = match (&endpoint.tls, endpoint.https) {
            (Some(config), _) => Some((config.clone(), endpoint.server_name()?)),
            (None, true) => return Err(ClientError::NoTls { peer }),
            (None, false) => None,
        };
        let mut last = None;
        let mut tcp = None;
        for addr in endpoint.resolve().await? {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| ClientError::Connect {
            peer: peer.clone(),
            source: last.unwrap_or_else(|| std::io::Error::other("no address")),
        })?;
        // Requests are small and answered at once: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some((config, name)) => TlsStream::connect(config, name, endpoint.pin, tcp)
                .await
                .map(|s| Stream::Tls(Box::new(s)))
                .map_err(|source| ClientError::Tls { peer, source }),
        }
    }

    /// Sends `request` on an open connection and reads the whole answer; whether the
    /// connection can carry another request (the answer was framed and read to its
    /// end, neither side asked to close, and the peer has not closed it since).
    async fn send_on(
        &self,
        peer: &str,
        stream: &mut Stream,
        request: &[u8],
        method: &Method,
    ) -> Result<(Answer, bool), Retry> {
        let limit = self.limits.body_limit;
        let head_request = method == Method::HEAD;
        let result = match stream {
            Stream::Plain(s) => http1::exchange(s, request, head_request, limit).await,
            Stream::Tls(s) => http1::exchange(&mut **s, request, head_request, limit).await,
        };
        let response = result.map_err(|e| match e {
            Http1Error::ClosedBeforeAnswer => Retry::ClosedBeforeAnswer,
            Http1Error::TooLarge => Retry::No(ClientError::TooLarge {
                peer: peer.to_owned(),
                limit,
            }),
            other => Retry::No(ClientError::Http {
                peer: peer.to_owned(),
                reason: other.to_string(),
            }),
        })?;
        let reusable = response.reusable
            && match stream {
                Stream::Plain(s) => http1::idle(s),
                Stream::Tls(s) => http1::idle(&mut **s),
            };
        let answer = Answer {
            status: response.status,
            headers: response.headers,
            body: Bytes::from(response.body),
        };
        Ok((answer, reusable))
    }
}

/// A failed exchange, and whether it may be made again on a new connection.
enum Retry {
    /// The peer closed the connection before a byte of the answer.
    ClosedBeforeAnswer,
    /// Any other failure.
    No(ClientError),
}

impl Retry {
    fn into_error(self, peer: &str) -> ClientError {
        match self {
            Self::No(e) => e,
            Self::ClosedBeforeAnswer => ClientError::Http {
                peer: peer.to_owned(),
                reason: Http1Error::ClosedBeforeAnswer.to_string(),
            },
        }
    }
}

/// The request, serialized: `Host`, `Accept: application/json`, the caller's headers,
/// and a body sent as JSON.
fn build(
    endpoint: &Endpoint,
    peer: &str,
    method: &Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Result<Vec<u8>, ClientError> {
    let bad = |message: String| ClientError::Request {
        peer: peer.to_owned(),
        message,
    };
    // What hyper's URI and header types refused: nothing that could end a line or
    // the request target early.
    if !path_and_query.starts_with('/') || !path_and_query.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!("invalid request target {path_and_query:?}")));
    }
    for (name, value) in headers {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok || value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(bad(format!("invalid header {name:?}")));
        }
    }
    let mut fields = vec![("accept", "application/json")];
    fields.extend_from_slice(headers);
    if body.is_some() {
        fields.push(("content-type", "application/json"));
    }
    Ok(http1::request(
        method.as_str(),
        path_and_query,
        &endpoint.authority(),
        &fields,
        body.as_deref(),
    ))
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_and_target() {
        let (e, t) = Endpoint::url("http://[::1]:8080/x?y=1").unwrap();
        assert_eq!(e.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!((e.port, e.https, t.as_str()), (8080, false, "/x?y=1"));
        assert_eq!(e.authority(), "[::1]:8080");
        assert_eq!(e.to_string(), "http://[::1]:8080");
        let (e, t) = Endpoint::url("https://hooks.example/").unwrap();
        assert_eq!(e.host, Host::Name("hooks.example".into()));
        assert_eq!((e.port, e.https, t.as_str()), (443, true, "/"));
        let (e, t) = Endpoint::url("http://10.0.0.7").unwrap();
        assert_eq!((e.port, t.as_str()), (80, "/"));
        assert_eq!(e.host, Host::Ip("10.0.0.7".parse().unwrap()));
        for bad in [
            "ftp://x/",
            "not a url",
            "http://[::1/",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(Endpoint::url(bad), Err(ClientError::Url { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn hosts_are_addresses_or_names() {
        assert_eq!(
            Endpoint::host("[fe80::1]", 1).host,
            Host::Ip("fe80::1".parse().unwrap())
        );
        assert_eq!(
            Endpoint::host("::1", 1).host,
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(Endpoint::host("::1", 9).authority(), "[::1]:9");
        assert_eq!(
            Endpoint::host("registrar.local", 1).host,
            Host::Name("registrar.local".into())
        );
        let e = Endpoint::addr("127.0.0.1:8890".parse().unwrap());
        assert_eq!(e.to_string(), "http://127.0.0.1:8890");
        assert!(!e.is_https());
    }
}
