//! Certificate signatures: the AlgorithmIdentifier (PKCS#1 v1.5, RSA-PSS with its
//! parameters, ECDSA) and the check of a signature over the TBSCertificate bytes
//! exactly as they appear in the certificate.

use std::fmt;

use ecdsa::signature::hazmat::PrehashVerifier;

use super::ber::{oid_to_string, tag, BerError, Notes, Reader, Tlv};
use super::cert::EkCert;
use super::key::{CertPublicKey, EcCurve};
use crate::hash::HashAlg;
use crate::tpm::quote::{ecdsa_sig, pkcs1v15, scalar};

/// A certificate's signature algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// RSA PKCS#1 v1.5.
    RsaPkcs1(HashAlg),
    /// RSA-PSS (MGF1 with the same hash).
    RsaPss {
        /// Message and MGF1 hash.
        hash: HashAlg,
        /// Salt length in bytes.
        salt_len: usize,
    },
    /// ECDSA.
    Ecdsa(HashAlg),
    /// Anything else: the OID (and why, for PSS parameters Vigil does not support).
    Unsupported(String),
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RsaPkcs1(h) => write!(f, "RSA PKCS#1 v1.5 with {h}"),
            Self::RsaPss { hash, salt_len } => write!(f, "RSA-PSS with {hash}, salt {salt_len}"),
            Self::Ecdsa(h) => write!(f, "ECDSA with {h}"),
            Self::Unsupported(what) => f.write_str(what),
        }
    }
}

fn hash_from_oid(oid: &str) -> Option<HashAlg> {
    Some(match oid {
        "1.3.14.3.2.26" => HashAlg::Sha1,
        "2.16.840.1.101.3.4.2.1" => HashAlg::Sha256,
        "2.16.840.1.101.3.4.2.2" => HashAlg::Sha384,
        "2.16.840.1.101.3.4.2.3" => HashAlg::Sha512,
        _ => return None,
    })
}

const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";

/// Reads an AlgorithmIdentifier: its OID and the algorithm.
pub(super) fn parse_sig_alg(
    t: &Tlv<'_>,
    notes: &mut Notes,
    what: &str,
) -> Result<(String, SignatureAlgorithm), BerError> {
    let mut r = t.check_tag(tag::SEQUENCE, what)?.reader();
    let oid = oid_to_string(r.next_tagged(notes, tag::OID, what)?.content);
    let params = if r.is_empty() {
        None
    } else {
        Some(r.next(notes)?)
    };
    r.finish(what)?;
    use SignatureAlgorithm::*;
    let alg = match oid.as_str() {
        "1.2.840.113549.1.1.5" => RsaPkcs1(HashAlg::Sha1),
        "1.2.840.113549.1.1.11" => RsaPkcs1(HashAlg::Sha256),
        "1.2.840.113549.1.1.12" => RsaPkcs1(HashAlg::Sha384),
        "1.2.840.113549.1.1.13" => RsaPkcs1(HashAlg::Sha512),
        "1.2.840.10045.4.1" => Ecdsa(HashAlg::Sha1),
        "1.2.840.10045.4.3.2" => Ecdsa(HashAlg::Sha256),
        "1.2.840.10045.4.3.3" => Ecdsa(HashAlg::Sha384),
        "1.2.840.10045.4.3.4" => Ecdsa(HashAlg::Sha512),
        OID_RSA_PSS => match params {
            Some(p) => parse_pss_params(&p, notes)?,
            None => Unsupported("RSA-PSS without parameters".into()),
        },
        _ => Unsupported(oid.clone()),
    };
    Ok((oid, alg))
}

/// RSASSA-PSS-params: every field has a SHA-1 default; Vigil needs MGF1 over the
/// message hash (the only combination in use).
fn parse_pss_params(p: &Tlv<'_>, notes: &mut Notes) -> Result<SignatureAlgorithm, BerError> {
    const WHAT: &str = "RSA-PSS parameters";
    let mut r = p.check_tag(tag::SEQUENCE, WHAT)?.reader();
    fn alg_oid<'a>(t: Tlv<'a>, notes: &mut Notes) -> Result<(String, Option<Tlv<'a>>), BerError> {
        let mut a = t.reader().next_tagged(notes, tag::SEQUENCE, WHAT)?.reader();
        let oid = oid_to_string(a.next_tagged(notes, tag::OID, WHAT)?.content);
        let params = if a.is_empty() {
            None
        } else {
            Some(a.next(notes)?)
        };
        Ok((oid, params))
    }
    let mut hash = HashAlg::Sha1;
    let mut mgf_hash = HashAlg::Sha1;
    let mut salt_len = 20;
    if let Some(t) = r.optional(notes, tag::explicit(0))? {
        let (oid, _) = alg_oid(t, notes)?;
        match hash_from_oid(&oid) {
            Some(h) => hash = h,
            None => {
                return Ok(SignatureAlgorithm::Unsupported(format!(
                    "RSA-PSS with hash {oid}"
                )))
            }
        }
    }
    if let Some(t) = r.optional(notes, tag::explicit(1))? {
        let (oid, params) = alg_oid(t, notes)?;
        let h = params
            .filter(|_| oid == "1.2.840.113549.1.1.8")
            .and_then(|p| {
                let mut a = p.reader();
                let oid = oid_to_string(a.next_tagged(notes, tag::OID, WHAT).ok()?.content);
                hash_from_oid(&oid)
            });
        match h {
            Some(h) => mgf_hash = h,
            None => {
                return Ok(SignatureAlgorithm::Unsupported(
                    "RSA-PSS with an unsupported mask generation function".into(),
                ))
            }
        }
    }
    if let Some(t) = r.optional(notes, tag::explicit(2))? {
        let i = t.reader().next_tagged(notes, tag::INTEGER, WHAT)?;
        let v = i.integer(notes, WHAT)?;
        salt_len = match v {
            [] => 0,
            _ if v.len() <= 2 => v.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b)),
            _ => return Err(i.error("RSA-PSS salt length too large")),
        };
    }
    if mgf_hash != hash {
        return Ok(SignatureAlgorithm::Unsupported(format!(
            "RSA-PSS with {hash} and MGF1 over {mgf_hash}"
        )));
    }
    Ok(SignatureAlgorithm::RsaPss { hash, salt_len })
}

/// Why one signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SigFailure {
    UnsupportedAlgorithm(String),
    UnsupportedKey(String),
    AlgorithmMismatch,
    WrongKeyType,
    Invalid,
}

fn hash_is_supported(h: HashAlg) -> bool {
    // SM3 has no X.509 signature OID here; the match above never yields it.
    h != HashAlg::Sm3_256
}

fn verify_signature(
    key: &CertPublicKey,
    alg: &SignatureAlgorithm,
    tbs: &[u8],
    sig: &[u8],
) -> Result<(), SigFailure> {
    use SignatureAlgorithm as A;
    match (key, alg) {
        (_, A::Unsupported(what)) => Err(SigFailure::UnsupportedAlgorithm(what.clone())),
        (CertPublicKey::Unsupported(why), _) => Err(SigFailure::UnsupportedKey(why.clone())),
        (CertPublicKey::Rsa { modulus, exponent }, A::RsaPkcs1(h) | A::RsaPss { hash: h, .. }) => {
            if !hash_is_supported(*h) {
                return Err(SigFailure::UnsupportedAlgorithm(h.to_string()));
            }
            let key = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(modulus),
                rsa::BigUint::from_bytes_be(exponent),
            )
            .map_err(|e| SigFailure::UnsupportedKey(format!("RSA key: {e}")))?;
            // Some signers drop leading zero bytes of the signature; the rsa crate
            // wants exactly the modulus length.
            let size = rsa::traits::PublicKeyParts::size(&key);
            let sig = scalar(sig, size).ok_or(SigFailure::Invalid)?;
            let digest = h.hash(tbs);
            let ok = match alg {
                A::RsaPss { salt_len, .. } => {
                    key.verify(pss(*h, *salt_len), digest.as_bytes(), &sig)
                }
                _ => key.verify(pkcs1v15(*h), digest.as_bytes(), &sig),
            };
            ok.map_err(|_| SigFailure::Invalid)
        }
        (CertPublicKey::Ec { curve, point }, A::Ecdsa(h)) => {
            let digest = h.hash(tbs);
            let mut notes = Notes::default();
            let (r, s) = Reader::new(sig)
                .next_tagged(&mut notes, tag::SEQUENCE, "ECDSA signature")
                .and_then(|seq| {
                    let mut rd = seq.reader();
                    let r = rd.next_tagged(&mut notes, tag::INTEGER, "r")?.content;
                    let s = rd.next_tagged(&mut notes, tag::INTEGER, "s")?.content;
                    rd.finish("ECDSA signature")?;
                    Ok((r, s))
                })
                .map_err(|_| SigFailure::Invalid)?;
            let ok = match curve {
                EcCurve::P256 => {
                    let k = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                        .map_err(|_| SigFailure::UnsupportedKey("invalid P-256 point".into()))?;
                    ecdsa_sig!(p256, 32, r, s)
                        .is_some_and(|s| k.verify_prehash(digest.as_bytes(), &s).is_ok())
                }
                EcCurve::P384 => {
                    let k = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                        .map_err(|_| SigFailure::UnsupportedKey("invalid P-384 point".into()))?;
                    ecdsa_sig!(p384, 48, r, s)
                        .is_some_and(|s| k.verify_prehash(digest.as_bytes(), &s).is_ok())
                }
            };
            ok.then_some(()).ok_or(SigFailure::Invalid)
        }
        _ => Err(SigFailure::WrongKeyType),
    }
}

pub(super) fn pss(h: HashAlg, salt_len: usize) -> rsa::Pss {
    match h {
        HashAlg::Sha1 => rsa::Pss::new_with_salt::<sha1::Sha1>(salt_len),
        HashAlg::Sha384 => rsa::Pss::new_with_salt::<sha2::Sha384>(salt_len),
        HashAlg::Sha512 => rsa::Pss::new_with_salt::<sha2::Sha512>(salt_len),
        HashAlg::Sha256 | HashAlg::Sm3_256 => rsa::Pss::new_with_salt::<sha2::Sha256>(salt_len),
    }
}

impl EkCert {
    /// Checks this certificate's signature with `issuer`'s key.
    pub(super) fn signed_by(&self, issuer: &Self) -> Result<(), SigFailure> {
        if self.sig_oid != self.tbs_sig_oid {
            return Err(SigFailure::AlgorithmMismatch);
        }
        verify_signature(
            &issuer.public_key,
            &self.sig_alg,
            self.tbs_bytes(),
            &self.signature,
        )
    }
}
