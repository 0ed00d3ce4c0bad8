//! Credential activation, the registrar's side: `TPM2_MakeCredential` in software.
//!
//! The registrar proves that an AK lives in the same TPM as an EK by encrypting a
//! secret so that only `TPM2_ActivateCredential(AK, EK)` can recover it. The TPM
//! releases it only when the EK can decrypt the seed *and* the AK it is asked to
//! activate has the name the blob was made for (the name is bound in the HMAC and the
//! key derivation).
//!
//! [`make_credential`] follows TPM 2.0 Part 1 §24 (`SecretToCredential`):
//! - a seed: for an RSA EK, `digest_len(nameAlg)` random bytes encrypted with RSA-OAEP
//!   (hash = EK nameAlg, label `"IDENTITY\0"`); for an ECC EK, an ephemeral ECDH key
//!   whose shared x coordinate goes through [`kdfe`] with `"IDENTITY"`, and the
//!   ephemeral public point is what gets sent;
//! - `symKey = KDFa(nameAlg, seed, "STORAGE", AK name, "", EK symmetric key bits)`;
//! - `encIdentity = AES-CFB(symKey, IV = 0, u16 len || secret)`;
//! - `integrity = HMAC(KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits),
//!   encIdentity || AK name)`.
//!
//! [`CredentialBlob`] reads and writes tpm2-tools' `tpm2_makecredential` file, the bytes
//! Keylime's registrar sends base64-encoded as `blob`. [`activate_credential`] is the
//! inverse with a software EK (for simulated agents and tests). [`auth_tag`] and
//! [`check_auth_tag`] are the registrar's check of the agent's answer.
//!
//! All randomness comes from the caller's RNG, so a seeded RNG reproduces a blob byte
//! for byte.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use base64::Engine;
use hmac::Mac;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;

use super::codec::{CodecError, Reader};
use super::public::{
    PublicKey, SymmetricDef, TpmPublic, ALG_AES, ALG_CFB, ECC_NIST_P256, ECC_NIST_P384,
};
use crate::hash::{Digest, HashAlg};

/// The label of the credential seed (OAEP label and KDFe "use").
const IDENTITY: &str = "IDENTITY";
/// How often to redraw an ephemeral ECC scalar that is out of range before giving up;
/// for P-256/P-384 a draw is out of range with probability below 2^-32.
const MAX_SCALAR_DRAWS: usize = 16;

/// Why a credential cannot be made, parsed or activated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The EK's parameters are not ones MakeCredential can use.
    #[error("unsupported EK: {0}")]
    UnsupportedEk(String),
    /// The EK's key material is not a valid public key.
    #[error("invalid EK public key: {0}")]
    InvalidEkKey(String),
    /// The AK name is not `nameAlg || digest`.
    #[error("invalid AK name ({len} bytes): {reason}")]
    AkName {
        /// Its length.
        len: usize,
        /// What is wrong.
        reason: String,
    },
    /// The secret is empty or longer than the EK's nameAlg digest (the TPM's limit).
    #[error("secret must be 1 to {max} bytes for this EK, got {got}")]
    SecretSize {
        /// The most the EK allows.
        max: usize,
        /// The size given.
        got: usize,
    },
    /// The random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(String),
    /// RSA-OAEP failed (encrypting or decrypting the seed).
    #[error("RSA-OAEP: {0}")]
    Oaep(String),
    /// The encrypted seed is not a point or ciphertext for this EK.
    #[error("encrypted seed: {0}")]
    EncryptedSeed(String),
    /// A credential file or structure is malformed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The integrity HMAC does not match: another EK, another AK name or a changed blob.
    #[error("credential integrity check failed (wrong EK or AK name, or a modified blob)")]
    Integrity,
    /// The decrypted credential is not a `TPM2B_DIGEST`.
    #[error("decrypted credential is malformed")]
    MalformedCredential,
}

/// A credential: what `TPM2_ActivateCredential` takes as `credentialBlob`
/// (`TPM2B_ID_OBJECT`: integrity HMAC and encrypted identity) and `secret`
/// (`TPM2B_ENCRYPTED_SECRET`: the encrypted seed).
///
/// Fields are only set by [`make_credential`] and [`CredentialBlob::parse_tpm2_tools`],
/// so every length fits its `u16` size field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialBlob {
    integrity: Vec<u8>,
    enc_identity: Vec<u8>,
    encrypted_secret: Vec<u8>,
}

impl CredentialBlob {
    /// The first four bytes of a tpm2-tools credential file.
    pub const MAGIC: u32 = 0xBADC_C0DE;
    /// The file format version tpm2-tools writes.
    pub const VERSION: u32 = 1;

    /// The integrity HMAC (`TPMS_ID_OBJECT.integrityHMAC`).
    pub fn integrity(&self) -> &[u8] {
        &self.integrity
    }

    /// The encrypted identity (`TPMS_ID_OBJECT.encIdentity`, AES-CFB of
    /// `u16 len || secret`).
    pub fn enc_identity(&self) -> &[u8] {
        &self.enc_identity
    }

    /// The encrypted seed (`TPM2B_ENCRYPTED_SECRET` contents): an RSA-OAEP ciphertext or
    /// a marshalled `TPMS_ECC_POINT`.
    pub fn encrypted_secret(&self) -> &[u8] {
        &self.encrypted_secret
    }

    /// The marshalled `TPM2B_ID_OBJECT`.
    pub fn id_object(&self) -> Vec<u8> {
        let inner = 2 + self.integrity.len() + self.enc_identity.len();
        let mut out = Vec::with_capacity(2 + inner);
        push_u16_len(&mut out, inner);
        push_u16_len(&mut out, self.integrity.len());
        out.extend_from_slice(&self.integrity);
        out.extend_from_slice(&self.enc_identity);
        out
    }

    /// tpm2-tools' file: `MAGIC`, `VERSION`, `TPM2B_ID_OBJECT`, `TPM2B_ENCRYPTED_SECRET`
    /// (all big-endian), as `tpm2_makecredential -o` writes and
    /// `tpm2_activatecredential -i` reads.
    pub fn to_tpm2_tools(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.id_object().len() + self.encrypted_secret.len());
        out.extend_from_slice(&Self::MAGIC.to_be_bytes());
        out.extend_from_slice(&Self::VERSION.to_be_bytes());
        out.extend_from_slice(&self.id_object());
        push_u16_len(&mut out, self.encrypted_secret.len());
        out.extend_from_slice(&self.encrypted_secret);
        out
    }

    /// Parses tpm2-tools' file (see [`Self::to_tpm2_tools`]); trailing bytes are an error.
    pub fn parse_tpm2_tools(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, "tpm2-tools credential file");
        let magic = r.u32("magic")?;
        if magic != Self::MAGIC {
            return Err(r.invalid(format!("magic 0x{magic:08x}, expected 0xbadcc0de")));
        }
        let version = r.u32("version")?;
        if version != Self::VERSION {
            return Err(r.invalid(format!("version {version}, expected 1")));
        }
        let id_object = r.tpm2b("TPM2B_ID_OBJECT")?;
        let encrypted_secret = r.tpm2b("TPM2B_ENCRYPTED_SECRET")?.to_vec();
        r.finish()?;
        if encrypted_secret.is_empty() {
            return Err(CodecError::Invalid {
                structure: "TPM2B_ENCRYPTED_SECRET",
                message: "empty".into(),
            });
        }

        let mut r = Reader::new(id_object, "TPMS_ID_OBJECT");
        let integrity = r.tpm2b("integrityHMAC")?.to_vec();
        if integrity.is_empty() || integrity.len() > crate::hash::MAX_DIGEST_LEN {
            return Err(r.invalid(format!(
                "integrityHMAC of {} bytes is not a digest",
                integrity.len()
            )));
        }
        let rest = id_object.len() - 2 - integrity.len();
        // encIdentity is the rest of the structure, at least its encrypted size field.
        if rest < 2 {
            return Err(r.invalid(format!("encIdentity of {rest} bytes is too short")));
        }
        let enc_identity = r.bytes(rest, "encIdentity")?.to_vec();
        r.finish()?;
        Ok(Self {
            integrity,
            enc_identity,
            encrypted_secret,
        })
    }
}

/// Appends a length known to fit (see [`CredentialBlob`]'s invariant) as a `u16`.
fn push_u16_len(out: &mut Vec<u8>, len: usize) {
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

/// HMAC with one of the TPM hash algorithms over the concatenation of `parts`.
pub fn hmac(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Digest {
    macro_rules! run {
        ($d:ty) => {{
            // HMAC takes keys of any length, so this never fails.
            let mut mac = <hmac::Hmac<$d> as hmac::Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
            for p in parts {
                mac.update(p);
            }
            Digest::from_slice(&mac.finalize().into_bytes())
        }};
    }
    let out = match alg {
        HashAlg::Sha1 => run!(sha1::Sha1),
        HashAlg::Sha256 => run!(sha2::Sha256),
        HashAlg::Sha384 => run!(sha2::Sha384),
        HashAlg::Sha512 => run!(sha2::Sha512),
        HashAlg::Sm3_256 => run!(sm3::Sm3),
    };
    // Every supported digest fits a Digest.
    out.unwrap_or_else(|_| unreachable!("digest longer than MAX_DIGEST_LEN"))
}

/// KDFa (TPM 2.0 Part 1 §11.4.10.2): SP 800-108 counter-mode KDF with HMAC.
///
/// Each block is `HMAC(key, u32 counter || label || 0x00 || context_u || context_v ||
/// u32 bits)` with the counter from 1; `label` is given without its terminating NUL.
/// When `bits` is not a multiple of 8 the unused high bits of the first byte are zero.
pub fn kdfa(
    alg: HashAlg,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u16,
) -> Vec<u8> {
    let len = usize::from(bits).div_ceil(8);
    let bits_be = u32::from(bits).to_be_bytes();
    let mut out = Vec::with_capacity(len + alg.digest_len());
    let mut counter = 1u32;
    while out.len() < len {
        let block = hmac(
            alg,
            key,
            &[
                &counter.to_be_bytes(),
                label.as_bytes(),
                &[0],
                context_u,
                context_v,
                &bits_be,
            ],
        );
        out.extend_from_slice(block.as_bytes());
        counter += 1;
    }
    out.truncate(len);
    mask_excess_bits(&mut out, bits);
    out
}

/// KDFe (TPM 2.0 Part 1 §11.4.10.3): the SP 800-56A concatenation KDF.
///
/// Each block is `H(u32 counter || z || label || 0x00 || party_u || party_v)` with the
/// counter from 1; `label` is given without its terminating NUL.
pub fn kdfe(
    alg: HashAlg,
    z: &[u8],
    label: &str,
    party_u: &[u8],
    party_v: &[u8],
    bits: u16,
) -> Vec<u8> {
    let len = usize::from(bits).div_ceil(8);
    let mut out = Vec::with_capacity(len + alg.digest_len());
    let mut counter = 1u32;
    while out.len() < len {
        let mut h = alg.hasher();
        for part in [
            &counter.to_be_bytes()[..],
            z,
            label.as_bytes(),
            &[0],
            party_u,
            party_v,
        ] {
            h.update(part);
        }
        out.extend_from_slice(h.finalize().as_bytes());
        counter += 1;
    }
    out.truncate(len);
    mask_excess_bits(&mut out, bits);
    out
}

fn mask_excess_bits(out: &mut [u8], bits: u16) {
    if bits % 8 != 0 {
        if let Some(first) = out.first_mut() {
            *first &= 0xff >> (8 - bits % 8);
        }
    }
}

/// What of the EK MakeCredential uses, checked once.
struct EkParams {
    name_alg: HashAlg,
    sym_bits: u16,
}

fn ek_params(ek: &TpmPublic) -> Result<EkParams, CredentialError> {
    let unsupported = |m: String| Err(CredentialError::UnsupportedEk(m));
    let Some(SymmetricDef {
        algorithm,
        key_bits,
        mode,
    }) = ek.symmetric
    else {
        return unsupported("no symmetric algorithm (not a storage key)".into());
    };
    if algorithm != ALG_AES {
        return unsupported(format!(
            "symmetric algorithm 0x{algorithm:04x} (only AES is supported)"
        ));
    }
    if mode != ALG_CFB {
        return unsupported(format!(
            "symmetric mode 0x{mode:04x} (storage keys use CFB)"
        ));
    }
    if !matches!(key_bits, 128 | 192 | 256) {
        return unsupported(format!("AES key size {key_bits}"));
    }
    Ok(EkParams {
        name_alg: ek.name_alg,
        sym_bits: key_bits,
    })
}

/// Checks that `name` is `TPM_ALG_ID || H(public area)` for a known hash.
fn check_name(name: &[u8]) -> Result<(), CredentialError> {
    let bad = |reason: String| {
        Err(CredentialError::AkName {
            len: name.len(),
            reason,
        })
    };
    let [hi, lo, digest @ ..] = name else {
        return bad("shorter than an algorithm id".into());
    };
    let id = u16::from_be_bytes([*hi, *lo]);
    let Some(alg) = HashAlg::from_tpm_alg_id(id) else {
        return bad(format!("unknown name algorithm 0x{id:04x}"));
    };
    if digest.len() != alg.digest_len() {
        return bad(format!(
            "{alg} names carry {} digest bytes, this has {}",
            alg.digest_len(),
            digest.len()
        ));
    }
    Ok(())
}

/// `TPM2_MakeCredential` in software: encrypts `secret` to the TPM holding `ek`, for
/// activation with the key named `ak_name` (see the module docs).
///
/// RSA EKs and ECC EKs on P-256 or P-384 with an AES-CFB symmetric definition are
/// supported. `secret` must be 1 to `digest_len(EK nameAlg)` bytes, as the TPM
/// requires. All randomness (the RSA seed and OAEP padding, or the ephemeral ECC key)
/// comes from `rng`.
pub fn make_credential(
    ek: &TpmPublic,
    ak_name: &[u8],
    secret: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<CredentialBlob, CredentialError> {
    let params = ek_params(ek)?;
    check_name(ak_name)?;
    let max = params.name_alg.digest_len();
    if secret.is_empty() || secret.len() > max {
        return Err(CredentialError::SecretSize {
            max,
            got: secret.len(),
        });
    }
    let (seed, encrypted_secret) = match &ek.key {
        PublicKey::Rsa { modulus, exponent } => {
            let key = rsa_public(modulus, *exponent)?;
            let mut seed = vec![0u8; params.name_alg.digest_len()];
            rng.try_fill_bytes(&mut seed)
                .map_err(|e| CredentialError::Rng(e.to_string()))?;
            let encrypted = key
                .encrypt(rng, oaep(params.name_alg), &seed)
                .map_err(|e| CredentialError::Oaep(e.to_string()))?;
            (seed, encrypted)
        }
        PublicKey::Ecc { curve, x, y } => ecc_seed(params.name_alg, *curve, x, y, rng)?,
    };
    Ok(wrap(&params, &seed, ak_name, secret, encrypted_secret))
}

/// `SecretToCredential` with a known seed.
fn wrap(
    params: &EkParams,
    seed: &[u8],
    name: &[u8],
    secret: &[u8],
    encrypted_secret: Vec<u8>,
) -> CredentialBlob {
    let mut enc_identity = Vec::with_capacity(2 + secret.len());
    push_u16_len(&mut enc_identity, secret.len());
    enc_identity.extend_from_slice(secret);
    let sym_key = kdfa(params.name_alg, seed, "STORAGE", name, &[], params.sym_bits);
    aes_cfb(&sym_key, &mut enc_identity, true);
    let integrity = integrity(params.name_alg, seed, &enc_identity, name);
    CredentialBlob {
        integrity: integrity.as_bytes().to_vec(),
        enc_identity,
        encrypted_secret,
    }
}

fn integrity(alg: HashAlg, seed: &[u8], enc_identity: &[u8], name: &[u8]) -> Digest {
    let bits = u16::try_from(alg.digest_len() * 8).unwrap_or(u16::MAX);
    let hmac_key = kdfa(alg, seed, "INTEGRITY", &[], &[], bits);
    hmac(alg, &hmac_key, &[enc_identity, name])
}

/// AES-CFB with a zero IV, in place; the key length picks AES-128/192/256.
fn aes_cfb(key: &[u8], data: &mut [u8], encrypt: bool) {
    macro_rules! run {
        ($aes:ty) => {{
            let iv = [0u8; 16];
            if encrypt {
                cfb_mode::Encryptor::<$aes>::new(key.into(), (&iv).into()).encrypt(data)
            } else {
                cfb_mode::Decryptor::<$aes>::new(key.into(), (&iv).into()).decrypt(data)
            }
        }};
    }
    // The key comes from KDFa with the checked key bits, so it has one of these sizes.
    match key.len() {
        16 => run!(aes::Aes128),
        24 => run!(aes::Aes192),
        _ => run!(aes::Aes256),
    }
}

fn rsa_public(modulus: &[u8], exponent: u32) -> Result<rsa::RsaPublicKey, CredentialError> {
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from(exponent),
    )
    .map_err(|e| CredentialError::InvalidEkKey(e.to_string()))
}

/// RSA-OAEP decryption in aws-lc (constant time), MGF1 with the same hash as OAEP:
/// the software activation here (label `IDENTITY`) and the node's share decryption
/// ([`crate::payload::decrypt_share`], SHA-1, no label). The error says only that the
/// ciphertext does not decrypt, as it must.
pub(crate) fn oaep_decrypt(
    key: &aws_lc_rs::rsa::PrivateDecryptingKey,
    alg: HashAlg,
    label: Option<&[u8]>,
    ciphertext: &[u8],
) -> Result<Vec<u8>, String> {
    use aws_lc_rs::rsa as lc;
    let algorithm = match alg {
        HashAlg::Sha1 => &lc::OAEP_SHA1_MGF1SHA1,
        HashAlg::Sha256 => &lc::OAEP_SHA256_MGF1SHA256,
        HashAlg::Sha384 => &lc::OAEP_SHA384_MGF1SHA384,
        HashAlg::Sha512 => &lc::OAEP_SHA512_MGF1SHA512,
        HashAlg::Sm3_256 => return Err("RSA-OAEP with SM3 is not available in software".into()),
    };
    let key = lc::OaepPrivateDecryptingKey::new(key.clone())
        .map_err(|_| "the key cannot decrypt RSA-OAEP".to_owned())?;
    let mut out = vec![0; key.min_output_size()];
    let plain = key
        .decrypt(algorithm, ciphertext, &mut out, label)
        .map_err(|_| "decryption error".to_owned())?;
    Ok(plain.to_vec())
}

fn oaep(alg: HashAlg) -> rsa::Oaep {
    // The label includes its terminating NUL, as the TPM's OAEP labels do.
    let label = format!("{IDENTITY}\0");
    match alg {
        HashAlg::Sha1 => rsa::Oaep::new_with_label::<sha1::Sha1, _>(label),
        HashAlg::Sha256 => rsa::Oaep::new_with_label::<sha2::Sha256, _>(label),
        HashAlg::Sha384 => rsa::Oaep::new_with_label::<sha2::Sha384, _>(label),
        HashAlg::Sha512 => rsa::Oaep::new_with_label::<sha2::Sha512, _>(label),
        HashAlg::Sm3_256 => rsa::Oaep::new_with_label::<sm3::Sm3, _>(label),
    }
}

/// The curve's coordinate size, or an error for curves Vigil does not support.
fn coordinate_size(curve: u16) -> Result<usize, CredentialError> {
    match curve {
        ECC_NIST_P256 => Ok(32),
        ECC_NIST_P384 => Ok(48),
        other => Err(CredentialError::UnsupportedEk(format!(
            "ECC curve 0x{other:04x} (P-256 and P-384 are supported)"
        ))),
    }
}

/// Left-pads a big-endian coordinate to `size` bytes.
fn pad(c: &[u8], size: usize) -> Result<Vec<u8>, String> {
    if c.len() > size {
        return Err(format!(
            "coordinate of {} bytes on a {size}-byte curve",
            c.len()
        ));
    }
    let mut out = vec![0u8; size - c.len()];
    out.extend_from_slice(c);
    Ok(out)
}

/// The uncompressed SEC1 encoding of (x, y).
fn sec1(x: &[u8], y: &[u8], size: usize) -> Result<Vec<u8>, String> {
    let mut point = vec![0x04];
    point.extend(pad(x, size)?);
    point.extend(pad(y, size)?);
    Ok(point)
}

/// Marshals a `TPMS_ECC_POINT` with fixed-size coordinates.
fn ecc_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + x.len() + y.len());
    push_u16_len(&mut out, x.len());
    out.extend_from_slice(x);
    push_u16_len(&mut out, y.len());
    out.extend_from_slice(y);
    out
}

/// ECDH with the EK: the seed and the ephemeral public point to send.
fn ecc_seed(
    alg: HashAlg,
    curve: u16,
    x: &[u8],
    y: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let size = coordinate_size(curve)?;
    let ek_point = sec1(x, y, size).map_err(CredentialError::InvalidEkKey)?;
    let seed_bits = u16::try_from(alg.digest_len() * 8).unwrap_or(u16::MAX);
    macro_rules! run {
        ($curve:ident) => {{
            let ek = $curve::PublicKey::from_sec1_bytes(&ek_point)
                .map_err(|e| CredentialError::InvalidEkKey(e.to_string()))?;
            // The ephemeral scalar is drawn as raw bytes (not through the curve crate's
            // sampler) so that a test can feed a known key, as Keylime's vectors do.
            let mut draw = [0u8; 64];
            let mut ephemeral = None;
            for _ in 0..MAX_SCALAR_DRAWS {
                rng.try_fill_bytes(&mut draw[..size])
                    .map_err(|e| CredentialError::Rng(e.to_string()))?;
                if let Ok(k) = $curve::SecretKey::from_slice(&draw[..size]) {
                    ephemeral = Some(k);
                    break;
                }
            }
            let ephemeral = ephemeral.ok_or_else(|| {
                CredentialError::Rng(format!("no valid ECC scalar in {MAX_SCALAR_DRAWS} draws"))
            })?;
            let shared =
                $curve::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), ek.as_affine());
            let point = ephemeral.public_key().to_encoded_point(false);
            let (Some(ex), Some(ey)) = (point.x(), point.y()) else {
                unreachable!("an uncompressed point has both coordinates")
            };
            let ek_x = &ek_point[1..=size];
            let seed = kdfe(
                alg,
                shared.raw_secret_bytes(),
                IDENTITY,
                ex,
                ek_x,
                seed_bits,
            );
            Ok((seed, ecc_point(ex, ey)))
        }};
    }
    if curve == ECC_NIST_P256 {
        run!(p256)
    } else {
        run!(p384)
    }
}

/// An EK's private key, for activating credentials in software (simulated agents and
/// tests; a real agent asks its TPM).
#[derive(Debug, Clone)]
pub enum EkPrivateKey {
    /// RSA, 2048 bits or more: decrypted with aws-lc's constant-time RSA-OAEP (SHA-1,
    /// SHA-256, SHA-384 or SHA-512 as the EK's name algorithm; aws-lc has no SM3).
    Rsa(Box<aws_lc_rs::rsa::PrivateDecryptingKey>),
    /// ECC P-256.
    P256(p256::SecretKey),
    /// ECC P-384.
    P384(p384::SecretKey),
}

/// `TPM2_ActivateCredential` in software: recovers the secret from `blob` with the EK's
/// private key, after checking the integrity HMAC over `ak_name` as the TPM does.
pub fn activate_credential(
    ek: &TpmPublic,
    ek_key: &EkPrivateKey,
    ak_name: &[u8],
    blob: &CredentialBlob,
) -> Result<Vec<u8>, CredentialError> {
    let params = ek_params(ek)?;
    check_name(ak_name)?;
    let seed_bits = u16::try_from(params.name_alg.digest_len() * 8).unwrap_or(u16::MAX);
    let seed_err = |m: String| CredentialError::EncryptedSeed(m);
    let seed = match (ek_key, &ek.key) {
        (EkPrivateKey::Rsa(key), PublicKey::Rsa { .. }) => {
            // The label includes its terminating NUL, as the TPM's OAEP labels do.
            let label = format!("{IDENTITY}\0");
            oaep_decrypt(
                key,
                params.name_alg,
                Some(label.as_bytes()),
                &blob.encrypted_secret,
            )
            .map_err(CredentialError::Oaep)?
        }
        (EkPrivateKey::P256(_) | EkPrivateKey::P384(_), PublicKey::Ecc { curve, x, .. }) => {
            let size = coordinate_size(*curve)?;
            let mut r = Reader::new(&blob.encrypted_secret, "TPMS_ECC_POINT");
            let ex = r.tpm2b("x")?;
            let ey = r.tpm2b("y")?;
            r.finish()?;
            let point = sec1(ex, ey, size).map_err(seed_err)?;
            let ek_x = pad(x, size).map_err(CredentialError::InvalidEkKey)?;
            let z = match (ek_key, *curve) {
                (EkPrivateKey::P256(k), ECC_NIST_P256) => {
                    let e = p256::PublicKey::from_sec1_bytes(&point)
                        .map_err(|e| seed_err(e.to_string()))?;
                    p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), e.as_affine())
                        .raw_secret_bytes()
                        .to_vec()
                }
                (EkPrivateKey::P384(k), ECC_NIST_P384) => {
                    let e = p384::PublicKey::from_sec1_bytes(&point)
                        .map_err(|e| seed_err(e.to_string()))?;
                    p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), e.as_affine())
                        .raw_secret_bytes()
                        .to_vec()
                }
                _ => {
                    return Err(seed_err(
                        "private key is on another curve than the EK".into(),
                    ))
                }
            };
            kdfe(
                params.name_alg,
                &z,
                IDENTITY,
                &point[1..=size],
                &ek_x,
                seed_bits,
            )
        }
        _ => return Err(seed_err("private key type does not match the EK".into())),
    };
    let expected = integrity(params.name_alg, &seed, &blob.enc_identity, ak_name);
    if !bool::from(expected.as_bytes().ct_eq(&blob.integrity)) {
        return Err(CredentialError::Integrity);
    }
    let sym_key = kdfa(
        params.name_alg,
        &seed,
        "STORAGE",
        ak_name,
        &[],
        params.sym_bits,
    );
    let mut plain = blob.enc_identity.clone();
    aes_cfb(&sym_key, &mut plain, false);
    let mut r = Reader::new(&plain, "TPM2B_DIGEST");
    let secret = r
        .tpm2b("credential")
        .map_err(|_| CredentialError::MalformedCredential)?
        .to_vec();
    r.finish()
        .map_err(|_| CredentialError::MalformedCredential)?;
    Ok(secret)
}

/// The characters of a Keylime challenge (`tpm_util.random_password`).
const CHALLENGE_ALPHABET: &[u8; 62] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz";

/// A fresh registration challenge as Keylime's registrar makes it: 32 characters from
/// `[A-Za-z0-9]`, used as the credential secret.
///
/// Keylime reduces random bytes modulo 62, which slightly favours some characters; this
/// rejects bytes of 248 and above instead, so every character is equally likely.
pub fn random_challenge(rng: &mut impl CryptoRngCore) -> Result<[u8; 32], CredentialError> {
    let mut out = [0u8; 32];
    let mut filled = 0;
    let mut buf = [0u8; 64];
    // Each byte is accepted with probability 248/256, so 64 draws of 64 bytes failing to
    // give 32 characters means the RNG is broken.
    for _ in 0..64 {
        rng.try_fill_bytes(&mut buf)
            .map_err(|e| CredentialError::Rng(e.to_string()))?;
        for &b in buf.iter().filter(|&&b| b < 248) {
            out[filled] = CHALLENGE_ALPHABET[usize::from(b % 62)];
            filled += 1;
            if filled == out.len() {
                return Ok(out);
            }
        }
    }
    Err(CredentialError::Rng(
        "the RNG produced almost no usable bytes".into(),
    ))
}

/// The value Keylime's registrar stores in an agent's `key` field: `base64(secret)`.
pub fn registrar_key(secret: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(secret)
}

/// The agent's answer to the challenge, Keylime's `auth_tag`:
/// `hex(HMAC-SHA384(key = base64(secret) as text, msg = agent_id))`.
///
/// The HMAC key is the base64 *text* of the secret, not the secret itself, because that
/// is what Keylime stores and what its agents compute.
pub fn auth_tag(secret: &[u8], agent_id: &str) -> String {
    hmac(
        HashAlg::Sha384,
        registrar_key(secret).as_bytes(),
        &[agent_id.as_bytes()],
    )
    .to_hex()
}

/// An `auth_tag` that is not the one the secret and agent id give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth_tag for agent '{agent_id}' does not match the registration challenge")]
pub struct AuthTagMismatch {
    /// The agent.
    pub agent_id: String,
}

/// The registrar's check of an agent's `auth_tag`: equal to [`auth_tag`] as text
/// (lowercase hex, as Keylime compares it), compared in constant time.
pub fn check_auth_tag(secret: &[u8], agent_id: &str, tag: &str) -> Result<(), AuthTagMismatch> {
    let expected = auth_tag(secret, agent_id);
    if bool::from(expected.as_bytes().ct_eq(tag.as_bytes())) {
        Ok(())
    } else {
        Err(AuthTagMismatch {
            agent_id: crate::hash::truncate_for_error(agent_id),
        })
    }
}

#[cfg(test)]
mod tests;
