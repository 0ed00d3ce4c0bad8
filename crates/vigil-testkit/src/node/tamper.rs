//! What a malicious node does to its answers to `quotes/integrity` ([`Tamper`]). Each mode
//! changes one thing in a genuine answer, so a test can name the check that must catch
//! it: the quote's signature, its nonce and selection (the TPM's word), the IMA list
//! against PCR 10 (the log's word), or the body itself (the verifier's reading of it).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame};
use serde_json::Value;
use vigil_core::tpm::quote::KeylimeQuote;

use super::Body;

/// How a malicious node corrupts its answers to `quotes/integrity`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Tamper {
    /// Genuine answers.
    #[default]
    None,
    /// The quote's signature with one bit flipped.
    QuoteSignature,
    /// The signed `TPMS_ATTEST` with one bit of its PCR digest flipped (the signature
    /// left as the TPM made it).
    QuoteAttest,
    /// A genuine quote over another PCR selection than requested: every requested PCR
    /// moved up by one (PCR 10 → 11, PCR 16 → 17).
    MovedSelection,
    /// The last genuine answer served again: a genuine quote over an earlier round's
    /// nonce (genuine answers until there is one).
    ReplayedNonce,
    /// A genuine quote over a nonce the verifier never sent.
    ForeignNonce,
    /// The first entry of the answer's IMA list left out (when it has one).
    ImaEntryRemoved,
    /// The file digest of the answer's last IMA entry replaced by this one (hex), the
    /// entry's template hash and PCR 10 left as they are: a measured file passed off
    /// as an allowed one.
    ImaDigest(String),
    /// The answer's last two IMA entries swapped (when it has two).
    ImaReordered,
    /// This entry (`template digest name [data]`, well formed, with its template hash)
    /// appended to the answer's IMA list without extending PCR 10.
    ImaForged(String),
    /// The answer cut in the middle: not JSON.
    MalformedEnvelope,
    /// The envelope with fields of the wrong JSON types (the IMA list an array of
    /// lines, its entry number a string).
    WrongTypes,
    /// A valid envelope whose IMA list pads it to at least this many bytes, chunked.
    Oversized(usize),
    /// A valid envelope's start, then IMA lines forever, chunked, as fast as read.
    EndlessBody,
    /// The genuine answer, one byte every this often.
    SlowBody(Duration),
}

/// A well-formed IMA line that pads bodies (JSON-escaped: it goes inside a string).
const PAD_LINE: &str = concat!(
    "10 0000000000000000000000000000000000000000 ima-ng ",
    "sha256:0000000000000000000000000000000000000000000000000000000000000000 /padding\\n"
);

/// Padding is streamed in chunks of this many lines.
const PAD_LINES_PER_CHUNK: usize = 512;

impl Tamper {
    /// The nonce and PCR mask the node quotes over, for the verifier's `nonce` and
    /// `mask`.
    pub(super) fn quoted(&self, nonce: &str, mask: u32) -> (String, u32) {
        match self {
            Self::ForeignNonce => ("a-nonce-the-verifier-never-sent".to_owned(), mask),
            Self::MovedSelection => (nonce.to_owned(), (mask << 1) & 0x00ff_ffff),
            _ => (nonce.to_owned(), mask),
        }
    }

    /// Doctors the quote and the IMA lines of an answer; whether anything changed.
    pub(super) fn doctor(&self, quote: &mut KeylimeQuote, lines: &mut Vec<String>) -> bool {
        fn flip_last(bytes: &mut [u8]) -> bool {
            bytes.last_mut().map(|b| *b ^= 1).is_some()
        }
        match self {
            Self::QuoteSignature => flip_last(&mut quote.signature),
            Self::QuoteAttest => flip_last(&mut quote.attest),
            Self::ImaEntryRemoved if !lines.is_empty() => {
                lines.remove(0);
                true
            }
            Self::ImaDigest(digest) => match lines.last_mut() {
                Some(line) => {
                    let doctored = with_file_digest(line, digest);
                    let changed = doctored != *line;
                    *line = doctored;
                    changed
                }
                None => false,
            },
            Self::ImaReordered if lines.len() >= 2 => {
                let n = lines.len();
                lines.swap(n - 2, n - 1);
                lines[n - 2] != lines[n - 1]
            }
            Self::ImaForged(entry) => {
                lines.push(super::ima_line(entry));
                true
            }
            _ => false,
        }
    }

    /// The body served instead of `answer` (the envelope as the node would send it),
    /// for the modes that corrupt the body itself; `None` serves `answer`.
    pub(super) fn body(&self, answer: &Bytes, last_genuine: Option<&Bytes>) -> Option<Body> {
        match self {
            Self::ReplayedNonce => last_genuine.map(|b| Full::new(b.clone()).boxed()),
            Self::MalformedEnvelope => Some(Full::new(answer.slice(..answer.len() / 2)).boxed()),
            Self::WrongTypes => {
                let mut v: Value = serde_json::from_slice(answer).expect("the node's own JSON");
                let r = &mut v["results"];
                let lines: Vec<Value> = r["ima_measurement_list"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .map(Value::from)
                    .collect();
                r["ima_measurement_list"] = Value::Array(lines);
                r["ima_measurement_list_entry"] =
                    Value::from(r["ima_measurement_list_entry"].to_string());
                Some(Full::new(Bytes::from(v.to_string())).boxed())
            }
            Self::Oversized(size) => {
                let (start, end) = split_at_ima_list(answer);
                let pad = pad_chunk();
                let chunks = size.div_ceil(pad.len());
                let body = std::iter::once(start)
                    .chain(std::iter::repeat_n(pad, chunks))
                    .chain(std::iter::once(end));
                Some(stream(body, Duration::ZERO))
            }
            Self::EndlessBody => {
                let (start, _) = split_at_ima_list(answer);
                let body = std::iter::once(start).chain(std::iter::repeat(pad_chunk()));
                Some(stream(body, Duration::ZERO))
            }
            Self::SlowBody(interval) => {
                let answer = answer.clone();
                let bytes = (0..answer.len()).map(move |i| answer.slice(i..=i));
                Some(stream(bytes, *interval))
            }
            _ => None,
        }
    }
}

/// `line` (`pcr template-hash template alg:digest …`) with its file digest replaced.
fn with_file_digest(line: &str, digest: &str) -> String {
    let mut fields: Vec<String> = line.split(' ').map(str::to_owned).collect();
    if let Some(field) = fields.get_mut(3) {
        if let Some((alg, _)) = field.split_once(':') {
            *field = format!("{alg}:{digest}");
        }
    }
    fields.join(" ")
}

/// The answer's JSON before and after the value of its IMA list (the list itself
/// dropped), so a body can be made of any list streamed between the two.
fn split_at_ima_list(answer: &Bytes) -> (Bytes, Bytes) {
    const MARK: &str = "@@IMA-LIST@@";
    let mut v: Value = serde_json::from_slice(answer).expect("the node's own JSON");
    v["results"]["ima_measurement_list"] = Value::from(MARK);
    let text = v.to_string();
    let (start, end) = text.split_once(MARK).expect("the mark is in the JSON");
    (Bytes::from(start.to_owned()), Bytes::from(end.to_owned()))
}

fn pad_chunk() -> Bytes {
    Bytes::from(PAD_LINE.repeat(PAD_LINES_PER_CHUNK))
}

/// A chunked body of `chunks`, `interval` apart. The producer stops when the reader
/// hangs up, so an endless body costs nothing once the verifier has given up on it.
fn stream(chunks: impl Iterator<Item = Bytes> + Send + 'static, interval: Duration) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(chunk).await.is_err() {
                return;
            }
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
        }
    });
    Channel(rx).boxed()
}

/// A body fed by a channel, ending when the sender does.
struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_digest_is_replaced_in_place() {
        let line = format!(
            "10 {} ima-ng sha256:{} /usr/bin/a",
            "1".repeat(40),
            "2".repeat(64)
        );
        let got = with_file_digest(&line, &"3".repeat(64));
        assert_eq!(
            got,
            format!(
                "10 {} ima-ng sha256:{} /usr/bin/a",
                "1".repeat(40),
                "3".repeat(64)
            )
        );
    }

    #[test]
    fn the_ima_list_splits_a_valid_envelope() {
        let answer = Bytes::from(
            r#"{"code":200,"results":{"quote":"r","ima_measurement_list":"a\n","x":1}}"#,
        );
        let (start, end) = split_at_ima_list(&answer);
        let padded = [&start[..], PAD_LINE.as_bytes(), &end[..]].concat();
        let v: Value = serde_json::from_slice(&padded).unwrap();
        assert_eq!(v["results"]["quote"], "r");
        assert_eq!(v["results"]["x"], 1);
        assert!(v["results"]["ima_measurement_list"]
            .as_str()
            .unwrap()
            .ends_with("/padding\n"));
    }
}
