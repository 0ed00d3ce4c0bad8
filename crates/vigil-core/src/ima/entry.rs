//! One line of `ascii_runtime_measurements` as a zero-copy [`ImaEntry`].
//!
//! Fields are cut exactly where Keylime cuts them (Python `str.split(" ", maxsplit=n)`):
//! - the line: `<pcr> <template-hash> <template-name> <rest>`;
//! - `ima`, `ima-ng`: `<digest> <name>`, the name being everything after the first
//!   space (it may itself contain spaces);
//! - `ima-sig`, `ima-buf`: `<digest> <name> <sig or buf>`, the last field being
//!   everything after the second space (possibly empty: an `ima-sig` entry without a
//!   signature ends with a space).
//!
//! Hex fields follow Python's `bytes.fromhex` rules (see [`HexBytes`]). The PCR column is
//! kept as text: Keylime does not parse it, it only compares it with `"10"` later
//! (`ima.validation.ima_pcr`).

use std::fmt;

use super::hex::{self, HexError};
use crate::hash::{truncate_for_error, Digest, HashAlg, MAX_DIGEST_LEN};

/// An IMA template Keylime can parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Template {
    /// `ima`: SHA-1/MD5 digest and a name NUL-padded to 256 bytes.
    Ima,
    /// `ima-ng`: digest with its algorithm, and a name.
    ImaNg,
    /// `ima-sig`: as `ima-ng`, plus a (possibly empty) file signature.
    ImaSig,
    /// `ima-buf`: digest, buffer name, and the measured buffer itself.
    ImaBuf,
}

impl Template {
    /// Every template, in a stable order (the order of [`Template::index`]).
    pub const ALL: [Self; 4] = [Self::Ima, Self::ImaNg, Self::ImaSig, Self::ImaBuf];

    /// The template name as it appears in the log (`ima-ng`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ima => "ima",
            Self::ImaNg => "ima-ng",
            Self::ImaSig => "ima-sig",
            Self::ImaBuf => "ima-buf",
        }
    }

    /// Keylime's class name for the template (`ImaNg`), used in its log lines.
    pub const fn mode_name(self) -> &'static str {
        match self {
            Self::Ima => "Ima",
            Self::ImaNg => "ImaNg",
            Self::ImaSig => "ImaSig",
            Self::ImaBuf => "ImaBuf",
        }
    }

    /// Position in [`Template::ALL`], for per-template tables.
    pub const fn index(self) -> usize {
        match self {
            Self::Ima => 0,
            Self::ImaNg => 1,
            Self::ImaSig => 2,
            Self::ImaBuf => 3,
        }
    }

    /// The template for a log name; names are case-sensitive, as in Keylime.
    pub fn from_name(name: &str) -> Option<Self> {
        // Fixed-size array compares compile to integer compares, not `memcmp` calls.
        let b = name.as_bytes();
        if let Ok(a) = <[u8; 6]>::try_from(b) {
            return (&a == b"ima-ng").then_some(Self::ImaNg);
        }
        if let Ok(a) = <[u8; 7]>::try_from(b) {
            return match &a {
                b"ima-sig" => Some(Self::ImaSig),
                b"ima-buf" => Some(Self::ImaBuf),
                _ => None,
            };
        }
        (b == b"ima").then_some(Self::Ima)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A column of a measurement-list line, for error messages. (The PCR column has no
/// variant: Keylime never rejects a line for it, it reports `ima.validation.ima_pcr`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// The whole line.
    Line,
    /// The template-hash column.
    TemplateHash,
    /// The template-name column.
    TemplateName,
    /// The file (or buffer) digest, `alg:hex` or bare hex.
    Digest,
    /// The file path or buffer name.
    Name,
    /// The `ima-sig` signature.
    Signature,
    /// The `ima-buf` buffer.
    Buffer,
}

impl Field {
    /// The column name used in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Line => "line",
            Self::TemplateHash => "template-hash",
            Self::TemplateName => "template-name",
            Self::Digest => "digest",
            Self::Name => "name",
            Self::Signature => "signature",
            Self::Buffer => "buffer",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest line [`ImaEntry::parse`] accepts, so that every field length (plus the
/// two bytes `d-ng` adds) fits the template's `u32` length prefixes.
pub const MAX_ENTRY_LINE: usize = (u32::MAX - 8) as usize;

/// Why a line is not an IMA entry. Every variant makes Keylime raise its `ParserError`,
/// i.e. emit `ima.parser.entry` and leave PCR 10 unextended for that line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Fewer space-separated fields than the line format or template needs.
    #[error("missing {field} field")]
    MissingField {
        /// The first field that is missing.
        field: Field,
    },
    /// A template Keylime has no parser for (e.g. `ima-modsig`).
    #[error("unknown template '{name}'")]
    UnknownTemplate {
        /// The template name as written (shortened if long).
        name: String,
    },
    /// A field that must be hex is not.
    #[error("{field} field is not hex: {source}")]
    BadHex {
        /// The field.
        field: Field,
        /// Where decoding stopped.
        source: HexError,
    },
    /// The digest field has more than one `:`.
    #[error("digest field has {colons} ':' separators, expected at most one")]
    DigestSeparators {
        /// How many `:` were found.
        colons: usize,
    },
    /// A digest without `alg:` prefix whose length is neither SHA-1's nor MD5's.
    #[error("digest of {len} bytes has no algorithm prefix and is neither sha1 (20 bytes) nor md5 (16 bytes)")]
    UnprefixedDigestLength {
        /// Decoded length.
        len: usize,
    },
    /// A digest longer than any hash the kernel supports.
    #[error("digest of {len} bytes is longer than the maximum of {MAX_DIGEST_LEN}")]
    DigestTooLong {
        /// Decoded length.
        len: usize,
    },
    /// An `ima` template name that cannot fit the fixed 256-byte `n` field. The kernel
    /// never writes one (it shortens such names); Keylime fails with an internal error.
    #[error("name of {len} bytes does not fit the 256-byte name field of the ima template")]
    LegacyNameTooLong {
        /// Name length in bytes.
        len: usize,
    },
    /// A line longer than the reader's or the parser's limit.
    #[error("line of {len} bytes or more is too long")]
    LineTooLong {
        /// Line length in bytes (at least this much).
        len: usize,
    },
    /// A line that is not UTF-8 text (Keylime receives the list as JSON text, so it
    /// never sees one; the streaming reader reports it this way).
    #[error("line is not valid UTF-8 (byte offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
}

impl EntryError {
    /// The column the error is about.
    pub fn field(&self) -> Field {
        match self {
            Self::MissingField { field } | Self::BadHex { field, .. } => *field,
            Self::UnknownTemplate { .. } => Field::TemplateName,
            Self::DigestSeparators { .. }
            | Self::UnprefixedDigestLength { .. }
            | Self::DigestTooLong { .. } => Field::Digest,
            Self::LegacyNameTooLong { .. } => Field::Name,
            Self::LineTooLong { .. } | Self::NotUtf8 { .. } => Field::Line,
        }
    }

    /// True for a well-formed line of a template Keylime does not support.
    pub fn is_unknown_template(&self) -> bool {
        matches!(self, Self::UnknownTemplate { .. })
    }
}

/// An [`EntryError`] with the 1-based number of the line it was found on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ima log line {line}: {error}")]
pub struct LineError {
    /// 1-based line number within the batch.
    pub line: usize,
    /// What is wrong with it.
    #[source]
    pub error: EntryError,
}

/// A hex field (template hash, digest, signature, buffer), validated with Python's
/// `bytes.fromhex` rules (either case; ASCII whitespace allowed between byte pairs, as
/// Keylime accepts it) but left undecoded: parsing copies nothing, and the replay loop
/// decodes straight into the template data or a stack buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HexBytes<'a> {
    hex: &'a str,
    len: usize,
    /// Even-length plain hex digits (what the kernel writes), decodable on the fast path.
    plain: bool,
}

impl<'a> HexBytes<'a> {
    #[inline]
    fn parse(field: Field, hex_field: &'a str) -> Result<Self, EntryError> {
        if hex::is_plain_hex(hex_field.as_bytes()) {
            return Ok(Self {
                hex: hex_field,
                len: hex_field.len() / 2,
                plain: true,
            });
        }
        let len =
            hex::decoded_len(hex_field).map_err(|source| EntryError::BadHex { field, source })?;
        Ok(Self {
            hex: hex_field,
            len,
            plain: false,
        })
    }

    /// The field as written.
    pub fn as_hex(&self) -> &'a str {
        self.hex
    }

    /// Decoded length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty field.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the decoded bytes to `out`.
    #[inline]
    pub fn decode_into(&self, out: &mut Vec<u8>) {
        // Validated at parse time; an error here would be a bug, not bad input.
        let res = hex::append_decoded(self.hex, self.plain, out);
        debug_assert!(res.is_ok());
    }

    /// Decodes into the front of `buf` and returns the decoded bytes, or `None` when
    /// they do not fit.
    #[inline]
    pub fn decode_to<'b>(&self, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        if self.len > buf.len() {
            return None;
        }
        let out = buf.get_mut(..self.len)?;
        if self.plain {
            hex::decode_plain(self.hex.as_bytes(), out);
        } else {
            hex::decode_front(self.hex, out).ok()?;
        }
        Some(out)
    }

    /// The decoded bytes as a [`Digest`], when at most 64 bytes long.
    pub fn to_digest(&self) -> Option<Digest> {
        let mut buf = [0u8; MAX_DIGEST_LEN];
        self.decode_to(&mut buf)
            .and_then(|b| Digest::from_slice(b).ok())
    }

    /// The decoded bytes in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        self.decode_into(&mut v);
        v
    }

    /// True when every decoded byte equals `byte` (checked on the text, no decoding).
    fn is_filled_with(&self, byte: u8) -> bool {
        let (hi, lo) = (byte >> 4, byte & 0x0f);
        let digit = |c: u8| char::from(c).to_digit(16).map(|v| v as u8);
        let mut want_hi = true;
        for c in self.hex.bytes() {
            match digit(c) {
                Some(v) => {
                    if v != if want_hi { hi } else { lo } {
                        return false;
                    }
                    want_hi = !want_hi;
                }
                // Whitespace between pairs (validated at parse time).
                None => continue,
            }
        }
        true
    }
}

/// The template-hash column: hex of any length (Keylime accepts any length and only
/// fails the later comparison).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateHash<'a>(HexBytes<'a>);

impl<'a> TemplateHash<'a> {
    /// The column as a hex field.
    pub fn hex(&self) -> &HexBytes<'a> {
        &self.0
    }

    /// The column as written.
    pub fn as_hex(&self) -> &'a str {
        self.0.as_hex()
    }

    /// The decoded hash, or `None` when it is longer than 64 bytes (it then matches no
    /// hash, exactly how Keylime ends up treating it).
    pub fn to_digest(&self) -> Option<Digest> {
        self.0.to_digest()
    }

    /// True when the column is `alg`'s all-zero value: the kernel's marker for a
    /// violation (ToMToU / open-writers) entry. Only the exact length counts, as in
    /// Keylime: 32 zero bytes are not a SHA-1 violation marker.
    pub fn is_violation(&self, alg: HashAlg) -> bool {
        self.0.len == alg.digest_len() && self.0.is_filled_with(0x00)
    }

    /// True when the column is `alg`'s all-ones value, which Keylime also exempts from
    /// the template-hash check.
    pub fn is_all_ones(&self, alg: HashAlg) -> bool {
        self.0.len == alg.digest_len() && self.0.is_filled_with(0xff)
    }

    /// True when the column decodes to exactly `hash`.
    #[inline]
    pub fn matches(&self, hash: &[u8]) -> bool {
        let mut buf = [0u8; MAX_DIGEST_LEN];
        self.0.len == hash.len() && self.0.decode_to(&mut buf).is_some_and(|d| d == hash)
    }

    /// The decoded bytes of any length (allocates; for error reports).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

/// The measured digest: the algorithm exactly as written (it is part of the template
/// data) and the digest bytes (any length up to 64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileDigest<'a> {
    /// The algorithm text before `:` (any text: `sha256`, `sm3_256`, `wp512`, ...), or
    /// `sha1` / `md5` when the field had no prefix and was recognised by its length.
    pub alg: &'a str,
    /// True when `alg` was inferred from a prefix-less digest.
    pub alg_implied: bool,
    /// The digest as a hex field.
    pub value: HexBytes<'a>,
}

impl<'a> FileDigest<'a> {
    #[inline]
    fn parse(field: &'a str) -> Result<Self, EntryError> {
        let colon = find_byte(field.as_bytes(), b':');
        let (alg, hex_part, implied) =
            match colon.and_then(|i| Some((field.get(..i)?, field.get(i + 1..)?))) {
                None => ("", field, true),
                Some((alg, rest)) => (alg, rest, false),
            };
        let prefix = field.len() - hex_part.len();
        let value = HexBytes::parse(Field::Digest, hex_part).map_err(|e| {
            // A second ':' is what made the hex invalid; say so.
            let colons = field.bytes().filter(|&b| b == b':').count();
            match e {
                _ if colons > 1 => EntryError::DigestSeparators { colons },
                EntryError::BadHex { field, source } => EntryError::BadHex {
                    field,
                    source: HexError {
                        offset: source.offset + prefix,
                    },
                },
                other => other,
            }
        })?;
        if value.len > MAX_DIGEST_LEN {
            return Err(EntryError::DigestTooLong { len: value.len });
        }
        let alg = if implied {
            match value.len {
                20 => "sha1",
                16 => "md5",
                len => return Err(EntryError::UnprefixedDigestLength { len }),
            }
        } else {
            alg
        };
        Ok(Self {
            alg,
            alg_implied: implied,
            value,
        })
    }

    /// The digest bytes.
    pub fn to_digest(&self) -> Digest {
        // Parsing guarantees at most 64 bytes, so this always succeeds.
        self.value
            .to_digest()
            .unwrap_or_else(|| HashAlg::Sha1.zero())
    }

    /// Length of the digest in bytes.
    pub fn len(&self) -> usize {
        self.value.len
    }

    /// True for an empty digest (`alg:` with nothing after it).
    pub fn is_empty(&self) -> bool {
        self.value.len == 0
    }

    /// The algorithm as a [`HashAlg`], when it is one Vigil knows.
    pub fn hash_alg(&self) -> Option<HashAlg> {
        HashAlg::from_name(self.alg)
    }
}

/// Size of the `ima-sig` signature header: type, version, hash algorithm (one byte
/// each), key id (4 bytes), signature size (2 bytes, big-endian).
const SIG_HEADER_LEN: usize = 9;

/// Keylime keeps a signature only if it has a full header whose size field accounts for
/// every remaining byte; anything else (including text that is not hex) is treated as
/// no signature at all, which changes the template data.
fn parse_signature(field: &str) -> Option<HexBytes<'_>> {
    if field.is_empty() {
        return None;
    }
    let mut header = [0u8; SIG_HEADER_LEN];
    let len = match hex::decode_front(field, &mut header) {
        Ok(n) | Err(Some(n)) => n,
        Err(None) => return None,
    };
    if len < SIG_HEADER_LEN {
        return None;
    }
    let sig_size = usize::from(u16::from_be_bytes([header[7], header[8]]));
    (SIG_HEADER_LEN + sig_size == len).then(|| HexBytes {
        hex: field,
        len,
        plain: hex::is_plain_hex(field.as_bytes()),
    })
}

/// Index of the first `needle` in `hay`. Short fields (the PCR, the template name) end
/// within a few bytes, where a plain loop beats `memchr`'s setup; longer ones (hashes,
/// paths) go to `memchr`.
#[inline(always)]
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const SHORT: usize = 8;
    let head = hay.get(..SHORT).unwrap_or(hay);
    if let Some(i) = head.iter().position(|&b| b == needle) {
        return Some(i);
    }
    let rest = hay.get(SHORT..)?;
    memchr::memchr(needle, rest).map(|i| i + SHORT)
}

/// Splits at the first space. The space is ASCII, so both halves are on character
/// boundaries.
#[inline]
fn split_space(s: &str) -> Option<(&str, &str)> {
    let i = find_byte(s.as_bytes(), b' ')?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Splits `s` at its first space when everything before it is an even run of plain hex
/// digits, validating them in the same pass. `None` leaves the field to the general
/// path, which gives the same result for any input.
#[inline]
fn split_plain_hex(s: &str) -> Option<(HexBytes<'_>, &str)> {
    let b = s.as_bytes();
    let run = hex::hex_run(b);
    if run % 2 != 0 || b.get(run) != Some(&b' ') {
        return None;
    }
    // Every byte before the space is a hex digit, so this is the first space.
    let field = HexBytes {
        hex: s.get(..run)?,
        len: run / 2,
        plain: true,
    };
    Some((field, s.get(run + 1..)?))
}

/// Fast path for a leading `alg:hex ` digest token (the `ima-ng` family's usual form):
/// the same result as splitting at the first space and [`FileDigest::parse`], or `None`
/// to use those.
#[inline]
fn split_prefixed_digest(fields: &str) -> Option<(FileDigest<'_>, &str)> {
    const MAX_ALG_SCAN: usize = 32;
    let b = fields.as_bytes();
    let stop = b
        .iter()
        .take(MAX_ALG_SCAN)
        .position(|&c| c == b':' || c == b' ')?;
    if b.get(stop) != Some(&b':') {
        return None;
    }
    let (value, rest) = split_plain_hex(fields.get(stop + 1..)?)?;
    if value.len > MAX_DIGEST_LEN {
        return None;
    }
    let digest = FileDigest {
        alg: fields.get(..stop)?,
        alg_implied: false,
        value,
    };
    Some((digest, rest))
}

/// One parsed measurement-list line, borrowing from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImaEntry<'a> {
    /// The PCR column as written (Keylime expects exactly `"10"`).
    pub pcr: &'a str,
    /// The template-hash column.
    pub template_hash: TemplateHash<'a>,
    /// The template.
    pub template: Template,
    /// The file or buffer digest.
    pub digest: FileDigest<'a>,
    /// The path (or buffer name for `ima-buf`).
    pub name: &'a str,
    /// `ima-sig` only: the signature, when present and well-formed.
    pub signature: Option<HexBytes<'a>>,
    /// `ima-buf` only: the measured buffer.
    pub buffer: Option<HexBytes<'a>>,
}

impl<'a> ImaEntry<'a> {
    /// Parses one line without its trailing `\n` (any other trailing byte, a space
    /// included, is part of the line).
    // Inlining into the replay loop avoids moving the ~200-byte result through memory.
    #[inline]
    pub fn parse(line: &'a str) -> Result<Self, EntryError> {
        if line.len() > MAX_ENTRY_LINE {
            return Err(EntryError::LineTooLong { len: line.len() });
        }
        let missing = |field| EntryError::MissingField { field };
        let (pcr, rest) = split_space(line).ok_or(missing(Field::TemplateHash))?;
        // Fast paths find and validate a plain-hex field in one pass; otherwise the
        // field is split off now and validated after the splits, in Keylime's order.
        let (hash, rest) = match split_plain_hex(rest) {
            Some((h, rest)) => (Ok(h), rest),
            None => {
                let (f, rest) = split_space(rest).ok_or(missing(Field::TemplateName))?;
                (Err(f), rest)
            }
        };
        let (template_name, fields) = split_space(rest).ok_or(missing(Field::Digest))?;
        let template_hash = TemplateHash(match hash {
            Ok(h) => h,
            Err(f) => HexBytes::parse(Field::TemplateHash, f)?,
        });
        let template =
            Template::from_name(template_name).ok_or_else(|| EntryError::UnknownTemplate {
                name: truncate_for_error(template_name),
            })?;
        let (digest, after) = match split_prefixed_digest(fields) {
            Some((d, rest)) => (Ok(d), rest),
            None => {
                let (d, rest) = split_space(fields).ok_or(missing(Field::Name))?;
                (Err(d), rest)
            }
        };
        let entry = match template {
            Template::Ima | Template::ImaNg => Self {
                pcr,
                template_hash,
                template,
                digest: digest.or_else(FileDigest::parse)?,
                name: after,
                signature: None,
                buffer: None,
            },
            Template::ImaSig | Template::ImaBuf => {
                let last = if template == Template::ImaSig {
                    Field::Signature
                } else {
                    Field::Buffer
                };
                let (name, tail) = split_space(after).ok_or(missing(last))?;
                let digest = digest.or_else(FileDigest::parse)?;
                let (signature, buffer) = if template == Template::ImaSig {
                    (parse_signature(tail), None)
                } else {
                    (None, Some(HexBytes::parse(Field::Buffer, tail)?))
                };
                Self {
                    pcr,
                    template_hash,
                    template,
                    digest,
                    name,
                    signature,
                    buffer,
                }
            }
        };
        if template == Template::Ima && entry.name.len() > super::template::LEGACY_NAME_MAX {
            return Err(EntryError::LegacyNameTooLong {
                len: entry.name.len(),
            });
        }
        Ok(entry)
    }

    /// The PCR column as a number, when it is one.
    pub fn pcr_index(&self) -> Option<u32> {
        self.pcr.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general path alone (no fast paths), as the reference for them.
    fn parse_general(line: &str) -> Result<ImaEntry<'_>, EntryError> {
        let missing = |field| EntryError::MissingField { field };
        let (pcr, rest) = split_space(line).ok_or(missing(Field::TemplateHash))?;
        let (hash_field, rest) = split_space(rest).ok_or(missing(Field::TemplateName))?;
        let (template_name, fields) = split_space(rest).ok_or(missing(Field::Digest))?;
        let template_hash = TemplateHash(HexBytes::parse(Field::TemplateHash, hash_field)?);
        let template =
            Template::from_name(template_name).ok_or_else(|| EntryError::UnknownTemplate {
                name: truncate_for_error(template_name),
            })?;
        let (digest, after) = split_space(fields).ok_or(missing(Field::Name))?;
        let (name, tail) = match template {
            Template::Ima | Template::ImaNg => (after, ""),
            Template::ImaSig => split_space(after).ok_or(missing(Field::Signature))?,
            Template::ImaBuf => split_space(after).ok_or(missing(Field::Buffer))?,
        };
        let digest = FileDigest::parse(digest)?;
        let (signature, buffer) = match template {
            Template::ImaSig => (parse_signature(tail), None),
            Template::ImaBuf => (None, Some(HexBytes::parse(Field::Buffer, tail)?)),
            _ => (None, None),
        };
        if template == Template::Ima && name.len() > super::super::template::LEGACY_NAME_MAX {
            return Err(EntryError::LegacyNameTooLong { len: name.len() });
        }
        Ok(ImaEntry {
            pcr,
            template_hash,
            template,
            digest,
            name,
            signature,
            buffer,
        })
    }

    #[test]
    fn fast_paths_agree_with_the_general_path() {
        let mut lines = vec![
            IMA_NG.to_owned(),
            "10 7936EB31 ima-ng sha1:BC02 /x".to_owned(),
            "10 7936eb3 ima-ng sha1:bc02 /x".to_owned(),
            "10 7936eb31 ima-ng sha1:bc0 /x".to_owned(),
            "10 79 36 ima-ng sha1:bc02 /x".to_owned(),
            "10 7936\t ima-ng sha1:bc02 /x".to_owned(),
            "10 00 ima-ng sha1:bc:02 /x".to_owned(),
            "10 00 ima-ng :bc02 /x".to_owned(),
            "10 00 ima-ng sha1:bc02".to_owned(),
            "10 00 ima-ng sha1:bc02 ".to_owned(),
            "10 00 ima-sig sha1:bc02 /x".to_owned(),
            "10 00 ima-sig sha1:bc02 /x ".to_owned(),
            "10 00 ima-buf sha1:bc02 /x 0".to_owned(),
            "10 00 ima-buf sha1:zz /x".to_owned(),
            "10 00 ima-buf sha1:zz".to_owned(),
            "10 00 ima-ng \u{e9}:01 /x".to_owned(),
            format!("10 00 ima-ng {}:01 /x", "a".repeat(40)),
            format!("10 00 ima-ng sha512:{} /x", "ab".repeat(65)),
            format!("10 00 ima {} /x", "ab".repeat(20)),
            format!("10 00 ima sha1:{} {}", "ab".repeat(20), "n".repeat(300)),
        ];
        // Every truncation of a realistic line too.
        let sig = "10 1e70a3e1af66f42826ad63b761b4cb9c4df195e1 ima-sig sha256:d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef /usr/bin/dd 030204f3452d23010002abcd";
        lines.extend((0..=sig.len()).map(|n| sig[..n].to_owned()));
        lines.extend((0..=IMA_NG.len()).map(|n| IMA_NG[..n].to_owned()));
        for line in &lines {
            assert_eq!(ImaEntry::parse(line), parse_general(line), "{line}");
        }
        // And random single-byte edits of realistic lines (deterministic xorshift).
        let alphabet = b"0123456789abcdefABCDEF :\t-_/xg";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let mut line = if next(2) == 0 { sig } else { IMA_NG }.as_bytes().to_vec();
            for _ in 0..=next(3) {
                let i = next(line.len());
                match next(3) {
                    0 => line[i] = alphabet[next(alphabet.len())],
                    1 => {
                        line.remove(i);
                    }
                    _ => line.insert(i, alphabet[next(alphabet.len())]),
                }
            }
            let line = String::from_utf8(line).unwrap();
            assert_eq!(ImaEntry::parse(&line), parse_general(&line), "{line}");
        }
    }

    const IMA_NG: &str = "10 7936eb315fb4e74b99e7d461bc5c96049e1ee092 ima-ng sha1:bc026ae66d81713e4e852465e980784dc96651f8 /usr/lib/systemd/systemd";

    #[test]
    fn parses_ima_ng_fields() {
        let e = ImaEntry::parse(IMA_NG).unwrap();
        assert_eq!(e.pcr, "10");
        assert_eq!(e.pcr_index(), Some(10));
        assert_eq!(e.template, Template::ImaNg);
        assert_eq!(e.digest.alg, "sha1");
        assert!(!e.digest.alg_implied);
        assert_eq!(e.digest.hash_alg(), Some(HashAlg::Sha1));
        assert_eq!(
            e.digest.to_digest().to_hex(),
            "bc026ae66d81713e4e852465e980784dc96651f8"
        );
        assert_eq!(e.name, "/usr/lib/systemd/systemd");
        assert_eq!(
            e.template_hash.to_digest().unwrap().to_hex(),
            "7936eb315fb4e74b99e7d461bc5c96049e1ee092"
        );
        assert!(e.signature.is_none() && e.buffer.is_none());
    }

    #[test]
    fn names_keep_spaces_where_keylime_does() {
        // ima-ng: the name is the rest of the line.
        let e = ImaEntry::parse("10 00 ima-ng sha256:00 /a b c").unwrap();
        assert_eq!(e.name, "/a b c");
        // ima-sig: the name stops at the next space; the signature takes the rest.
        let e = ImaEntry::parse("10 00 ima-sig sha256:00 /a b c").unwrap();
        assert_eq!(e.name, "/a");
        assert!(e.signature.is_none());
        let e = ImaEntry::parse("10 00 ima-buf sha256:00 n ab cd").unwrap();
        assert_eq!(e.buffer.unwrap().to_vec(), vec![0xab, 0xcd]);
    }

    #[test]
    fn prefixless_digests_are_sha1_or_md5_by_length() {
        let e_line = format!("10 00 ima-ng {} /x", "11".repeat(20));
        let e = ImaEntry::parse(&e_line).unwrap();
        assert_eq!((e.digest.alg, e.digest.alg_implied), ("sha1", true));
        let e_line = format!("10 00 ima {} /x", "11".repeat(16));
        let e = ImaEntry::parse(&e_line).unwrap();
        assert_eq!(e.digest.alg, "md5");
        let err = ImaEntry::parse(&format!("10 00 ima-ng {} /x", "11".repeat(32))).unwrap_err();
        assert_eq!(err, EntryError::UnprefixedDigestLength { len: 32 });
        assert_eq!(err.field(), Field::Digest);
    }

    #[test]
    fn any_algorithm_name_is_kept_verbatim() {
        for alg in ["streebog512", "wp512", "sm3_256", "md4", ""] {
            let e_line = format!("10 00 ima-ng {alg}:{} /x", "ab".repeat(64));
            let e = ImaEntry::parse(&e_line).unwrap();
            assert_eq!(e.digest.alg, alg);
            assert_eq!(e.digest.len(), 64);
        }
    }

    #[test]
    fn signatures_need_a_consistent_header() {
        // 9-byte header announcing 2 signature bytes, then 2 bytes.
        let good = "0302040000000100020abc";
        let e_line = format!("10 00 ima-sig sha256:00 /x {good}");
        let e = ImaEntry::parse(&e_line).unwrap();
        assert_eq!(e.signature.unwrap().len(), 11);
        for bad in [
            "",
            "0302",
            "03020400000001000201",
            "zz",
            "0302040000000100020abcde",
        ] {
            let e_line = format!("10 00 ima-sig sha256:00 /x {bad}");
            let e = ImaEntry::parse(&e_line).unwrap();
            assert!(e.signature.is_none(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, Field)] = &[
            ("", Field::TemplateHash),
            ("this is text not an ima entry", Field::TemplateHash),
            ("10 00 ima", Field::Digest),
            ("10", Field::TemplateHash),
            ("10 00", Field::TemplateName),
            ("10 00 ima-ng", Field::Digest),
            ("10 00 ima-ng sha1:00", Field::Name),
            ("10 00 ima-sig sha1:00 /x", Field::Signature),
            ("10 00 ima-buf sha1:00 /x", Field::Buffer),
            ("10 0g ima-ng sha1:00 /x", Field::TemplateHash),
            ("10 00 ima-ng sha1:0g /x", Field::Digest),
            ("10 00 ima-ng a:b:00 /x", Field::Digest),
            ("10 00 ima-buf sha1:00 /x 0", Field::Buffer),
            ("10 00 ima-modsig sha1:00 /x", Field::TemplateName),
        ];
        for (line, field) in cases {
            let err = ImaEntry::parse(line).unwrap_err();
            assert_eq!(err.field(), *field, "{line}: {err}");
            assert!(err.to_string().contains(field.as_str()) || err.is_unknown_template());
        }
        assert!(ImaEntry::parse("10 00 ima-modsig sha1:00 /x")
            .unwrap_err()
            .is_unknown_template());
        let long = format!("10 00 ima-ng sha256:{} /x", "00".repeat(65));
        assert_eq!(
            ImaEntry::parse(&long).unwrap_err(),
            EntryError::DigestTooLong { len: 65 }
        );
    }

    #[test]
    fn template_hash_of_any_length_parses() {
        let e_line = format!("10 {} ima-ng sha1:00 /x", "00".repeat(100));
        let e = ImaEntry::parse(&e_line).unwrap();
        assert!(e.template_hash.to_digest().is_none());
        assert_eq!(e.template_hash.to_vec().len(), 100);
        assert!(!e.template_hash.is_violation(HashAlg::Sha1));
        let e = ImaEntry::parse("10  ima-ng sha1:00 /x").unwrap();
        assert!(e.template_hash.to_digest().unwrap().is_empty());
        let e_line = format!("10 {} ima-ng sha1:00 /x", "00".repeat(32));
        let e = ImaEntry::parse(&e_line).unwrap();
        assert!(e.template_hash.is_violation(HashAlg::Sha256));
        assert!(!e.template_hash.is_violation(HashAlg::Sha1));
    }

    #[test]
    fn legacy_names_must_fit_256_bytes() {
        let ok = format!("10 00 ima {} {}", "00".repeat(20), "n".repeat(255));
        assert!(ImaEntry::parse(&ok).is_ok());
        let too_long = format!("10 00 ima {} {}", "00".repeat(20), "n".repeat(256));
        assert_eq!(
            ImaEntry::parse(&too_long).unwrap_err(),
            EntryError::LegacyNameTooLong { len: 256 }
        );
        // ima-ng has no such limit.
        assert!(ImaEntry::parse(&format!("10 00 ima-ng sha1:00 {}", "n".repeat(5000))).is_ok());
    }
}
