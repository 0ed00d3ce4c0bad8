//! IAK/IDevID registration (Keylime's `iak_tpm`, `iak_cert`, `iak_attest`, `iak_sign`,
//! `idevid_tpm`, `idevid_cert`), on SQLite and PostgreSQL: a software IAK (P-256) and
//! IDevID with certificates from a test manufacturer CA in `tpm_cert_store`, and a
//! `TPM2_Certify` of Keylime's test AK signed by the IAK. Accepted when everything
//! holds; each broken link is a 400 naming its field, with nothing stored.

use crate::support;

use p256::ecdsa::{signature::hazmat::PrehashSigner, Signature, SigningKey};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::{json, Value};
use support::{b64, keylime_file, status_text, Env};
use vigil_core::hash::HashAlg;
use vigil_core::tpm::public::TpmPublic;

const AGENT: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0bb01";

fn tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
}

/// A TPMS_ATTEST of type certify for the object `name` with `extra` as qualifying
/// data, as `TPM2_Certify` produces it.
fn certify_attest(extra: &[u8], name: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&0xff54_4347u32.to_be_bytes()); // TPM_GENERATED_VALUE
    a.extend_from_slice(&0x8017u16.to_be_bytes()); // TPM_ST_ATTEST_CERTIFY
    tpm2b(&mut a, b"\x00\x0bsigner-name-0123456789abcdef0123");
    tpm2b(&mut a, extra);
    a.extend_from_slice(&1234u64.to_be_bytes()); // clock
    a.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 1]); // resets, restarts, safe
    a.extend_from_slice(&5u64.to_be_bytes()); // firmware version
    tpm2b(&mut a, name);
    tpm2b(&mut a, name); // qualified name
    a
}

/// TPMT_SIGNATURE (ECDSA, SHA-256) of `attest` by `key`.
fn sign(key: &SigningKey, attest: &[u8]) -> Vec<u8> {
    let digest = HashAlg::Sha256.hash(attest);
    let sig: Signature = key.sign_prehash(digest.as_bytes()).unwrap();
    let (r, s) = sig.split_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&0x0018u16.to_be_bytes()); // TPM_ALG_ECDSA
    out.extend_from_slice(&0x000bu16.to_be_bytes()); // TPM_ALG_SHA256
    tpm2b(&mut out, &r);
    tpm2b(&mut out, &s);
    out
}

/// A manufacturer CA and a certificate it issues for `key`.
struct Manufacturer {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Manufacturer {
    fn new(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn issue(&self, cn: &str, subject: &KeyPair) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .signed_by(subject, &self.cert, &self.key)
            .unwrap()
            .pem()
    }
}

/// The TPM2B_PUBLIC of a key given by its SubjectPublicKeyInfo.
fn tpm_public(spki: &[u8]) -> Vec<u8> {
    TpmPublic::ek_from_spki(spki).unwrap().to_tpm2b()
}

async fn devid_registration(db: String) {
    let iak = SigningKey::from_slice(&[9; 32]).unwrap();
    let iak_spki = iak.verifying_key().to_public_key_der().unwrap();
    let iak_pair = KeyPair::from_pem(&iak.to_pkcs8_pem(LineEnding::LF).unwrap()).unwrap();
    let idevid_pair = KeyPair::generate().unwrap();
    let maker = Manufacturer::new("Vigil Test TPM Manufacturer");
    let stranger = Manufacturer::new("Someone Else");

    let mut env = Env::start(&db, |_| {}).await;
    let store = env.dir.path().join("tpm_cert_store");
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("manufacturer.pem"), maker.cert.pem()).unwrap();
    env.restart().await; // the store is read at start-up

    let ak = keylime_file("ak.pub");
    let ak_name = TpmPublic::parse_tpm2b(&ak).unwrap().name();
    let attest = certify_attest(HashAlg::Sha256.hash(AGENT.as_bytes()).as_bytes(), &ak_name);
    let good = json!({
        "ek_tpm": b64(&keylime_file("ek.pub")),
        "aik_tpm": b64(&ak),
        "iak_tpm": b64(&tpm_public(iak_spki.as_bytes())),
        "idevid_tpm": b64(&tpm_public(&idevid_pair.public_key_der())),
        "iak_cert": maker.issue("iak", &iak_pair),
        "idevid_cert": maker.issue("idevid", &idevid_pair),
        "iak_attest": b64(&attest),
        "iak_sign": b64(&sign(&iak, &attest)),
    });
    let path = format!("/v2.6/agents/{AGENT}");
    let post = |body: Value| {
        let env = &env;
        let path = path.clone();
        async move {
            env.http("POST", &path, Some(serde_json::to_vec(&body).unwrap()))
                .await
        }
    };

    // Each broken link: a 400 naming the field, nothing stored.
    let other_attest = certify_attest(HashAlg::Sha256.hash(b"another-agent").as_bytes(), &ak_name);
    let foreign = KeyPair::generate().unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "iak_cert",
            json!(stranger.issue("iak", &iak_pair)),
            "iak_cert must contain a certificate issued by a CA present in the trust store",
        ),
        (
            "iak_cert",
            json!(maker.issue("iak", &foreign)),
            "iak_tpm must contain the same public key found in iak_cert",
        ),
        (
            "iak_sign",
            Value::Null,
            "aik_tpm cannot be bound to the IAK because of a missing 'iak_attest' or 'iak_sign'",
        ),
        (
            "iak_attest",
            json!(b64(&other_attest)),
            "aik_tpm cannot be confirmed as having been created by the same TPM as the IAK",
        ),
        (
            "iak_sign",
            json!(b64(&sign(
                &SigningKey::from_slice(&[3; 32]).unwrap(),
                &attest
            ))),
            "aik_tpm cannot be confirmed",
        ),
        ("idevid_cert", Value::Null, "idevid_cert is required"),
    ];
    for (field, value, expect) in cases {
        let mut body = good.clone();
        body[field] = value;
        let (code, v) = post(body).await;
        let status = status_text(400, &v);
        assert_eq!(code, 400, "{field}: {v}");
        assert!(status.contains(expect), "{field}: {status}");
        let (code, _) = env.admin("GET", &path).await;
        assert_eq!(code, 404, "{field}: nothing stored");
    }

    // Everything holds: registered and stored with its IAK/IDevID.
    let (code, v) = post(good.clone()).await;
    assert_eq!(code, 200, "{v}");
    assert!(v["results"]["blob"].is_string());
    let store = vigil_store::Store::open(&db).await.unwrap();
    let record = store
        .registrar_agents()
        .get(AGENT)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        record.iak_tpm.as_deref(),
        Some(tpm_public(iak_spki.as_bytes()).as_slice())
    );
    assert!(record.idevid_cert.is_some());
    store.close().await;
    env.stop().await;
}

on_both_backends!(devid_registration);
