//! IMA file signatures (`security.ima` xattr, signature format v2) as they appear in
//! `ima-sig` entries: a 9-byte big-endian header — type, version, hash algorithm, key id
//! (u32), signature size (u16) — then the signature.

/// Why a signature blob was not accepted or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Shorter than its header, or the size field disagrees with the blob's length.
    #[error("malformed ima signature: {0}")]
    Malformed(&'static str),
    /// Not an `EVM_IMA_XATTR_DIGSIG` (3) or portable (5) signature.
    #[error("ima signature type {0} is not a digital signature (3 or 5)")]
    WrongType(u8),
    /// Only version 2 signatures exist in practice.
    #[error("ima signature version {0} is not supported (only 2)")]
    WrongVersion(u8),
    /// A Linux `hash_info` id Keylime does not accept.
    #[error("ima signature hash algorithm id {0} is not supported")]
    UnsupportedHash(u8),
    /// The signature's hash algorithm is not the measured digest's.
    #[error("ima signature uses {sig} but the file digest is {digest}")]
    HashMismatch {
        /// The signature's algorithm.
        sig: &'static str,
        /// The digest's algorithm as written in the log.
        digest: String,
    },
    /// No keyring holds a key with this id.
    #[error("no key with id 0x{0:08x}")]
    UnknownKey(u32),
    /// The key exists but the signature does not verify with it.
    #[error("signature by key 0x{0:08x} does not verify")]
    Invalid(u32),
}

/// A parsed v2 signature header and its signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaSignature<'a> {
    /// 3 (`EVM_IMA_XATTR_DIGSIG`) or 5 (`EVM_XATTR_PORTABLE_DIGSIG`).
    pub sig_type: u8,
    /// Format version (2).
    pub version: u8,
    /// Linux `hash_info` algorithm id.
    pub hash_algo: u8,
    /// Low 32 bits of the signing key's identifier.
    pub keyid: u32,
    /// The signature (PKCS#1 v1.5 for RSA, DER for ECDSA).
    pub signature: &'a [u8],
}

impl<'a> ImaSignature<'a> {
    /// Parses a blob, checking the header as the kernel and Keylime do.
    pub fn parse(blob: &'a [u8]) -> Result<Self, SignatureError> {
        let (&sig_type, rest) = blob
            .split_first()
            .ok_or(SignatureError::Malformed("empty"))?;
        let &version = rest
            .first()
            .ok_or(SignatureError::Malformed("no version"))?;
        if sig_type != 3 && sig_type != 5 {
            return Err(SignatureError::WrongType(sig_type));
        }
        if version != 2 {
            return Err(SignatureError::WrongVersion(version));
        }
        let header = blob
            .get(..9)
            .ok_or(SignatureError::Malformed("header is shorter than 9 bytes"))?;
        let keyid = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
        let size = usize::from(u16::from_be_bytes([header[7], header[8]]));
        let signature = blob.get(9..).unwrap_or_default();
        if signature.len() != size {
            return Err(SignatureError::Malformed(
                "size field does not match the signature length",
            ));
        }
        Ok(Self {
            sig_type,
            version,
            hash_algo: header[2],
            keyid,
            signature,
        })
    }

    /// The hash algorithm's name as IMA writes it in the log (`sha256`), for the ids
    /// Keylime accepts.
    pub fn hash_name(&self) -> Option<&'static str> {
        Some(match self.hash_algo {
            1 => "md5",
            2 => "sha1",
            4 => "sha256",
            5 => "sha384",
            6 => "sha512",
            7 => "sha224",
            18 => "streebog256",
            19 => "streebog512",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(sig_type: u8, version: u8, algo: u8, sig: &[u8]) -> Vec<u8> {
        let mut b = vec![sig_type, version, algo, 0xde, 0xad, 0xbe, 0xef];
        b.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        b.extend_from_slice(sig);
        b
    }

    #[test]
    fn parses_header() {
        let b = blob(3, 2, 4, &[1, 2, 3]);
        let s = ImaSignature::parse(&b).unwrap();
        assert_eq!(s.keyid, 0xdeadbeef);
        assert_eq!(s.hash_name(), Some("sha256"));
        assert_eq!(s.signature, &[1, 2, 3]);
        assert_eq!(
            ImaSignature::parse(&blob(5, 2, 2, &[]))
                .unwrap()
                .hash_name(),
            Some("sha1")
        );
    }

    #[test]
    fn rejects_bad_blobs_without_panicking() {
        assert_eq!(
            ImaSignature::parse(&blob(4, 2, 4, &[1])),
            Err(SignatureError::WrongType(4))
        );
        assert_eq!(
            ImaSignature::parse(&blob(3, 1, 4, &[1])),
            Err(SignatureError::WrongVersion(1))
        );
        let mut long = blob(3, 2, 4, &[1, 2]);
        long.push(0);
        assert!(matches!(
            ImaSignature::parse(&long),
            Err(SignatureError::Malformed(_))
        ));
        let good = blob(3, 2, 4, &[7; 40]);
        for cut in 0..good.len() {
            assert!(ImaSignature::parse(&good[..cut]).is_err());
        }
        assert_eq!(
            ImaSignature::parse(&blob(3, 2, 3, &[]))
                .unwrap()
                .hash_name(),
            None
        );
    }
}
