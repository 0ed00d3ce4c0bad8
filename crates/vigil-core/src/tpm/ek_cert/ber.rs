//! A lenient reader for definite-length BER, the superset of DER that vendor EK
//! certificates are really written in.
//!
//! It accepts what strict DER decoders refuse (non-minimal lengths, long-form lengths
//! for short values) and records each such deviation as a [`Notes`] entry, so the
//! caller can both read the certificate and say exactly why it is not DER. Values
//! borrow from the input: the original bytes are never re-encoded. Indefinite lengths
//! are refused (no TPM vendor uses them, and they would need end-of-contents scanning).

/// Universal tags used by X.509.
pub(crate) mod tag {
    pub(crate) const BOOLEAN: u8 = 0x01;
    pub(crate) const INTEGER: u8 = 0x02;
    pub(crate) const BIT_STRING: u8 = 0x03;
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const UTF8_STRING: u8 = 0x0c;
    pub(crate) const NUMERIC_STRING: u8 = 0x12;
    pub(crate) const PRINTABLE_STRING: u8 = 0x13;
    pub(crate) const TELETEX_STRING: u8 = 0x14;
    pub(crate) const IA5_STRING: u8 = 0x16;
    pub(crate) const UTC_TIME: u8 = 0x17;
    pub(crate) const GENERALIZED_TIME: u8 = 0x18;
    pub(crate) const VISIBLE_STRING: u8 = 0x1a;
    pub(crate) const UNIVERSAL_STRING: u8 = 0x1c;
    pub(crate) const BMP_STRING: u8 = 0x1e;
    pub(crate) const SEQUENCE: u8 = 0x30;
    pub(crate) const SET: u8 = 0x31;
    /// `[n]` constructed, context-specific.
    pub(crate) const fn explicit(n: u8) -> u8 {
        0xa0 | n
    }
}

/// Why bytes are not BER at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BerError {
    /// Absolute byte offset in the certificate.
    pub(crate) offset: usize,
    /// What is wrong.
    pub(crate) message: String,
}

/// At most this many deviations are kept: enough to explain, bounded for hostile input.
const MAX_NOTES: usize = 16;

/// Deviations from DER seen while reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Notes(pub(crate) Vec<String>);

impl Notes {
    pub(crate) fn push(&mut self, offset: usize, message: impl std::fmt::Display) {
        if self.0.len() < MAX_NOTES {
            self.0.push(format!("{message} at byte {offset}"));
        }
    }
}

/// One tag-length-value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    /// The identifier octet (for high tag numbers, only the first octet).
    pub(crate) tag: u8,
    /// The whole encoding, header included, exactly as in the input.
    pub(crate) raw: &'a [u8],
    /// The contents.
    pub(crate) content: &'a [u8],
    /// Absolute offset of the header.
    pub(crate) offset: usize,
    /// Absolute offset of the contents.
    pub(crate) content_offset: usize,
}

impl<'a> Tlv<'a> {
    /// A reader over the contents of a constructed value.
    pub(crate) fn reader(&self) -> Reader<'a> {
        Reader {
            bytes: self.content,
            pos: 0,
            base: self.content_offset,
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> BerError {
        BerError {
            offset: self.offset,
            message: message.into(),
        }
    }

    /// Fails unless the tag is `expected`.
    pub(crate) fn check_tag(self, expected: u8, what: &str) -> Result<Self, BerError> {
        if self.tag == expected {
            Ok(self)
        } else {
            Err(self.error(format!(
                "{what}: expected tag 0x{expected:02x}, found 0x{:02x}",
                self.tag
            )))
        }
    }

    /// An INTEGER's content bytes, noting a non-minimal encoding.
    pub(crate) fn integer(&self, notes: &mut Notes, what: &str) -> Result<&'a [u8], BerError> {
        let c = self.content;
        match c {
            [] => return Err(self.error(format!("{what}: empty INTEGER"))),
            [0x00, next, ..] if *next < 0x80 => notes.push(
                self.offset,
                format!("{what}: INTEGER with a leading zero byte"),
            ),
            [0xff, next, ..] if *next >= 0x80 => notes.push(
                self.offset,
                format!("{what}: INTEGER with a leading 0xff byte"),
            ),
            _ => {}
        }
        Ok(c)
    }

    /// A BOOLEAN, noting a true that is not 0xFF.
    pub(crate) fn boolean(&self, notes: &mut Notes, what: &str) -> Result<bool, BerError> {
        match self.content {
            [0x00] => Ok(false),
            [0xff] => Ok(true),
            [_] => {
                notes.push(
                    self.offset,
                    format!("{what}: BOOLEAN true that is not 0xff"),
                );
                Ok(true)
            }
            _ => Err(self.error(format!("{what}: BOOLEAN is not one byte"))),
        }
    }

    /// A BIT STRING's bytes; a non-zero unused-bits count is noted (X.509 keys and
    /// signatures are whole bytes).
    pub(crate) fn bit_string(&self, notes: &mut Notes, what: &str) -> Result<&'a [u8], BerError> {
        match self.content.split_first() {
            Some((0, rest)) => Ok(rest),
            Some((n, rest)) if *n < 8 => {
                notes.push(
                    self.offset,
                    format!("{what}: BIT STRING with {n} unused bits"),
                );
                Ok(rest)
            }
            _ => Err(self.error(format!("{what}: malformed BIT STRING"))),
        }
    }
}

/// Reads consecutive TLVs from a slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole input, offsets counted from its start.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            base: 0,
        }
    }

    /// True when every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn error(&self, at: usize, message: impl Into<String>) -> BerError {
        BerError {
            offset: self.base + at,
            message: message.into(),
        }
    }

    /// The tag of the next value, if any.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Reads the next value.
    pub(crate) fn next(&mut self, notes: &mut Notes) -> Result<Tlv<'a>, BerError> {
        let start = self.pos;
        let b = self.bytes;
        let mut i = start;
        let tag = *b
            .get(i)
            .ok_or_else(|| self.error(i, "unexpected end of input"))?;
        i += 1;
        if tag & 0x1f == 0x1f {
            // High tag number: base-128 continuation octets. X.509 never needs them,
            // but skipping them keeps unknown extensions readable.
            loop {
                let t = *b
                    .get(i)
                    .ok_or_else(|| self.error(i, "truncated high tag number"))?;
                i += 1;
                if i - start > 5 {
                    return Err(self.error(start, "tag number too large"));
                }
                if t & 0x80 == 0 {
                    break;
                }
            }
        }
        let first = *b.get(i).ok_or_else(|| self.error(i, "truncated length"))?;
        i += 1;
        let len = if first < 0x80 {
            usize::from(first)
        } else if first == 0x80 {
            return Err(self.error(start, "indefinite length (BER) is not supported"));
        } else {
            let n = usize::from(first & 0x7f);
            if n > 4 {
                return Err(self.error(start, format!("{n}-byte length is too large")));
            }
            let bytes = b
                .get(i..i + n)
                .ok_or_else(|| self.error(i, "truncated length"))?;
            i += n;
            let len = bytes
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
            if bytes[0] == 0 {
                notes.push(self.base + start, "length with leading zero bytes");
            } else if len < 0x80 {
                notes.push(self.base + start, "long-form length for a short value");
            }
            len
        };
        let end = i
            .checked_add(len)
            .filter(|&e| e <= b.len())
            .ok_or_else(|| {
                self.error(
                    start,
                    format!("length {len} runs past the end of the input"),
                )
            })?;
        self.pos = end;
        Ok(Tlv {
            tag,
            raw: &b[start..end],
            content: &b[i..end],
            offset: self.base + start,
            content_offset: self.base + i,
        })
    }

    /// Reads the next value and checks its tag.
    pub(crate) fn next_tagged(
        &mut self,
        notes: &mut Notes,
        tag: u8,
        what: &str,
    ) -> Result<Tlv<'a>, BerError> {
        self.next(notes)?.check_tag(tag, what)
    }

    /// Reads the next value if it has `tag`.
    pub(crate) fn optional(
        &mut self,
        notes: &mut Notes,
        tag: u8,
    ) -> Result<Option<Tlv<'a>>, BerError> {
        if self.peek_tag() == Some(tag) {
            self.next(notes).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fails if bytes are left.
    pub(crate) fn finish(&self, what: &str) -> Result<(), BerError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.error(self.pos, format!("{what}: unexpected trailing data")))
        }
    }
}

/// An OBJECT IDENTIFIER's contents in dotted form (for messages and names).
pub(crate) fn oid_to_string(content: &[u8]) -> String {
    let mut parts: Vec<u128> = Vec::new();
    let mut acc: u128 = 0;
    for &b in content {
        // Saturate rather than overflow on absurd arcs; they are only displayed.
        acc = acc.saturating_mul(128) | u128::from(b & 0x7f);
        if b & 0x80 == 0 {
            parts.push(acc);
            acc = 0;
        }
    }
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let (a, b) = match *p {
                p if p < 40 => (0, p),
                p if p < 80 => (1, p - 40),
                p => (2, p - 80),
            };
            out.push_str(&format!("{a}.{b}"));
        } else {
            out.push_str(&format!(".{p}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths_and_notes_non_minimal_ones() {
        let mut notes = Notes::default();
        let der = [0x04, 0x02, 0xaa, 0xbb];
        let t = Reader::new(&der).next(&mut notes).unwrap();
        assert_eq!(t.content, &[0xaa, 0xbb]);
        assert!(notes.0.is_empty());

        let ber = [0x04, 0x81, 0x02, 0xaa, 0xbb];
        let t = Reader::new(&ber).next(&mut notes).unwrap();
        assert_eq!(t.content, &[0xaa, 0xbb]);
        assert_eq!(t.raw, &ber);
        assert_eq!(notes.0, ["long-form length for a short value at byte 0"]);

        let mut notes = Notes::default();
        let ber = [0x04, 0x82, 0x00, 0x01, 0xaa];
        assert_eq!(Reader::new(&ber).next(&mut notes).unwrap().content, &[0xaa]);
        assert_eq!(notes.0, ["length with leading zero bytes at byte 0"]);
    }

    #[test]
    fn refuses_what_is_not_ber() {
        let mut notes = Notes::default();
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80, 0x00, 0x00],
            &[0x30, 0x05, 0x00],
            &[0x30, 0x85, 1, 0, 0, 0, 0],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(Reader::new(bad).next(&mut notes).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn oids_print_dotted() {
        assert_eq!(
            oid_to_string(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]),
            "1.2.840.113549.1.1.11"
        );
        assert_eq!(oid_to_string(&[0x55, 0x04, 0x03]), "2.5.4.3");
    }
}
