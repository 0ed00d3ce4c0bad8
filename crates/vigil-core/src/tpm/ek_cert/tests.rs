use base64::Engine;

use super::ber::{Notes, Reader};
use super::cert::{PEM_BEGIN, PEM_END};
use super::signature::{parse_sig_alg, pss};
use super::*;
use crate::hash::HashAlg;
use crate::tpm::public::TpmPublic;
use crate::tpm::quote::pkcs1v15;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata/");

fn testdata(path: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}{path}")).unwrap()
}

/// Keylime's `tpm_cert_store/`, read as the CLI reads a directory (sorted `*.pem`).
fn keylime_store_entries() -> Vec<(String, Vec<u8>)> {
    let dir = format!("{TESTDATA}keylime/tpm_cert_store");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pem"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(format!("{dir}/{n}")).unwrap();
            (n, bytes)
        })
        .collect()
}

fn keylime_store() -> EkCertStore {
    EkCertStore::from_entries(keylime_store_entries()).unwrap()
}

fn store_cert(name: &str) -> EkCert {
    EkCert::parse(&testdata(&format!("keylime/tpm_cert_store/{name}"))).unwrap()
}

fn unix(rfc3339: &str) -> i64 {
    parse_rfc3339(rfc3339).unwrap()
}

// ---------------------------------------------------------------------------------
// Keylime's vendor store: real certificates and real chains.

#[test]
fn every_keylime_store_certificate_loads() {
    let entries = keylime_store_entries();
    assert_eq!(entries.len(), 51);
    let store = EkCertStore::from_entries(entries).unwrap();
    // One certificate per file, none skipped.
    assert_eq!(store.len(), 51);
    assert!(store.skipped().is_empty());
    for c in store.certs() {
        assert!(!c.entry.contains('#'), "{}", c.entry);
        assert!(
            matches!(
                c.cert.public_key(),
                CertPublicKey::Rsa { .. } | CertPublicKey::Ec { .. }
            ),
            "{}: {:?}",
            c.entry,
            c.cert.public_key()
        );
        assert!(c.cert.not_before() < c.cert.not_after(), "{}", c.entry);
        // Real vendor CA certificates in strict DER: no false alarms from the lenient
        // reader or the strict second opinion.
        assert!(c.cert.is_der(), "{}: {:?}", c.entry, c.cert.der_issues());
    }
    let ec = store
        .certs()
        .iter()
        .filter(|c| matches!(c.cert.public_key(), CertPublicKey::Ec { .. }))
        .count();
    assert_eq!(ec, 15, "ECC CA certificates in the store");
}

#[test]
fn store_names_read_like_openssl() {
    let ifx = store_cert("IFX1.pem");
    assert_eq!(
        ifx.subject().to_string(),
        "C=DE, ST=Saxony, O=Infineon Technologies AG, OU=AIM, CN=IFX TPM EK Intermediate CA 01"
    );
    // Nuvoton's roots put three attributes in one RDN.
    let ntc = store_cert("NTC1.pem");
    assert_eq!(
        ntc.subject().to_string(),
        "CN=NTC TPM EK Root CA 01 + O=Nuvoton Technology Corporation + C=TW"
    );
    assert_eq!(ntc.subject(), ntc.issuer());
    assert_eq!(ifx.not_after(), unix("2025-10-20T13:47:43Z"));
}

/// Every store certificate verified against the store: the ones whose issuer is in the
/// store chain to it (real vendor chains, RSA and ECC), the others name the missing
/// issuer.
#[test]
fn store_certificates_chain_within_the_store() {
    let store = keylime_store();
    let mut trusted = Vec::new();
    let mut missing = Vec::new();
    for c in store.certs() {
        match verify(&c.cert, &[], &store, None) {
            Ok(chain) => {
                assert_eq!(chain.links.len(), 2, "{}", c.entry);
                assert_eq!(chain.links[0].subject, c.cert.subject().to_string());
                trusted.push(c.entry.clone());
            }
            Err(ChainError::NoIssuer { subject, issuer }) => {
                assert_eq!(subject, c.cert.subject().to_string());
                assert_eq!(issuer, c.cert.issuer().to_string());
                missing.push(c.entry.clone());
            }
            Err(e) => panic!("{}: {e}", c.entry),
        }
    }
    // Issuers outside the store: VeriSign (IFX root), GlobalSign ECC (STM ECC root),
    // Aliyun's and Nationz's roots.
    let expected_missing = [
        "Alibaba_Cloud_vTPM_EK.pem",
        "IFX_RSA_RT.pem",
        "Nationz_TPM_EK.pem",
        "STM_ECC_01RT.pem",
    ];
    assert_eq!(missing, expected_missing);
    assert_eq!(trusted.len(), 51 - 4);

    let chain = verify(&store_cert("IFX1.pem"), &[], &store, None).unwrap();
    assert_eq!(
        chain.links[1],
        ChainLink {
            subject: "C=DE, ST=Bavaria, O=Infineon Technologies AG, OU=AIM, CN=IFX TPM EK Root CA"
                .into(),
            source: LinkSource::Store {
                entry: "IFX_RSA_RT.pem".into()
            },
        }
    );
    // An ECDSA chain.
    let chain = verify(&store_cert("STM_ECC_01I.pem"), &[], &store, None).unwrap();
    assert_eq!(
        chain.links[1].source,
        LinkSource::Store {
            entry: "STM_ECC_01RT.pem".into()
        }
    );
}

/// A real three-level vendor chain: STM intermediate → STM root (given as the TPM's
/// NV chain would give it) → GlobalSign's TPM root (the only store certificate).
#[test]
fn stm_chain_through_an_intermediate_to_globalsign() {
    let inter = store_cert("STM_RSA_01I.pem");
    let stm_root = store_cert("STM_RSA_RT.pem");
    let store = EkCertStore::from_entries([(
        "GS_TPM_RT.pem",
        testdata("keylime/tpm_cert_store/GS_TPM_RT.pem"),
    )])
    .unwrap();
    let chain = verify(&inter, std::slice::from_ref(&stm_root), &store, None).unwrap();
    let subjects: Vec<_> = chain.links.iter().map(|l| l.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "C=CH, O=STMicroelectronics NV, CN=STM TPM EK Intermediate CA 01",
            "C=CH, O=STMicroelectronics NV, CN=STM TPM EK Root CA",
            "OU=GlobalSign Trusted Computing Certificate Authority, O=GlobalSign, CN=GlobalSign Trusted Platform Module Root CA",
        ]
    );
    assert_eq!(chain.links[1].source, LinkSource::Intermediate { index: 0 });
    // Without the NV chain, the gap cannot be bridged.
    assert!(matches!(
        verify(&inter, &[], &store, None),
        Err(ChainError::NoIssuer { .. })
    ));
}

#[test]
fn flipped_signature_byte_is_a_bad_signature() {
    let store = keylime_store();
    let mut der = store_cert("IFX1.pem").as_bytes().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let cert = EkCert::parse(&der).unwrap();
    let err = verify(&cert, &[], &store, None).unwrap_err();
    // IFX1.pem and IFX_RSA_01I.pem are the same certificate; its issuer is the root.
    assert_eq!(
        err,
        ChainError::BadSignature {
            subject: cert.subject().to_string(),
            issuer: "C=DE, ST=Bavaria, O=Infineon Technologies AG, OU=AIM, CN=IFX TPM EK Root CA"
                .into(),
            from: "IFX_RSA_RT.pem".into(),
        }
    );
    assert!(err.to_string().contains("IFX TPM EK Intermediate CA 01"));

    // A flipped byte in the signed part too.
    let mut der = store_cert("STM_ECC_01I.pem").as_bytes().to_vec();
    let cert = EkCert::parse(&der).unwrap();
    let spki_at = der
        .windows(cert.spki_bytes().len())
        .position(|w| w == cert.spki_bytes())
        .unwrap();
    der[spki_at + cert.spki_bytes().len() - 1] ^= 1;
    // The key is no longer a valid point or is another key; either way, no trust.
    let cert = EkCert::parse(&der).unwrap();
    assert!(matches!(
        verify(&cert, &[], &store, None),
        Err(ChainError::BadSignature { .. })
    ));
}

#[test]
fn validity_is_checked_only_when_a_time_is_given() {
    let store = keylime_store();
    let ifx1 = store_cert("IFX1.pem");
    // Expired on 2025-10-20, as Keylime never notices.
    assert!(verify(&ifx1, &[], &store, None).is_ok());
    assert!(verify(&ifx1, &[], &store, Some(unix("2020-01-01T00:00:00Z"))).is_ok());
    assert_eq!(
        verify(&ifx1, &[], &store, Some(unix("2026-01-01T00:00:00Z"))).unwrap_err(),
        ChainError::Expired {
            subject: ifx1.subject().to_string(),
            not_after: "2025-10-20T13:47:43Z".into(),
            at: "2026-01-01T00:00:00Z".into(),
        }
    );
    // Before the intermediate existed.
    assert!(matches!(
        verify(&ifx1, &[], &store, Some(unix("2005-01-01T00:00:00Z"))),
        Err(ChainError::NotYetValid { .. })
    ));
    // The anchor's validity counts too: the IFX root was issued on 2005-10-25, after
    // IFX1 (2005-10-20).
    let err = verify(&ifx1, &[], &store, Some(unix("2005-10-22T00:00:00Z"))).unwrap_err();
    assert!(
        matches!(&err, ChainError::NotYetValid { subject, .. } if subject.contains("Root CA")),
        "{err}"
    );
}

#[test]
fn keylime_idevid_test_chain_verifies_with_its_root() {
    let certs = EkCert::parse_all(&testdata(
        "keylime/test-data/files/idevid-test-ca/iak_idevid_chain.pem",
    ))
    .unwrap();
    assert_eq!(certs.len(), 2);
    let (inter, root) = (&certs[0], &certs[1]);
    assert!(inter
        .subject()
        .to_string()
        .ends_with("CN=Isaac HPE Intermediate CA"));
    assert_eq!(inter.is_ca(), Some(true));
    let store = EkCertStore::from_entries([("root.pem", root.as_bytes())]).unwrap();
    let chain = verify(inter, &[], &store, None).unwrap();
    assert_eq!(chain.links.len(), 2);
    // Not a TPM vendor: the Keylime store does not know it.
    assert!(matches!(
        verify(inter, &[], &keylime_store(), None),
        Err(ChainError::NoIssuer { .. })
    ));
    // The root trusts itself when it is in the store.
    assert_eq!(verify(root, &[], &store, None).unwrap().links.len(), 2);
}

#[test]
fn truncated_certificates_are_errors_not_panics() {
    let der = store_cert("INTEL_I.pem").as_bytes().to_vec();
    for cut in 0..der.len() {
        assert!(EkCert::parse(&der[..cut]).is_err(), "cut at {cut}");
    }
    // And a few thousand single-byte corruptions.
    for i in 0..der.len() {
        let mut bad = der.clone();
        bad[i] = bad[i].wrapping_add(0x41);
        let _ = EkCert::parse(&bad);
    }
}

// ---------------------------------------------------------------------------------
// Synthetic certificates: deterministic keys, encodings chosen per test.

mod build {
    use super::HashAlg;

    pub(super) fn len(n: usize) -> Vec<u8> {
        match n {
            0..=0x7f => vec![n as u8],
            0x80..=0xff => vec![0x81, n as u8],
            _ => vec![0x82, (n >> 8) as u8, n as u8],
        }
    }

    pub(super) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        [vec![tag], len(content.len()), content.to_vec()].concat()
    }

    /// A TLV with a needlessly long (non-DER) length.
    pub(super) fn tlv_long(tag: u8, content: &[u8]) -> Vec<u8> {
        let n = content.len();
        [
            vec![tag, 0x83, 0, (n >> 8) as u8, n as u8],
            content.to_vec(),
        ]
        .concat()
    }

    pub(super) fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

    pub(super) fn oid(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
        let mut out = Vec::new();
        for arc in std::iter::once(arcs[0] * 40 + arcs[1]).chain(arcs[2..].iter().copied()) {
            let mut bytes = vec![(arc & 0x7f) as u8];
            let mut v = arc >> 7;
            while v > 0 {
                bytes.push((v & 0x7f) as u8 | 0x80);
                v >>= 7;
            }
            bytes.reverse();
            out.extend(bytes);
        }
        tlv(0x06, &out)
    }

    /// `CN=<cn>` with the given string tag.
    pub(super) fn name_with(cn: &str, string_tag: u8) -> Vec<u8> {
        seq(&[&tlv(
            0x31,
            &seq(&[&oid("2.5.4.3"), &tlv(string_tag, cn.as_bytes())]),
        )])
    }

    pub(super) fn name(cn: &str) -> Vec<u8> {
        name_with(cn, 0x0c)
    }

    pub(super) fn alg(dotted: &str) -> Vec<u8> {
        seq(&[&oid(dotted)])
    }

    pub(super) fn ecdsa_alg(h: HashAlg) -> Vec<u8> {
        alg(match h {
            HashAlg::Sha384 => "1.2.840.10045.4.3.3",
            HashAlg::Sha512 => "1.2.840.10045.4.3.4",
            _ => "1.2.840.10045.4.3.2",
        })
    }

    pub(super) fn rsa_alg(h: HashAlg) -> Vec<u8> {
        let oid_ = match h {
            HashAlg::Sha1 => "1.2.840.113549.1.1.5",
            HashAlg::Sha384 => "1.2.840.113549.1.1.12",
            HashAlg::Sha512 => "1.2.840.113549.1.1.13",
            _ => "1.2.840.113549.1.1.11",
        };
        seq(&[&oid(oid_), &[0x05, 0x00]])
    }

    pub(super) fn pss_alg_sha256(salt: u8) -> Vec<u8> {
        let sha256 = seq(&[&oid("2.16.840.1.101.3.4.2.1"), &[0x05, 0x00]]);
        let mgf = seq(&[&oid("1.2.840.113549.1.1.8"), &sha256]);
        let params = seq(&[
            &tlv(0xa0, &sha256),
            &tlv(0xa1, &mgf),
            &tlv(0xa2, &tlv(0x02, &[salt])),
        ]);
        seq(&[&oid("1.2.840.113549.1.1.10"), &params])
    }

    /// The TBSCertificate fields that tests vary.
    pub(super) struct Tbs {
        pub(super) serial: Vec<u8>,
        pub(super) sig_alg: Vec<u8>,
        pub(super) issuer: Vec<u8>,
        pub(super) subject: Vec<u8>,
        pub(super) not_after: &'static str,
        pub(super) spki: Vec<u8>,
        /// Complete Extension TLVs.
        pub(super) extensions: Vec<Vec<u8>>,
    }

    impl Tbs {
        pub(super) fn new(issuer: &str, subject: &str, spki: Vec<u8>, sig_alg: Vec<u8>) -> Self {
            Self {
                serial: vec![0x01],
                sig_alg,
                issuer: name(issuer),
                subject: name(subject),
                not_after: "301231235959Z",
                spki,
                extensions: Vec::new(),
            }
        }

        pub(super) fn ca(mut self, ca: bool) -> Self {
            let flag: &[u8] = if ca { &[0x01, 0x01, 0xff] } else { &[] };
            self.extensions.push(seq(&[
                &oid("2.5.29.19"),
                &[0x01, 0x01, 0xff],
                &tlv(0x04, &seq(&[flag])),
            ]));
            self
        }

        pub(super) fn encode(&self) -> Vec<u8> {
            let validity = seq(&[
                &tlv(0x17, b"200101000000Z"),
                &tlv(0x17, self.not_after.as_bytes()),
            ]);
            let mut parts: Vec<Vec<u8>> = vec![
                tlv(0xa0, &tlv(0x02, &[2])),
                tlv(0x02, &self.serial),
                self.sig_alg.clone(),
                self.issuer.clone(),
                validity,
                self.subject.clone(),
                self.spki.clone(),
            ];
            if !self.extensions.is_empty() {
                parts.push(tlv(0xa3, &tlv(0x30, &self.extensions.concat())));
            }
            tlv(0x30, &parts.concat())
        }
    }

    pub(super) fn cert(tbs: &[u8], sig_alg: &[u8], sig: &[u8]) -> Vec<u8> {
        seq(&[tbs, sig_alg, &tlv(0x03, &[&[0u8][..], sig].concat())])
    }
}

use build::*;

/// The signing side of a synthetic CA.
enum Key {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl Key {
    fn p256(seed: u8) -> Self {
        Self::P256(p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap())
    }

    fn p384(seed: u8) -> Self {
        Self::P384(p384::ecdsa::SigningKey::from_bytes(&[seed; 48].into()).unwrap())
    }

    /// rust-keylime's 2048-bit test key.
    fn rsa() -> Self {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let pem =
            String::from_utf8(testdata("rust-keylime/keylime/test-data/test-rsa.pem")).unwrap();
        let (_, der) = der::pem::decode_vec(pem.trim().as_bytes()).unwrap();
        Self::Rsa(Box::new(rsa::RsaPrivateKey::from_pkcs1_der(&der).unwrap()))
    }

    fn spki(&self) -> Vec<u8> {
        use rsa::pkcs8::EncodePublicKey;
        match self {
            Self::P256(k) => k.verifying_key().to_public_key_der().unwrap().into_vec(),
            Self::P384(k) => k.verifying_key().to_public_key_der().unwrap().into_vec(),
            Self::Rsa(k) => k.to_public_key().to_public_key_der().unwrap().into_vec(),
        }
    }

    fn default_alg(&self) -> Vec<u8> {
        match self {
            Self::P256(_) => ecdsa_alg(HashAlg::Sha256),
            Self::P384(_) => ecdsa_alg(HashAlg::Sha384),
            Self::Rsa(_) => rsa_alg(HashAlg::Sha256),
        }
    }

    /// Signs `tbs` with the algorithm its AlgorithmIdentifier names.
    fn sign(&self, tbs: &[u8], alg: &SignatureAlgorithm) -> Vec<u8> {
        match (self, alg) {
            (Self::P256(k), SignatureAlgorithm::Ecdsa(h)) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(h.hash(tbs).as_bytes()).unwrap();
                s.to_der().as_bytes().to_vec()
            }
            (Self::P384(k), SignatureAlgorithm::Ecdsa(h)) => {
                let s: p384::ecdsa::Signature = k.sign_prehash(h.hash(tbs).as_bytes()).unwrap();
                s.to_der().as_bytes().to_vec()
            }
            (Self::Rsa(k), SignatureAlgorithm::RsaPkcs1(h)) => {
                k.sign(pkcs1v15(*h), h.hash(tbs).as_bytes()).unwrap()
            }
            (Self::Rsa(k), SignatureAlgorithm::RsaPss { hash, salt_len }) => {
                let mut rng = CountingRng(7);
                k.sign_with_rng(&mut rng, pss(*hash, *salt_len), hash.hash(tbs).as_bytes())
                    .unwrap()
            }
            _ => panic!("key and algorithm do not fit"),
        }
    }

    /// Issues a certificate over `tbs`, signed as its `signature` field says.
    fn issue(&self, tbs: &Tbs) -> Vec<u8> {
        let bytes = tbs.encode();
        let mut notes = Notes::default();
        let t = Reader::new(&tbs.sig_alg).next(&mut notes).unwrap();
        let (_, alg) = parse_sig_alg(&t, &mut notes, "test").unwrap();
        cert(&bytes, &tbs.sig_alg, &self.sign(&bytes, &alg))
    }
}

use ecdsa::signature::hazmat::PrehashSigner;

/// A deterministic RNG for RSA-PSS salts (tests only).
struct CountingRng(u64);

impl rsa::rand_core::RngCore for CountingRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next_u64() as u8;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl rsa::rand_core::CryptoRng for CountingRng {}

/// Root (P-256) → intermediate (P-384) → EK certificate for Keylime's test EK (RSA).
struct Pki {
    root_key: Key,
    inter_key: Key,
    root: Vec<u8>,
    inter: Vec<u8>,
}

const ROOT: &str = "Vigil Test EK Root CA";
const INTER: &str = "Vigil Test EK Intermediate CA";
const EK: &str = "Vigil Test EK";

fn keylime_ek_spki() -> Vec<u8> {
    let pem = String::from_utf8(testdata("keylime/test-data/files/ekpub.pem")).unwrap();
    der::pem::decode_vec(pem.trim().as_bytes()).unwrap().1
}

fn pki() -> Pki {
    let root_key = Key::p256(1);
    let inter_key = Key::p384(2);
    let root =
        root_key.issue(&Tbs::new(ROOT, ROOT, root_key.spki(), root_key.default_alg()).ca(true));
    let inter =
        root_key.issue(&Tbs::new(ROOT, INTER, inter_key.spki(), root_key.default_alg()).ca(true));
    Pki {
        root_key,
        inter_key,
        root,
        inter,
    }
}

impl Pki {
    fn ek_tbs(&self) -> Tbs {
        Tbs::new(INTER, EK, keylime_ek_spki(), self.inter_key.default_alg()).ca(false)
    }

    fn store(&self) -> EkCertStore {
        EkCertStore::from_entries([("root.der", &self.root)]).unwrap()
    }
}

#[test]
fn chain_through_nv_intermediates_and_ek_key_match() {
    let pki = pki();
    let ek = EkCert::parse(&pki.inter_key.issue(&pki.ek_tbs())).unwrap();
    assert!(ek.is_der(), "{:?}", ek.der_issues());
    let inter = EkCert::parse(&pki.inter).unwrap();
    let chain = verify(&ek, std::slice::from_ref(&inter), &pki.store(), None).unwrap();
    let subjects: Vec<_> = chain.links.iter().map(|l| l.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            format!("CN={EK}"),
            format!("CN={INTER}"),
            format!("CN={ROOT}")
        ]
    );
    assert_eq!(chain.links[1].source, LinkSource::Intermediate { index: 0 });

    // Without the intermediate, nothing issued the EK certificate.
    assert_eq!(
        verify(&ek, &[], &pki.store(), None).unwrap_err(),
        ChainError::NoIssuer {
            subject: format!("CN={EK}"),
            issuer: format!("CN={INTER}"),
        }
    );
    // The intermediate in the store is an anchor on its own, as in Keylime.
    let store = EkCertStore::from_entries([("inter.pem", &pki.inter)]).unwrap();
    assert_eq!(verify(&ek, &[], &store, None).unwrap().links.len(), 2);

    // The EK public key: Keylime's ek.pub is the key this certificate holds.
    let ek_pub = TpmPublic::parse_tpm2b(&testdata("keylime/test-data/files/ek.pub")).unwrap();
    ek.check_tpm_public(&ek_pub).unwrap();
    ek.check_spki(&keylime_ek_spki()).unwrap();
    for file in ["ek.pub", "ekpub.pem"] {
        ek.check_ek_public(&testdata(&format!("keylime/test-data/files/{file}")))
            .unwrap();
    }
    ek.check_ek_public(&keylime_ek_spki()).unwrap();
    assert!(matches!(
        ek.check_ek_public(&testdata("keylime/test-data/files/akpub.pem")),
        Err(KeyMatchError::Mismatch { .. })
    ));
    assert!(matches!(
        ek.check_ek_public(b"\x00\x01junk"),
        Err(KeyMatchError::BadEk(_))
    ));
    let ak_pub = TpmPublic::parse_tpm2b(&testdata("keylime/test-data/files/ak.pub")).unwrap();
    assert_eq!(
        ek.check_tpm_public(&ak_pub).unwrap_err(),
        KeyMatchError::Mismatch {
            subject: format!("CN={EK}"),
            detail: "the RSA moduli differ".into()
        }
    );
    // An EC certificate against an RSA EK.
    let inter_cert = EkCert::parse(&pki.inter).unwrap();
    let err = inter_cert.check_tpm_public(&ek_pub).unwrap_err();
    assert!(
        err.to_string().contains("EC P384 key, the EK is RSA-2048"),
        "{err}"
    );
}

#[test]
fn wrong_issuer_key_and_non_ca_issuer_are_refused() {
    let pki = pki();
    let ek = EkCert::parse(&pki.inter_key.issue(&pki.ek_tbs())).unwrap();
    // An impostor intermediate: same name, another key, properly signed by the root.
    let impostor_key = Key::p384(9);
    let impostor =
        EkCert::parse(&pki.root_key.issue(
            &Tbs::new(ROOT, INTER, impostor_key.spki(), pki.root_key.default_alg()).ca(true),
        ))
        .unwrap();
    assert_eq!(
        verify(&ek, std::slice::from_ref(&impostor), &pki.store(), None).unwrap_err(),
        ChainError::BadSignature {
            subject: format!("CN={EK}"),
            issuer: format!("CN={INTER}"),
            from: "intermediate #1".into(),
        }
    );
    // With the real one also given, the chain is found.
    let inter = EkCert::parse(&pki.inter).unwrap();
    let chain = verify(&ek, &[impostor, inter], &pki.store(), None).unwrap();
    assert_eq!(chain.links[1].source, LinkSource::Intermediate { index: 1 });

    // An issuer that says it is not a CA.
    let leafy = EkCert::parse(
        &pki.root_key.issue(
            &Tbs::new(
                ROOT,
                INTER,
                pki.inter_key.spki(),
                pki.root_key.default_alg(),
            )
            .ca(false),
        ),
    )
    .unwrap();
    assert!(matches!(
        verify(&ek, &[leafy], &pki.store(), None),
        Err(ChainError::NotCa { .. })
    ));
}

#[test]
fn vendor_encodings_are_read_and_verified_over_the_original_bytes() {
    let pki = pki();
    let mut tbs = pki.ek_tbs();
    // Zero-padded serial, a PrintableString with '_', a BOOLEAN true of 0x01, and a
    // non-minimal length — each seen in shipped EK certificates.
    tbs.serial = vec![0x00, 0x00, 0x42];
    tbs.subject = name_with("Vigil_Test EK", 0x13);
    tbs.extensions.push(seq(&[
        &oid("2.5.29.17"),
        &[0x01, 0x01, 0x01],
        &tlv(0x04, &seq(&[])),
    ]));
    tbs.spki = {
        // Same key, SubjectPublicKeyInfo with a long-form length.
        let spki = keylime_ek_spki();
        let mut notes = Notes::default();
        let t = Reader::new(&spki).next(&mut notes).unwrap();
        tlv_long(0x30, t.content)
    };
    let der = pki.inter_key.issue(&tbs);
    let ek = EkCert::parse(&der).unwrap();
    assert_eq!(ek.as_bytes(), &der[..]);
    let issues = ek.der_issues().join("\n");
    for want in [
        "serialNumber: INTEGER with a leading zero byte",
        "subject: PrintableString with invalid characters",
        "extension critical: BOOLEAN true that is not 0xff",
        "length with leading zero bytes",
    ] {
        assert!(issues.contains(want), "{want} not in {issues}");
    }
    assert!(!ek.is_der());
    // A strict DER decoder refuses it, as Python's cryptography does.
    assert!(<x509_cert::Certificate as der::Decode>::from_der(&der).is_err());
    // The signature covers the bytes as they are.
    let inter = EkCert::parse(&pki.inter).unwrap();
    let chain = verify(&ek, std::slice::from_ref(&inter), &pki.store(), None).unwrap();
    assert_eq!(chain.links[0].subject, "CN=Vigil_Test EK");
    ek.check_spki(&keylime_ek_spki()).unwrap();
    // The policy decides.
    ek.check_encoding(MalformedCertAction::Accept).unwrap();
    let err = ek.check_encoding(MalformedCertAction::Reject).unwrap_err();
    assert!(
        matches!(&err, CertError::NotDer { subject, issues }
        if subject == "CN=Vigil_Test EK" && issues.len() == 4),
        "{err}"
    );

    // A negative serial.
    let mut tbs = pki.ek_tbs();
    tbs.serial = vec![0x9c, 0x01];
    let ek = EkCert::parse(&pki.inter_key.issue(&tbs)).unwrap();
    assert!(ek
        .der_issues()
        .iter()
        .any(|i| i.contains("negative serial")));
    assert!(verify(&ek, std::slice::from_ref(&inter), &pki.store(), None).is_ok());
}

#[test]
fn names_match_across_string_types() {
    let pki = pki();
    let mut tbs = pki.ek_tbs();
    tbs.issuer = name_with(INTER, 0x13); // PrintableString; the subject is UTF8String
    let ek = EkCert::parse(&pki.inter_key.issue(&tbs)).unwrap();
    let inter = EkCert::parse(&pki.inter).unwrap();
    assert!(verify(&ek, &[inter], &pki.store(), None).is_ok());
}

#[test]
fn nv_padding_pem_base64_and_concatenated_chains() {
    let pki = pki();
    let der = pki.inter_key.issue(&pki.ek_tbs());
    for pad in [0x00u8, 0xff] {
        let padded = [der.clone(), vec![pad; 300]].concat();
        let c = EkCert::parse(&padded).unwrap();
        assert_eq!(c.padding(), 300);
        assert_eq!(c.as_bytes(), &der[..]);
        assert!(c.is_der());
    }
    assert_eq!(
        EkCert::parse(&[der.clone(), vec![0xff, 0x12, 0x00]].concat()).unwrap_err(),
        CertError::Trailing { extra: 3 }
    );
    // The TPM's NV chain: concatenated DER, then padding.
    let nv = [pki.inter.clone(), pki.root.clone(), vec![0xff; 64]].concat();
    let chain = EkCert::parse_all(&nv).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].subject().to_string(), format!("CN={ROOT}"));

    // PEM (with text around it) and Keylime's base64 DER.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let pem = format!(
        "Certificate:\n  blah\n{PEM_BEGIN}\n{}\n{PEM_END}\n",
        b64.as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(EkCert::parse(pem.as_bytes()).unwrap().as_bytes(), &der[..]);
    assert_eq!(EkCert::parse(b64.as_bytes()).unwrap().as_bytes(), &der[..]);
    assert_eq!(
        EkCert::parse(b"hello world").unwrap_err(),
        CertError::NoCertificate
    );
    assert!(matches!(
        EkCert::parse(format!("{PEM_BEGIN}\n!!!\n{PEM_END}").as_bytes()),
        Err(CertError::Encoding(_))
    ));
}

#[test]
fn store_entries_bundles_keys_and_bad_files() {
    let pki = pki();
    let root_pem = format!(
        "{PEM_BEGIN}\n{}\n{PEM_END}\n",
        base64::engine::general_purpose::STANDARD.encode(&pki.root)
    );
    let inter_pem = format!(
        "{PEM_BEGIN}\n{}\n{PEM_END}\n",
        base64::engine::general_purpose::STANDARD.encode(&pki.inter)
    );
    let key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_string();
    let store = EkCertStore::from_entries([
        ("bundle.pem", format!("{inter_pem}{root_pem}")),
        ("signkey.pem", key_pem),
    ])
    .unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(store.certs()[0].entry, "bundle.pem#1");
    assert_eq!(store.certs()[1].entry, "bundle.pem#2");
    assert_eq!(store.skipped(), ["signkey.pem"]);
    let root_name = EkCert::parse(&pki.root).unwrap().subject().clone();
    assert_eq!(store.by_subject(&root_name).count(), 1);

    let err = EkCertStore::from_entries([("junk.pem", b"\x30\x03\x02\x01".to_vec())]).unwrap_err();
    assert_eq!(err.name, "junk.pem");
    assert!(
        err.to_string()
            .starts_with("trust store entry junk.pem: malformed"),
        "{err}"
    );
}

#[test]
fn rsa_signature_algorithms() {
    let rsa = Key::rsa();
    let root = rsa.issue(&Tbs::new(ROOT, ROOT, rsa.spki(), rsa.default_alg()).ca(true));
    let store = EkCertStore::from_entries([("root.pem", &root)]).unwrap();
    let ek_key = Key::p256(3);
    for alg in [
        rsa_alg(HashAlg::Sha1),
        rsa_alg(HashAlg::Sha256),
        rsa_alg(HashAlg::Sha384),
        rsa_alg(HashAlg::Sha512),
        pss_alg_sha256(32),
        pss_alg_sha256(20),
    ] {
        let der = rsa.issue(&Tbs::new(ROOT, EK, ek_key.spki(), alg.clone()));
        let ek = EkCert::parse(&der).unwrap();
        assert!(ek.is_der(), "{:?}", ek.der_issues());
        let chain = verify(&ek, &[], &store, None);
        assert!(chain.is_ok(), "{}: {chain:?}", ek.signature_algorithm());
        let mut bad = der.clone();
        let n = bad.len();
        bad[n - 5] ^= 0x80;
        assert!(
            matches!(
                verify(&EkCert::parse(&bad).unwrap(), &[], &store, None),
                Err(ChainError::BadSignature { .. })
            ),
            "{}",
            ek.signature_algorithm()
        );
    }
    // The RSA root also verifies itself (PKCS#1 v1.5 SHA-256).
    assert!(verify(&EkCert::parse(&root).unwrap(), &[], &store, None).is_ok());
}

#[test]
fn unsupported_and_mismatched_algorithms_are_named() {
    let pki = pki();
    // Ed25519 is not a TPM EK CA algorithm.
    let mut tbs = pki.ek_tbs();
    tbs.sig_alg = alg("1.3.101.112");
    let tbs_bytes = tbs.encode();
    let ek = EkCert::parse(&cert(&tbs_bytes, &alg("1.3.101.112"), &[1; 64])).unwrap();
    let inter = EkCert::parse(&pki.inter).unwrap();
    assert_eq!(
        verify(&ek, std::slice::from_ref(&inter), &pki.store(), None).unwrap_err(),
        ChainError::UnsupportedAlgorithm {
            subject: format!("CN={EK}"),
            algorithm: "1.3.101.112".into(),
        }
    );
    // The outer algorithm must be the signed one.
    let tbs = pki.ek_tbs();
    let tbs_bytes = tbs.encode();
    let sig = pki
        .inter_key
        .sign(&tbs_bytes, &SignatureAlgorithm::Ecdsa(HashAlg::Sha384));
    let ek = EkCert::parse(&cert(&tbs_bytes, &ecdsa_alg(HashAlg::Sha256), &sig)).unwrap();
    assert_eq!(
        verify(&ek, std::slice::from_ref(&inter), &pki.store(), None).unwrap_err(),
        ChainError::AlgorithmMismatch {
            subject: format!("CN={EK}")
        }
    );
    // An RSA signature algorithm with an EC issuer key.
    let mut tbs = pki.ek_tbs();
    tbs.sig_alg = rsa_alg(HashAlg::Sha256);
    let tbs_bytes = tbs.encode();
    let ek = EkCert::parse(&cert(&tbs_bytes, &rsa_alg(HashAlg::Sha256), &[1; 256])).unwrap();
    assert!(matches!(
        verify(&ek, &[inter], &pki.store(), None),
        Err(ChainError::UnsupportedKey { .. })
    ));
}

#[test]
fn chains_are_bounded() {
    // Ten intermediates, each issuing the next: longer than MAX_CHAIN_LEN.
    let keys: Vec<Key> = (10..22).map(Key::p256).collect();
    let names: Vec<String> = (0..12).map(|i| format!("CA {i}")).collect();
    let root = keys[0]
        .issue(&Tbs::new(&names[0], &names[0], keys[0].spki(), keys[0].default_alg()).ca(true));
    let mut inters = Vec::new();
    for i in 1..11 {
        inters.push(
            EkCert::parse(
                &keys[i - 1].issue(
                    &Tbs::new(
                        &names[i - 1],
                        &names[i],
                        keys[i].spki(),
                        keys[i - 1].default_alg(),
                    )
                    .ca(true),
                ),
            )
            .unwrap(),
        );
    }
    let ek = EkCert::parse(&keys[10].issue(&Tbs::new(
        &names[10],
        EK,
        keys[11].spki(),
        keys[10].default_alg(),
    )))
    .unwrap();
    let store = EkCertStore::from_entries([("root", &root)]).unwrap();
    assert!(matches!(
        verify(&ek, &inters, &store, None),
        Err(ChainError::TooLong { .. })
    ));
    // Six intermediates fit: EK + 6 + root = 8.
    let store = EkCertStore::from_entries([("ca4", inters[3].as_bytes())]).unwrap();
    assert_eq!(verify(&ek, &inters, &store, None).unwrap().links.len(), 8);
}
