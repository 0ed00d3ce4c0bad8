//! EK certificates: parsing vendor certificates as they really are, a trust store of
//! vendor CAs, chain verification and the EK public-key match.
//!
//! TPM vendors ship EK certificates that strict DER decoders refuse (non-minimal
//! lengths, BOOLEAN true that is not 0xFF, zero-padded or negative serials, strings
//! outside their type's alphabet), and TPM NV indices pad the certificate with 0x00 or
//! 0xFF. [`EkCert`] reads all of these with a lenient BER reader, keeps the original
//! bytes, records every deviation from DER ([`EkCert::der_issues`]) and lets the caller
//! refuse non-DER input ([`MalformedCertAction::Reject`], Keylime's
//! `malformed_cert_action = reject`). Signatures are always checked over the
//! TBSCertificate bytes exactly as they appear — what the vendor actually signed.
//! (Keylime re-encodes a non-DER certificate through pyasn1 and then checks the
//! signature over the re-encoded bytes, which fails whenever the deviation is inside
//! the signed part.)
//!
//! [`verify`] builds the chain EK certificate → intermediates → a certificate of the
//! [`EkCertStore`]. Like Keylime, any store certificate (even an intermediate) is a
//! trust anchor. Unlike Keylime, intermediates that are not in the store (the TPM's NV
//! chain) can bridge the gap, an issuer whose basicConstraints says it is not a CA is
//! refused, and validity periods are checked when the caller gives a time.

mod ber;
mod time;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use base64::Engine;
use ecdsa::signature::hazmat::PrehashVerifier;
use serde::Serialize;

use self::ber::{oid_to_string, tag, BerError, Notes, Reader, Tlv};
pub use self::time::{format_unix_time, parse_rfc3339};
use super::public::TpmPublic;
use super::quote::{ecdsa_sig, pkcs1v15, scalar};
use crate::hash::HashAlg;

/// Longest chain [`verify`] builds (EK certificate and anchor included).
pub const MAX_CHAIN_LEN: usize = 8;

/// What to do with a certificate that is not DER (Keylime's `malformed_cert_action`:
/// its `warn` and `ignore` both accept, as [`Accept`](Self::Accept) does; warning is
/// the caller's business, with [`EkCert::der_issues`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MalformedCertAction {
    /// Read it leniently and go on (Keylime's default).
    #[default]
    Accept,
    /// Refuse it.
    Reject,
}

/// Why bytes are not a usable certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Neither DER, PEM nor base64 DER.
    #[error("no certificate found (expected DER, PEM or base64 DER)")]
    NoCertificate,
    /// A PEM block or base64 text that does not decode.
    #[error("bad PEM or base64: {0}")]
    Encoding(String),
    /// Not even BER, or not an X.509 certificate.
    #[error("malformed certificate at byte {offset}: {message}")]
    Malformed {
        /// Byte offset in the certificate.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// Bytes after the certificate that are not 0x00/0xFF padding.
    #[error("{extra} bytes after the certificate are not 0x00/0xff padding")]
    Trailing {
        /// How many bytes follow.
        extra: usize,
    },
    /// A non-DER certificate under [`MalformedCertAction::Reject`].
    #[error("certificate '{subject}' is not DER ({}) and malformed certificates are rejected", issues.join("; "))]
    NotDer {
        /// The certificate's subject.
        subject: String,
        /// Every deviation from DER found.
        issues: Vec<String>,
    },
}

impl From<BerError> for CertError {
    fn from(e: BerError) -> Self {
        Self::Malformed {
            offset: e.offset,
            message: e.message,
        }
    }
}

/// One attribute value of a name, compared as Python's `cryptography` does: by OID and
/// decoded text, whatever the string type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum AttrValue {
    Text(String),
    /// A value that is not a string: its TLV bytes.
    Other(Vec<u8>),
}

/// An X.509 distinguished name. Equality is by the attributes (OID and decoded value;
/// order within a multi-valued RDN does not matter), not by bytes, so an issuer written
/// as UTF8String matches a subject written as PrintableString, as in Keylime.
#[derive(Debug, Clone)]
pub struct Name {
    key: Vec<Vec<(String, AttrValue)>>,
    display: String,
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Name {}
impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

fn attr_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

fn parse_name(t: &Tlv<'_>, notes: &mut Notes, what: &str) -> Result<Name, BerError> {
    let t = t.expect(tag::SEQUENCE, what)?;
    let mut key = Vec::new();
    let mut shown = Vec::new();
    let mut rdns = t.reader();
    while !rdns.is_empty() {
        let rdn = rdns.expect(notes, tag::SET, what)?;
        let mut attrs = Vec::new();
        let mut shown_rdn = Vec::new();
        let mut r = rdn.reader();
        while !r.is_empty() {
            let atv = r.expect(notes, tag::SEQUENCE, what)?;
            let mut a = atv.reader();
            let oid = oid_to_string(a.expect(notes, tag::OID, what)?.content);
            let v = a.next(notes)?;
            a.finish(what)?;
            let value = decode_string(&v, notes, what);
            let label = attr_short_name(&oid).map_or_else(|| oid.clone(), str::to_string);
            shown_rdn.push(match &value {
                AttrValue::Text(s) => format!("{label}={}", escape_name_value(s)),
                AttrValue::Other(raw) => format!("{label}=#{}", hex::encode(raw)),
            });
            attrs.push((oid, value));
        }
        if attrs.is_empty() {
            return Err(rdn.error(format!("{what}: empty RDN")));
        }
        // An RDN is a SET: its order carries no meaning.
        attrs.sort();
        key.push(attrs);
        shown.push(shown_rdn.join(" + "));
    }
    Ok(Name {
        key,
        display: shown.join(", "),
    })
}

fn escape_name_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | '+' | '\\' | '"' | '<' | '>' | ';') {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes a directory string; a value outside its type's alphabet is noted (vendors
/// put `@` or `_` in PrintableStrings) and still read.
fn decode_string(v: &Tlv<'_>, notes: &mut Notes, what: &str) -> AttrValue {
    let c = v.content;
    let mut bad =
        |kind: &str| notes.push(v.offset, format!("{what}: {kind} with invalid characters"));
    let text = match v.tag {
        tag::PRINTABLE_STRING => {
            let ok = c
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
            if !ok {
                bad("PrintableString");
            }
            String::from_utf8_lossy(c).into_owned()
        }
        tag::IA5_STRING | tag::VISIBLE_STRING | tag::NUMERIC_STRING => {
            if !c.is_ascii() {
                bad("ASCII string");
            }
            String::from_utf8_lossy(c).into_owned()
        }
        tag::UTF8_STRING => match std::str::from_utf8(c) {
            Ok(s) => s.to_string(),
            Err(_) => {
                bad("UTF8String");
                String::from_utf8_lossy(c).into_owned()
            }
        },
        // T.61 in theory; Latin-1 in practice.
        tag::TELETEX_STRING => c.iter().map(|&b| char::from(b)).collect(),
        tag::BMP_STRING if c.len() % 2 == 0 => {
            let units: Vec<u16> = c
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        tag::UNIVERSAL_STRING if c.len() % 4 == 0 => c
            .chunks_exact(4)
            .map(|p| {
                char::from_u32(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => return AttrValue::Other(v.raw.to_vec()),
    };
    AttrValue::Text(text)
}

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
fn parse_sig_alg(
    t: &Tlv<'_>,
    notes: &mut Notes,
    what: &str,
) -> Result<(String, SignatureAlgorithm), BerError> {
    let mut r = t.expect(tag::SEQUENCE, what)?.reader();
    let oid = oid_to_string(r.expect(notes, tag::OID, what)?.content);
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
    let mut r = p.expect(tag::SEQUENCE, WHAT)?.reader();
    fn alg_oid<'a>(t: Tlv<'a>, notes: &mut Notes) -> Result<(String, Option<Tlv<'a>>), BerError> {
        let mut a = t.reader().expect(notes, tag::SEQUENCE, WHAT)?.reader();
        let oid = oid_to_string(a.expect(notes, tag::OID, WHAT)?.content);
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
                let oid = oid_to_string(a.expect(notes, tag::OID, WHAT).ok()?.content);
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
        let i = t.reader().expect(notes, tag::INTEGER, WHAT)?;
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
    fn describe(&self) -> String {
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

fn parse_spki(t: &Tlv<'_>, notes: &mut Notes) -> Result<CertPublicKey, BerError> {
    const WHAT: &str = "subjectPublicKeyInfo";
    let mut r = t.expect(tag::SEQUENCE, WHAT)?.reader();
    let alg = r.expect(notes, tag::SEQUENCE, WHAT)?;
    let bits = r.expect(notes, tag::BIT_STRING, WHAT)?;
    r.finish(WHAT)?;
    let mut a = alg.reader();
    let oid = oid_to_string(a.expect(notes, tag::OID, WHAT)?.content);
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
            let seq = kr.expect(notes, tag::SEQUENCE, "RSAPublicKey")?;
            let mut k = seq.reader();
            let n = k.expect(notes, tag::INTEGER, "RSA modulus")?;
            let e = k.expect(notes, tag::INTEGER, "RSA exponent")?;
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

/// An X.509 certificate as read from a TPM or a vendor: the original bytes, what was
/// parsed out of them and how they deviate from DER.
#[derive(Debug, Clone)]
pub struct EkCert {
    raw: Vec<u8>,
    padding: usize,
    tbs: Range<usize>,
    spki: Range<usize>,
    serial: Vec<u8>,
    issuer: Name,
    subject: Name,
    not_before: i64,
    not_after: i64,
    tbs_sig_oid: String,
    sig_oid: String,
    sig_alg: SignatureAlgorithm,
    signature: Vec<u8>,
    public_key: CertPublicKey,
    ca: Option<bool>,
    der_issues: Vec<String>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// The DER blobs of an input: PEM blocks, base64 text, or raw bytes as they are.
fn der_blobs(bytes: &[u8]) -> Result<Vec<std::borrow::Cow<'_, [u8]>>, CertError> {
    if bytes.first() == Some(&tag::SEQUENCE) {
        return Ok(vec![bytes.into()]);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CertError::NoCertificate)?;
    if text.contains(PEM_BEGIN) {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(PEM_BEGIN) {
            let body = &rest[start + PEM_BEGIN.len()..];
            let end = body
                .find(PEM_END)
                .ok_or_else(|| CertError::Encoding("PEM block without an END line".into()))?;
            let b64: String = body[..end].split_whitespace().collect();
            out.push(
                B64.decode(b64)
                    .map_err(|e| CertError::Encoding(e.to_string()))?
                    .into(),
            );
            rest = &body[end + PEM_END.len()..];
        }
        return Ok(out);
    }
    let b64: String = text.split_whitespace().collect();
    if b64.is_empty() || text.contains("-----BEGIN") {
        return Err(CertError::NoCertificate);
    }
    // Keylime's registrar stores and sends EK certificates as base64 DER.
    let der = B64.decode(b64).map_err(|_| CertError::NoCertificate)?;
    Ok(vec![der.into()])
}

fn is_padding(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0x00 || b == 0xff)
}

impl EkCert {
    /// Reads the first certificate of `bytes`: DER (with any 0x00/0xFF NV padding after
    /// it), PEM (the first `CERTIFICATE` block) or base64 DER. Non-DER encodings are
    /// accepted here; see [`check_encoding`](Self::check_encoding).
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        let blobs = der_blobs(bytes)?;
        let first = blobs.first().ok_or(CertError::NoCertificate)?;
        let (mut cert, used) = Self::parse_prefix(first)?;
        let rest = &first[used..];
        if !is_padding(rest) {
            return Err(CertError::Trailing { extra: rest.len() });
        }
        cert.padding = rest.len();
        Ok(cert)
    }

    /// Reads every certificate of `bytes`: all PEM blocks, or concatenated DER (the
    /// TPM's NV chain indices `0x01c00100`…), padding allowed at the end.
    pub fn parse_all(bytes: &[u8]) -> Result<Vec<Self>, CertError> {
        let mut out = Vec::new();
        for blob in der_blobs(bytes)? {
            let mut rest: &[u8] = &blob;
            while !rest.is_empty() && !is_padding(rest) {
                let (cert, used) = Self::parse_prefix(rest)?;
                out.push(cert);
                rest = &rest[used..];
            }
            if let Some(last) = out.last_mut() {
                last.padding = rest.len();
            }
        }
        if out.is_empty() {
            return Err(CertError::NoCertificate);
        }
        Ok(out)
    }

    /// Parses the certificate at the start of `bytes`; returns it and its length.
    fn parse_prefix(bytes: &[u8]) -> Result<(Self, usize), CertError> {
        let mut notes = Notes::default();
        let outer = Reader::new(bytes).expect(&mut notes, tag::SEQUENCE, "Certificate")?;
        let raw = outer.raw;
        let mut cert = Self::parse_tlv(&outer, &mut notes)?;
        // A second opinion from a strict DER decoder: whatever it refuses and the
        // lenient reader did not explain is still a reason the input is not DER.
        if notes.0.is_empty() {
            use der::Decode;
            if let Err(e) = x509_cert::Certificate::from_der(raw) {
                notes.push(0, format!("strict DER decoder: {e}"));
            }
        }
        cert.der_issues = notes.0;
        Ok((cert, raw.len()))
    }

    fn parse_tlv(outer: &Tlv<'_>, notes: &mut Notes) -> Result<Self, CertError> {
        let mut r = outer.reader();
        let tbs = r.expect(notes, tag::SEQUENCE, "tbsCertificate")?;
        let sig_alg = r.next(notes)?;
        let sig = r.expect(notes, tag::BIT_STRING, "signatureValue")?;
        r.finish("Certificate")?;
        let (sig_oid, sig_alg) = parse_sig_alg(&sig_alg, notes, "signatureAlgorithm")?;
        let signature = sig.bit_string(notes, "signatureValue")?.to_vec();

        let mut t = tbs.reader();
        if let Some(v) = t.optional(notes, tag::explicit(0))? {
            let n = v.reader().expect(notes, tag::INTEGER, "version")?;
            if n.integer(notes, "version")? == [0] {
                notes.push(v.offset, "version v1 encoded although it is the default");
            }
        }
        let serial_tlv = t.expect(notes, tag::INTEGER, "serialNumber")?;
        let serial = serial_tlv.integer(notes, "serialNumber")?.to_vec();
        if serial[0] & 0x80 != 0 {
            notes.push(serial_tlv.offset, "negative serial number");
        }
        let tbs_alg = t.next(notes)?;
        let (tbs_sig_oid, _) = parse_sig_alg(&tbs_alg, notes, "signature")?;
        let issuer = parse_name(&t.next(notes)?, notes, "issuer")?;
        let validity = t.expect(notes, tag::SEQUENCE, "validity")?;
        let mut v = validity.reader();
        let mut time = |what: &str, notes: &mut Notes| -> Result<i64, CertError> {
            let tlv = v.next(notes)?;
            time::parse_asn1_time(&tlv, notes, what)
                .ok_or_else(|| tlv.error(format!("{what}: not a valid time")).into())
        };
        let not_before = time("notBefore", notes)?;
        let not_after = time("notAfter", notes)?;
        v.finish("validity")?;
        let subject = parse_name(&t.next(notes)?, notes, "subject")?;
        let spki_tlv = t.next(notes)?;
        let public_key = parse_spki(&spki_tlv, notes)?;
        t.optional(notes, 0x81)?; // issuerUniqueID
        t.optional(notes, 0x82)?; // subjectUniqueID
        let mut ca = None;
        if let Some(ext) = t.optional(notes, tag::explicit(3))? {
            ca = parse_extensions(&ext, notes)?;
        }
        t.finish("tbsCertificate")?;

        let base = outer.offset;
        let range = |x: &Tlv<'_>| x.offset - base..x.offset - base + x.raw.len();
        Ok(Self {
            raw: outer.raw.to_vec(),
            padding: 0,
            tbs: range(&tbs),
            spki: range(&spki_tlv),
            serial,
            issuer,
            subject,
            not_before,
            not_after,
            tbs_sig_oid,
            sig_oid,
            sig_alg,
            signature,
            public_key,
            ca,
            der_issues: Vec::new(),
        })
    }

    /// Applies the malformed-certificate policy: under
    /// [`MalformedCertAction::Reject`], a certificate that is not DER is an error.
    pub fn check_encoding(&self, action: MalformedCertAction) -> Result<(), CertError> {
        if action == MalformedCertAction::Reject && !self.is_der() {
            return Err(CertError::NotDer {
                subject: self.subject.to_string(),
                issues: self.der_issues.clone(),
            });
        }
        Ok(())
    }

    /// The certificate's bytes exactly as given (without NV padding).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The signed part, exactly as given.
    pub fn tbs_bytes(&self) -> &[u8] {
        &self.raw[self.tbs.clone()]
    }

    /// The SubjectPublicKeyInfo, exactly as given.
    pub fn spki_bytes(&self) -> &[u8] {
        &self.raw[self.spki.clone()]
    }

    /// How many 0x00/0xFF padding bytes followed the certificate.
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// True when the certificate is strict DER.
    pub fn is_der(&self) -> bool {
        self.der_issues.is_empty()
    }

    /// Every deviation from DER found, each with its byte offset.
    pub fn der_issues(&self) -> &[String] {
        &self.der_issues
    }

    /// The subject.
    pub fn subject(&self) -> &Name {
        &self.subject
    }

    /// The issuer.
    pub fn issuer(&self) -> &Name {
        &self.issuer
    }

    /// The serial number's content bytes, as encoded.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// Start of validity, Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// End of validity, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The signature algorithm.
    pub fn signature_algorithm(&self) -> &SignatureAlgorithm {
        &self.sig_alg
    }

    /// The subject public key.
    pub fn public_key(&self) -> &CertPublicKey {
        &self.public_key
    }

    /// basicConstraints cA, when the extension is present.
    pub fn is_ca(&self) -> Option<bool> {
        self.ca
    }

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

    /// Checks this certificate's signature with `issuer`'s key.
    fn signed_by(&self, issuer: &Self) -> Result<(), SigFailure> {
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

/// basicConstraints cA from an `[3] Extensions`.
fn parse_extensions(ext: &Tlv<'_>, notes: &mut Notes) -> Result<Option<bool>, BerError> {
    const WHAT: &str = "extensions";
    let seq = ext.reader().expect(notes, tag::SEQUENCE, WHAT)?;
    let mut r = seq.reader();
    let mut ca = None;
    while !r.is_empty() {
        let e = r.expect(notes, tag::SEQUENCE, WHAT)?;
        let mut er = e.reader();
        let oid = oid_to_string(er.expect(notes, tag::OID, WHAT)?.content);
        if let Some(c) = er.optional(notes, tag::BOOLEAN)? {
            if !c.boolean(notes, "extension critical")? {
                notes.push(
                    c.offset,
                    "critical FALSE encoded although it is the default",
                );
            }
        }
        let value = er.expect(notes, tag::OCTET_STRING, WHAT)?;
        er.finish(WHAT)?;
        if oid == "2.5.29.19" {
            // The OCTET STRING holds a separate encoding; its offsets are relative.
            let mut vr = Reader::new(value.content);
            let bc = vr.expect(notes, tag::SEQUENCE, "basicConstraints")?;
            let mut b = bc.reader();
            let mut is_ca = false;
            if let Some(flag) = b.optional(notes, tag::BOOLEAN)? {
                is_ca = flag.boolean(notes, "basicConstraints cA")?;
                if !is_ca {
                    notes.push(flag.offset, "cA FALSE encoded although it is the default");
                }
            }
            ca = Some(is_ca);
        }
    }
    Ok(ca)
}

/// Why one signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SigFailure {
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
                .expect(&mut notes, tag::SEQUENCE, "ECDSA signature")
                .and_then(|seq| {
                    let mut rd = seq.reader();
                    let r = rd.expect(&mut notes, tag::INTEGER, "r")?.content;
                    let s = rd.expect(&mut notes, tag::INTEGER, "s")?.content;
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

fn pss(h: HashAlg, salt_len: usize) -> rsa::Pss {
    match h {
        HashAlg::Sha1 => rsa::Pss::new_with_salt::<sha1::Sha1>(salt_len),
        HashAlg::Sha384 => rsa::Pss::new_with_salt::<sha2::Sha384>(salt_len),
        HashAlg::Sha512 => rsa::Pss::new_with_salt::<sha2::Sha512>(salt_len),
        HashAlg::Sha256 | HashAlg::Sm3_256 => rsa::Pss::new_with_salt::<sha2::Sha256>(salt_len),
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

/// A trust-store entry that is not a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trust store entry {name}: {source}")]
pub struct StoreError {
    /// The entry (file name).
    pub name: String,
    /// Why.
    #[source]
    pub source: CertError,
}

/// A certificate of the store and where it came from.
#[derive(Debug, Clone)]
pub struct StoreCert {
    /// The entry name, with `#n` (from 1) when the entry holds several certificates.
    pub entry: String,
    /// The certificate.
    pub cert: EkCert,
}

/// The EK trust store: vendor CA certificates (Keylime's `tpm_cert_store`), indexed by
/// subject. Every certificate in it is a trust anchor.
#[derive(Debug, Clone, Default)]
pub struct EkCertStore {
    certs: Vec<StoreCert>,
    by_subject: BTreeMap<Name, Vec<usize>>,
    skipped: Vec<String>,
}

impl EkCertStore {
    /// Builds a store from `(name, bytes)` entries (a directory's files): each PEM,
    /// possibly with several certificates, or DER. Non-DER certificates are accepted,
    /// as Keylime does for its store. An entry holding PEM blocks but no certificate
    /// (a private key next to a CA certificate) is skipped and listed in
    /// [`skipped`](Self::skipped); anything else unreadable is an error naming it.
    pub fn from_entries<I, N, B>(entries: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = (N, B)>,
        N: Into<String>,
        B: AsRef<[u8]>,
    {
        let mut store = Self::default();
        for (name, bytes) in entries {
            let name = name.into();
            let bytes = bytes.as_ref();
            let certs = match EkCert::parse_all(bytes) {
                Ok(certs) => certs,
                Err(CertError::NoCertificate)
                    if std::str::from_utf8(bytes).is_ok_and(|t| t.contains("-----BEGIN ")) =>
                {
                    store.skipped.push(name);
                    continue;
                }
                Err(source) => return Err(StoreError { name, source }),
            };
            let several = certs.len() > 1;
            for (i, cert) in certs.into_iter().enumerate() {
                let entry = if several {
                    format!("{name}#{}", i + 1)
                } else {
                    name.clone()
                };
                store.push(StoreCert { entry, cert });
            }
        }
        Ok(store)
    }

    fn push(&mut self, c: StoreCert) {
        self.by_subject
            .entry(c.cert.subject.clone())
            .or_default()
            .push(self.certs.len());
        self.certs.push(c);
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True when there is no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Every certificate, in entry order.
    pub fn certs(&self) -> &[StoreCert] {
        &self.certs
    }

    /// Entries skipped because they held no certificate.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The certificates whose subject is `name`.
    pub fn by_subject<'a>(&'a self, name: &Name) -> impl Iterator<Item = &'a StoreCert> + 'a {
        self.by_subject
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.certs[i])
    }
}

/// Where a certificate of a verified chain came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum LinkSource {
    /// The EK certificate itself.
    EkCert,
    /// The caller's intermediates (the TPM's NV chain), by index.
    Intermediate {
        /// Index in the list given to [`verify`].
        index: usize,
    },
    /// The trust store.
    Store {
        /// The store entry.
        entry: String,
    },
}

/// One certificate of a verified chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLink {
    /// Its subject.
    pub subject: String,
    /// Where it came from.
    pub source: LinkSource,
}

/// A verified chain, EK certificate first, trust anchor (a store certificate) last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedChain {
    /// The certificates.
    pub links: Vec<ChainLink>,
}

/// Why an EK certificate is not trusted. Each variant names the certificate (by
/// subject) at which the chain broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No store certificate or intermediate has the certificate's issuer as subject.
    #[error("'{subject}': its issuer '{issuer}' is neither in the trust store nor among the intermediates")]
    NoIssuer {
        /// The certificate.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },
    /// A candidate issuer's key does not verify the signature.
    #[error("'{subject}': the signature does not verify with the key of '{issuer}' ({from})")]
    BadSignature {
        /// The certificate.
        subject: String,
        /// The candidate issuer.
        issuer: String,
        /// Where the candidate came from (store entry or intermediate).
        from: String,
    },
    /// The signature algorithm is not one Vigil verifies.
    #[error("'{subject}': unsupported signature algorithm {algorithm}")]
    UnsupportedAlgorithm {
        /// The certificate.
        subject: String,
        /// The algorithm (OID or description).
        algorithm: String,
    },
    /// The issuer's key is not one Vigil verifies with, or does not fit the algorithm.
    #[error("'{subject}': the key of issuer '{issuer}' cannot verify it: {message}")]
    UnsupportedKey {
        /// The certificate.
        subject: String,
        /// The issuer.
        issuer: String,
        /// Why.
        message: String,
    },
    /// The outer signatureAlgorithm differs from the signed one.
    #[error("'{subject}': signatureAlgorithm differs from the signed signature algorithm")]
    AlgorithmMismatch {
        /// The certificate.
        subject: String,
    },
    /// The issuer's basicConstraints says it is not a CA.
    #[error("'{subject}': issuer '{issuer}' is not a CA (basicConstraints cA is false)")]
    NotCa {
        /// The certificate.
        subject: String,
        /// The issuer.
        issuer: String,
    },
    /// Checked after notAfter.
    #[error("'{subject}': expired at {not_after} (checked at {at})")]
    Expired {
        /// The certificate.
        subject: String,
        /// Its notAfter (RFC 3339).
        not_after: String,
        /// The check time (RFC 3339).
        at: String,
    },
    /// Checked before notBefore.
    #[error("'{subject}': not valid before {not_before} (checked at {at})")]
    NotYetValid {
        /// The certificate.
        subject: String,
        /// Its notBefore (RFC 3339).
        not_before: String,
        /// The check time (RFC 3339).
        at: String,
    },
    /// More than [`MAX_CHAIN_LEN`] certificates.
    #[error("'{subject}': the chain is longer than {MAX_CHAIN_LEN} certificates")]
    TooLong {
        /// The certificate at which the limit was hit.
        subject: String,
    },
}

fn check_validity(cert: &EkCert, at: Option<i64>) -> Result<(), ChainError> {
    let Some(at) = at else { return Ok(()) };
    if at < cert.not_before {
        return Err(ChainError::NotYetValid {
            subject: cert.subject.to_string(),
            not_before: format_unix_time(cert.not_before),
            at: format_unix_time(at),
        });
    }
    if at > cert.not_after {
        return Err(ChainError::Expired {
            subject: cert.subject.to_string(),
            not_after: format_unix_time(cert.not_after),
            at: format_unix_time(at),
        });
    }
    Ok(())
}

/// Checks that `issuer` signed `cert` and may sign certificates.
fn link_error(cert: &EkCert, issuer: &EkCert, from: &str) -> Option<ChainError> {
    let subject = cert.subject.to_string();
    if issuer.ca == Some(false) {
        return Some(ChainError::NotCa {
            subject,
            issuer: issuer.subject.to_string(),
        });
    }
    match cert.signed_by(issuer) {
        Ok(()) => None,
        Err(SigFailure::Invalid) => Some(ChainError::BadSignature {
            subject,
            issuer: issuer.subject.to_string(),
            from: from.to_string(),
        }),
        Err(SigFailure::UnsupportedAlgorithm(algorithm)) => {
            Some(ChainError::UnsupportedAlgorithm { subject, algorithm })
        }
        Err(SigFailure::AlgorithmMismatch) => Some(ChainError::AlgorithmMismatch { subject }),
        Err(SigFailure::UnsupportedKey(message)) => Some(ChainError::UnsupportedKey {
            subject,
            issuer: issuer.subject.to_string(),
            message,
        }),
        Err(SigFailure::WrongKeyType) => Some(ChainError::UnsupportedKey {
            subject,
            issuer: issuer.subject.to_string(),
            message: format!(
                "a {} key cannot check {}",
                issuer.public_key.describe(),
                cert.sig_alg
            ),
        }),
    }
}

/// Verifies an EK certificate: builds the chain `ek_cert` → `intermediates` (e.g. the
/// TPM's NV chain) → a certificate of `store`, checking every signature over the
/// signed bytes as given. Any store certificate ends the chain (Keylime's rule: the
/// store holds trust anchors, intermediates included). Validity periods are checked
/// only when `at` (Unix seconds) is given — Keylime never checks them.
///
/// The encoding policy is not applied here: call [`EkCert::check_encoding`] on the
/// certificates read from the TPM first.
pub fn verify(
    ek_cert: &EkCert,
    intermediates: &[EkCert],
    store: &EkCertStore,
    at: Option<i64>,
) -> Result<VerifiedChain, ChainError> {
    let mut used = Vec::new();
    let mut links = build(ek_cert, intermediates, store, at, &mut used)?;
    links.insert(
        0,
        ChainLink {
            subject: ek_cert.subject.to_string(),
            source: LinkSource::EkCert,
        },
    );
    Ok(VerifiedChain { links })
}

/// The links above `cert` (its issuer first), depth-first over candidate issuers.
fn build(
    cert: &EkCert,
    intermediates: &[EkCert],
    store: &EkCertStore,
    at: Option<i64>,
    used: &mut Vec<usize>,
) -> Result<Vec<ChainLink>, ChainError> {
    check_validity(cert, at)?;
    let mut error = None;
    for anchor in store.by_subject(&cert.issuer) {
        match link_error(cert, &anchor.cert, &anchor.entry)
            .map_or_else(|| check_validity(&anchor.cert, at), Err)
        {
            Ok(()) => {
                return Ok(vec![ChainLink {
                    subject: anchor.cert.subject.to_string(),
                    source: LinkSource::Store {
                        entry: anchor.entry.clone(),
                    },
                }])
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    for (index, inter) in intermediates.iter().enumerate() {
        if inter.subject != cert.issuer || used.contains(&index) {
            continue;
        }
        if let Some(e) = link_error(cert, inter, &format!("intermediate #{}", index + 1)) {
            error.get_or_insert(e);
            continue;
        }
        // `used` holds the intermediates already in the chain, so its length is the
        // depth: EK certificate + used + this one + an anchor.
        if used.len() + 3 > MAX_CHAIN_LEN {
            return Err(ChainError::TooLong {
                subject: inter.subject.to_string(),
            });
        }
        used.push(index);
        match build(inter, intermediates, store, at, used) {
            Ok(mut rest) => {
                rest.insert(
                    0,
                    ChainLink {
                        subject: inter.subject.to_string(),
                        source: LinkSource::Intermediate { index },
                    },
                );
                return Ok(rest);
            }
            // A failure further up explains more than a sibling's bad signature.
            Err(e) => error = Some(e),
        }
        used.pop();
    }
    Err(error.unwrap_or_else(|| ChainError::NoIssuer {
        subject: cert.subject.to_string(),
        issuer: cert.issuer.to_string(),
    }))
}

#[cfg(test)]
mod tests;
