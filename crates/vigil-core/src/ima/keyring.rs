//! IMA keyrings: the public keys `ima-sig` signatures are checked with.
//!
//! A node's keys come from two places, as in Keylime: the tenant keyring in the runtime
//! policy's `verification-keys`, and keys the kernel measured into a keyring (`.ima`,
//! ...) as `ima-buf` entries, learnt once the policy vouched for them. Keys are indexed
//! by the 32-bit key id a v2 signature names; they are parsed once, when added.
//!
//! Key id ("keyidv2"): the last 4 bytes, big-endian, of SHA-1 over the DER PKCS#1
//! `RSAPublicKey`, or over the X9.62 uncompressed point of an EC key; for a key taken
//! from an X.509 certificate with a Subject Key Identifier, the last 4 bytes of the SKI.

use base64::Engine;
use der::{Decode, Encode};
use ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::SignatureScheme;

use super::signature::{ImaSignature, SignatureError};
use crate::hash::HashAlg;

/// Why bytes that hold a key cannot be used as an IMA key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A public key of a type IMA signatures cannot use (not RSA or EC).
    #[error("unsupported key type {0}")]
    UnsupportedType(String),
    /// An EC key on a curve Vigil does not support.
    #[error("unsupported elliptic curve {0} (P-256, P-384 and secp256k1 are supported)")]
    UnsupportedCurve(String),
    /// A malformed `verification-keys` keyring.
    #[error("invalid IMA keyring JSON: {0}")]
    Json(String),
}

/// A public key that verifies IMA signatures.
#[derive(Clone, Debug)]
pub struct ImaPublicKey {
    key: KeyKind,
    /// The SubjectPublicKeyInfo DER, kept for [`ImaKeyring::to_keylime_json`].
    spki_der: Vec<u8>,
}

#[derive(Clone, Debug)]
enum KeyKind {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Secp256k1(k256::ecdsa::VerifyingKey),
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_SKI: &str = "2.5.29.14";

impl ImaPublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Option<Self>, KeyError> {
        let Ok(spki) = spki::SubjectPublicKeyInfoRef::from_der(der) else {
            return Ok(None);
        };
        let key = match spki.algorithm.oid.to_string().as_str() {
            OID_RSA => match rsa::RsaPublicKey::from_public_key_der(der) {
                Ok(k) => KeyKind::Rsa(k),
                Err(_) => return Ok(None),
            },
            OID_EC => {
                if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
                    KeyKind::P256(k)
                } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
                    KeyKind::P384(k)
                } else if let Ok(k) = k256::ecdsa::VerifyingKey::from_public_key_der(der) {
                    KeyKind::Secp256k1(k)
                } else {
                    let curve = spki
                        .algorithm
                        .parameters
                        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
                        .map_or_else(|| "unknown".to_owned(), |o| o.to_string());
                    return Err(KeyError::UnsupportedCurve(curve));
                }
            }
            other => return Err(KeyError::UnsupportedType(other.to_owned())),
        };
        Ok(Some(Self {
            key,
            spki_der: der.to_vec(),
        }))
    }

    /// The key id derived from the key itself.
    pub fn derived_keyid(&self) -> u32 {
        let material = match &self.key {
            KeyKind::Rsa(k) => k
                .to_pkcs1_der()
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_default(),
            KeyKind::P256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            KeyKind::P384(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            KeyKind::Secp256k1(k) => k.to_encoded_point(false).as_bytes().to_vec(),
        };
        let digest = HashAlg::Sha1.hash(&material);
        let b = digest.as_bytes();
        u32::from_be_bytes([b[16], b[17], b[18], b[19]])
    }

    /// Verifies `signature` over the prehashed `file_digest` made with `hash`.
    fn verify(&self, hash: &str, file_digest: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            KeyKind::Rsa(k) => {
                let scheme = match hash {
                    "sha1" => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                    "sha224" => rsa::Pkcs1v15Sign::new::<sha2::Sha224>(),
                    "sha256" => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                    "sha384" => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                    "sha512" => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    _ => return false,
                };
                scheme.verify(k, file_digest, signature).is_ok()
            }
            KeyKind::P256(k) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(file_digest, &s).is_ok()),
            KeyKind::P384(k) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(file_digest, &s).is_ok()),
            // k256 refuses high-S signatures (a Bitcoin rule); OpenSSL, and so Keylime,
            // accepts both forms, so normalise first.
            KeyKind::Secp256k1(k) => k256::ecdsa::Signature::from_der(signature).is_ok_and(|s| {
                let s = s.normalize_s().unwrap_or(s);
                k.verify_prehash(file_digest, &s).is_ok()
            }),
        }
    }
}

/// Finds a public key in bytes the way Keylime's `get_pubkey` does: a DER or PEM X.509
/// certificate (with its SKI-derived key id), a DER or PEM public key (SPKI, or PKCS#1
/// for RSA), or the public half of a PEM private key (PKCS#8, SEC1 or PKCS#1).
/// `Ok(None)` means the bytes hold no key (a plain buffer); an error means they hold a
/// key of an unusable type.
pub fn parse_ima_key(bytes: &[u8]) -> Result<Option<(ImaPublicKey, Option<u32>)>, KeyError> {
    if let Some(found) = from_certificate_der(bytes)? {
        return Ok(Some(found));
    }
    if let Some(key) = ImaPublicKey::from_spki_der(bytes)? {
        return Ok(Some((key, None)));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(None);
    };
    for (label, der) in pem_blocks(text) {
        let spki = match label.as_str() {
            "CERTIFICATE" => return from_certificate_der(&der),
            "PUBLIC KEY" => Some(der),
            "RSA PUBLIC KEY" => {
                use rsa::pkcs1::DecodeRsaPublicKey;
                rsa::RsaPublicKey::from_pkcs1_der(&der)
                    .ok()
                    .and_then(|k| spki_of(&k))
            }
            "RSA PRIVATE KEY" => rsa_private_spki(&der),
            "EC PRIVATE KEY" => ec_private_spki(&der, false),
            "PRIVATE KEY" => ec_private_spki(&der, true).or_else(|| {
                use rsa::pkcs8::der::Decode;
                rsa::pkcs8::PrivateKeyInfo::from_der(&der)
                    .ok()
                    .filter(|info| info.algorithm.oid == rsa::pkcs1::ALGORITHM_OID)
                    .and_then(|info| rsa_private_spki(info.private_key))
            }),
            _ => None,
        };
        if let Some(spki) = spki {
            return Ok(ImaPublicKey::from_spki_der(&spki)?.map(|k| (k, None)));
        }
    }
    Ok(None)
}

/// The SPKI of a PKCS#1 RSA private key's public half, read from its modulus and public
/// exponent fields only: nothing is computed with the private values.
fn rsa_private_spki(pkcs1_der: &[u8]) -> Option<Vec<u8>> {
    use rsa::pkcs1::der::Decode;
    let key = rsa::pkcs1::RsaPrivateKey::from_der(pkcs1_der).ok()?;
    let public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(key.modulus.as_bytes()),
        rsa::BigUint::from_bytes_be(key.public_exponent.as_bytes()),
    )
    .ok()?;
    spki_of(&public)
}

fn spki_of(key: &impl rsa::pkcs8::EncodePublicKey) -> Option<Vec<u8>> {
    key.to_public_key_der().ok().map(|d| d.as_bytes().to_vec())
}

/// The SPKI of an EC private key's public half (SEC1 or PKCS#8 encoding).
fn ec_private_spki(der: &[u8], pkcs8: bool) -> Option<Vec<u8>> {
    macro_rules! curve {
        ($c:ident) => {{
            let secret = if pkcs8 {
                use rsa::pkcs8::DecodePrivateKey;
                $c::SecretKey::from_pkcs8_der(der).ok()
            } else {
                $c::SecretKey::from_sec1_der(der).ok()
            };
            if let Some(s) = secret {
                return spki_of(&s.public_key());
            }
        }};
    }
    curve!(p256);
    curve!(p384);
    curve!(k256);
    None
}

/// Every `-----BEGIN X-----` … `-----END X-----` block of a text, decoded.
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let Some(label_end) = block["-----BEGIN ".len()..].find("-----") else {
            break;
        };
        let label = &block["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = block.find(&end_marker) else {
            break;
        };
        let pem = &block[..end + end_marker.len()];
        if let Ok((_, der)) = der::pem::decode_vec(pem.as_bytes()) {
            out.push((label.to_owned(), der));
        }
        rest = &block[end + end_marker.len()..];
    }
    out
}

fn from_certificate_der(der: &[u8]) -> Result<Option<(ImaPublicKey, Option<u32>)>, KeyError> {
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return Ok(None);
    };
    let Ok(spki) = cert.tbs_certificate.subject_public_key_info.to_der() else {
        return Ok(None);
    };
    let keyid = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == OID_SKI)
        .and_then(|e| der::asn1::OctetString::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|ski| {
            let b = ski.as_bytes();
            let tail = b.get(b.len().checked_sub(4)?..)?;
            Some(u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]))
        });
    Ok(ImaPublicKey::from_spki_der(&spki)?.map(|k| (k, keyid)))
}

/// Keys indexed by key id.
#[derive(Clone, Debug, Default)]
pub struct ImaKeyring {
    keys: Vec<(u32, ImaPublicKey)>,
}

impl ImaKeyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key under `keyid`, or its derived id when `None` or 0 (as Keylime treats a
    /// zero id); a key with the same id is replaced. Returns the id used.
    pub fn add(&mut self, key: ImaPublicKey, keyid: Option<u32>) -> u32 {
        let id = keyid
            .filter(|&id| id != 0)
            .unwrap_or_else(|| key.derived_keyid());
        match self.keys.iter_mut().find(|(k, _)| *k == id) {
            Some(slot) => slot.1 = key,
            None => self.keys.push((id, key)),
        }
        id
    }

    fn get(&self, keyid: u32) -> Option<&ImaPublicKey> {
        self.keys.iter().find(|(k, _)| *k == keyid).map(|(_, k)| k)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the keyring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reads Keylime's keyring JSON (`{"pubkeys": [b64 DER SPKI], "keyids": [int]}`,
    /// possibly encoded twice as a JSON string). An empty text is no keyring; keys that
    /// do not decode are skipped, as Keylime skips them.
    pub fn from_keylime_json(text: &str) -> Result<Option<Self>, KeyError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| KeyError::Json(e.to_string()))?;
        if let Some(inner) = value.as_str() {
            value = serde_json::from_str(inner).map_err(|e| KeyError::Json(e.to_string()))?;
        }
        let Some(obj) = value.as_object() else {
            return Ok(None);
        };
        let pubkeys = obj
            .get("pubkeys")
            .and_then(|p| p.as_array())
            .ok_or_else(|| KeyError::Json("\"pubkeys\" must be a list".into()))?;
        let keyids: Vec<Option<u32>> = obj
            .get("keyids")
            .and_then(|k| k.as_array())
            .map(|ids| {
                ids.iter()
                    .map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let mut ring = Self::new();
        for (index, b64) in pubkeys.iter().enumerate() {
            let der = b64
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
            if let Some(Ok(Some(key))) = der.map(|d| ImaPublicKey::from_spki_der(&d)) {
                ring.add(key, keyids.get(index).copied().flatten());
            }
        }
        Ok(Some(ring))
    }

    /// Keylime's keyring JSON for this keyring.
    pub fn to_keylime_json(&self) -> String {
        let b64 = &base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "pubkeys": self.keys.iter().map(|(_, k)| b64.encode(&k.spki_der)).collect::<Vec<_>>(),
            "keyids": self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

/// A node's keyrings: the tenant keyring and the keyrings learnt from its log.
#[derive(Clone, Debug, Default)]
pub struct ImaKeyrings {
    tenant: Option<ImaKeyring>,
    learnt: Vec<(String, ImaKeyring)>,
}

impl ImaKeyrings {
    /// No keys at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or clears) the tenant keyring from the policy's `verification-keys`.
    pub fn set_tenant_keyring(&mut self, ring: Option<ImaKeyring>) {
        self.tenant = ring;
    }

    /// Learns a key measured into keyring `keyring_name`.
    pub fn add_key(&mut self, keyring_name: &str, key: ImaPublicKey, keyid: Option<u32>) {
        match self.learnt.iter_mut().find(|(n, _)| n == keyring_name) {
            Some((_, ring)) => {
                ring.add(key, keyid);
            }
            None => {
                let mut ring = ImaKeyring::new();
                ring.add(key, keyid);
                self.learnt.push((keyring_name.to_owned(), ring));
            }
        }
    }

    /// Forgets learnt keys (when the IMA state resets and the log is replayed anew).
    pub fn clear_learned(&mut self) {
        self.learnt.clear();
    }

    /// The learnt keyrings in Keylime's `learned_ima_keyrings` form (its
    /// `ImaKeyrings.to_string()`): an object mapping each keyring name to that keyring's
    /// JSON text. The tenant keyring is not included: it comes from the enrolment.
    pub fn learned_to_keylime_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .learnt
            .iter()
            .map(|(name, ring)| (name.clone(), ring.to_keylime_json().into()))
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    /// Replaces the learnt keyrings with those of a `learned_ima_keyrings` text (see
    /// [`Self::learned_to_keylime_json`]; like Keylime, a keyring may also be given as
    /// an object, and the whole text may be encoded twice). An empty text or `null`
    /// learns nothing; on error the learnt keyrings are left unchanged.
    pub fn set_learned_from_keylime_json(&mut self, text: &str) -> Result<(), KeyError> {
        let mut learnt = Vec::new();
        if !text.trim().is_empty() {
            let mut value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| KeyError::Json(e.to_string()))?;
            if let Some(inner) = value.as_str() {
                value = serde_json::from_str(inner).map_err(|e| KeyError::Json(e.to_string()))?;
            }
            match value {
                serde_json::Value::Null => {}
                serde_json::Value::Object(map) => {
                    for (name, ring) in map {
                        let ring_text = match ring {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        };
                        if let Some(ring) = ImaKeyring::from_keylime_json(&ring_text)? {
                            learnt.push((name, ring));
                        }
                    }
                }
                _ => {
                    return Err(KeyError::Json(
                        "learned keyrings must be an object of keyrings".into(),
                    ))
                }
            }
        }
        self.learnt = learnt;
        Ok(())
    }

    /// Takes over the learnt keyrings of `other` (the node's context was rebuilt from
    /// its enrolment while its IMA state, and so what it learnt, carries on).
    pub fn adopt_learned(&mut self, other: &mut Self) {
        self.learnt = std::mem::take(&mut other.learnt);
    }

    /// How many keys were learnt from the log, over every keyring.
    pub fn learned_len(&self) -> usize {
        self.learnt.iter().map(|(_, r)| r.len()).sum()
    }

    /// Verifies an `ima-sig` signature blob over a file digest whose algorithm the log
    /// names `digest_alg`, with the first keyring holding the signature's key id.
    pub fn verify(
        &self,
        digest_alg: &str,
        file_digest: &[u8],
        sig_blob: &[u8],
    ) -> Result<u32, SignatureError> {
        let sig = ImaSignature::parse(sig_blob)?;
        let hash = sig
            .hash_name()
            .ok_or(SignatureError::UnsupportedHash(sig.hash_algo))?;
        if hash != digest_alg {
            return Err(SignatureError::HashMismatch {
                sig: hash,
                digest: digest_alg.to_owned(),
            });
        }
        let key = self
            .learnt
            .iter()
            .map(|(_, r)| r)
            .chain(self.tenant.as_ref())
            .find_map(|r| r.get(sig.keyid))
            .ok_or(SignatureError::UnknownKey(sig.keyid))?;
        if key.verify(hash, file_digest, sig.signature) {
            Ok(sig.keyid)
        } else {
            Err(SignatureError::Invalid(sig.keyid))
        }
    }
}
