//! Keylime's quote string and quote verification.
//!
//! A quote travels as `r<b64 TPMS_ATTEST>:<b64 TPMT_SIGNATURE>:<b64 PCR blob>`.
//! [`QuoteVerifier::verify`] checks it as Keylime's verifier does (`checkquote`): the
//! signature scheme fits the AK (RSASSA for RSA, ECDSA for EC; RSA-PSS only when
//! explicitly allowed, as Keylime refuses it), the signature's hash is the expected one,
//! the signature verifies over `H(TPMS_ATTEST)`, `extraData` is the nonce (as sent, or
//! base64-decoded as in push mode), and `pcrDigest` is the hash of the PCR values.
//!
//! One check Keylime does not make: PCR values are only taken for the PCRs the *signed*
//! `pcrSelect` covers. The blob's own selection must equal it, so a value the TPM did
//! not sign can never be reported as quoted.

use std::collections::BTreeMap;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine;
use ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs8::DecodePublicKey;

use super::attest::{ClockInfo, QuoteAttest};
use super::codec::CodecError;
use super::pcr_blob::PcrBlob;
use super::signature::TpmSignature;
use crate::failure::{Component, Event, Failure};
use crate::hash::{Digest, HashAlg};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A quote string that is not `r<b64>:<b64>:<b64>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed quote string: {0}")]
pub struct QuoteStringError(pub String);

/// One of a quote's three structures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotePart {
    /// The `TPMS_ATTEST`.
    Attest,
    /// The `TPMT_SIGNATURE`.
    Signature,
    /// The PCR blob.
    Pcrs,
}

impl std::fmt::Display for QuotePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Attest => "attestation (TPMS_ATTEST)",
            Self::Signature => "signature (TPMT_SIGNATURE)",
            Self::Pcrs => "PCR blob",
        })
    }
}

/// A quote part that is not the structure it must be: the quote is malformed, as
/// opposed to well-formed and failing a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the quote's {part} is malformed: {source}")]
pub struct QuotePartError {
    /// Which part.
    pub part: QuotePart,
    /// Why it does not parse.
    #[source]
    pub source: CodecError,
}

/// The three structures of a quote, parsed and not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteParts<'a> {
    /// The attestation.
    pub attest: QuoteAttest<'a>,
    /// The signature over it.
    pub signature: TpmSignature<'a>,
    /// The PCR values.
    pub pcrs: PcrBlob,
}

/// The three parts of a Keylime quote, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylimeQuote {
    /// `TPMS_ATTEST` bytes.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE` bytes.
    pub signature: Vec<u8>,
    /// The tpm2-tools PCR blob.
    pub pcr_blob: Vec<u8>,
}

impl KeylimeQuote {
    /// Parses `r<attest>:<signature>:<pcrs>` (standard base64).
    pub fn parse(text: &str) -> Result<Self, QuoteStringError> {
        let body = text
            .trim()
            .strip_prefix('r')
            .ok_or_else(|| QuoteStringError("it must start with 'r'".into()))?;
        let mut parts = body.split(':');
        let mut next = |name: &str| -> Result<Vec<u8>, QuoteStringError> {
            let part = parts
                .next()
                .ok_or_else(|| QuoteStringError(format!("the {name} part is missing")))?;
            B64.decode(part)
                .map_err(|e| QuoteStringError(format!("the {name} part is not base64: {e}")))
        };
        let quote = Self {
            attest: next("attestation")?,
            signature: next("signature")?,
            pcr_blob: next("PCR")?,
        };
        if parts.next().is_some() {
            return Err(QuoteStringError("more than three parts".into()));
        }
        Ok(quote)
    }

    /// The push-mode form: the three parts arrive base64-encoded as the evidence's
    /// `message` (TPMS_ATTEST), `signature` and `subject_data` (PCR blob).
    pub fn from_push_parts(
        message: &str,
        signature: &str,
        subject_data: &str,
    ) -> Result<Self, QuoteStringError> {
        let decode = |name: &str, part: &str| {
            B64.decode(part.trim())
                .map_err(|e| QuoteStringError(format!("the {name} is not base64: {e}")))
        };
        Ok(Self {
            attest: decode("message", message)?,
            signature: decode("signature", signature)?,
            pcr_blob: decode("subject_data", subject_data)?,
        })
    }

    /// The push-mode parts (`message`, `signature`, `subject_data`), base64.
    pub fn to_push_parts(&self) -> [String; 3] {
        [
            B64.encode(&self.attest),
            B64.encode(&self.signature),
            B64.encode(&self.pcr_blob),
        ]
    }

    /// Parses the three structures. [`QuoteVerifier::verify`] does this first; a caller
    /// that must tell a malformed quote from an invalid one calls it before.
    pub fn parse_parts(&self) -> Result<QuoteParts<'_>, QuotePartError> {
        let part = |part| move |source| QuotePartError { part, source };
        Ok(QuoteParts {
            attest: QuoteAttest::parse(&self.attest).map_err(part(QuotePart::Attest))?,
            signature: TpmSignature::parse(&self.signature).map_err(part(QuotePart::Signature))?,
            pcrs: PcrBlob::parse(&self.pcr_blob).map_err(part(QuotePart::Pcrs))?,
        })
    }

    /// The string form.
    pub fn to_keylime_string(&self) -> String {
        format!(
            "r{}:{}:{}",
            B64.encode(&self.attest),
            B64.encode(&self.signature),
            B64.encode(&self.pcr_blob)
        )
    }
}

/// An attestation key, parsed once.
#[derive(Debug, Clone)]
pub enum AkPublicKey {
    /// RSA.
    Rsa(RsaAk),
    /// ECC P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECC P-384.
    P384(p384::ecdsa::VerifyingKey),
}

impl AkPublicKey {
    /// Reads a SubjectPublicKeyInfo, PEM or DER.
    pub fn from_spki(bytes: &[u8]) -> Result<Self, CodecError> {
        let der = match std::str::from_utf8(bytes) {
            Ok(text) if text.contains("-----BEGIN") => der::pem::decode_vec(text.trim().as_bytes())
                .map(|(_, d)| d)
                .map_err(|e| invalid_key(format!("bad PEM: {e}")))?,
            _ => bytes.to_vec(),
        };
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(&der) {
            return Ok(Self::Rsa(RsaAk::new(&k)?));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(&der) {
            return Ok(Self::P384(k));
        }
        Err(invalid_key(
            "not an RSA, P-256 or P-384 SubjectPublicKeyInfo".into(),
        ))
    }
}

impl AkPublicKey {
    /// Reads an AK given either as a SubjectPublicKeyInfo (PEM or DER) or as the
    /// `TPM2B_PUBLIC` the TPM and tpm2-tools produce.
    pub fn from_spki_or_tpm2b(bytes: &[u8]) -> Result<Self, CodecError> {
        Self::from_spki(bytes).or_else(|spki_err| {
            let public = super::public::TpmPublic::parse_tpm2b(bytes).map_err(|_| spki_err)?;
            Self::from_spki(&public.to_spki_der()?)
        })
    }
}

/// An RSA key in the form aws-lc verifies with: RSA verification is most of the cost
/// of checking a quote, and aws-lc's is several times faster than the pure-Rust one.
#[derive(Clone)]
pub struct RsaAk {
    /// PKCS#1 `RSAPublicKey` DER.
    pkcs1: Box<[u8]>,
    /// Pre-parsed for the common case (RSASSA with SHA-256), so a quote verification
    /// does not decode the key again.
    pkcs1_sha256: aws_lc_rs::signature::ParsedPublicKey,
}

impl RsaAk {
    fn new(key: &rsa::RsaPublicKey) -> Result<Self, CodecError> {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let pkcs1: Box<[u8]> = key
            .to_pkcs1_der()
            .map_err(|e| invalid_key(format!("RSA key: {e}")))?
            .as_bytes()
            .into();
        let pkcs1_sha256 = aws_lc_rs::signature::ParsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            &pkcs1,
        )
        .map_err(|e| invalid_key(format!("RSA key: {e}")))?;
        Ok(Self {
            pkcs1,
            pkcs1_sha256,
        })
    }

    /// Verifies an RSASSA (or RSA-PSS) signature over `message` hashed with `hash`.
    fn verify(&self, hash: HashAlg, pss: bool, message: &[u8], sig: &[u8]) -> bool {
        use aws_lc_rs::signature as s;
        if !pss && hash == HashAlg::Sha256 {
            return self.pkcs1_sha256.verify_sig(message, sig).is_ok();
        }
        let params: &'static s::RsaParameters = match (pss, hash) {
            (false, HashAlg::Sha1) => &s::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            (false, HashAlg::Sha384) => &s::RSA_PKCS1_2048_8192_SHA384,
            (false, HashAlg::Sha512) => &s::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
            (true, HashAlg::Sha256) => &s::RSA_PSS_2048_8192_SHA256,
            (true, HashAlg::Sha384) => &s::RSA_PSS_2048_8192_SHA384,
            (true, HashAlg::Sha512) => &s::RSA_PSS_2048_8192_SHA512,
            // No RSA-PSS with SHA-1, and no RSA scheme with SM3, in aws-lc.
            _ => return false,
        };
        s::UnparsedPublicKey::new(params, &self.pkcs1)
            .verify(message, sig)
            .is_ok()
    }
}

impl std::fmt::Debug for RsaAk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaAk")
            .field("pkcs1", &hex::encode(&self.pkcs1))
            .finish()
    }
}

impl AkPublicKey {
    /// The `TPMT_SIGNATURE` for a signature tpm2-tools wrote in its `plain` format
    /// (`tpm2_quote -f plain`): the bare RSA signature, or a DER `ECDSA-Sig-Value`.
    ///
    /// A plain signature records neither its scheme nor its hash, so they are taken from
    /// this key (RSASSA for RSA, ECDSA for EC) and `hash`; an RSA-PSS signature read this
    /// way fails verification rather than being misread.
    pub fn signature_from_plain(&self, plain: &[u8], hash: HashAlg) -> Result<Vec<u8>, CodecError> {
        let bad = |message: String| CodecError::Invalid {
            structure: "plain signature",
            message,
        };
        let (alg, parts): (u16, Vec<Vec<u8>>) = match self {
            Self::Rsa(_) => (super::signature::ALG_RSASSA, vec![plain.to_vec()]),
            Self::P256(_) => {
                let sig = p256::ecdsa::Signature::from_der(plain)
                    .map_err(|e| bad(format!("not a DER ECDSA P-256 signature: {e}")))?;
                let (r, s) = sig.split_bytes();
                (super::signature::ALG_ECDSA, vec![r.to_vec(), s.to_vec()])
            }
            Self::P384(_) => {
                let sig = p384::ecdsa::Signature::from_der(plain)
                    .map_err(|e| bad(format!("not a DER ECDSA P-384 signature: {e}")))?;
                let (r, s) = sig.split_bytes();
                (super::signature::ALG_ECDSA, vec![r.to_vec(), s.to_vec()])
            }
        };
        let mut out = Vec::with_capacity(8 + plain.len());
        out.extend_from_slice(&alg.to_be_bytes());
        out.extend_from_slice(&hash.tpm_alg_id().to_be_bytes());
        for part in parts {
            let len = u16::try_from(part.len())
                .map_err(|_| bad(format!("{} bytes is too long", part.len())))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&part);
        }
        Ok(out)
    }
}

fn invalid_key(message: String) -> CodecError {
    CodecError::Invalid {
        structure: "AK public key",
        message,
    }
}

/// What a verified quote vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// The quoted bank.
    pub bank: HashAlg,
    /// The value of every PCR the signed selection covers in that bank.
    pub pcrs: BTreeMap<u32, Digest>,
    /// The TPM clock at quote time (for monotonicity checks by the caller).
    pub clock_info: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
}

/// Verifies quotes made by one AK.
#[derive(Debug, Clone)]
pub struct QuoteVerifier {
    ak: AkPublicKey,
    allow_rsapss: bool,
    /// An EC AK as aws-lc's parsed key, made once: parsing the point for every quote
    /// was a fifth of the signature check.
    ecdsa: Option<ParsedPublicKey>,
}

impl QuoteVerifier {
    /// A verifier for quotes signed by `ak`, with Keylime's rules.
    pub fn new(ak: AkPublicKey) -> Self {
        Self {
            ecdsa: ak.parsed_ecdsa(),
            ak,
            allow_rsapss: false,
        }
    }

    /// Also accepts RSA-PSS signatures (which Keylime refuses).
    pub fn allow_rsapss(mut self, allow: bool) -> Self {
        self.allow_rsapss = allow;
        self
    }

    /// Verifies `quote` against the nonce the verifier sent and the expected bank.
    /// Any problem is Keylime's irrecoverable `qoute_validation.quote_validation`.
    pub fn verify(
        &self,
        quote: &KeylimeQuote,
        nonce: &[u8],
        bank: HashAlg,
    ) -> Result<VerifiedQuote, Failure> {
        self.check(quote, nonce, bank).map_err(|reason| {
            quote_failure(serde_json::json!({
                "message": "Quote data validation",
                "error": reason,
            }))
        })
    }

    /// [`verify`](Self::verify), then Keylime's clock check
    /// ([`ClockInfo::check_after`]) against the clock of the node's last accepted
    /// quote. On success the caller stores the quote's `clock_info` for the next round.
    pub fn verify_with_clock(
        &self,
        quote: &KeylimeQuote,
        nonce: &[u8],
        bank: HashAlg,
        previous: &ClockInfo,
    ) -> Result<VerifiedQuote, Failure> {
        let verified = self.verify(quote, nonce, bank)?;
        // The message texts are Keylime's, typo included, for tools that match on them.
        verified
            .clock_info
            .check_after(previous)
            .map_err(|reason| {
                quote_failure(serde_json::json!({
                    "message": "Validation of clockinfo from quote using tpm2-tools",
                    "data": reason,
                }))
            })?;
        Ok(verified)
    }

    fn check(
        &self,
        quote: &KeylimeQuote,
        nonce: &[u8],
        bank: HashAlg,
    ) -> Result<VerifiedQuote, String> {
        // The reason is the structure's own error, as it always was.
        let QuoteParts {
            attest,
            signature: sig,
            pcrs: blob,
        } = quote.parse_parts().map_err(|e| e.source.to_string())?;
        if sig.hash() != bank {
            return Err(format!(
                "the quote is signed with {}, but {bank} was expected",
                sig.hash()
            ));
        }
        self.ak
            .verify_parsed(self.ecdsa.as_ref(), &sig, &quote.attest, self.allow_rsapss)
            .map_err(|e| format!("the quote {e}"))?;
        let nonce_ok = attest.header.extra_data == nonce
            || std::str::from_utf8(nonce)
                .ok()
                .and_then(|n| B64.decode(n).ok())
                .is_some_and(|d| d == attest.header.extra_data);
        if !nonce_ok {
            return Err("the quote's extraData is not the nonce".into());
        }
        // Only what the TPM signed: the blob must describe exactly the signed selection.
        if blob.selection != attest.pcr_select {
            return Err("the PCR values do not match the signed PCR selection".into());
        }
        let mut h = bank.hasher();
        for v in &blob.values {
            h.update(v);
        }
        if h.finalize().as_bytes() != attest.pcr_digest {
            return Err("the PCR values do not hash to the signed pcrDigest".into());
        }
        let mut values = blob.values.iter();
        let mut pcrs = BTreeMap::new();
        for sel in &attest.pcr_select {
            for &pcr in &sel.pcrs {
                let v = values.next().ok_or("fewer PCR values than selected PCRs")?;
                if sel.alg_id == bank.tpm_alg_id() {
                    let d =
                        Digest::from_hex_for(bank, &hex::encode(v)).map_err(|e| e.to_string())?;
                    pcrs.insert(pcr, d);
                }
            }
        }
        if values.next().is_some() {
            return Err("more PCR values than selected PCRs".into());
        }
        Ok(VerifiedQuote {
            bank,
            pcrs,
            clock_info: attest.header.clock_info,
            firmware_version: attest.header.firmware_version,
        })
    }
}

fn quote_failure(context: serde_json::Value) -> Failure {
    let mut f = Failure::new();
    f.push(Event::new(
        Component::QuoteValidation,
        &[],
        "quote_validation",
        context,
        false,
    ));
    f
}

impl AkPublicKey {
    /// Verifies a `TPMT_SIGNATURE` over `message` (the TPM signs `H(message)` with the
    /// signature's hash). The scheme must fit the key: RSASSA (or RSA-PSS with the salt
    /// as long as the digest, when `allow_rsapss`) for RSA, ECDSA for EC keys.
    pub fn verify(
        &self,
        sig: &TpmSignature,
        message: &[u8],
        allow_rsapss: bool,
    ) -> Result<(), SignatureMismatch> {
        self.verify_parsed(None, sig, message, allow_rsapss)
    }

    /// An EC key as aws-lc's parsed key for its curve's hash (`None` for RSA).
    fn parsed_ecdsa(&self) -> Option<ParsedPublicKey> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED};
        match self {
            Self::P256(k) => {
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, k.to_encoded_point(false)).ok()
            }
            Self::P384(k) => {
                ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, k.to_encoded_point(false)).ok()
            }
            Self::Rsa(_) => None,
        }
    }

    /// [`verify`](Self::verify) with this key's [`parsed_ecdsa`](Self::parsed_ecdsa),
    /// if made already.
    fn verify_parsed(
        &self,
        parsed: Option<&ParsedPublicKey>,
        sig: &TpmSignature,
        message: &[u8],
        allow_rsapss: bool,
    ) -> Result<(), SignatureMismatch> {
        let hash = sig.hash();
        let ok = match (self, sig) {
            (Self::Rsa(k), TpmSignature::RsaSsa { sig, .. }) => k.verify(hash, false, message, sig),
            (Self::Rsa(k), TpmSignature::RsaPss { sig, .. }) if allow_rsapss => {
                k.verify(hash, true, message, sig)
            }
            // The curve's own hash (what TPMs sign with): aws-lc, several times faster
            // than the pure-Rust arithmetic, which was a third of a verifier's CPU per
            // round with ECC AKs. Any other hash: the prehash path.
            (Self::P256(_), TpmSignature::Ecdsa { r, s, .. }) if hash == HashAlg::Sha256 => {
                ecdsa_fixed(parsed, self, 32, r, s, message)
            }
            (Self::P384(_), TpmSignature::Ecdsa { r, s, .. }) if hash == HashAlg::Sha384 => {
                ecdsa_fixed(parsed, self, 48, r, s, message)
            }
            (Self::P256(k), TpmSignature::Ecdsa { r, s, .. }) => ecdsa_sig!(p256, 32, r, s)
                .is_some_and(|s| k.verify_prehash(hash.hash(message).as_bytes(), &s).is_ok()),
            (Self::P384(k), TpmSignature::Ecdsa { r, s, .. }) => ecdsa_sig!(p384, 48, r, s)
                .is_some_and(|s| k.verify_prehash(hash.hash(message).as_bytes(), &s).is_ok()),
            _ => return Err(SignatureMismatch::Scheme),
        };
        if ok {
            Ok(())
        } else {
            Err(SignatureMismatch::Invalid)
        }
    }
}

/// ECDSA over `message` with aws-lc: `r` and `s` (TPM2B integers) left-padded to
/// `size`, with `parsed` (`ak`'s parsed key), or `ak` parsed now.
fn ecdsa_fixed(
    parsed: Option<&ParsedPublicKey>,
    ak: &AkPublicKey,
    size: usize,
    r: &[u8],
    s: &[u8],
    message: &[u8],
) -> bool {
    let (Some(r), Some(s)) = (scalar(r, size), scalar(s, size)) else {
        return false;
    };
    let sig = [r, s].concat();
    let parsed_now;
    let key = match parsed {
        Some(key) => key,
        None => match ak.parsed_ecdsa() {
            Some(key) => {
                parsed_now = key;
                &parsed_now
            }
            None => return false,
        },
    };
    key.verify_sig(message, &sig).is_ok()
}

/// RSASSA with `bank`'s digest, for verifying certificates with the rsa crate.
pub(crate) fn pkcs1v15(bank: HashAlg) -> rsa::Pkcs1v15Sign {
    match bank {
        HashAlg::Sha1 => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
        HashAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
        HashAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        // SM3 has no PKCS#1 OID in the rsa crate; SHA-256 is the only other bank in use.
        HashAlg::Sha256 | HashAlg::Sm3_256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
    }
}

/// Why a TPM signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureMismatch {
    /// RSASSA/RSA-PSS on an EC key, ECDSA on an RSA key, or RSA-PSS when not allowed.
    #[error("signature scheme does not fit the key")]
    Scheme,
    /// The signature does not verify.
    #[error("signature does not verify with the key")]
    Invalid,
}

/// Left-pads a TPM2B integer (which may carry leading zeros or be short) to `size`.
pub(crate) fn scalar(v: &[u8], size: usize) -> Option<Vec<u8>> {
    let v = &v[v.iter().take_while(|&&b| b == 0).count()..];
    (v.len() <= size).then(|| [vec![0; size - v.len()], v.to_vec()].concat())
}

macro_rules! ecdsa_sig {
    ($curve:ident, $size:expr, $r:expr, $s:expr) => {
        scalar($r, $size).zip(scalar($s, $size)).and_then(|(r, s)| {
            let r: [u8; $size] = r.try_into().ok()?;
            let s: [u8; $size] = s.try_into().ok()?;
            $curve::ecdsa::Signature::from_scalars(
                $curve::FieldBytes::from(r),
                $curve::FieldBytes::from(s),
            )
            .ok()
        })
    };
}
pub(crate) use ecdsa_sig;

#[cfg(test)]
mod tests;
