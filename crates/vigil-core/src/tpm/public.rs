//! `TPM2B_PUBLIC` / `TPMT_PUBLIC` for RSA and ECC keys (EKs and AKs): parsing, the TPM
//! name, object attributes, and conversion to a SubjectPublicKeyInfo.

use rsa::pkcs8::EncodePublicKey;

use super::codec::{CodecError, Reader};
use crate::hash::{Digest, HashAlg};

/// `TPM_ALG_RSA`.
pub const ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_ECC`.
pub const ALG_ECC: u16 = 0x0023;
/// `TPM_ALG_NULL`.
pub const ALG_NULL: u16 = 0x0010;
/// `TPM_ECC_NIST_P256`.
pub const ECC_NIST_P256: u16 = 0x0003;
/// `TPM_ECC_NIST_P384`.
pub const ECC_NIST_P384: u16 = 0x0004;

/// `TPMA_OBJECT` bits that matter for attestation keys.
pub mod attributes {
    /// The key cannot be duplicated.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// Its parent cannot change.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// Created inside the TPM.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// Signs only TPM-generated structures (or digests the TPM checked).
    pub const RESTRICTED: u32 = 1 << 16;
    /// A decryption key.
    pub const DECRYPT: u32 = 1 << 17;
    /// A signing key.
    pub const SIGN_ENCRYPT: u32 = 1 << 18;
}

/// The key material of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: modulus and exponent (0 in the structure means 65537).
    Rsa {
        /// Modulus, big-endian.
        modulus: Vec<u8>,
        /// Public exponent.
        exponent: u32,
    },
    /// ECC: curve and point.
    Ecc {
        /// `TPM_ECC_CURVE`.
        curve: u16,
        /// x, big-endian.
        x: Vec<u8>,
        /// y, big-endian.
        y: Vec<u8>,
    },
}

/// A parsed `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// The name algorithm.
    pub name_alg: HashAlg,
    /// `TPMA_OBJECT` bits.
    pub attributes: u32,
    /// The authorization policy digest (the EK template's policy, for EKs).
    pub auth_policy: Vec<u8>,
    /// The key.
    pub key: PublicKey,
    /// The `TPMT_PUBLIC` bytes, for the name.
    raw: Vec<u8>,
}

impl TpmPublic {
    /// Parses a `TPM2B_PUBLIC` (the form tpm2-tools writes and Keylime sends base64).
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, "TPM2B_PUBLIC");
        let inner = r.tpm2b("publicArea")?;
        r.finish()?;
        Self::parse(inner)
    }

    /// Parses a `TPMT_PUBLIC`.
    pub fn parse(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, "TPMT_PUBLIC");
        let kind = r.u16("type")?;
        let name_id = r.u16("nameAlg")?;
        let name_alg = HashAlg::from_tpm_alg_id(name_id)
            .ok_or_else(|| r.invalid(format!("unknown nameAlg 0x{name_id:04x}")))?;
        let attributes = r.u32("objectAttributes")?;
        let auth_policy = r.tpm2b("authPolicy")?.to_vec();
        // TPMT_SYM_DEF_OBJECT: algorithm, then key bits and mode unless NULL.
        if r.u16("symmetric.algorithm")? != ALG_NULL {
            r.u16("symmetric.keyBits")?;
            r.u16("symmetric.mode")?;
        }
        // The scheme: algorithm, then its hash unless NULL.
        if r.u16("scheme.scheme")? != ALG_NULL {
            r.u16("scheme.hashAlg")?;
        }
        let key = match kind {
            ALG_RSA => {
                r.u16("keyBits")?;
                let exponent = match r.u32("exponent")? {
                    0 => 65537,
                    e => e,
                };
                PublicKey::Rsa {
                    modulus: r.tpm2b("unique.rsa")?.to_vec(),
                    exponent,
                }
            }
            ALG_ECC => {
                let curve = r.u16("curveID")?;
                if r.u16("kdf.scheme")? != ALG_NULL {
                    r.u16("kdf.hashAlg")?;
                }
                PublicKey::Ecc {
                    curve,
                    x: r.tpm2b("unique.ecc.x")?.to_vec(),
                    y: r.tpm2b("unique.ecc.y")?.to_vec(),
                }
            }
            other => return Err(r.invalid(format!("unsupported key type 0x{other:04x}"))),
        };
        r.finish()?;
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            key,
            raw: bytes.to_vec(),
        })
    }

    /// The TPM name: `nameAlg` (big-endian) followed by `H_nameAlg(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.tpm_alg_id().to_be_bytes().to_vec();
        name.extend_from_slice(self.name_alg.hash(&self.raw).as_bytes());
        name
    }

    /// The digest part of the name.
    pub fn name_digest(&self) -> Digest {
        self.name_alg.hash(&self.raw)
    }

    /// True when every bit of `mask` is set (e.g. `RESTRICTED | SIGN_ENCRYPT`).
    pub fn has_attributes(&self, mask: u32) -> bool {
        self.attributes & mask == mask
    }

    /// The key as a DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Result<Vec<u8>, CodecError> {
        let bad = |message: String| CodecError::Invalid {
            structure: "TPMT_PUBLIC",
            message,
        };
        match &self.key {
            PublicKey::Rsa { modulus, exponent } => {
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(modulus),
                    rsa::BigUint::from(*exponent),
                )
                .map_err(|e| bad(format!("invalid RSA key: {e}")))?;
                key.to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .map_err(|e| bad(e.to_string()))
            }
            PublicKey::Ecc { curve, x, y } => {
                let mut point = vec![0x04];
                let size = match *curve {
                    ECC_NIST_P256 => 32,
                    ECC_NIST_P384 => 48,
                    other => return Err(bad(format!("unsupported curve 0x{other:04x}"))),
                };
                for c in [x, y] {
                    if c.len() > size {
                        return Err(bad("coordinate longer than the curve".into()));
                    }
                    point.extend(std::iter::repeat_n(0u8, size - c.len()));
                    point.extend_from_slice(c);
                }
                let der = match *curve {
                    ECC_NIST_P256 => p256::PublicKey::from_sec1_bytes(&point)
                        .map_err(|e| bad(format!("invalid P-256 point: {e}")))?
                        .to_public_key_der(),
                    _ => p384::PublicKey::from_sec1_bytes(&point)
                        .map_err(|e| bad(format!("invalid P-384 point: {e}")))?
                        .to_public_key_der(),
                };
                der.map(|d| d.as_bytes().to_vec())
                    .map_err(|e| bad(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/keylime/test-data/files/"
    );

    fn file(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FILES}{name}")).unwrap()
    }

    fn pem_der(name: &str) -> Vec<u8> {
        let text = String::from_utf8(file(name)).unwrap();
        der::pem::decode_vec(text.trim().as_bytes()).unwrap().1
    }

    #[test]
    fn keylime_ak_name_and_spki() {
        let ak = TpmPublic::parse_tpm2b(&file("ak.pub")).unwrap();
        assert_eq!(ak.name(), file("ak.name"));
        assert_eq!(ak.to_spki_der().unwrap(), pem_der("akpub.pem"));
        use attributes::*;
        assert!(ak.has_attributes(RESTRICTED | SIGN_ENCRYPT | FIXED_TPM | FIXED_PARENT));
        assert!(!ak.has_attributes(DECRYPT));
    }

    #[test]
    fn keylime_ek_spki() {
        let ek = TpmPublic::parse_tpm2b(&file("ek.pub")).unwrap();
        assert_eq!(ek.to_spki_der().unwrap(), pem_der("ekpub.pem"));
        assert!(ek.has_attributes(attributes::RESTRICTED | attributes::DECRYPT));
        assert_eq!(ek.auth_policy.len(), 32);
    }

    #[test]
    fn malformed_public_areas_are_errors() {
        let ak = file("ak.pub");
        for cut in 0..ak.len() {
            assert!(TpmPublic::parse_tpm2b(&ak[..cut]).is_err());
        }
        let mut extra = ak.clone();
        extra.push(0);
        assert!(matches!(
            TpmPublic::parse_tpm2b(&extra),
            Err(CodecError::Trailing { .. })
        ));
    }
}
