//! The pieces of `add`, checked without a node: request bodies against Keylime's own
//! tenant code, the identity quote against a real TPM (swtpm), the certificate
//! package and payload against Python's zipfile and cryptography.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use rand_core::SeedableRng;
use serde_json::{json, Value};
use vigil_core::payload::{decrypt_share, encrypt_share, BootstrapKey, NodePrivateKey};

use super::body::{self, Enrolment};
use super::identity::{self, AcceptLists, IdentityError, IdentityQuote, RegistrarRecord};
use super::policy::PolicyArgs;
use super::{certpkg, flow};

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;
const KEYLIME_DATA: &str = "../../../shared/testdata/keylime/test-data/files";

fn python(python: &std::ffi::OsStr, script: &str, input: &str) -> String {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .env_remove("KEYLIME_VERIFIER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Compares a body Keylime made (JSON text) with Vigil's: same keys in the same order,
/// equal values — the JSON-in-a-string fields therefore byte for byte.
fn assert_same_body(keylime: &str, vigil: &Value, what: &str) {
    let k: Value = serde_json::from_str(keylime).unwrap();
    let (ko, vo) = (k.as_object().unwrap(), vigil.as_object().unwrap());
    assert_eq!(
        ko.keys().collect::<Vec<_>>(),
        vo.keys().collect::<Vec<_>>(),
        "{what}: key order"
    );
    for (key, kv) in ko {
        assert_eq!(kv, &vo[key], "{what}: field {key}");
    }
}

fn tmpfile(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn request_bodies_equal_keylime_tenants() {
    let Some(py) = vigil_testkit::keylime_python("request_bodies_equal_keylime_tenants") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = tmpfile(
        &dir,
        "policy.json",
        r#"{"meta": {"version": 1, "generator": 3}, "release": 0, "digests": {"/usr/bin/x": ["98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"]}, "excludes": [], "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha256", "dm_policy": null}, "ima-buf": {}, "verification-keys": ""}"#,
    );
    let mb = tmpfile(
        &dir,
        "mb.json",
        "{\"scrtm_and_bios\":[{\"scrtm\":\"0x11\"}],\n \"kernels\": [], \"note\": \"caf\u{e9}\"}",
    );
    let ak = std::fs::read(format!("{KEYLIME_DATA}/ak.pub")).unwrap();
    // Values are SHA-256 digests, upper and lower case (Keylime lowercases them).
    let (upper, ones, zeros) = ("AB".repeat(32), "ff".repeat(32), "00".repeat(32));
    let mixed = format!(r#"{{"15": "{upper}", "22": ["{ones}", "{zeros}"]}}"#);
    let pcr23 = format!(r#"{{"23": "{zeros}"}}"#);
    let cases = [
        // (tpm_policy, runtime file, runtime name, mb file, mb name)
        (None, None, None, None, None),
        (Some(mixed.as_str()), Some(&runtime), Some("rt"), None, None),
        (None, None, Some("stored"), None, Some("mbstored")),
        (
            Some(pcr23.as_str()),
            Some(&runtime),
            None,
            Some(&mb),
            Some("mbname"),
        ),
        (None, None, None, Some(&mb), None),
    ];
    for (i, (tpm, rt, rt_name, mbf, mb_name)) in cases.into_iter().enumerate() {
        let args = PolicyArgs {
            runtime_policy: rt.cloned(),
            runtime_policy_name: rt_name.map(str::to_owned),
            mb_policy: mbf.cloned(),
            mb_policy_name: mb_name.map(str::to_owned),
            tpm_policy: tpm.map(str::to_owned),
            ..PolicyArgs::default()
        };
        let policies = args.resolve().unwrap();
        let accept = AcceptLists::default();
        let with_payload = i % 2 == 1;
        let enrol = Enrolment {
            v: with_payload.then(|| B64.encode([7u8; 32])),
            cloudagent_ip: Some("10.0.0.7".into()),
            cloudagent_port: if with_payload {
                json!("9002")
            } else {
                json!(9002)
            },
            verifier_ip: "127.0.0.1".into(),
            verifier_port: "8881".into(),
            policies: &policies,
            metadata: if with_payload {
                r#"{"cert_serial": 170141183460469231731687303715884105727, "subject": "O=Vigil,CN=n\u00e9"}"#.into()
            } else {
                "{}".into()
            },
            revocation_key: if with_payload {
                "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n".into()
            } else {
                String::new()
            },
            accept: &accept,
            ak_tpm: B64.encode(&ak),
            mtls_cert: with_payload
                .then(|| "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n".into()),
            supported_version: "2.6".into(),
            hardware_class: None,
            labels: &Default::default(),
        };
        let vigil = enrol.body();
        let path = |p: &Option<&std::path::PathBuf>| p.map(|p| p.display().to_string());
        let request = json!({
            "policy": {
                "tpm_policy": tpm,
                "runtime_policy": path(&rt),
                "runtime_policy_name": rt_name,
                "mb_policy": path(&mbf),
                "mb_policy_name": mb_name,
            },
            "enrol": {
                "agent_uuid": "d432fbb3-d2f1-4a97-9ef7-75bd81c00000",
                "v": vigil["v"], "cloudagent_ip": vigil["cloudagent_ip"],
                "cloudagent_port": vigil["cloudagent_port"], "verifier_ip": vigil["verifier_ip"],
                "verifier_port": vigil["verifier_port"], "metadata": vigil["metadata"],
                "revocation_key": vigil["revocation_key"],
                "accept_tpm_hash_algs": accept.hash, "accept_tpm_encryption_algs": accept.encryption,
                "accept_tpm_signing_algs": accept.signing,
                "ak_tpm": vigil["ak_tpm"], "mtls_cert": vigil["mtls_cert"],
                "supported_version": "2.6",
            },
        });
        let oracle = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/keylime/tenant_oracle.py"
        );
        // Keylime may log to stdout: the answer is the last line.
        let text = python(
            &py,
            &format!("exec(open({oracle:?}).read())"),
            &request.to_string(),
        );
        let answer: Value = serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap();
        assert_eq!(
            answer["enrol"]["path"],
            "/v2.6/agents/d432fbb3-d2f1-4a97-9ef7-75bd81c00000"
        );
        assert_same_body(
            answer["enrol"]["body"].as_str().unwrap(),
            &vigil,
            &format!("case {i} enrolment"),
        );
        if let Some(push) = answer["runtime_push"].as_object() {
            assert_eq!(
                push["path"],
                format!("/v2.6/allowlists/{}", rt_name.unwrap())
            );
            assert_same_body(
                push["body"].as_str().unwrap(),
                &body::runtime_policy_body(&policies),
                &format!("case {i} runtime push"),
            );
        }
        if let Some(push) = answer["mb_push"].as_object() {
            assert_eq!(
                push["path"],
                format!("/v2.6/mbpolicies/{}", mb_name.unwrap())
            );
            assert_same_body(
                push["body"].as_str().unwrap(),
                &body::mb_policy_body(&policies),
                &format!("case {i} mb push"),
            );
        }
    }
}

#[test]
fn tpm_policy_rules_follow_keylime() {
    let resolve = |tpm: &str| {
        PolicyArgs {
            tpm_policy: Some(tpm.into()),
            ..PolicyArgs::default()
        }
        .resolve()
    };
    assert_eq!(
        resolve("{}").unwrap().tpm_policy_string(),
        r#"{"mask": "0x0"}"#
    );
    let (ab, cd) = ("ab".repeat(32), "cd".repeat(32));
    assert_eq!(
        resolve(&format!(r#"{{"7": "{}", "0": ["{cd}"]}}"#, "AB".repeat(32)))
            .unwrap()
            .tpm_policy_string(),
        format!(r#"{{"7": ["{ab}"], "0": ["{cd}"], "mask": "0x81"}}"#)
    );
    for bad in [
        r#"{"16": "00"}"#,
        r#"{"10": "00"}"#,
        r#"{"25": "00"}"#,
        r#"{"mask": "0x1"}"#,
        "[]",
        "{",
        r#"{"1": "zz"}"#,
        // Not a digest of any bank, and PCR 24, which no quote can select.
        r#"{"1": "00"}"#,
        r#"{"24": "00"}"#,
    ] {
        assert!(resolve(bad).is_err(), "{bad} accepted");
    }
    // A measured-boot policy may not share PCRs with the tpm_policy.
    let dir = tempfile::tempdir().unwrap();
    let mb = tmpfile(&dir, "mb.json", "{}");
    let clash = PolicyArgs {
        tpm_policy: Some(format!(r#"{{"7": "{}"}}"#, "00".repeat(32))),
        mb_policy: Some(mb),
        ..PolicyArgs::default()
    };
    let err = clash.resolve().unwrap_err().to_string();
    assert!(
        err.contains("PCR 7") && err.contains("measured boot"),
        "{err}"
    );
    // A runtime policy that is not one is refused before anything is sent.
    let bad = tmpfile(&dir, "bad.json", r#"{"meta": {}}"#);
    let args = PolicyArgs {
        runtime_policy: Some(bad),
        ..PolicyArgs::default()
    };
    assert!(args.resolve().is_err());
}

#[test]
fn registrar_and_node_answers_are_read_strictly() {
    let reg = RegistrarRecord::from_results(&json!({
        "aik_tpm": "QUs=", "ek_tpm": "RUs=", "ekcert": null, "mtls_cert": "disabled",
        "ip": "10.0.0.7", "port": "9002", "regcount": 2
    }))
    .unwrap();
    assert_eq!(
        (reg.mtls_cert, reg.port, reg.regcount, reg.ekcert),
        (None, Some(9002), 2, None)
    );
    assert!(RegistrarRecord::from_results(&json!({"ek_tpm": "x"})).is_err());
    assert!(
        RegistrarRecord::from_results(&json!({"aik_tpm": "x", "ek_tpm": "x", "port": 70000}))
            .is_err()
    );
    assert!(IdentityQuote::from_results(&json!({"quote": "r", "hash_alg": "sha256"})).is_err());
    assert!(identity::is_accepted("rsa2048", &["rsa".into()]));
    assert!(identity::is_accepted("ecc", &["ecc256".into()]));
    assert!(!identity::is_accepted("ecc384", &["ecc".into()]));
    assert_eq!(
        flow::flatten_ids(&[json!(["a"]), json!("b"), json!(1)]),
        ["a", "b"]
    );
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let n = body::random_password(&mut rng, 20);
    assert_eq!(n.len(), 20);
    assert!(n.bytes().all(|b| b.is_ascii_alphanumeric()));
}

/// An RSA node key (aws-lc generates it quickly): (public PEM, private key).
fn node_key() -> (String, NodePrivateKey) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let private = NodePrivateKey::from_pkcs8_der(&kp.serialize_der()).unwrap();
    (kp.public_key_pem(), private)
}

#[test]
fn identity_quote_from_a_real_tpm() {
    use vigil_core::HashAlg;
    let Some(tpm) = vigil_testkit::Swtpm::start(
        "tenant_identity_quote",
        &[
            "tpm2_createek",
            "tpm2_createak",
            "tpm2_pcrextend",
            "tpm2_quote",
        ],
    ) else {
        return;
    };
    tpm.tool(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
    );
    tpm.tool(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
            "ak.pub", "-n", "ak.name",
        ],
    );
    let (pubkey, nk_private) = node_key();
    // What the agent does at start: bind its key into PCR 16.
    let bound = HashAlg::Sha256.hash(pubkey.as_bytes());
    tpm.tool(
        "tpm2_pcrextend",
        &[&format!("16:sha256={}", bound.to_hex())],
    );
    let nonce = body::random_password(&mut rand_core::OsRng, 20);
    let quote = |nonce: &str, name: &str| {
        tpm.tool(
            "tpm2_quote",
            &[
                "-c",
                "ak.ctx",
                "-l",
                "sha256:16",
                "-q",
                &hex::encode(nonce),
                "-m",
                &format!("{name}.msg"),
                "-s",
                &format!("{name}.sig"),
                "-o",
                &format!("{name}.pcrs"),
                "-g",
                "sha256",
            ],
        );
        let b = |ext: &str| B64.encode(std::fs::read(tpm.path(&format!("{name}.{ext}"))).unwrap());
        format!("r{}:{}:{}", b("msg"), b("sig"), b("pcrs"))
    };
    let read = |f: &str| B64.encode(std::fs::read(tpm.path(f)).unwrap());
    let reg = RegistrarRecord::from_results(&json!({
        "aik_tpm": read("ak.pub"), "ek_tpm": read("ek.pub"), "regcount": 1,
    }))
    .unwrap();
    let answer = |q: String, pubkey: &str| IdentityQuote {
        quote: q,
        hash_alg: "sha256".into(),
        enc_alg: "rsa2048".into(),
        sign_alg: "rsassa".into(),
        pubkey: pubkey.into(),
    };
    let accept = AcceptLists::default();
    let good = answer(quote(&nonce, "q1"), &pubkey);
    let verified = identity::check_identity_quote(&reg, &good, &nonce, &accept).unwrap();
    assert_eq!(verified.bank, HashAlg::Sha256);

    // U reaches the node encrypted to that key, and combines with V to K.
    let mut rng = rand_core::OsRng;
    let k = BootstrapKey::generate(&mut rng);
    let (u, v) = k.split(&mut rng);
    let enc = encrypt_share(&verified.nk, &u, &mut rng).unwrap();
    let got_u = decrypt_share(&nk_private, &enc).unwrap();
    let rebuilt = BootstrapKey::combine(&got_u, &v).unwrap();
    assert!(rebuilt.matches_auth_tag("node", &k.auth_tag("node")));
    let ukey = body::ukey_body(&enc, &k.auth_tag("node"), Some("cGF5"));
    assert_eq!(
        ukey.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["encrypted_key", "auth_tag", "payload"]
    );

    // Another nonce, another node key, an unaccepted bank, another AK: all refused.
    let err =
        identity::check_identity_quote(&reg, &good, "AAAAAAAAAAAAAAAAAAAA", &accept).unwrap_err();
    assert!(matches!(err, IdentityError::Quote { .. }), "{err}");
    let (other_pub, _) = node_key();
    let err = identity::check_identity_quote(
        &reg,
        &answer(quote(&nonce, "q2"), &other_pub),
        &nonce,
        &accept,
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::DataPcr { .. }), "{err}");
    let strict = AcceptLists {
        hash: vec!["sha384".into()],
        ..AcceptLists::default()
    };
    let err = identity::check_identity_quote(&reg, &good, &nonce, &strict).unwrap_err();
    assert!(
        matches!(err, IdentityError::Algorithm { kind: "hash", .. }),
        "{err}"
    );
    let keylime_ak = std::fs::read(format!("{KEYLIME_DATA}/ak.pub")).unwrap();
    let impostor = RegistrarRecord {
        aik_tpm: B64.encode(keylime_ak),
        regcount: 2,
        ..reg.clone()
    };
    let err = identity::check_identity_quote(&impostor, &good, &nonce, &accept).unwrap_err();
    assert!(err.to_string().contains("regdelete"), "{err}");

    // No EK certificate: refused unless the check is off.
    assert!(matches!(
        identity::check_ek(
            &reg,
            Some(
                &vigil_core::tpm::ek_cert::EkCertStore::from_entries(
                    Vec::<(String, Vec<u8>)>::new()
                )
                .unwrap()
            )
        ),
        Err(IdentityError::NoEkCert)
    ));
    assert_eq!(
        identity::check_ek(&reg, None).unwrap(),
        identity::EkVerdict::Skipped
    );
}

#[test]
fn certificate_package_and_payload() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let include = dir.path().join("include");
    std::fs::create_dir(&include).unwrap();
    std::fs::write(include.join("autorun.sh"), "#!/bin/sh\necho hi\n").unwrap();
    let id = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let delivery = flow::Delivery::Cert {
        dir: ca_dir.clone(),
        include: Some(include),
    };
    let secrets = flow::prepare_delivery(&delivery, id, &mut rng)
        .unwrap()
        .unwrap();
    // The node decrypts the payload with K = U ⊕ V.
    let k = BootstrapKey::combine(&secrets.u, &secrets.v).unwrap();
    let zip = k.decrypt_payload(&secrets.payload).unwrap();
    assert!(secrets.revocation_key.contains("PRIVATE KEY"));
    // The revocation key is RSA (Keylime signs notices with RSA-PSS) and matches the
    // certificate the node gets.
    let rev_key = vigil_core::revocation::public_key(
        &std::fs::read(ca_dir.join("RevocationNotifier-cert.crt")).unwrap(),
    )
    .unwrap();
    let private = vigil_core::revocation::RevocationKey::from_pem(&secrets.revocation_key);
    assert_eq!(private.unwrap().public_key().unwrap(), rev_key);
    // A second package reuses the CA and the node's certificate.
    let again = certpkg::build(&ca_dir, id, None).unwrap();
    assert_eq!(again.metadata, secrets.metadata);

    // Python reads the archive (stored entries, Keylime's names) and the certificate
    // metadata the way Keylime's tenant computes it.
    let zip_path = dir.path().join("pkg.zip");
    std::fs::write(&zip_path, &zip).unwrap();
    let script = r#"
import json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
out = {"names": z.namelist(), "stored": all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist()),
       "autorun": z.read("autorun.sh").decode()}
try:
    from cryptography import x509
    c = x509.load_pem_x509_certificate(z.read(sys.argv[2] + "-cert.crt"))
    out["metadata"] = json.dumps({"cert_serial": c.serial_number, "subject": c.subject.rfc4514_string()})
    ca = x509.load_pem_x509_certificate(z.read("cacert.crt"))
    from cryptography.hazmat.primitives.asymmetric import padding
    ca.public_key().verify(c.signature, c.tbs_certificate_bytes, padding.PKCS1v15(), c.signature_hash_algorithm)
    crl = x509.load_der_x509_crl(z.read("cacrl.der"))
    out["crl_ok"] = crl.is_signature_valid(ca.public_key())
except ImportError:
    pass
print(json.dumps(out))
"#;
    let py = vigil_testkit::keylime_python("certificate_package_and_payload")
        .unwrap_or_else(|| "python3".into());
    let out = Command::new(&py)
        .args(["-c", script])
        .arg(&zip_path)
        .arg(id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["names"],
        json!([
            format!("{id}-public.pem"),
            format!("{id}-cert.crt"),
            format!("{id}-private.pem"),
            "cacert.crt",
            "cacrl.der",
            "cacrl.pem",
            "RevocationNotifier-cert.crt",
            "autorun.sh"
        ])
    );
    assert_eq!(v["stored"], true);
    assert_eq!(v["autorun"], "#!/bin/sh\necho hi\n");
    if let Some(meta) = v["metadata"].as_str() {
        assert_eq!(meta, secrets.metadata);
        assert_eq!(v["crl_ok"], true);
    }
    // Keylime's size limit.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![0u8; flow::MAX_PAYLOAD]).unwrap();
    assert!(flow::prepare_delivery(&flow::Delivery::File(big), id, &mut rng).is_err());
    assert!(flow::prepare_delivery(&flow::Delivery::None, id, &mut rng)
        .unwrap()
        .is_none());
}
