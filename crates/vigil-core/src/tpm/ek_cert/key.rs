//! Subject public keys: reading a SubjectPublicKeyInfo (RSA, EC on P-256 and P-384)
//! into a form that compares by key material, and the check that an EK certificate
//! certifies a given EK, whatever form the EK arrives in.

use super::ber::{oid_to_string, tag, BerError, Notes, Reader, Tlv};
use super::cert::EkCert;
use crate::tpm::public::TpmPublic;

/// An elliptic curve Vigil verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
}

/// A certificate's subject public key, normalised for comparison: RSA integers
/// without leading zeros, EC points uncompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertPublicKey {
    /// RSA.
    Rsa {
        /// Modulus, big-endian, minimal.
        modulus: Vec<u8>,
        /// Public exponent, big-endian, minimal.
        exponent: Vec<u8>,
    },
    /// EC on a supported curve.
    Ec {
        /// The curve.
        curve: EcCurve,
        /// SEC1 uncompressed point (`04 || x || y`).
        point: Vec<u8>,
    },
    /// A key Vigil cannot use: why.
    Unsupported(String),
}

impl CertPublicKey {
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Rsa { modulus, .. } => format!("RSA-{}", modulus.len() * 8),
            Self::Ec { curve, .. } => format!("EC {curve:?}"),
            Self::Unsupported(why) => why.clone(),
        }
    }
}

fn strip_zeros(v: &[u8]) -> Vec<u8> {
    v[v.iter().take_while(|&&b| b == 0).count()..].to_vec()
}

pub(super) fn parse_spki(t: &Tlv<'_>, notes: &mut Notes) -> Result<CertPublicKey, BerError> {
    const WHAT: &str = "subjectPublicKeyInfo";
    let mut r = t.check_tag(tag::SEQUENCE, WHAT)?.reader();
    let alg = r.next_tagged(notes, tag::SEQUENCE, WHAT)?;
    let bits = r.next_tagged(notes, tag::BIT_STRING, WHAT)?;
    r.finish(WHAT)?;
    let mut a = alg.reader();
    let oid = oid_to_string(a.next_tagged(notes, tag::OID, WHAT)?.content);
    let params = if a.is_empty() {
        None
    } else {
        Some(a.next(notes)?)
    };
    let key = bits.bit_string(notes, WHAT)?;
    Ok(match oid.as_str() {
        "1.2.840.113549.1.1.1" => {
            let mut kr = Reader::new(key);
            // Offsets inside the BIT STRING are relative; good enough for a note.
            let seq = kr.next_tagged(notes, tag::SEQUENCE, "RSAPublicKey")?;
            let mut k = seq.reader();
            let n = k.next_tagged(notes, tag::INTEGER, "RSA modulus")?;
            let e = k.next_tagged(notes, tag::INTEGER, "RSA exponent")?;
            k.finish("RSAPublicKey")?;
            CertPublicKey::Rsa {
                modulus: strip_zeros(n.integer(notes, "RSA modulus")?),
                exponent: strip_zeros(e.integer(notes, "RSA exponent")?),
            }
        }
        "1.2.840.10045.2.1" => {
            let curve = params
                .filter(|p| p.tag == tag::OID)
                .map(|p| oid_to_string(p.content));
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => ec_key(EcCurve::P256, key),
                Some("1.3.132.0.34") => ec_key(EcCurve::P384, key),
                Some(other) => CertPublicKey::Unsupported(format!("EC key on curve {other}")),
                None => CertPublicKey::Unsupported("EC key without a named curve".into()),
            }
        }
        other => CertPublicKey::Unsupported(format!("public key algorithm {other}")),
    })
}

/// Decodes (and so validates) an EC point, keeping it uncompressed.
fn ec_key(curve: EcCurve, sec1: &[u8]) -> CertPublicKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = match curve {
        EcCurve::P256 => p256::PublicKey::from_sec1_bytes(sec1)
            .map(|k| k.to_encoded_point(false).as_bytes().to_vec()),
        EcCurve::P384 => p384::PublicKey::from_sec1_bytes(sec1)
            .map(|k| k.to_encoded_point(false).as_bytes().to_vec()),
    };
    match point {
        Ok(point) => CertPublicKey::Ec { curve, point },
        Err(_) => CertPublicKey::Unsupported(format!("invalid {curve:?} point")),
    }
}

/// The EK certificate does not certify the EK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyMatchError {
    /// The keys differ.
    #[error("EK certificate '{subject}' does not certify this EK: {detail}")]
    Mismatch {
        /// The certificate's subject.
        subject: String,
        /// How they differ.
        detail: String,
    },
    /// The EK's public key cannot be read or is of an unsupported kind.
    #[error("the EK public key is unusable: {0}")]
    BadEk(String),
}

impl EkCert {
    /// Checks that this certificate certifies the EK `ek` (its public area as the TPM
    /// gives it). Compares key material, as Keylime's registrar compares the two
    /// SubjectPublicKeyInfos after re-encoding.
    pub fn check_tpm_public(&self, ek: &TpmPublic) -> Result<(), KeyMatchError> {
        let spki = ek
            .to_spki_der()
            .map_err(|e| KeyMatchError::BadEk(e.to_string()))?;
        self.check_spki(&spki)
    }

    /// Checks the EK given as bytes in any form operators have: a `TPM2B_PUBLIC`
    /// (`tpm2_createek -u`, Keylime's `ek_tpm`), or a SubjectPublicKeyInfo in PEM or DER.
    pub fn check_ek_public(&self, bytes: &[u8]) -> Result<(), KeyMatchError> {
        let text = std::str::from_utf8(bytes).ok();
        if let Some(text) = text.filter(|t| t.contains("-----BEGIN")) {
            let (_, der) = der::pem::decode_vec(text.trim().as_bytes())
                .map_err(|e| KeyMatchError::BadEk(format!("bad PEM: {e}")))?;
            return self.check_spki(&der);
        }
        // A TPM2B_PUBLIC starts with its size, never 0x30xx (over 12 KiB).
        if bytes.first() == Some(&tag::SEQUENCE) {
            return self.check_spki(bytes);
        }
        let ek = TpmPublic::parse_tpm2b(bytes).map_err(|e| KeyMatchError::BadEk(e.to_string()))?;
        self.check_tpm_public(&ek)
    }

    /// Checks that this certificate holds the key of a DER SubjectPublicKeyInfo.
    pub fn check_spki(&self, spki_der: &[u8]) -> Result<(), KeyMatchError> {
        let mut notes = Notes::default();
        let theirs = Reader::new(spki_der)
            .next(&mut notes)
            .and_then(|t| parse_spki(&t, &mut notes))
            .map_err(|e| KeyMatchError::BadEk(e.message))?;
        if let CertPublicKey::Unsupported(why) = &theirs {
            return Err(KeyMatchError::BadEk(why.clone()));
        }
        let detail = match (&self.public_key, &theirs) {
            (a, b) if a == b => return Ok(()),
            (CertPublicKey::Rsa { modulus: a, .. }, CertPublicKey::Rsa { modulus: b, .. })
                if a != b =>
            {
                "the RSA moduli differ".to_string()
            }
            (CertPublicKey::Rsa { .. }, CertPublicKey::Rsa { .. }) => {
                "the RSA exponents differ".to_string()
            }
            (CertPublicKey::Ec { curve: a, .. }, CertPublicKey::Ec { curve: b, .. }) if a == b => {
                "the EC points differ".to_string()
            }
            (a, b) => format!(
                "the certificate holds an {} key, the EK is {}",
                a.describe(),
                b.describe()
            ),
        };
        Err(KeyMatchError::Mismatch {
            subject: self.subject.to_string(),
            detail,
        })
    }
}
