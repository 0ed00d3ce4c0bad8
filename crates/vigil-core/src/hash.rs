//! Hash algorithms shared by every kind of evidence: TPM PCR banks, IMA digests and
//! template hashes, UEFI event-log digests.
//!
//! [`Digest`] is a fixed-capacity value type (no heap allocation), because digests sit on
//! the hot path of IMA replay where millions are made per second.

use std::fmt;
use std::str::FromStr;

use sha1::Digest as _;

mod block;
pub use block::{blocks_of, pad_message, padded_len, BlockHasher};

/// The largest digest any supported algorithm produces (SHA-512).
pub const MAX_DIGEST_LEN: usize = 64;

/// A hash algorithm Vigil understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    /// SHA-1 (20 bytes).
    Sha1,
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
    /// SM3-256 (32 bytes).
    Sm3_256,
}

impl HashAlg {
    /// Every supported algorithm, in a stable order.
    pub const ALL: [Self; 5] = [
        Self::Sha1,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
        Self::Sm3_256,
    ];

    /// Length of this algorithm's digest in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 | Self::Sm3_256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The name Keylime, IMA and tpm2-tools use (`sha1`, `sha256`, ..., `sm3_256`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Sm3_256 => "sm3_256",
        }
    }

    /// Parses a name as written by Keylime, IMA or tpm2-tools (case-insensitive;
    /// `sm3` is accepted for `sm3_256`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "sha384" => Self::Sha384,
            "sha512" => Self::Sha512,
            "sm3_256" | "sm3" => Self::Sm3_256,
            _ => return None,
        })
    }

    /// The TPM 2.0 `TPM_ALG_ID` of this algorithm.
    pub const fn tpm_alg_id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
            Self::Sm3_256 => 0x0012,
        }
    }

    /// The algorithm for a TPM 2.0 `TPM_ALG_ID`, if it is a supported hash.
    pub const fn from_tpm_alg_id(id: u16) -> Option<Self> {
        Some(match id {
            0x0004 => Self::Sha1,
            0x000B => Self::Sha256,
            0x000C => Self::Sha384,
            0x000D => Self::Sha512,
            0x0012 => Self::Sm3_256,
            _ => return None,
        })
    }

    /// Hashes `data` in one call.
    pub fn hash(self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finalize()
    }

    /// Starts an incremental hash.
    pub fn hasher(self) -> Hasher {
        match self {
            Self::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Self::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Self::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Self::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Self::Sm3_256 => Hasher::Sm3(sm3::Sm3::new()),
        }
    }

    /// The all-zero value a PCR of this bank starts from.
    pub fn zero(self) -> Digest {
        Digest::filled(self, 0x00)
    }

    /// The all-ones value (PCRs 17–23 at reset, and what IMA extends for ToMToU entries).
    pub fn ones(self) -> Digest {
        Digest::filled(self, 0xff)
    }

    /// A TPM PCR extend: `H(pcr || measurement)`.
    pub fn extend(self, pcr: &Digest, measurement: &Digest) -> Digest {
        let mut h = self.hasher();
        h.update(pcr.as_bytes());
        h.update(measurement.as_bytes());
        h.finalize()
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a hash algorithm name Vigil does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash algorithm '{0}' (expected sha1, sha256, sha384, sha512 or sm3_256)")]
pub struct UnknownHashAlg(pub String);

impl FromStr for HashAlg {
    type Err = UnknownHashAlg;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| UnknownHashAlg(s.to_owned()))
    }
}

impl serde::Serialize for HashAlg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for HashAlg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hash of one [`HashAlg`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-1 state.
    Sha1(sha1::Sha1),
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-384 state.
    Sha384(sha2::Sha384),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
    /// SM3 state.
    Sm3(sm3::Sm3),
}

impl Hasher {
    /// Feeds `data` into the hash.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
            Self::Sm3(h) => h.update(data),
        }
    }

    /// Finishes the hash.
    #[inline]
    pub fn finalize(self) -> Digest {
        match self {
            Self::Sha1(h) => Digest::from_array(&h.finalize()),
            Self::Sha256(h) => Digest::from_array(&h.finalize()),
            Self::Sha384(h) => Digest::from_array(&h.finalize()),
            Self::Sha512(h) => Digest::from_array(&h.finalize()),
            Self::Sm3(h) => Digest::from_array(&h.finalize()),
        }
    }
}

/// A digest of up to [`MAX_DIGEST_LEN`] bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    len: u8,
    bytes: [u8; MAX_DIGEST_LEN],
}

/// The error for bytes or hex that cannot be a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// More bytes than any supported digest.
    #[error("digest of {0} bytes is longer than the maximum of {MAX_DIGEST_LEN}")]
    TooLong(usize),
    /// Not valid hexadecimal.
    #[error("digest '{0}' is not valid hexadecimal")]
    BadHex(String),
    /// The wrong length for the algorithm it was declared with.
    #[error("{alg} digest must be {expected} bytes, got {got}")]
    WrongLength {
        /// The declared algorithm.
        alg: HashAlg,
        /// Its digest length.
        expected: usize,
        /// The length found.
        got: usize,
    },
}

impl Digest {
    fn filled(alg: HashAlg, byte: u8) -> Self {
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        bytes[..alg.digest_len()].fill(byte);
        Self {
            len: alg.digest_len() as u8,
            bytes,
        }
    }

    #[inline]
    fn from_array(src: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        bytes[..src.len()].copy_from_slice(src);
        Self {
            len: src.len() as u8,
            bytes,
        }
    }

    /// Copies a digest from raw bytes (any length up to 64, including 0).
    pub fn from_slice(src: &[u8]) -> Result<Self, DigestError> {
        if src.len() > MAX_DIGEST_LEN {
            return Err(DigestError::TooLong(src.len()));
        }
        Ok(Self::from_array(src))
    }

    /// Parses lowercase or uppercase hex (any length up to 128 hex digits).
    pub fn from_hex(hex_str: &str) -> Result<Self, DigestError> {
        let n = hex_str.len() / 2;
        if n > MAX_DIGEST_LEN {
            return Err(DigestError::TooLong(n));
        }
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        hex::decode_to_slice(hex_str, &mut bytes[..n])
            .map_err(|_| DigestError::BadHex(truncate_for_error(hex_str)))?;
        Ok(Self {
            len: n as u8,
            bytes,
        })
    }

    /// Parses hex and checks the length against `alg`.
    pub fn from_hex_for(alg: HashAlg, hex_str: &str) -> Result<Self, DigestError> {
        let d = Self::from_hex(hex_str)?;
        if d.len() != alg.digest_len() {
            return Err(DigestError::WrongLength {
                alg,
                expected: alg.digest_len(),
                got: d.len(),
            });
        }
        Ok(d)
    }

    /// The digest bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Number of bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for the zero-length digest.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when every byte is zero.
    pub fn is_all_zero(&self) -> bool {
        self.as_bytes().iter().all(|&b| b == 0)
    }

    /// Lowercase hex, as Keylime writes digests.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// Shortens attacker-supplied text before it goes into an error message.
pub(crate) fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(
            HashAlg::Sha1.hash(b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            HashAlg::Sha256.hash(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            HashAlg::Sm3_256.hash(b"abc").to_hex(),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(HashAlg::Sha384.hash(b"").len(), 48);
        assert_eq!(HashAlg::Sha512.hash(b"").len(), 64);
    }

    #[test]
    fn extend_matches_definition() {
        let zero = HashAlg::Sha256.zero();
        let m = HashAlg::Sha256.hash(b"x");
        let mut cat = zero.as_bytes().to_vec();
        cat.extend_from_slice(m.as_bytes());
        assert_eq!(
            HashAlg::Sha256.extend(&zero, &m),
            HashAlg::Sha256.hash(&cat)
        );
    }

    #[test]
    fn names_and_ids_round_trip() {
        for alg in HashAlg::ALL {
            assert_eq!(HashAlg::from_name(alg.name()), Some(alg));
            assert_eq!(HashAlg::from_tpm_alg_id(alg.tpm_alg_id()), Some(alg));
            assert_eq!(alg.hash(b"").len(), alg.digest_len());
        }
        assert!("md5".parse::<HashAlg>().is_err());
    }

    #[test]
    fn hex_errors_name_the_input() {
        assert!(matches!(
            Digest::from_hex("zz"),
            Err(DigestError::BadHex(_))
        ));
        assert!(matches!(
            Digest::from_hex("abc"),
            Err(DigestError::BadHex(_))
        ));
        assert!(matches!(
            Digest::from_hex(&"00".repeat(65)),
            Err(DigestError::TooLong(65))
        ));
        assert!(matches!(
            Digest::from_hex_for(HashAlg::Sha1, "00"),
            Err(DigestError::WrongLength { .. })
        ));
    }
}
