//! MakeCredential against Keylime's fixed-randomness vectors
//! (`keylime/tpm/tpm_util_test.py` `test_makecredential`, `test_makecredential_ecc`),
//! tpm2-tools' `mkcred.out` from Keylime's test data, and round trips through the
//! software [`activate_credential`] for every supported EK shape.

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use rsa::pkcs1::DecodeRsaPrivateKey;

use super::*;
use crate::tpm::public::ALG_RSA;

const FILES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/keylime/test-data/files/"
);

fn file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FILES}{name}")).unwrap()
}

/// Keylime's `not_random`: every byte 0x12.
struct Constant(u8);

impl RngCore for Constant {
    fn next_u32(&mut self) -> u32 {
        u32::from_ne_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_ne_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Constant {}

/// Hands out exactly the given bytes, then fails.
struct Replay(Vec<u8>);

impl RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.try_fill_bytes(dest).unwrap()
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        if dest.len() > self.0.len() {
            return Err(rand_core::Error::new("replay exhausted"));
        }
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}
impl CryptoRng for Replay {}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn keylime_rsa_vector() {
    let ek = TpmPublic::parse_tpm2b(&h(concat!(
        "013a0001000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1",
        "da1b331469aa00060080004300100800000000000100aef12278a9b8d8a1e5700fb835ff3d9b",
        "613d0d6fc17df186711260244f3f24847eb3ef1f5ff9b53d01cfebf291104385fbd71ead80a8",
        "294ebc76f671859b7c3c9a998300f30859ef3fdba00c5229f17092fd97f19128243000205cfe",
        "5ba24f5fc55538e52bf849c6f777690919929c7d2d9328070a2a6bdd67355a516b94afdceda0",
        "0a0d27988a28644b30ac11beae23a51d9038cd9d789ae39cae15c1312ef174e217449771a602",
        "ade4daf35b20e072017c85a2f211fe5512319184059ddeaab94fa331c49c3f213bc3fbccd1e8",
        "56b8984353ac92e3df0f72f1e5c0b97b9cdc333702872e9e63565c809d81fa8bb6c6da86867c",
        "ead2adedc0cee80bb6617183"
    )))
    .unwrap();
    let challenge = h("5a4e524b4f4e6e777552754831683734785a466a42416f314758676c484d4149");
    let ak_name = h("000b9601163463aacdb45be7ad1f6d11ad3dae0578d5aeeb5125e1075c5601b7c7fa");
    let blob = make_credential(&ek, &ak_name, &challenge, &mut Constant(0x12)).unwrap();
    let out = blob.to_tpm2_tools();
    // Keylime checks only the first 80 bytes: OAEP's own randomness comes from OpenSSL
    // there, so the encrypted seed differs; everything up to its size field is fixed.
    assert_eq!(
        hex::encode(&out[..80]),
        concat!(
            "badcc0de00000001004400206f0c4b08cfa00f21b474ca75623d098309c2cd7fac8d10",
            "ae3caf0da40162496db140cc6a5ae79a2bd7c22dc52cee372f34b356bf9bcd5176fa94",
            "239ee93191a0a75d0100"
        )
    );
    assert_eq!(out.len(), 80 + 256);
    assert_eq!(CredentialBlob::parse_tpm2_tools(&out).unwrap(), blob);
}

#[test]
fn keylime_ecc_vector() {
    let ek = TpmPublic::parse_tpm2b(&h(concat!(
        "007a0023000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1",
        "da1b331469aa0006008000430010000300100020d31f0e190c36691abdc5c8cef7201139664f",
        "93bcc45e68861a62d649d9a157d400209bf3cc57da9b2c09539cae40f0518e651b65befaab84",
        "f26a3285d88be134b0cf"
    )))
    .unwrap();
    let challenge = h("7756666e6e4574706552556d717932656e7954474c64434f576a523545654a69");
    let ak_name = h("000b9f7f75b0564ea96bd70ef98baafbf6bf779641d17576bd11b5c6979273d2ba21");
    // Keylime's fixed ephemeral key, 755483...146586 in decimal.
    let scalar = h("a706d544decd78de340642bcc33317c0cba93b383ad635a1a2aff132936841da");
    let blob = make_credential(&ek, &ak_name, &challenge, &mut Replay(scalar)).unwrap();
    assert_eq!(
        hex::encode(blob.to_tpm2_tools()),
        concat!(
            "badcc0de00000001004400207d7934f023133b07f7d9bce3062451ea4da5f1917c95e1",
            "42da1c3277e658f66bbea694a7c1b30d006a09b28dc534876d59b644b9223c5f3c3432",
            "d8bae35f3ea3fba600440020361ce888d5152797aaca04838003976967c0c0a0a0e969",
            "8b7b5e6e5294e21711002078daa91b35fb5efc70052a470064a96dd556bd53a784d737",
            "e40966edc5f36ce8"
        )
    );
}

#[test]
fn ephemeral_scalars_out_of_range_are_redrawn() {
    let ek = ecc_ek(HashAlg::Sha256, 128).0;
    let name = HashAlg::Sha256.hash(b"ak");
    let name = [&[0x00, 0x0b][..], name.as_bytes()].concat();
    // Zero and the all-ones value (above the group order) are rejected, then a valid
    // scalar is used: the blob equals the one made from that scalar alone.
    let good = vec![0x42; 32];
    let draws = [vec![0; 32], vec![0xff; 32], good.clone()].concat();
    let a = make_credential(&ek, &name, b"secret", &mut Replay(draws)).unwrap();
    let b = make_credential(&ek, &name, b"secret", &mut Replay(good)).unwrap();
    assert_eq!(a, b);
    // An RNG that runs dry is an error, not a panic.
    assert!(matches!(
        make_credential(&ek, &name, b"secret", &mut Replay(vec![0; 40])),
        Err(CredentialError::Rng(_))
    ));
}

#[test]
fn keylime_tpm2_tools_file() {
    // mkcred.out is `tpm2_makecredential` output for ek.pub, ak.name and secret.data;
    // actcred.out is what `tpm2_activatecredential` recovered from it.
    let bytes = file("mkcred.out");
    let blob = CredentialBlob::parse_tpm2_tools(&bytes).unwrap();
    assert_eq!(blob.to_tpm2_tools(), bytes);
    let ek = TpmPublic::parse_tpm2b(&file("ek.pub")).unwrap();
    let PublicKey::Rsa { modulus, .. } = &ek.key else {
        panic!("ek.pub is RSA")
    };
    let secret = file("secret.data");
    assert_eq!(file("actcred.out"), secret);
    // The seed is an OAEP ciphertext under this EK, the HMAC is the EK nameAlg's size,
    // and the encrypted identity is the secret plus its 2-byte size (CFB keeps length).
    assert_eq!(blob.encrypted_secret().len(), modulus.len());
    assert_eq!(blob.integrity().len(), ek.name_alg.digest_len());
    assert_eq!(blob.enc_identity().len(), 2 + secret.len());
    // A blob made by Vigil for the same inputs has the same shape.
    let ours = make_credential(
        &ek,
        &file("ak.name"),
        &secret,
        &mut ChaCha20Rng::seed_from_u64(1),
    )
    .unwrap();
    assert_eq!(ours.to_tpm2_tools().len(), bytes.len());

    for cut in 0..bytes.len() {
        assert!(CredentialBlob::parse_tpm2_tools(&bytes[..cut]).is_err());
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(CredentialBlob::parse_tpm2_tools(&trailing).is_err());
    let mut magic = bytes.clone();
    magic[0] ^= 1;
    assert!(CredentialBlob::parse_tpm2_tools(&magic).is_err());
    let mut version = bytes;
    version[7] = 2;
    assert!(CredentialBlob::parse_tpm2_tools(&version).is_err());
}

/// Marshals an EK `TPMT_PUBLIC` with the given nameAlg and AES key size.
fn ek_public(key: &PublicKey, name_alg: HashAlg, sym_bits: u16) -> TpmPublic {
    let mut t = Vec::new();
    let u16s = |t: &mut Vec<u8>, vs: &[u16]| {
        for v in vs {
            t.extend_from_slice(&v.to_be_bytes())
        }
    };
    let kind = match key {
        PublicKey::Rsa { .. } => ALG_RSA,
        PublicKey::Ecc { .. } => super::super::public::ALG_ECC,
    };
    u16s(&mut t, &[kind, name_alg.tpm_alg_id()]);
    t.extend_from_slice(&0x0003_00b2u32.to_be_bytes());
    u16s(&mut t, &[0, ALG_AES, sym_bits, ALG_CFB, 0x0010]);
    match key {
        PublicKey::Rsa { modulus, exponent } => {
            u16s(&mut t, &[modulus.len() as u16 * 8]);
            t.extend_from_slice(&exponent.to_be_bytes());
            u16s(&mut t, &[modulus.len() as u16]);
            t.extend_from_slice(modulus);
        }
        PublicKey::Ecc { curve, x, y } => {
            u16s(&mut t, &[*curve, 0x0010, x.len() as u16]);
            t.extend_from_slice(x);
            u16s(&mut t, &[y.len() as u16]);
            t.extend_from_slice(y);
        }
    }
    TpmPublic::parse(&t).unwrap()
}

fn rsa_ek(name_alg: HashAlg, sym_bits: u16) -> (TpmPublic, EkPrivateKey) {
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/keylime/test/data/ima_keys/rsa2048.pem"
    ))
    .unwrap();
    // Parsed with the `rsa` crate (only to re-encode it as PKCS#8); aws-lc decrypts.
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(&pem).unwrap();
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let public = PublicKey::Rsa {
        modulus: key.n().to_bytes_be(),
        exponent: 65537,
    };
    let pkcs8 = key.to_pkcs8_der().unwrap();
    let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(pkcs8.as_bytes()).unwrap();
    (
        ek_public(&public, name_alg, sym_bits),
        EkPrivateKey::Rsa(Box::new(private)),
    )
}

fn ecc_ek(name_alg: HashAlg, sym_bits: u16) -> (TpmPublic, EkPrivateKey) {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let key = p256::SecretKey::random(&mut rng);
    let p = key.public_key().to_encoded_point(false);
    let public = PublicKey::Ecc {
        curve: ECC_NIST_P256,
        x: p.x().unwrap().to_vec(),
        y: p.y().unwrap().to_vec(),
    };
    (
        ek_public(&public, name_alg, sym_bits),
        EkPrivateKey::P256(key),
    )
}

fn p384_ek(name_alg: HashAlg, sym_bits: u16) -> (TpmPublic, EkPrivateKey) {
    let mut rng = ChaCha20Rng::seed_from_u64(384);
    let key = p384::SecretKey::random(&mut rng);
    let p = key.public_key().to_encoded_point(false);
    let public = PublicKey::Ecc {
        curve: ECC_NIST_P384,
        x: p.x().unwrap().to_vec(),
        y: p.y().unwrap().to_vec(),
    };
    (
        ek_public(&public, name_alg, sym_bits),
        EkPrivateKey::P384(key),
    )
}

#[test]
fn round_trips_through_software_activation() {
    type Ek = fn(HashAlg, u16) -> (TpmPublic, EkPrivateKey);
    let shapes: [(&str, Ek, HashAlg, u16); 7] = [
        ("rsa sha256 aes128", rsa_ek, HashAlg::Sha256, 128),
        ("rsa sha384 aes256", rsa_ek, HashAlg::Sha384, 256),
        ("rsa sha1 aes192", rsa_ek, HashAlg::Sha1, 192),
        ("p256 sha256 aes128", ecc_ek, HashAlg::Sha256, 128),
        ("p256 sha512 aes256", ecc_ek, HashAlg::Sha512, 256),
        ("p384 sha384 aes256", p384_ek, HashAlg::Sha384, 256),
        ("p384 sha256 aes128", p384_ek, HashAlg::Sha256, 128),
    ];
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for (what, make, alg, bits) in shapes {
        let (ek, private) = make(alg, bits);
        let ak = [
            &[0x00, 0x0b][..],
            HashAlg::Sha256.hash(what.as_bytes()).as_bytes(),
        ]
        .concat();
        let secret = &[0x5a; 64][..alg.digest_len()];
        let blob = make_credential(&ek, &ak, secret, &mut rng).unwrap();
        let parsed = CredentialBlob::parse_tpm2_tools(&blob.to_tpm2_tools()).unwrap();
        assert_eq!(
            activate_credential(&ek, &private, &ak, &parsed).unwrap(),
            secret,
            "{what}"
        );
        assert_eq!(blob.integrity().len(), alg.digest_len(), "{what}");

        // The TPM refuses another AK, and any change to the blob.
        let other = [&[0x00, 0x0b][..], HashAlg::Sha256.hash(b"other").as_bytes()].concat();
        assert_eq!(
            activate_credential(&ek, &private, &other, &blob),
            Err(CredentialError::Integrity),
            "{what}"
        );
        let mut bytes = blob.to_tpm2_tools();
        bytes[12 + alg.digest_len() + 1] ^= 0x01; // in encIdentity
        let tampered = CredentialBlob::parse_tpm2_tools(&bytes).unwrap();
        assert_eq!(
            activate_credential(&ek, &private, &ak, &tampered),
            Err(CredentialError::Integrity),
            "{what}"
        );
    }
}

#[test]
fn same_seed_same_blob() {
    let (ek, _) = rsa_ek(HashAlg::Sha256, 128);
    let ak = file("ak.name");
    let make = |seed| {
        make_credential(&ek, &ak, b"s", &mut ChaCha20Rng::seed_from_u64(seed))
            .unwrap()
            .to_tpm2_tools()
    };
    assert_eq!(make(3), make(3));
    assert_ne!(make(3), make(4));
}

#[test]
fn bad_inputs_are_named() {
    let (ek, _) = rsa_ek(HashAlg::Sha256, 128);
    let ak = file("ak.name");
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    assert_eq!(
        make_credential(&ek, &ak, &[1; 33], &mut rng),
        Err(CredentialError::SecretSize { max: 32, got: 33 })
    );
    assert_eq!(
        make_credential(&ek, &ak, &[], &mut rng),
        Err(CredentialError::SecretSize { max: 32, got: 0 })
    );
    for name in [&ak[..33], &[0x00, 0x99, 1, 2][..], &[0][..]] {
        assert!(matches!(
            make_credential(&ek, name, b"s", &mut rng),
            Err(CredentialError::AkName { .. })
        ));
    }
    // An AK is a signing key: no symmetric definition, so it cannot be used as an EK.
    let ak_pub = TpmPublic::parse_tpm2b(&file("ak.pub")).unwrap();
    assert!(matches!(
        make_credential(&ak_pub, &ak, b"s", &mut rng),
        Err(CredentialError::UnsupportedEk(_))
    ));
    // A P-256 EK whose point is off the curve.
    let (ecc, _) = ecc_ek(HashAlg::Sha256, 128);
    let PublicKey::Ecc { x, mut y, .. } = ecc.key.clone() else {
        unreachable!()
    };
    y[31] ^= 1;
    let bent = ek_public(
        &PublicKey::Ecc {
            curve: ECC_NIST_P256,
            x,
            y,
        },
        HashAlg::Sha256,
        128,
    );
    assert!(matches!(
        make_credential(&bent, &ak, b"s", &mut rng),
        Err(CredentialError::InvalidEkKey(_))
    ));
}

#[test]
fn kdfs_follow_the_definition() {
    // KDFa's first block is one HMAC over counter || label || 0 || contexts || bits.
    let block = hmac(
        HashAlg::Sha256,
        b"key",
        &[b"\0\0\0\x01STORAGE\0", b"u", b"v", b"\0\0\x01\0"],
    );
    assert_eq!(
        kdfa(HashAlg::Sha256, b"key", "STORAGE", b"u", b"v", 256),
        block.as_bytes()
    );
    // Longer outputs continue the counter; partial bytes are masked at the top.
    let long = kdfa(HashAlg::Sha1, b"k", "L", b"", b"", 300);
    assert_eq!(long.len(), 38);
    let odd = kdfa(HashAlg::Sha256, b"key", "X", b"", b"", 12);
    assert_eq!(odd.len(), 2);
    assert_eq!(odd[0] & 0xf0, 0);
    // KDFe is one hash over counter || z || label || 0 || parties.
    let e = kdfe(HashAlg::Sha384, b"z", "IDENTITY", b"u", b"v", 384);
    assert_eq!(
        e,
        HashAlg::Sha384.hash(b"\0\0\0\x01zIDENTITY\0uv").as_bytes()
    );
}

#[test]
fn keylime_auth_tag() {
    let secret = b"5a4e524b4f4e6e777552754831683734";
    let agent = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    // Python: hmac.new(base64.b64encode(S), agent_id.encode(), hashlib.sha384).hexdigest()
    let expected = concat!(
        "2e413737b75c8af13c3a5dec2aa5fd8a30495f579aeea0ddbdf0e928c1c471b2",
        "b67fdd9f104fdfe51d42f5144bf2fd5b"
    );
    assert_eq!(auth_tag(secret, agent), expected);
    assert_eq!(check_auth_tag(secret, agent, expected), Ok(()));
    // Keylime compares the hex text, so uppercase hex, another agent or secret fail.
    assert!(check_auth_tag(secret, agent, &expected.to_uppercase()).is_err());
    assert!(check_auth_tag(secret, "other", expected).is_err());
    assert!(check_auth_tag(b"x", agent, expected).is_err());
    assert!(check_auth_tag(secret, agent, "").is_err());
    assert_eq!(registrar_key(b"ab"), "YWI=");
}

#[test]
fn challenges_are_keylime_shaped() {
    let a = random_challenge(&mut ChaCha20Rng::seed_from_u64(5)).unwrap();
    assert!(a.iter().all(u8::is_ascii_alphanumeric));
    assert_eq!(
        a,
        random_challenge(&mut ChaCha20Rng::seed_from_u64(5)).unwrap()
    );
    assert_ne!(
        a,
        random_challenge(&mut ChaCha20Rng::seed_from_u64(6)).unwrap()
    );
    // Bytes >= 248 are skipped rather than reduced.
    let mut bytes = vec![0xff; 64];
    bytes.extend(0..64u8);
    let b = random_challenge(&mut Replay(bytes)).unwrap();
    assert_eq!(&b[..], &CHALLENGE_ALPHABET[..32]);
}
