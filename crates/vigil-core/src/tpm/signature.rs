//! `TPMT_SIGNATURE`: the TPM's signature over an attestation.

use super::codec::{CodecError, Reader, Writer};
use crate::hash::HashAlg;

/// `TPM_ALG_RSASSA`.
pub const ALG_RSASSA: u16 = 0x0014;
/// `TPM_ALG_RSAPSS`.
pub const ALG_RSAPSS: u16 = 0x0016;
/// `TPM_ALG_ECDSA`.
pub const ALG_ECDSA: u16 = 0x0018;

/// A parsed `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSignature<'a> {
    /// RSA PKCS#1 v1.5.
    RsaSsa {
        /// The digest algorithm.
        hash: HashAlg,
        /// The signature.
        sig: &'a [u8],
    },
    /// RSA-PSS (Keylime rejects these; Vigil verifies them only when asked).
    RsaPss {
        /// The digest algorithm.
        hash: HashAlg,
        /// The signature.
        sig: &'a [u8],
    },
    /// ECDSA.
    Ecdsa {
        /// The digest algorithm.
        hash: HashAlg,
        /// r, big-endian.
        r: &'a [u8],
        /// s, big-endian.
        s: &'a [u8],
    },
}

impl<'a> TpmSignature<'a> {
    /// Parses a signature; trailing bytes are an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let alg = r.u16("sigAlg")?;
        let hash_id = r.u16("hash")?;
        let hash = HashAlg::from_tpm_alg_id(hash_id)
            .ok_or_else(|| r.invalid(format!("unknown hash algorithm 0x{hash_id:04x}")))?;
        let out = match alg {
            ALG_RSASSA => Self::RsaSsa {
                hash,
                sig: r.tpm2b("signature")?,
            },
            ALG_RSAPSS => Self::RsaPss {
                hash,
                sig: r.tpm2b("signature")?,
            },
            ALG_ECDSA => Self::Ecdsa {
                hash,
                r: r.tpm2b("signatureR")?,
                s: r.tpm2b("signatureS")?,
            },
            other => {
                return Err(r.invalid(format!("unsupported signature algorithm 0x{other:04x}")))
            }
        };
        r.finish()?;
        Ok(out)
    }

    /// The TPM's encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let mut w = Writer::new("TPMT_SIGNATURE");
        match self {
            Self::RsaSsa { hash, sig } | Self::RsaPss { hash, sig } => {
                let alg = if matches!(self, Self::RsaSsa { .. }) {
                    ALG_RSASSA
                } else {
                    ALG_RSAPSS
                };
                w.u16(alg).u16(hash.tpm_alg_id());
                w.tpm2b(sig, "signature")?;
            }
            Self::Ecdsa { hash, r, s } => {
                w.u16(ALG_ECDSA).u16(hash.tpm_alg_id());
                w.tpm2b(r, "signatureR")?;
                w.tpm2b(s, "signatureS")?;
            }
        }
        Ok(w.finish())
    }

    /// The digest algorithm signed with.
    pub fn hash(&self) -> HashAlg {
        match self {
            Self::RsaSsa { hash, .. } | Self::RsaPss { hash, .. } | Self::Ecdsa { hash, .. } => {
                *hash
            }
        }
    }
}
