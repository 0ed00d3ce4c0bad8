//! Reading certificates: DER with NV padding, PEM and base64 DER, single or
//! concatenated, through the lenient BER reader. What is parsed keeps the original
//! bytes (signatures are checked over them) and every deviation from DER.

use std::ops::Range;

use base64::Engine;

use super::ber::{oid_to_string, tag, BerError, Notes, Reader, Tlv};
use super::key::{parse_spki, CertPublicKey};
use super::name::{parse_name, Name};
use super::signature::{parse_sig_alg, SignatureAlgorithm};
use super::time;

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

/// An X.509 certificate as read from a TPM or a vendor: the original bytes, what was
/// parsed out of them and how they deviate from DER.
#[derive(Debug, Clone)]
pub struct EkCert {
    raw: Vec<u8>,
    padding: usize,
    tbs: Range<usize>,
    spki: Range<usize>,
    serial: Vec<u8>,
    pub(super) issuer: Name,
    pub(super) subject: Name,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    pub(super) tbs_sig_oid: String,
    pub(super) sig_oid: String,
    pub(super) sig_alg: SignatureAlgorithm,
    pub(super) signature: Vec<u8>,
    pub(super) public_key: CertPublicKey,
    pub(super) ca: Option<bool>,
    der_issues: Vec<String>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

pub(super) const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
pub(super) const PEM_END: &str = "-----END CERTIFICATE-----";

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
        let outer = Reader::new(bytes).next_tagged(&mut notes, tag::SEQUENCE, "Certificate")?;
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
        let tbs = r.next_tagged(notes, tag::SEQUENCE, "tbsCertificate")?;
        let sig_alg = r.next(notes)?;
        let sig = r.next_tagged(notes, tag::BIT_STRING, "signatureValue")?;
        r.finish("Certificate")?;
        let (sig_oid, sig_alg) = parse_sig_alg(&sig_alg, notes, "signatureAlgorithm")?;
        let signature = sig.bit_string(notes, "signatureValue")?.to_vec();

        let mut t = tbs.reader();
        if let Some(v) = t.optional(notes, tag::explicit(0))? {
            let n = v.reader().next_tagged(notes, tag::INTEGER, "version")?;
            if n.integer(notes, "version")? == [0] {
                notes.push(v.offset, "version v1 encoded although it is the default");
            }
        }
        let serial_tlv = t.next_tagged(notes, tag::INTEGER, "serialNumber")?;
        let serial = serial_tlv.integer(notes, "serialNumber")?.to_vec();
        if serial[0] & 0x80 != 0 {
            notes.push(serial_tlv.offset, "negative serial number");
        }
        let tbs_alg = t.next(notes)?;
        let (tbs_sig_oid, _) = parse_sig_alg(&tbs_alg, notes, "signature")?;
        let issuer = parse_name(&t.next(notes)?, notes, "issuer")?;
        let validity = t.next_tagged(notes, tag::SEQUENCE, "validity")?;
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
}

/// basicConstraints cA from an `[3] Extensions`.
fn parse_extensions(ext: &Tlv<'_>, notes: &mut Notes) -> Result<Option<bool>, BerError> {
    const WHAT: &str = "extensions";
    let seq = ext.reader().next_tagged(notes, tag::SEQUENCE, WHAT)?;
    let mut r = seq.reader();
    let mut ca = None;
    while !r.is_empty() {
        let e = r.next_tagged(notes, tag::SEQUENCE, WHAT)?;
        let mut er = e.reader();
        let oid = oid_to_string(er.next_tagged(notes, tag::OID, WHAT)?.content);
        if let Some(c) = er.optional(notes, tag::BOOLEAN)? {
            if !c.boolean(notes, "extension critical")? {
                notes.push(
                    c.offset,
                    "critical FALSE encoded although it is the default",
                );
            }
        }
        let value = er.next_tagged(notes, tag::OCTET_STRING, WHAT)?;
        er.finish(WHAT)?;
        if oid == "2.5.29.19" {
            // The OCTET STRING holds a separate encoding; its offsets are relative.
            let mut vr = Reader::new(value.content);
            let bc = vr.next_tagged(notes, tag::SEQUENCE, "basicConstraints")?;
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
