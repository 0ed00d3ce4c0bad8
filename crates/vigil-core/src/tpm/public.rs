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
/// `TPM_ALG_AES`.
pub const ALG_AES: u16 = 0x0006;
/// `TPM_ALG_CFB`.
pub const ALG_CFB: u16 = 0x0043;
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

/// `TPMA_OBJECT` of the TCG default EK templates: fixedTPM, fixedParent,
/// sensitiveDataOrigin, adminWithPolicy, restricted, decrypt.
const EK_TEMPLATE_ATTRIBUTES: u32 = 0x0003_00b2;

/// PolicyA-SHA256 of the TCG EK Credential Profile: `PolicySecret(TPM_RH_ENDORSEMENT)`.
const EK_POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

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

/// A storage key's `TPMT_SYM_DEF_OBJECT`: the cipher an EK protects credentials and
/// imported objects with (AES-128-CFB in the TCG default EK templates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymmetricDef {
    /// `TPM_ALG_ID` of the block cipher (`ALG_AES`).
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// `TPM_ALG_ID` of the mode (`ALG_CFB` for storage keys).
    pub mode: u16,
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
    /// The symmetric definition; `None` when it is `TPM_ALG_NULL` (signing keys).
    pub symmetric: Option<SymmetricDef>,
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
        let symmetric = match r.u16("symmetric.algorithm")? {
            ALG_NULL => None,
            algorithm => Some(SymmetricDef {
                algorithm,
                key_bits: r.u16("symmetric.keyBits")?,
                mode: r.u16("symmetric.mode")?,
            }),
        };
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
            symmetric,
            key,
            raw: bytes.to_vec(),
        })
    }

    /// The EK public area the TCG default low-range templates (EK Credential Profile
    /// L-1 for RSA, L-2 for ECC) give for a key known only as a SubjectPublicKeyInfo
    /// (PEM or DER): nameAlg SHA-256, the template's attributes and policy, AES-128-CFB.
    ///
    /// For RSA-2048 and P-256 EKs made from those templates (`tpm2_createek`'s default)
    /// this is the EK's exact public area, name included. Other sizes and curves get the
    /// same parameters, which is what credential encryption needs, but an EK made from
    /// another template (e.g. a high-range one) has other ones: use its `TPM2B_PUBLIC`.
    pub fn ek_from_spki(spki: &[u8]) -> Result<Self, CodecError> {
        use rsa::pkcs8::DecodePublicKey;
        use rsa::traits::PublicKeyParts;
        let bad = |message: String| CodecError::Invalid {
            structure: "SubjectPublicKeyInfo",
            message,
        };
        let der = match std::str::from_utf8(spki) {
            Ok(text) if text.contains("-----BEGIN") => der::pem::decode_vec(text.trim().as_bytes())
                .map(|(_, d)| d)
                .map_err(|e| bad(format!("bad PEM: {e}")))?,
            _ => spki.to_vec(),
        };
        let mut t = Vec::with_capacity(400);
        let push_u16 = |t: &mut Vec<u8>, v: u16| t.extend_from_slice(&v.to_be_bytes());
        let push_2b = |t: &mut Vec<u8>, b: &[u8]| -> Result<(), CodecError> {
            let n = u16::try_from(b.len()).map_err(|_| bad("key too large".into()))?;
            t.extend_from_slice(&n.to_be_bytes());
            t.extend_from_slice(b);
            Ok(())
        };
        let header = |t: &mut Vec<u8>, kind: u16| -> Result<(), CodecError> {
            push_u16(t, kind);
            push_u16(t, HashAlg::Sha256.tpm_alg_id());
            t.extend_from_slice(&EK_TEMPLATE_ATTRIBUTES.to_be_bytes());
            push_2b(t, &EK_POLICY_A_SHA256)?;
            // AES-128-CFB, then scheme NULL.
            for v in [ALG_AES, 128, ALG_CFB, ALG_NULL] {
                push_u16(t, v);
            }
            Ok(())
        };
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(&der) {
            let bits = u16::try_from(k.size() * 8).map_err(|_| bad("RSA key too large".into()))?;
            let e = k.e().to_bytes_be();
            if e.len() > 4 {
                return Err(bad("RSA exponent larger than 32 bits".into()));
            }
            let exponent = e.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b));
            header(&mut t, ALG_RSA)?;
            push_u16(&mut t, bits);
            // The templates write 0 for the default exponent 65537.
            let exponent = if exponent == 65537 { 0 } else { exponent };
            t.extend_from_slice(&exponent.to_be_bytes());
            push_2b(&mut t, &k.n().to_bytes_be())?;
        } else {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            // Public keys from SPKI are never the identity, so both coordinates exist.
            let (curve, sec1) = if let Ok(k) = p256::PublicKey::from_public_key_der(&der) {
                (ECC_NIST_P256, k.to_encoded_point(false).as_bytes().to_vec())
            } else if let Ok(k) = p384::PublicKey::from_public_key_der(&der) {
                (ECC_NIST_P384, k.to_encoded_point(false).as_bytes().to_vec())
            } else {
                return Err(bad("not an RSA, P-256 or P-384 public key".into()));
            };
            // Uncompressed SEC1: 0x04 || x || y.
            let (x, y) = sec1[1..].split_at((sec1.len() - 1) / 2);
            header(&mut t, ALG_ECC)?;
            push_u16(&mut t, curve);
            push_u16(&mut t, ALG_NULL);
            push_2b(&mut t, x)?;
            push_2b(&mut t, y)?;
        }
        Self::parse(&t)
    }

    /// The TPM name: `nameAlg` (big-endian) followed by `H_nameAlg(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.tpm_alg_id().to_be_bytes().to_vec();
        name.extend_from_slice(self.name_alg.hash(&self.raw).as_bytes());
        name
    }

    /// The `TPM2B_PUBLIC` form (2-byte size, then the `TPMT_PUBLIC` bytes as parsed),
    /// what tpm2-tools writes and Keylime's agents send base64-encoded.
    pub fn to_tpm2b(&self) -> Vec<u8> {
        // `raw` came from a TPM2B or was built under its u16 size limit.
        let len = u16::try_from(self.raw.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(self.raw.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.raw);
        out
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
        assert_eq!(ek.to_tpm2b(), file("ek.pub"));
        assert_eq!(ek.to_spki_der().unwrap(), pem_der("ekpub.pem"));
        assert!(ek.has_attributes(attributes::RESTRICTED | attributes::DECRYPT));
        assert_eq!(ek.auth_policy.len(), 32);
        assert_eq!(
            ek.symmetric,
            Some(SymmetricDef {
                algorithm: ALG_AES,
                key_bits: 128,
                mode: ALG_CFB
            })
        );
        let ak = TpmPublic::parse_tpm2b(&file("ak.pub")).unwrap();
        assert_eq!(ak.symmetric, None);
    }

    #[test]
    fn ek_from_spki_rebuilds_the_default_template() {
        let ek = TpmPublic::parse_tpm2b(&file("ek.pub")).unwrap();
        let rebuilt = TpmPublic::ek_from_spki(&file("ekpub.pem")).unwrap();
        assert_eq!(rebuilt, ek);
        assert_eq!(rebuilt.name(), ek.name());
        // DER works too; a non-key does not.
        assert_eq!(TpmPublic::ek_from_spki(&pem_der("ekpub.pem")).unwrap(), ek);
        assert!(TpmPublic::ek_from_spki(b"not a key").is_err());
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
