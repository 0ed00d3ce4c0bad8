//! vigil-tpm on a real software TPM: each test manufactures its own swtpm with
//! `swtpm_setup --create-ek-cert --create-platform-cert` and a local CA (the
//! `vigil-testkit` harness), so EK certificates chain to a real CA, and checks every
//! result with vigil-core's independent code (certificate chains, MakeCredential, quote
//! verification, PCR 16 expectation).
//!
//! Without swtpm the tests skip with a note, except under `CI`, where they fail.

use std::collections::BTreeSet;

use vigil_core::policy::tpm::data_pcr_value;
use vigil_core::tpm::credential::make_credential;
use vigil_core::tpm::ek_cert::{self, EkCert, EkCertStore};
use vigil_core::tpm::public::TpmPublic;
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier};
use vigil_core::HashAlg;
use vigil_testkit::Swtpm;
use vigil_tpm::{AkAlg, AkOrigin, EkAlg, EkSource, Tpm, TpmError, DATA_PCR};

/// A node key's public PEM, as the agent would serve it (its text is what is bound).
const NK_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvigil+test+node+key+text+only+\nnot+parsed+here+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n-----END PUBLIC KEY-----\n";

fn manufactured(test: &str) -> Option<Swtpm> {
    Swtpm::manufactured(test, &[])
}

/// The local CA's certificates (its `*cert.pem` files) as a trust store.
fn local_ca_store(tpm: &Swtpm) -> EkCertStore {
    let dir = tpm.ca_dir().expect("manufactured TPM");
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with("cert.pem") {
            entries.push((name.clone(), std::fs::read(dir.join(&name)).unwrap()));
        }
    }
    let store = EkCertStore::from_entries(entries).unwrap();
    assert_eq!(store.len(), 2, "issuer and root certificates");
    store
}

fn check_ek_certificate(tpm: &Swtpm, source: EkSource, want_alg: EkAlg) {
    let store = local_ca_store(tpm);
    let t = Tpm::connect(&tpm.tcti()).unwrap();
    let ek = t.setup_ek(source).unwrap();
    assert_eq!(ek.alg, Some(want_alg));
    // The TPM's name is the one vigil-core computes from the public area.
    let public = TpmPublic::parse_tpm2b(&ek.public).unwrap();
    assert_eq!(ek.name, public.name());
    let der = t
        .ek_certificate()
        .unwrap()
        .expect("swtpm_setup wrote an EK certificate");
    let cert = EkCert::parse(&der).unwrap();
    cert.check_ek_public(&ek.public)
        .expect("the certificate certifies this EK");
    let chain = ek_cert::verify(&cert, &[], &store, None).unwrap();
    assert_eq!(chain.links.len(), 2, "{chain:?}");
    // swtpm_setup writes no CA chain to NV.
    assert!(t.ek_ca_chain().unwrap().is_empty());
}

#[test]
fn rsa_ek_certificate_chains_to_the_local_ca() {
    let Some(tpm) = manufactured("rsa_ek_certificate_chains_to_the_local_ca") else {
        return;
    };
    check_ek_certificate(&tpm, EkSource::Template(EkAlg::Rsa2048), EkAlg::Rsa2048);
}

#[test]
fn ecc_ek_certificate_chains_to_the_local_ca() {
    let Some(tpm) = manufactured("ecc_ek_certificate_chains_to_the_local_ca") else {
        return;
    };
    // swtpm_setup 0.7 makes a P-384 EK (template H-3) and persists it at 0x81010016.
    check_ek_certificate(&tpm, EkSource::Template(EkAlg::EccP384), EkAlg::EccP384);
    check_ek_certificate(&tpm, EkSource::Persistent(0x8101_0016), EkAlg::EccP384);
}

#[test]
fn ek_ca_chain_is_read_from_nv() {
    let tools = ["tpm2_nvdefine", "tpm2_nvwrite", "tpm2_flushcontext"];
    let Some(tpm) = Swtpm::manufactured("ek_ca_chain_is_read_from_nv", &tools) else {
        return;
    };
    let ca = tpm.ca_dir().unwrap();
    let der = |name: &str| {
        let pem = std::fs::read(ca.join(name)).unwrap();
        EkCert::parse(&pem).unwrap().as_bytes().to_vec()
    };
    let (issuer, root) = (der("issuercert.pem"), der("swtpm-localca-rootca-cert.pem"));
    // A platform would provision these; here tpm2-tools does, before the agent connects
    // (swtpm serves one client at a time).
    for (index, cert) in [("0x01c00100", &issuer), ("0x01c00101", &root)] {
        let file = tpm.path(&format!("{index}.der"));
        std::fs::write(&file, cert).unwrap();
        let size = cert.len().to_string();
        tpm.tool(
            "tpm2_nvdefine",
            &[
                index,
                "-C",
                "o",
                "-s",
                &size,
                "-a",
                "ownerread|ownerwrite|authread|authwrite|no_da",
            ],
        );
        tpm.tool(
            "tpm2_nvwrite",
            &[index, "-C", "o", "-i", file.to_str().unwrap()],
        );
    }
    let t = Tpm::connect(&tpm.tcti()).unwrap();
    t.setup_ek(EkSource::Template(EkAlg::Rsa2048)).unwrap();
    let chain = t.ek_ca_chain().unwrap();
    assert_eq!(chain, vec![issuer.clone(), root.clone()]);
    // The chain from NV completes the path from the EK certificate to a root-only store.
    let intermediates: Vec<EkCert> = chain.iter().map(|c| EkCert::parse(c).unwrap()).collect();
    let store = EkCertStore::from_entries([("root.der", &root)]).unwrap();
    let cert = EkCert::parse(&t.ek_certificate().unwrap().unwrap()).unwrap();
    assert!(ek_cert::verify(&cert, &[], &store, None).is_err());
    let verified = ek_cert::verify(&cert, &intermediates, &store, None).unwrap();
    assert_eq!(verified.links.len(), 3, "{verified:?}");
}

#[test]
fn missing_ek_certificate_and_bad_handles() {
    let Some(tpm) = manufactured("missing_ek_certificate_and_bad_handles") else {
        return;
    };
    let t = Tpm::connect(&tpm.tcti()).unwrap();
    // No P-256 EK certificate on this TPM: None, not an error.
    t.setup_ek(EkSource::Template(EkAlg::EccP256)).unwrap();
    assert_eq!(t.ek_certificate().unwrap(), None);
    assert_eq!(t.nv_read(0x01c0_000a).unwrap(), None);
    let err = t.setup_ek(EkSource::Persistent(0x0100_0000)).unwrap_err();
    assert!(matches!(err, TpmError::InvalidArgument(_)), "{err}");
    // An undefined persistent handle is the TPM's error, decoded.
    let err = t.setup_ek(EkSource::Persistent(0x8101_0999)).unwrap_err();
    assert!(matches!(err, TpmError::Tpm { .. }), "{err}");
    // A failed EK setup leaves no EK behind.
    let err = t.create_ak(AkAlg::RSA_SHA256).unwrap_err();
    assert!(matches!(err, TpmError::NotLoaded("EK")), "{err}");
    let err = Tpm::connect("bogus:whatever").unwrap_err();
    assert!(matches!(err, TpmError::Connect { .. }), "{err}");
}

#[test]
fn persisted_ak_is_reloaded_after_a_tpm_restart() {
    let Some(mut tpm) = manufactured("persisted_ak_is_reloaded_after_a_tpm_restart") else {
        return;
    };
    let (blob, created) = {
        let t = Tpm::connect(&tpm.tcti()).unwrap();
        t.setup_ek(EkSource::Template(EkAlg::Rsa2048)).unwrap();
        let (blob, info, origin) = t.load_or_create_ak(None, AkAlg::RSA_SHA256).unwrap();
        assert_eq!(origin, AkOrigin::Created);
        assert_eq!(info.alg, AkAlg::RSA_SHA256);
        (blob, info)
    };
    // The AK's name as vigil-core computes it from the persisted public area.
    assert_eq!(
        created.name,
        TpmPublic::parse_tpm2b(&blob.public).unwrap().name()
    );
    tpm.restart();
    let t = Tpm::connect(&tpm.tcti()).unwrap();
    t.setup_ek(EkSource::Template(EkAlg::Rsa2048)).unwrap();
    let (again, info, origin) = t.load_or_create_ak(Some(&blob), AkAlg::RSA_SHA256).unwrap();
    assert_eq!(origin, AkOrigin::Reloaded);
    assert_eq!(again, blob);
    assert_eq!(info, created);

    // Other algorithms configured: a new AK.
    let (ecc, info, origin) = t
        .load_or_create_ak(Some(&blob), AkAlg::ECC_P256_SHA256)
        .unwrap();
    assert_eq!(origin, AkOrigin::Created);
    assert_eq!(info.alg, AkAlg::ECC_P256_SHA256);
    assert_ne!(ecc.public, blob.public);

    // Another EK: the blob is refused before the TPM sees it.
    t.setup_ek(EkSource::Template(EkAlg::EccP384)).unwrap();
    let err = t.load_ak(&blob, None).unwrap_err();
    assert!(matches!(err, TpmError::AkMismatch(_)), "{err}");
    // A tampered private blob is refused by the TPM.
    t.setup_ek(EkSource::Template(EkAlg::Rsa2048)).unwrap();
    let mut bad = blob.clone();
    let last = bad.private.len() - 1;
    bad.private[last] ^= 1;
    let err = t.load_ak(&bad, None).unwrap_err();
    assert!(matches!(err, TpmError::Tpm { .. }), "{err}");
}

fn activate_round_trip(ek_alg: EkAlg, ak_alg: AkAlg) {
    let test = format!("activate_credential_{ek_alg:?}_{:?}", ak_alg.key);
    let Some(tpm) = manufactured(&test) else {
        return;
    };
    let t = Tpm::connect(&tpm.tcti()).unwrap();
    let ek = t.setup_ek(EkSource::Template(ek_alg)).unwrap();
    t.create_ak(ak_alg).unwrap();
    let ak = t.ak_info().unwrap();
    let ek_public = TpmPublic::parse_tpm2b(&ek.public).unwrap();
    let secret = b"0123456789abcdefghijABCDEFGHIJkl";
    let mut rng = rand_core::OsRng;
    let blob = make_credential(&ek_public, &ak.name, secret, &mut rng).unwrap();
    let recovered = t.activate_credential(&blob.to_tpm2_tools()).unwrap();
    assert_eq!(recovered, secret);
    // Bound to another AK name: the TPM refuses it (integrity check fails).
    let mut other = ak.name.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    let blob = make_credential(&ek_public, &other, secret, &mut rng).unwrap();
    let err = t.activate_credential(&blob.to_tpm2_tools()).unwrap_err();
    assert!(matches!(err, TpmError::Tpm { .. }), "{err}");
    // Not a credential file at all.
    let err = t.activate_credential(b"nonsense").unwrap_err();
    assert!(matches!(err, TpmError::Malformed(_)), "{err}");
}

#[test]
fn activate_credential_rsa_ek() {
    activate_round_trip(EkAlg::Rsa2048, AkAlg::RSA_SHA256);
}

#[test]
fn activate_credential_ecc_p384_ek() {
    activate_round_trip(EkAlg::EccP384, AkAlg::ECC_P256_SHA256);
}

fn quote_round_trip(ak_alg: AkAlg) {
    let test = format!("quote_{:?}", ak_alg.key);
    let Some(tpm) = manufactured(&test) else {
        return;
    };
    let t = Tpm::connect(&tpm.tcti()).unwrap();
    t.setup_ek(EkSource::Template(EkAlg::Rsa2048)).unwrap();
    let blob = t.create_ak(ak_alg).unwrap();
    let bank = HashAlg::Sha256;
    t.bind_data_pcr(bank, NK_PEM).unwrap();
    // Something measured into PCR 10, as IMA would.
    t.pcr_extend(10, bank, &bank.hash(b"boot_aggregate"))
        .unwrap();

    // Keylime's measured-boot mask (PCRs 0-9, 11-15) plus 10: with 16, 17 PCRs and
    // three digest lists in the blob.
    let mask = 0xffff;
    let nonce = b"1234567890ABCDEFGHIJ";
    let quote = t.quote(nonce, mask, bank).unwrap();
    assert_eq!(quote.pcr_blob.len(), 136 + 3 * 532);
    let text = quote.to_keylime_string();
    assert!(text.starts_with('r'));
    let parsed = KeylimeQuote::parse(&text).unwrap();
    let verifier = QuoteVerifier::new(AkPublicKey::from_spki_or_tpm2b(&blob.public).unwrap());
    let verified = verifier.verify(&parsed, nonce, bank).unwrap();
    let quoted: BTreeSet<u32> = verified.pcrs.keys().copied().collect();
    assert_eq!(quoted, (0..=16).collect());
    assert_eq!(verified.pcrs[&DATA_PCR], data_pcr_value(bank, NK_PEM));
    let pcr10 = bank.extend(&bank.zero(), &bank.hash(b"boot_aggregate"));
    assert_eq!(verified.pcrs[&10], pcr10);
    // The quoted values are the TPM's.
    let read = t.pcr_read(bank, &[0, 10, 16]).unwrap();
    for (pcr, value) in read {
        assert_eq!(verified.pcrs[&pcr], value, "PCR {pcr}");
    }

    // Another nonce: refused.
    let err = verifier
        .verify(&parsed, b"1234567890ABCDEFGHIX", bank)
        .unwrap_err();
    assert!(format!("{err:?}").contains("extraData"), "{err:?}");
    // Another bank expected: refused.
    assert!(verifier.verify(&parsed, nonce, HashAlg::Sha1).is_err());

    // Only PCR 16 when the mask is empty; the binding survives re-binding.
    t.bind_data_pcr(bank, NK_PEM).unwrap();
    let quote = t.quote(b"n", 0, bank).unwrap();
    assert_eq!(quote.pcr_blob.len(), 136 + 532);
    let verified = verifier.verify(&quote, b"n", bank).unwrap();
    assert_eq!(
        verified.pcrs.into_iter().collect::<Vec<_>>(),
        vec![(DATA_PCR, data_pcr_value(bank, NK_PEM))]
    );

    // Arguments out of range.
    let err = t.quote(nonce, 1 << 24, bank).unwrap_err();
    assert!(matches!(err, TpmError::InvalidArgument(_)), "{err}");
    let err = t.quote(&[0; 65], 0, bank).unwrap_err();
    assert!(matches!(err, TpmError::InvalidArgument(_)), "{err}");
}

#[test]
fn quote_rsa_ak_verifies() {
    quote_round_trip(AkAlg::RSA_SHA256);
}

#[test]
fn quote_ecc_ak_verifies() {
    quote_round_trip(AkAlg::ECC_P256_SHA256);
}

#[test]
fn quotes_from_several_threads_share_one_context() {
    let Some(tpm) = manufactured("quotes_from_several_threads_share_one_context") else {
        return;
    };
    let t = Tpm::connect(&tpm.tcti()).unwrap();
    let err = t.quote(b"n", 0, HashAlg::Sha256).unwrap_err();
    assert!(matches!(err, TpmError::NotLoaded("AK")), "{err}");
    t.setup_ek(EkSource::Template(EkAlg::Rsa2048)).unwrap();
    let blob = t.create_ak(AkAlg::RSA_SHA256).unwrap();
    let verifier = QuoteVerifier::new(AkPublicKey::from_spki_or_tpm2b(&blob.public).unwrap());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (t, verifier) = (&t, &verifier);
                s.spawn(move || {
                    for j in 0..3 {
                        let nonce = format!("nonce{i}x{j}");
                        // Another thread extends PCR 23 meanwhile: the retry absorbs it.
                        t.pcr_extend(23, HashAlg::Sha256, &HashAlg::Sha256.hash(nonce.as_bytes()))
                            .unwrap();
                        let q = t.quote(nonce.as_bytes(), 1 << 23, HashAlg::Sha256).unwrap();
                        verifier
                            .verify(&q, nonce.as_bytes(), HashAlg::Sha256)
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}
