//! DSSE-signed runtime policies, as `keylime-policy sign runtime` writes them:
//! `{"payload": b64(policy), "payloadType": "application/vnd.keylime+json",
//! "signatures": [{"keyid": …, "sig": b64(DER ECDSA-SHA256 over PAE)}]}`, where
//! PAE = `"DSSEv1 <len(type)> <type> <len(payload)> <payload>"`.
//!
//! Keylime signs with ECDSA over SHA-256 whatever the curve (its `ecdsa` and `x509`
//! backends), so that is what is verified: against an EC public key (P-256, P-384 or
//! P-521, as PEM SPKI) or the key of an X.509 certificate. An envelope is trusted when any of its
//! signatures verifies with the given key.
//!
//! [`sign_dsse`] makes such envelopes with a [`DsseSigningKey`]. Signatures are
//! deterministic (RFC 6979), so signing needs no randomness; only generating a key
//! does, and the caller passes the generator in.

use base64::Engine;
use ecdsa::signature::Verifier;
use serde::Deserialize;

use super::{PolicyError, RuntimePolicy};
use crate::hash::HashAlg;

/// Why a signed policy was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DsseError {
    /// The document is not a DSSE envelope.
    #[error("not a DSSE envelope: {0}")]
    NotEnvelope(String),
    /// The key is not an EC public key or certificate Vigil can use.
    #[error("unusable policy signing key: {0}")]
    Key(String),
    /// No signature in the envelope verifies with the key.
    #[error("no signature of the DSSE envelope verifies with the given key")]
    BadSignature,
}

/// The DSSE payload type of Keylime runtime policies.
pub const KEYLIME_PAYLOAD_TYPE: &str = "application/vnd.keylime+json";

#[derive(Deserialize)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType", default)]
    payload_type: String,
    #[serde(default)]
    signatures: Vec<SignatureEntry>,
}

#[derive(Deserialize)]
struct SignatureEntry {
    sig: String,
}

/// Decodes base64 as Keylime's `b64dec` does: hex first (a quirk it has), then
/// standard and URL-safe base64.
fn b64dec(text: &str) -> Option<Vec<u8>> {
    if let Ok(bytes) = hex::decode(text) {
        if !bytes.is_empty() {
            return Some(bytes);
        }
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
        .ok()
}

/// The payload of a DSSE envelope, or `None` when `bytes` is not one (Keylime's test:
/// a JSON object with a non-empty `payload`).
pub(super) fn envelope_payload(bytes: &[u8]) -> Result<Option<Vec<u8>>, PolicyError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        payload: Option<serde_json::Value>,
    }
    let Ok(probe) = serde_json::from_slice::<Probe>(bytes) else {
        return Ok(None); // not an object with a payload: parse it as a policy
    };
    match probe.payload {
        Some(serde_json::Value::String(p)) if !p.is_empty() => b64dec(&p)
            .map(Some)
            .ok_or_else(|| PolicyError::Envelope("payload is not base64".into())),
        _ => Ok(None),
    }
}

/// The payload of a DSSE envelope, decoded as Keylime decodes it, without checking any
/// signature; `None` when `bytes` is not an envelope (no non-empty `payload`).
pub fn dsse_payload(bytes: &[u8]) -> Result<Option<Vec<u8>>, PolicyError> {
    envelope_payload(bytes)
}

enum EcKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
}

fn load_key(pem_or_der: &[u8]) -> Result<EcKey, DsseError> {
    use spki::DecodePublicKey;
    let spki_der = if let Ok(text) = std::str::from_utf8(pem_or_der) {
        if text.contains("BEGIN CERTIFICATE") {
            cert_spki(&pem_der(text)?)?
        } else if text.contains("BEGIN PUBLIC KEY") {
            pem_der(text)?
        } else {
            pem_or_der.to_vec()
        }
    } else {
        match cert_spki(pem_or_der) {
            Ok(der) => der,
            Err(_) => pem_or_der.to_vec(),
        }
    };
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&spki_der) {
        return Ok(EcKey::P256(k));
    }
    if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(&spki_der) {
        return Ok(EcKey::P384(k));
    }
    if let Ok(k) = p521::PublicKey::from_public_key_der(&spki_der) {
        let k = p521::ecdsa::VerifyingKey::from_affine(*k.as_affine())
            .map_err(|e| DsseError::Key(e.to_string()))?;
        return Ok(EcKey::P521(k));
    }
    Err(DsseError::Key(
        "expected a P-256, P-384 or P-521 EC public key (PEM) or certificate".into(),
    ))
}

fn pem_der(text: &str) -> Result<Vec<u8>, DsseError> {
    let (_, der) = der::pem::decode_vec(text.trim().as_bytes())
        .map_err(|e| DsseError::Key(format!("bad PEM: {e}")))?;
    Ok(der)
}

fn cert_spki(der: &[u8]) -> Result<Vec<u8>, DsseError> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| DsseError::Key(format!("bad certificate: {e}")))?;
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| DsseError::Key(e.to_string()))
}

/// Verifies a DSSE-signed policy with `key` (PEM EC public key or certificate) and
/// parses its payload.
pub fn verify_dsse(envelope: &[u8], key: &[u8]) -> Result<RuntimePolicy, PolicyError> {
    let env: Envelope =
        serde_json::from_slice(envelope).map_err(|e| DsseError::NotEnvelope(e.to_string()))?;
    let payload = b64dec(&env.payload)
        .ok_or_else(|| DsseError::NotEnvelope("payload is not base64".into()))?;
    let key = load_key(key)?;
    let pae = pae(&env.payload_type, &payload);
    let verified = env.signatures.iter().any(|s| {
        let Some(sig) = b64dec(&s.sig) else {
            return false;
        };
        match &key {
            EcKey::P256(k) => {
                p256::ecdsa::Signature::from_der(&sig).is_ok_and(|sig| k.verify(&pae, &sig).is_ok())
            }
            // P-384 and P-521 signatures are over SHA-256 too, so verify the prehash.
            EcKey::P384(k) => p384::ecdsa::Signature::from_der(&sig).is_ok_and(|sig| {
                use ecdsa::signature::hazmat::PrehashVerifier;
                k.verify_prehash(HashAlg::Sha256.hash(&pae).as_bytes(), &sig)
                    .is_ok()
            }),
            EcKey::P521(k) => p521::ecdsa::Signature::from_der(&sig).is_ok_and(|sig| {
                use ecdsa::signature::hazmat::PrehashVerifier;
                k.verify_prehash(&p521_prehash(HashAlg::Sha256.hash(&pae).as_bytes()), &sig)
                    .is_ok()
            }),
        }
    });
    if !verified {
        return Err(DsseError::BadSignature.into());
    }
    RuntimePolicy::from_document(&payload, HashAlg::Sha256.hash(envelope).to_hex())
}

/// An EC private key that signs runtime policies, as `keylime-policy sign` uses them:
/// P-256 (what it generates), P-384 or P-521 (accepted with `--keyfile`), always with
/// SHA-256.
#[derive(Clone)]
pub enum DsseSigningKey {
    /// NIST P-256.
    P256(p256::ecdsa::SigningKey),
    /// NIST P-384.
    P384(p384::ecdsa::SigningKey),
    /// NIST P-521.
    P521(p521::SecretKey),
}

impl std::fmt::Debug for DsseSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str(match self {
            Self::P256(_) => "DsseSigningKey::P256",
            Self::P384(_) => "DsseSigningKey::P384",
            Self::P521(_) => "DsseSigningKey::P521",
        })
    }
}

impl DsseSigningKey {
    /// A new P-256 key, the curve `keylime-policy sign` generates.
    pub fn generate_p256(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        Self::P256(p256::ecdsa::SigningKey::random(rng))
    }

    /// Reads an unencrypted PEM private key: SEC1 (`EC PRIVATE KEY`, what Keylime
    /// writes) or PKCS#8 (`PRIVATE KEY`).
    pub fn from_pem(text: &str) -> Result<Self, DsseError> {
        use p256::pkcs8::DecodePrivateKey;
        let text = text.trim();
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(DsseError::Key(
                "the private key is encrypted; give an unencrypted PEM key".into(),
            ));
        }
        if let Ok(k) =
            p256::SecretKey::from_sec1_pem(text).or_else(|_| p256::SecretKey::from_pkcs8_pem(text))
        {
            return Ok(Self::P256(k.into()));
        }
        if let Ok(k) =
            p384::SecretKey::from_sec1_pem(text).or_else(|_| p384::SecretKey::from_pkcs8_pem(text))
        {
            return Ok(Self::P384(k.into()));
        }
        if let Ok(k) =
            p521::SecretKey::from_sec1_pem(text).or_else(|_| p521::SecretKey::from_pkcs8_pem(text))
        {
            return Ok(Self::P521(k));
        }
        Err(DsseError::Key(
            "expected an unencrypted P-256, P-384 or P-521 EC private key in PEM (SEC1 or \
             PKCS#8)"
                .into(),
        ))
    }

    /// The key as unencrypted PKCS#8 PEM (`PRIVATE KEY`). Keylime writes SEC1, but the
    /// SEC1 encoder at hand leaves out the curve, which OpenSSL then cannot read; every
    /// reader (Keylime's `load_pem_private_key`, OpenSSL, Vigil) takes PKCS#8.
    pub fn to_pkcs8_pem(&self) -> Result<String, DsseError> {
        use p256::pkcs8::EncodePrivateKey;
        let pem = match self {
            Self::P256(k) => p256::SecretKey::from(k).to_pkcs8_pem(der::pem::LineEnding::LF),
            Self::P384(k) => p384::SecretKey::from(k).to_pkcs8_pem(der::pem::LineEnding::LF),
            Self::P521(k) => k.to_pkcs8_pem(der::pem::LineEnding::LF),
        };
        pem.map(|p| p.as_str().to_owned())
            .map_err(|e| DsseError::Key(e.to_string()))
    }

    /// The key as PKCS#8 DER (for certificate builders).
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, DsseError> {
        use p256::pkcs8::EncodePrivateKey;
        let doc = match self {
            Self::P256(k) => p256::SecretKey::from(k).to_pkcs8_der(),
            Self::P384(k) => p384::SecretKey::from(k).to_pkcs8_der(),
            Self::P521(k) => k.to_pkcs8_der(),
        };
        doc.map(|d| d.as_bytes().to_vec())
            .map_err(|e| DsseError::Key(e.to_string()))
    }

    /// The public key as PEM SubjectPublicKeyInfo, byte for byte as Python's
    /// `cryptography` writes it (64-column base64, `\n` line ends).
    pub fn public_key_pem(&self) -> Result<String, DsseError> {
        use p256::pkcs8::EncodePublicKey;
        let pem = match self {
            Self::P256(k) => k
                .verifying_key()
                .to_public_key_pem(der::pem::LineEnding::LF),
            Self::P384(k) => k
                .verifying_key()
                .to_public_key_pem(der::pem::LineEnding::LF),
            Self::P521(k) => k.public_key().to_public_key_pem(der::pem::LineEnding::LF),
        };
        pem.map_err(|e| DsseError::Key(e.to_string()))
    }

    /// The `keyid` Keylime's `ecdsa` backend puts in a signature: the hex SHA-256 of
    /// [`public_key_pem`](Self::public_key_pem).
    pub fn ecdsa_keyid(&self) -> Result<String, DsseError> {
        Ok(HashAlg::Sha256
            .hash(self.public_key_pem()?.as_bytes())
            .to_hex())
    }

    /// DER ECDSA signature over SHA-256 of `message` (whatever the curve, as Keylime
    /// signs).
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use ecdsa::signature::hazmat::PrehashSigner;
        let digest = HashAlg::Sha256.hash(message);
        let der: Result<Vec<u8>, ecdsa::Error> = match self {
            Self::P256(k) => k
                .sign_prehash(digest.as_bytes())
                .map(|s: p256::ecdsa::Signature| s.to_der().as_bytes().to_vec()),
            Self::P384(k) => k
                .sign_prehash(digest.as_bytes())
                .map(|s: p384::ecdsa::Signature| s.to_der().as_bytes().to_vec()),
            Self::P521(k) => p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                .and_then(|k| k.sign_prehash(&p521_prehash(digest.as_bytes())))
                .map(|s: p521::ecdsa::Signature| s.to_der().as_bytes().to_vec()),
        };
        // A 32-byte digest (padded for P-521) is a valid prehash, and RFC 6979 signing with
        // a valid key cannot fail otherwise.
        der.unwrap_or_else(|e| unreachable!("ECDSA signing of a SHA-256 digest failed: {e}"))
    }
}

/// A SHA-256 digest as a P-521 prehash. The `ecdsa` crate refuses prehashes shorter
/// than half the field (33 bytes) while OpenSSL, which Keylime uses, reads the digest as
/// an integer; left-padding it with zeros to the field size is that same integer.
fn p521_prehash(digest: &[u8]) -> [u8; 66] {
    let mut out = [0u8; 66];
    out[66 - digest.len()..].copy_from_slice(digest);
    out
}

/// The DSSE pre-authentication encoding: `DSSEv1 <len> <type> <len> <payload>`.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut pae = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(payload);
    pae
}

/// Signs `payload` (the policy's JSON text) into a DSSE envelope of Keylime's payload
/// type, written as Keylime's `dsse.Sign` writes it (Python `json.dumps` layout, the
/// `keyid` left out when `None`). Keylime's backends use as `keyid` the
/// [`ecdsa_keyid`](DsseSigningKey::ecdsa_keyid) (`ecdsa`) or the base64 of the
/// certificate's PEM (`x509`, where verifiers without a key read the certificate from it).
pub fn sign_dsse(payload: &[u8], key: &DsseSigningKey, keyid: Option<&str>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = b64.encode(key.sign(&pae(KEYLIME_PAYLOAD_TYPE, payload)));
    // Every value is ASCII (base64, hex, the type), so serde_json's quoting is Python's.
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let keyid = keyid
        .map(|k| format!("\"keyid\": {}, ", quote(k)))
        .unwrap_or_default();
    format!(
        "{{\"payload\": {}, \"payloadType\": {}, \"signatures\": [{{{keyid}\"sig\": {}}}]}}",
        quote(&b64.encode(payload)),
        quote(KEYLIME_PAYLOAD_TYPE),
        quote(&sig)
    )
}
