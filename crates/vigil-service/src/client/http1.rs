//! One HTTP/1.1 exchange on a stream the caller owns: the request written whole, the
//! answer read to its end (RFC 9112 framing: `Content-Length`, chunked, or until the
//! peer closes), every buffer living for the exchange only. A connection kept between
//! exchanges is its stream alone — no connection task, no request channel, no buffer
//! kept at the size of the largest answer — which is what lets a verifier keep a
//! connection open to each of thousands of nodes.
//!
//! Only what a client of JSON APIs needs: no pipelining, no upgrades, no trailers
//! (read and dropped), interim 1xx answers skipped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Waker};

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The largest answer head (status line and headers) read.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in an answer head.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_LINE: usize = 4 * 1024;
/// Bytes asked of the stream per read while the framing is not known.
const READ_CHUNK: usize = 8 * 1024;

/// An answer read to its end.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
    /// The connection can carry another request: the body was framed (not ended by
    /// the peer closing), neither side asked to close, nothing unasked-for followed.
    pub(super) reusable: bool,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Http1Error {
    /// The peer closed the connection before a byte of the answer came: a kept
    /// connection it had closed while idle, worth one more try on a new connection.
    #[error("the connection was closed before an answer")]
    ClosedBeforeAnswer,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The answer breaks HTTP/1.1.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The answer's body is larger than the limit.
    #[error("the answer exceeds the limit")]
    TooLarge,
}

fn malformed(why: impl Into<String>) -> Http1Error {
    Http1Error::Malformed(why.into())
}

/// Whether an I/O error means the peer had closed the connection.
fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// Writes `request` (head and body, already serialized) and reads the answer, whose
/// body has at most `limit` bytes. `head_request`: the request was `HEAD`, so the
/// answer has no body whatever its headers say.
pub(super) async fn exchange<S>(
    io: &mut S,
    request: &[u8],
    head_request: bool,
    limit: usize,
) -> Result<Response, Http1Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let written = async {
        io.write_all(request).await?;
        io.flush().await
    };
    written.await.map_err(|e| {
        if closed(&e) {
            Http1Error::ClosedBeforeAnswer
        } else {
            Http1Error::Io(e)
        }
    })?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut first = true;
    loop {
        let head = read_head(io, &mut buf, first).await?;
        first = false;
        // Interim answers (100 Continue, 103 Early Hints) precede the real one.
        if (100..200).contains(&head.status) && head.status != 101 {
            buf.drain(..head.len);
            continue;
        }
        if head.status == 101 {
            return Err(malformed("101 Switching Protocols was not asked for"));
        }
        return read_body(io, buf, head, head_request, limit).await;
    }
}

/// A parsed answer head and its length in the buffer.
struct Head {
    status: u16,
    headers: HeaderMap,
    len: usize,
    /// HTTP/1.1 (else 1.0).
    http11: bool,
}

async fn read_head<S>(io: &mut S, buf: &mut Vec<u8>, first: bool) -> Result<Head, Http1Error>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(head);
        }
        let empty = buf.is_empty();
        if read_more(io, buf, READ_CHUNK).await.map_err(|e| {
            if first && empty && closed(&e) {
                Http1Error::ClosedBeforeAnswer
            } else {
                Http1Error::Io(e)
            }
        })? == 0
        {
            return Err(if first && empty {
                Http1Error::ClosedBeforeAnswer
            } else {
                malformed("the connection closed within the head")
            });
        }
    }
}

/// The head at the start of `buf`, `None` if it is not all there yet. Not async, so
/// that the parser's header array is not part of the exchange's future.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Http1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let status = parsed.code.ok_or_else(|| malformed("no status code"))?;
            let mut headers = HeaderMap::with_capacity(parsed.headers.len());
            for h in parsed.headers.iter() {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| malformed(format!("header name {:?}", h.name)))?;
                let value = HeaderValue::from_bytes(h.value)
                    .map_err(|_| malformed(format!("the value of header {}", h.name)))?;
                headers.append(name, value);
            }
            Ok(Some(Head {
                status,
                headers,
                len,
                http11: parsed.version == Some(1),
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Err(malformed(format!("a head longer than {MAX_HEAD} bytes")))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(malformed(format!("head: {e}"))),
    }
}

/// Reads at most `max` more bytes onto `buf`; 0 at the end of the stream.
async fn read_more<S>(io: &mut S, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>
where
    S: AsyncRead + Unpin,
{
    buf.reserve(max);
    let mut limited = (&mut *io).take(max as u64);
    limited.read_buf(buf).await
}

/// How the body of an answer ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(head: &Head, head_request: bool) -> Result<Framing, Http1Error> {
    if head_request || head.status == 204 || head.status == 304 {
        return Ok(Framing::None);
    }
    let encodings: Vec<&str> = head
        .headers
        .get_all(hyper::header::TRANSFER_ENCODING)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| malformed("a Transfer-Encoding that is not text"))
        })
        .collect::<Result<_, _>>()?;
    if !encodings.is_empty() {
        // Chunked must come last; any other last coding runs until the peer closes.
        let last = encodings
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|c| !c.is_empty());
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for value in head.headers.get_all(hyper::header::CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| malformed("a Content-Length that is not text"))?;
        // A list of equal values is one length (RFC 9110 §8.6); differing ones are not.
        for item in text.split(',').map(str::trim) {
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(format!("Content-Length {text:?}")));
            }
            // Digits past u64 are a length past any limit.
            let n: u64 = item.parse().unwrap_or(u64::MAX);
            if length.is_some_and(|l| l != n) {
                return Err(malformed("differing Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Whether a `Connection` header lists `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn read_body<S>(
    io: &mut S,
    mut buf: Vec<u8>,
    head: Head,
    head_request: bool,
    limit: usize,
) -> Result<Response, Http1Error>
where
    S: AsyncRead + Unpin,
{
    let framing = framing(&head, head_request)?;
    let start = head.len;
    let (body, rest) = match framing {
        Framing::None => (Vec::new(), buf.len() - start),
        Framing::Length(n) => {
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= limit)
                .ok_or(Http1Error::TooLarge)?;
            let have = (buf.len() - start).min(n);
            // One buffer of the declared size, filled as the bytes come: its pages are
            // touched only by what the peer sends, so a peer that declares the limit
            // and stalls costs address space, not memory.
            let mut body = Vec::with_capacity(n);
            body.extend_from_slice(&buf[start..start + have]);
            let rest = buf.len() - start - have;
            drop(buf);
            while body.len() < n {
                let want = (n - body.len()) as u64;
                let read = (&mut *io)
                    .take(want)
                    .read_buf(&mut body)
                    .await
                    .map_err(Http1Error::Io)?;
                if read == 0 {
                    return Err(malformed("the connection closed within the body"));
                }
            }
            (body, rest)
        }
        Framing::Chunked => {
            buf.drain(..start);
            dechunk(io, buf, limit).await?
        }
        Framing::UntilClose => {
            buf.drain(..start);
            if buf.len() > limit {
                return Err(Http1Error::TooLarge);
            }
            while read_more(io, &mut buf, READ_CHUNK)
                .await
                .map_err(Http1Error::Io)?
                > 0
            {
                if buf.len() > limit {
                    return Err(Http1Error::TooLarge);
                }
            }
            (buf, 0)
        }
    };
    let keep = if head.http11 {
        !connection_has(&head.headers, "close")
    } else {
        connection_has(&head.headers, "keep-alive")
    };
    Ok(Response {
        status: head.status,
        headers: head.headers,
        body,
        reusable: keep && framing != Framing::UntilClose && rest == 0,
    })
}

/// Decodes a chunked body whose first bytes are `buf`; the body and the count of bytes
/// read past its end.
async fn dechunk<S>(
    io: &mut S,
    mut buf: Vec<u8>,
    limit: usize,
) -> Result<(Vec<u8>, usize), Http1Error>
where
    S: AsyncRead + Unpin,
{
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line = next_line(io, &mut buf, &mut pos).await?;
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .map(|s| s.trim_matches([' ', '\t']))
            .filter(|s| !s.is_empty() && s.len() <= 16)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| malformed("a chunk size that is not a hexadecimal number"))?;
        if size == 0 {
            // Trailer fields, dropped, up to the empty line.
            while !next_line(io, &mut buf, &mut pos).await?.is_empty() {}
            return Ok((body, buf.len() - pos));
        }
        let mut remaining = usize::try_from(size)
            .ok()
            .filter(|&s| s <= limit.saturating_sub(body.len()))
            .ok_or(Http1Error::TooLarge)?;
        body.reserve(remaining);
        while remaining > 0 {
            if pos == buf.len() {
                buf.clear();
                pos = 0;
                if read_more(io, &mut buf, READ_CHUNK.min(remaining.max(2)))
                    .await
                    .map_err(Http1Error::Io)?
                    == 0
                {
                    return Err(malformed("the connection closed within a chunk"));
                }
            }
            let take = remaining.min(buf.len() - pos);
            body.extend_from_slice(&buf[pos..pos + take]);
            pos += take;
            remaining -= take;
        }
        if !next_line(io, &mut buf, &mut pos).await?.is_empty() {
            return Err(malformed("a chunk longer than its size"));
        }
    }
}

/// The next CRLF-ended line of `buf` from `pos` (reading more as needed), without its
/// CRLF; `pos` moves past it. Bytes before `pos` may be dropped meanwhile.
async fn next_line<S>(io: &mut S, buf: &mut Vec<u8>, pos: &mut usize) -> Result<Vec<u8>, Http1Error>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(i) = buf[*pos..].windows(2).position(|w| w == b"\r\n") {
            let line = buf[*pos..*pos + i].to_vec();
            *pos += i + 2;
            return Ok(line);
        }
        if buf.len() - *pos > MAX_LINE {
            return Err(malformed(format!(
                "a chunk-size or trailer line longer than {MAX_LINE} bytes"
            )));
        }
        buf.drain(..*pos);
        *pos = 0;
        if read_more(io, buf, READ_CHUNK)
            .await
            .map_err(Http1Error::Io)?
            == 0
        {
            return Err(malformed("the connection closed within a chunked body"));
        }
    }
}

/// Looks once, without waiting, at a connection about to be kept idle: `false` if the
/// peer has closed it or sent something unasked-for (not reusable). The read also lets
/// a TLS stream drop its record buffer to its idle size instead of keeping it at the
/// size of the answer's last record until the next request.
pub(super) fn idle<S>(io: &mut S) -> bool
where
    S: AsyncRead + Unpin,
{
    let mut byte = [0u8; 1];
    let mut read = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(io).poll_read(&mut cx, &mut read).is_pending()
}

/// A request head and body, serialized: `Host`, then `headers`, then the body's
/// `Content-Length` if there is a body. `target`, the header names and values must be
/// free of control characters and (the target) spaces; the caller checks.
pub(super) fn request(
    method: &str,
    target: &str,
    authority: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let body = body.unwrap_or_default();
    let mut out = Vec::with_capacity(160 + target.len() + body.len());
    for part in [
        method,
        " ",
        target,
        " HTTP/1.1\r\nhost: ",
        authority,
        "\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    let length = body.len().to_string();
    let framing = (!body.is_empty() || method == "POST" || method == "PUT")
        .then_some(("content-length", length.as_str()));
    for (name, value) in headers.iter().copied().chain(framing) {
        for part in [name, ": ", value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncWriteExt};

    /// The answer to a GET when the peer writes `parts` one after another (each its
    /// own read) and then, if `close`, closes; and whether the peer saw a whole request.
    async fn answer(parts: &[&[u8]], close: bool, limit: usize) -> Result<Response, Http1Error> {
        let (mut client, mut server) = duplex(1 << 20);
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let peer = tokio::spawn(async move {
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                if server.read(&mut byte).await.unwrap() == 0 {
                    return;
                }
                request.push(byte[0]);
            }
            assert!(request.starts_with(b"GET /q HTTP/1.1\r\nhost: h:1\r\n"));
            for p in parts {
                server.write_all(&p).await.unwrap();
                server.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            if !close {
                // Held open until the client has read its answer.
                let _ = server.read(&mut byte).await;
            }
        });
        let req = request("GET", "/q", "h:1", &[], None);
        let result = exchange(&mut client, &req, false, limit).await;
        drop(client);
        peer.await.unwrap();
        result
    }

    #[tokio::test]
    async fn a_content_length_body_split_across_reads() {
        let a = answer(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 5\r\n\r\nhe",
                b"llo",
            ],
            false,
            100,
        )
        .await
        .unwrap();
        assert_eq!(
            (a.status, a.body.as_slice(), a.reusable),
            (200, &b"hello"[..], true)
        );
        assert_eq!(a.headers["content-length"], "5");
    }

    #[tokio::test]
    async fn a_chunked_body_with_extensions_and_trailers() {
        let a = answer(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"3;ext=1\r\nabc\r\n",
                b"A\r\n0123",
                b"456789\r\n0\r\nx-trailer: 1\r\n\r\n",
            ],
            false,
            100,
        )
        .await
        .unwrap();
        assert_eq!(a.body, b"abc0123456789");
        assert!(a.reusable);
    }

    #[tokio::test]
    async fn a_body_until_close_ends_the_connection() {
        let a = answer(&[b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"], true, 100)
            .await
            .unwrap();
        assert_eq!((a.body.as_slice(), a.reusable), (&b"all of it"[..], false));
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let a = answer(
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"],
            false,
            100,
        )
        .await
        .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (201, &b"ok"[..]));
    }

    #[tokio::test]
    async fn close_http10_and_extra_bytes_are_not_reusable() {
        for (head, reusable) in [
            (
                &b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n"[..],
                false,
            ),
            (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200",
                false,
            ),
            (
                b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                true,
            ),
        ] {
            let a = answer(&[head], false, 100).await.unwrap();
            assert_eq!(a.reusable, reusable, "{}", String::from_utf8_lossy(head));
            assert!(a.body.is_empty());
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_too_large() {
        for parts in [
            &[&b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n"[..]][..],
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n"],
            &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\nabcde\r\n0\r\n\r\n"],
            &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n"],
            &[b"HTTP/1.1 200 OK\r\n\r\n0123456789", b"0"],
        ] {
            let e = answer(parts, true, 10).await.unwrap_err();
            assert!(matches!(e, Http1Error::TooLarge), "{parts:?}: {e}");
        }
    }

    #[tokio::test]
    async fn malformed_answers_are_named() {
        for (parts, why) in [
            (
                &[&b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..]][..],
                "differing",
            ),
            (
                &[b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n"],
                "Content-Length",
            ),
            (
                &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nxyz\r\n"],
                "chunk size",
            ),
            (
                &[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"],
                "longer than its size",
            ),
            (
                &[b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort"],
                "closed within the body",
            ),
            (&[b"HTTP/1.1 200 OK\r\ncontent-"], "closed within the head"),
            (&[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"], "101"),
            (&[b"NOT HTTP\r\n\r\n"], "head"),
        ] {
            let e = answer(parts, true, 100).await.unwrap_err();
            assert!(
                matches!(&e, Http1Error::Malformed(m) if m.contains(why)),
                "{parts:?}: {e}"
            );
        }
        let huge = [b"HTTP/1.1 200 OK\r\nx: ".to_vec(), vec![b'a'; MAX_HEAD]].concat();
        let e = answer(&[&huge], true, 100).await.unwrap_err();
        assert!(
            matches!(&e, Http1Error::Malformed(m) if m.contains("longer than")),
            "{e}"
        );
    }

    /// The process's resident memory in bytes (Linux).
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[tokio::test]
    async fn a_declared_length_costs_memory_only_as_the_bytes_come() {
        let (mut client, mut server) = duplex(1 << 16);
        let peer = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                server.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            // 512 MiB declared, three bytes sent, then nothing.
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 536870912\r\n\r\nabc";
            server.write_all(head).await.unwrap();
            std::future::pending::<()>().await;
        });
        let before = resident();
        let req = request("GET", "/q", "h:1", &[], None);
        let exchange = exchange(&mut client, &req, false, 1 << 30);
        tokio::pin!(exchange);
        tokio::select! {
            r = &mut exchange => panic!("a stalled body ended: {r:?}"),
            () = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
        }
        let grown = resident().saturating_sub(before);
        assert!(
            grown < 64 << 20,
            "{grown} bytes resident for 3 bytes received"
        );
        peer.abort();
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_answer_can_be_retried() {
        let e = answer(&[], true, 100).await.unwrap_err();
        assert!(matches!(e, Http1Error::ClosedBeforeAnswer), "{e}");
    }

    #[tokio::test]
    async fn an_idle_connection_is_checked_without_waiting() {
        let (mut client, mut server) = duplex(64);
        assert!(idle(&mut client), "nothing to read: still open");
        server.write_all(b"x").await.unwrap();
        assert!(!idle(&mut client), "unasked-for bytes");
        let (mut client, server) = duplex(64);
        drop(server);
        assert!(!idle(&mut client), "closed by the peer");
    }

    #[test]
    fn requests_carry_host_headers_and_a_length_with_a_body() {
        let r = request(
            "POST",
            "/v2/x?y=1",
            "[::1]:9",
            &[("accept", "application/json")],
            Some(b"{}"),
        );
        assert_eq!(
            r,
            b"POST /v2/x?y=1 HTTP/1.1\r\nhost: [::1]:9\r\naccept: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
        let r = request("GET", "/", "h:1", &[], None);
        assert_eq!(r, b"GET / HTTP/1.1\r\nhost: h:1\r\n\r\n");
        let r = request("POST", "/", "h:1", &[], None);
        assert_eq!(
            r,
            b"POST / HTTP/1.1\r\nhost: h:1\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
