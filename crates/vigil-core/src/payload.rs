//! Keylime's U/V bootstrap key and encrypted payloads.
//!
//! The tenant draws a bootstrap key `K` and splits it into two shares, `U = K ⊕ V` and
//! `V`. The tenant gives U to the node (with `auth_tag = HMAC-SHA384(K, agent id)`), the
//! verifier gives V only after the node's first good integrity quote, so the node can
//! rebuild K — and decrypt its payload — only once it has been attested. Each share
//! travels encrypted to the node key (NK) with RSA-OAEP/SHA-1; the payload is
//! `base64(IV[16] ‖ AES-GCM(K, IV) ciphertext ‖ tag[16])`, AES-128 or AES-256 by key size.
//!
//! Randomness comes in as an argument, so every output is reproducible in a test.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine;
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;

use crate::hash::HashAlg;
use crate::tpm::credential::{hmac, oaep_decrypt};

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;
/// Keylime's payload IV length (not GCM's usual 12).
const IV_LEN: usize = 16;
/// The GCM tag length.
const TAG_LEN: usize = 16;

type Aes128Gcm16 = aes_gcm::AesGcm<aes::Aes128, U16>;
type Aes256Gcm16 = aes_gcm::AesGcm<aes::Aes256, U16>;

/// What is wrong with a share, key or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// A key or share that is not 16 or 32 bytes.
    #[error("a bootstrap key or share must be 16 or 32 bytes, not {0}")]
    KeyLength(usize),
    /// U and V of different lengths.
    #[error("the U and V shares differ in length ({0} and {1} bytes)")]
    ShareLengths(usize, usize),
    /// Not base64.
    #[error("{0} is not base64: {1}")]
    Base64(&'static str, String),
    /// Shorter than IV plus tag.
    #[error("the payload is {0} bytes, shorter than its IV and tag")]
    Truncated(usize),
    /// The GCM tag does not verify: wrong key or altered ciphertext.
    #[error("the payload does not decrypt with this key (wrong key or altered data)")]
    Decrypt,
    /// RSA-OAEP failed.
    #[error("RSA-OAEP: {0}")]
    Rsa(String),
}

/// The bootstrap key K (16 or 32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapKey(Vec<u8>);

impl std::fmt::Debug for BootstrapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "BootstrapKey({} bytes)", self.0.len())
    }
}

impl BootstrapKey {
    /// A fresh 32-byte key, as Keylime's tenant makes.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut k = vec![0; 32];
        rng.fill_bytes(&mut k);
        Self(k)
    }

    /// A key given as bytes (16 or 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PayloadError> {
        check_len(bytes.len())?;
        Ok(Self(bytes.to_vec()))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Splits K into `(U, V)` with a random V: `U = K ⊕ V`.
    pub fn split(&self, rng: &mut impl CryptoRngCore) -> (Vec<u8>, Vec<u8>) {
        let mut v = vec![0; self.0.len()];
        rng.fill_bytes(&mut v);
        let u = xor(&self.0, &v);
        (u, v)
    }

    /// Rebuilds K from its shares.
    pub fn combine(u: &[u8], v: &[u8]) -> Result<Self, PayloadError> {
        if u.len() != v.len() {
            return Err(PayloadError::ShareLengths(u.len(), v.len()));
        }
        check_len(u.len())?;
        Ok(Self(xor(u, v)))
    }

    /// `hex(HMAC-SHA384(K, agent id))`: the tag sent with U, proving which K it makes.
    pub fn auth_tag(&self, agent_id: &str) -> String {
        self.mac(agent_id)
    }

    /// True when `tag` is this key's [`auth_tag`](Self::auth_tag) (constant time).
    pub fn matches_auth_tag(&self, agent_id: &str, tag: &str) -> bool {
        bool::from(
            self.auth_tag(agent_id)
                .as_bytes()
                .ct_eq(tag.to_ascii_lowercase().as_bytes()),
        )
    }

    /// `hex(HMAC-SHA384(K, challenge))`: the node's answer to `keys/verify`.
    pub fn answer_challenge(&self, challenge: &str) -> String {
        self.mac(challenge)
    }

    fn mac(&self, text: &str) -> String {
        hmac(HashAlg::Sha384, &self.0, &[text.as_bytes()]).to_hex()
    }

    /// Encrypts a payload: `base64(IV[16] ‖ ciphertext ‖ tag)`.
    pub fn encrypt_payload(&self, plaintext: &[u8], rng: &mut impl CryptoRngCore) -> String {
        let mut iv = [0u8; IV_LEN];
        rng.fill_bytes(&mut iv);
        let nonce = &aes_gcm::Nonce::<U16>::from(iv);
        // Encryption only fails for plaintexts beyond GCM's 64 GiB limit.
        let sealed = match self.0.len() {
            16 => Aes128Gcm16::new_from_slice(&self.0).map(|c| c.encrypt(nonce, plaintext)),
            _ => Aes256Gcm16::new_from_slice(&self.0).map(|c| c.encrypt(nonce, plaintext)),
        };
        let sealed = sealed
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| unreachable!("valid key length and payload size"));
        let mut out = iv.to_vec();
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// Decrypts a payload made by [`encrypt_payload`](Self::encrypt_payload) (or by
    /// Keylime's tenant).
    pub fn decrypt_payload(&self, payload_b64: &str) -> Result<Vec<u8>, PayloadError> {
        let data = B64
            .decode(payload_b64.trim())
            .map_err(|e| PayloadError::Base64("the payload", e.to_string()))?;
        if data.len() < IV_LEN + TAG_LEN {
            return Err(PayloadError::Truncated(data.len()));
        }
        let (iv, sealed) = data.split_at(IV_LEN);
        let iv: [u8; IV_LEN] = iv
            .try_into()
            .map_err(|_| PayloadError::Truncated(data.len()))?;
        let nonce = &aes_gcm::Nonce::<U16>::from(iv);
        let opened = match self.0.len() {
            16 => Aes128Gcm16::new_from_slice(&self.0).map(|c| c.decrypt(nonce, sealed)),
            _ => Aes256Gcm16::new_from_slice(&self.0).map(|c| c.decrypt(nonce, sealed)),
        };
        opened
            .map_err(|_| PayloadError::KeyLength(self.0.len()))?
            .map_err(|_| PayloadError::Decrypt)
    }
}

/// Encrypts a share (or any small secret) to the node key: RSA-OAEP with SHA-1 and
/// MGF1-SHA-1, no label, base64 — Keylime's `encrypted_key`.
pub fn encrypt_share(
    nk: &rsa::RsaPublicKey,
    share: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<String, PayloadError> {
    let ct = nk
        .encrypt(rng, rsa::Oaep::new::<sha1::Sha1>(), share)
        .map_err(|e| PayloadError::Rsa(e.to_string()))?;
    Ok(B64.encode(ct))
}

/// The private half of a node key (NK): what decrypts the shares sent with
/// [`encrypt_share`]. Shares arrive over the network, so decryption runs in aws-lc,
/// whose RSA is constant time; the `rsa` crate's is not (RUSTSEC-2023-0071, Marvin).
#[derive(Clone)]
pub struct NodePrivateKey(aws_lc_rs::rsa::PrivateDecryptingKey);

impl std::fmt::Debug for NodePrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "NodePrivateKey(RSA-{})", self.0.key_size_bits())
    }
}

impl NodePrivateKey {
    /// An RSA private key (2048 to 8192 bits) in PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, PayloadError> {
        aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(der)
            .map(Self)
            .map_err(|e| PayloadError::Rsa(format!("not a usable RSA private key: {e}")))
    }

    /// The key in PKCS#8 DER.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, PayloadError> {
        use aws_lc_rs::encoding::AsDer;
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = self
            .0
            .as_der()
            .map_err(|_| PayloadError::Rsa("cannot encode the private key".into()))?;
        Ok(der.as_ref().to_vec())
    }

    /// The public half as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Result<Vec<u8>, PayloadError> {
        use aws_lc_rs::encoding::AsDer;
        let der: aws_lc_rs::encoding::PublicKeyX509Der<'_> = self
            .0
            .public_key()
            .as_der()
            .map_err(|_| PayloadError::Rsa("cannot encode the public key".into()))?;
        Ok(der.as_ref().to_vec())
    }
}

/// The node's side of [`encrypt_share`].
pub fn decrypt_share(nk: &NodePrivateKey, encrypted_b64: &str) -> Result<Vec<u8>, PayloadError> {
    let ct = B64
        .decode(encrypted_b64.trim())
        .map_err(|e| PayloadError::Base64("encrypted_key", e.to_string()))?;
    oaep_decrypt(&nk.0, HashAlg::Sha1, None, &ct).map_err(PayloadError::Rsa)
}

/// The node's collection of received shares: every U (with its auth tag) is tried with
/// every V, and the first pair whose K matches the tag is the key — as Keylime's agent
/// does, so a resent or stale share cannot block a good pair.
#[derive(Debug, Default)]
pub struct ShareCombiner {
    u: Vec<(Vec<u8>, String)>,
    v: Vec<Vec<u8>>,
    key: Option<BootstrapKey>,
}

/// At most this many shares of each kind are kept, so a flood of bad shares cannot grow
/// memory or the pairing work without bound.
const MAX_SHARES: usize = 16;

impl ShareCombiner {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a U share with its auth tag; returns the key if it is now known.
    pub fn add_u(&mut self, agent_id: &str, u: Vec<u8>, auth_tag: String) -> Option<&BootstrapKey> {
        push_bounded(&mut self.u, (u, auth_tag));
        self.try_combine(agent_id)
    }

    /// Adds a V share; returns the key if it is now known.
    pub fn add_v(&mut self, agent_id: &str, v: Vec<u8>) -> Option<&BootstrapKey> {
        push_bounded(&mut self.v, v);
        self.try_combine(agent_id)
    }

    /// The key, once a U and a V matched.
    pub fn key(&self) -> Option<&BootstrapKey> {
        self.key.as_ref()
    }

    fn try_combine(&mut self, agent_id: &str) -> Option<&BootstrapKey> {
        if self.key.is_none() {
            self.key = self.u.iter().find_map(|(u, tag)| {
                self.v.iter().find_map(|v| {
                    BootstrapKey::combine(u, v)
                        .ok()
                        .filter(|k| k.matches_auth_tag(agent_id, tag))
                })
            });
        }
        self.key.as_ref()
    }
}

fn push_bounded<T>(list: &mut Vec<T>, item: T) {
    if list.len() == MAX_SHARES {
        list.remove(0);
    }
    list.push(item);
}

fn check_len(len: usize) -> Result<(), PayloadError> {
    if len == 16 || len == 32 {
        Ok(())
    } else {
        Err(PayloadError::KeyLength(len))
    }
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

#[cfg(test)]
mod tests {
    use rand_core::{RngCore, SeedableRng};

    use super::*;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(7)
    }

    #[test]
    fn shares_rebuild_the_key_and_the_tag_proves_it() {
        let mut rng = rng();
        let k = BootstrapKey::generate(&mut rng);
        let (u, v) = k.split(&mut rng);
        assert_ne!(u, k.as_bytes());
        let back = BootstrapKey::combine(&u, &v).unwrap();
        assert_eq!(back, k);
        let tag = k.auth_tag("agent-1");
        assert_eq!(tag.len(), 96);
        assert!(back.matches_auth_tag("agent-1", &tag));
        assert!(back.matches_auth_tag("agent-1", &tag.to_uppercase()));
        assert!(!back.matches_auth_tag("agent-2", &tag));
        assert!(BootstrapKey::combine(&u, &v[..16]).is_err());
        assert!(BootstrapKey::from_bytes(&[0; 24]).is_err());
        // Debug output never shows key bytes.
        assert_eq!(format!("{k:?}"), "BootstrapKey(32 bytes)");
    }

    #[test]
    fn auth_tag_is_hmac_sha384_of_the_agent_id() {
        // Python: hmac.new(bytes(range(32)), b"d432fbb3", hashlib.sha384).hexdigest()
        let k = BootstrapKey::from_bytes(&(0..32).collect::<Vec<u8>>()).unwrap();
        assert_eq!(
            k.auth_tag("d432fbb3"),
            hmac(HashAlg::Sha384, k.as_bytes(), &[b"d432fbb3"]).to_hex()
        );
        assert_eq!(k.answer_challenge("abc"), k.mac("abc"));
    }

    #[test]
    fn payloads_round_trip_with_aes_128_and_256() {
        let mut rng = rng();
        for len in [16, 32] {
            let mut bytes = vec![0; len];
            rng.fill_bytes(&mut bytes);
            let k = BootstrapKey::from_bytes(&bytes).unwrap();
            let sealed = k.encrypt_payload(b"zip bytes", &mut rng);
            let raw = B64.decode(&sealed).unwrap();
            assert_eq!(raw.len(), IV_LEN + 9 + TAG_LEN);
            assert_eq!(k.decrypt_payload(&sealed).unwrap(), b"zip bytes");
            // Any altered byte, a wrong key, garbage: errors, never panics.
            for i in 0..raw.len() {
                let mut bad = raw.clone();
                bad[i] ^= 1;
                assert_eq!(
                    k.decrypt_payload(&B64.encode(&bad)),
                    Err(PayloadError::Decrypt)
                );
            }
            let other = BootstrapKey::generate(&mut rng);
            assert!(other.decrypt_payload(&sealed).is_err());
            assert_eq!(
                k.decrypt_payload(&B64.encode([0u8; 20])),
                Err(PayloadError::Truncated(20))
            );
            assert!(matches!(
                k.decrypt_payload("%%"),
                Err(PayloadError::Base64(..))
            ));
        }
    }

    #[test]
    fn shares_travel_rsa_oaep_sha1() {
        use aws_lc_rs::encoding::AsDer;
        use rsa::pkcs8::DecodePublicKey;
        let mut rng = rng();
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let nk = NodePrivateKey::from_pkcs8_der(pair.as_der().unwrap().as_ref()).unwrap();
        let public = rsa::RsaPublicKey::from_public_key_der(&nk.public_key_der().unwrap()).unwrap();
        let enc = encrypt_share(&public, b"0123456789abcdef", &mut rng).unwrap();
        assert_eq!(decrypt_share(&nk, &enc).unwrap(), b"0123456789abcdef");
        // Re-encoded, the key is the same key.
        let again = NodePrivateKey::from_pkcs8_der(&nk.to_pkcs8_der().unwrap()).unwrap();
        assert_eq!(decrypt_share(&again, &enc).unwrap(), b"0123456789abcdef");
        // A wrong length, an altered ciphertext, not base64: errors, never panics.
        assert!(decrypt_share(&nk, "AAAA").is_err());
        let mut altered = B64.decode(&enc).unwrap();
        altered[5] ^= 1;
        assert_eq!(
            decrypt_share(&nk, &B64.encode(&altered)),
            Err(PayloadError::Rsa("decryption error".into()))
        );
        assert!(matches!(
            decrypt_share(&nk, "%%"),
            Err(PayloadError::Base64(..))
        ));
        // Debug output never shows key material.
        assert_eq!(format!("{nk:?}"), "NodePrivateKey(RSA-2048)");
    }

    #[test]
    fn the_combiner_finds_the_matching_pair_among_stale_shares() {
        let mut rng = rng();
        let k = BootstrapKey::generate(&mut rng);
        let (u, v) = k.split(&mut rng);
        let stale = BootstrapKey::generate(&mut rng);
        let (stale_u, stale_v) = stale.split(&mut rng);
        let mut c = ShareCombiner::new();
        assert!(c.add_v("a", stale_v).is_none());
        assert!(c.add_u("a", stale_u, k.auth_tag("a")).is_none());
        assert!(c.add_u("a", u, k.auth_tag("a")).is_none());
        assert_eq!(c.add_v("a", v), Some(&k));
        assert_eq!(c.key(), Some(&k));
        // A tag for another agent never matches.
        let mut c = ShareCombiner::new();
        let (u, v) = k.split(&mut rng);
        c.add_u("a", u, k.auth_tag("b"));
        assert!(c.add_v("a", v).is_none());
    }
}
