//! DSSE-signed runtime policies, as `keylime-policy sign runtime` writes them:
//! `{"payload": b64(policy), "payloadType": "application/vnd.keylime+json",
//! "signatures": [{"keyid": …, "sig": b64(DER ECDSA-SHA256 over PAE)}]}`, where
//! PAE = `"DSSEv1 <len(type)> <type> <len(payload)> <payload>"`.
//!
//! Keylime signs with ECDSA over SHA-256 whatever the curve (its `ecdsa` and `x509`
//! backends), so that is what is verified: against an EC public key (P-256 or P-384, as
//! PEM SPKI) or the key of an X.509 certificate. An envelope is trusted when any of its
//! signatures verifies with the given key.

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

enum EcKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
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
    Err(DsseError::Key(
        "expected a P-256 or P-384 EC public key (PEM) or certificate".into(),
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
    let mut pae = format!(
        "DSSEv1 {} {} {} ",
        env.payload_type.len(),
        env.payload_type,
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(&payload);
    let verified = env.signatures.iter().any(|s| {
        let Some(sig) = b64dec(&s.sig) else {
            return false;
        };
        match &key {
            EcKey::P256(k) => {
                p256::ecdsa::Signature::from_der(&sig).is_ok_and(|sig| k.verify(&pae, &sig).is_ok())
            }
            // P-384 signatures are over SHA-256 too, so verify the prehash.
            EcKey::P384(k) => p384::ecdsa::Signature::from_der(&sig).is_ok_and(|sig| {
                use ecdsa::signature::hazmat::PrehashVerifier;
                k.verify_prehash(HashAlg::Sha256.hash(&pae).as_bytes(), &sig)
                    .is_ok()
            }),
        }
    });
    if !verified {
        return Err(DsseError::BadSignature.into());
    }
    RuntimePolicy::from_document(&payload, HashAlg::Sha256.hash(envelope).to_hex())
}
