//! Policies both ways with Keylime 7.14.3 (interop row 3): DSSE envelopes signed by
//! `vigil policy sign runtime` verify with Keylime's own DSSE code and pass its
//! verifier's upload checks, envelopes signed by `keylime-policy sign runtime` verify
//! with `vigil_core::policy::runtime::verify_dsse` and `vigil policy validate`, and
//! policies Vigil makes (`create runtime`, `convert`) are accepted by Keylime's verifier
//! and by `keylime-policy`. Keylime's side is `tests/keylime/policy_oracle.py`.
//!
//! Needs the reference venv (`VIGIL_KEYLIME_PYTHON`); without it the test is skipped
//! locally and fails under CI.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::{json, Value};
use vigil_core::hash::HashAlg;
use vigil_core::policy::runtime::{verify_dsse, DsseError, PolicyError};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn keylime_data(name: &str) -> PathBuf {
    repo()
        .join("../shared/testdata/keylime/test/data")
        .join(name)
}

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs the oracle on a batch of requests.
fn oracle(python: &std::ffi::OsStr, requests: &[Value]) -> Vec<Value> {
    let mut child = Command::new(python)
        .arg(repo().join("tests/keylime/policy_oracle.py"))
        .env_remove("KEYLIME_VERIFIER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run policy_oracle.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json!(requests).to_string().as_bytes())
        .expect("feed the oracle");
    let out = child.wait_with_output().expect("oracle output");
    assert!(out.status.success(), "policy_oracle.py failed");
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).expect("oracle JSON");
    assert_eq!(answers.len(), requests.len());
    answers
}

fn payload(envelope: &Path) -> Value {
    let env: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn keyid(envelope: &Path) -> String {
    let env: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    env["signatures"][0]["keyid"].as_str().unwrap().to_owned()
}

/// The same envelope with another policy as payload (the signature no longer fits).
fn tampered(envelope: &Path, out: &Path) {
    let mut env: Value = serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let mut doc = payload(envelope);
    doc["excludes"] = json!(["/.*"]);
    env["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(doc.to_string()));
    std::fs::write(out, env.to_string()).unwrap();
}

#[test]
fn signatures_and_policies_both_ways() {
    let Some(bin) = vigil_testkit::keylime::venv_bin("signatures_and_policies_both_ways") else {
        return;
    };
    let python = bin.join("python").into_os_string();
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);

    // Vigil-made policies: from the demo node's IMA log, and converted from Keylime's
    // sample allowlist with an exclude list.
    let created = d("created.json");
    let log = repo().join("examples/ima/ascii_runtime_measurements");
    ok(
        vigil(&[
            "policy",
            "create",
            "runtime",
            "-m",
            s(&log),
            "-o",
            s(&created),
        ]),
        "create runtime",
    );
    let excludes = d("excludes.txt");
    std::fs::write(
        &excludes,
        "# temporary files\n/tmp/.*\n\n^/var/log/.*\\.log$\n",
    )
    .unwrap();
    let converted = d("converted.json");
    let allowlist = keylime_data("ima-allowlist-short.txt");
    let ima_keys = [
        keylime_data("ima_keys/rsa2048pub.pem"),
        keylime_data("ima_keys/secp256k1.pem"),
    ];
    ok(
        vigil(&[
            "policy",
            "convert",
            "-a",
            s(&allowlist),
            "-e",
            s(&excludes),
            "-v",
            s(&ima_keys[0]),
            s(&ima_keys[1]),
            "-o",
            s(&converted),
        ]),
        "convert",
    );

    // Keys: Vigil generates P-256; Keylime's cryptography makes a P-384 one; Keylime's own
    // P-521 test key.
    let p384 = d("p384.pem");
    oracle(
        &python,
        &[json!({"op": "genkey", "curve": "secp384r1", "out": s(&p384)})],
    );
    let p521 = keylime_data("sign-runtime-policy/ec-p521-private.pem");

    // Vigil signs: (envelope, private key, certificate for x509).
    let mut signed: Vec<(PathBuf, PathBuf, Option<PathBuf>)> = Vec::new();
    for (i, (key, x509)) in [
        (None, false),
        (None, true),
        (Some(&p384), false),
        (Some(&p384), true),
        (Some(&p521), false),
    ]
    .into_iter()
    .enumerate()
    {
        let env = d(&format!("vigil-{i}.json"));
        let generated = d(&format!("vigil-key-{i}.pem"));
        let cert = d(&format!("vigil-cert-{i}.pem"));
        let mut args = vec![
            "policy",
            "sign",
            "runtime",
            "-r",
            s(&created),
            "-o",
            s(&env),
        ];
        match key {
            Some(k) => args.extend(["-k", s(k)]),
            None => args.extend(["-p", s(&generated)]),
        }
        if x509 {
            args.extend(["-b", "x509", "-c", s(&cert)]);
        }
        ok(vigil(&args), "policy sign runtime");
        let key = key.cloned().unwrap_or(generated);
        // What Keylime signs: json.dumps of the policy as loaded.
        let original: Value = serde_json::from_slice(&std::fs::read(&created).unwrap()).unwrap();
        assert_eq!(payload(&env), original);
        signed.push((env, key, x509.then_some(cert)));
    }

    // Keylime signs the Vigil-made policy (so `keylime-policy` accepts it), with both
    // backends; then once more with a key of Vigil's, to compare key ids.
    let k_ecdsa = d("keylime-ecdsa.json");
    let k_ecdsa_key = d("keylime-ecdsa-key.pem");
    let k_x509 = d("keylime-x509.json");
    let k_x509_key = d("keylime-x509-key.pem");
    let k_cert = d("keylime-cert.pem");
    let k_same = d("keylime-same-key.json");
    let keylime_policy = |args: &[&str]| {
        let out = Command::new(bin.join("keylime-policy"))
            .args(["sign", "runtime"])
            .args(args)
            .output()
            .expect("run keylime-policy");
        assert!(
            out.status.success() && !out.stderr.windows(5).any(|w| w == b"ERROR"),
            "keylime-policy sign runtime {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    keylime_policy(&["-r", s(&created), "-p", s(&k_ecdsa_key), "-o", s(&k_ecdsa)]);
    keylime_policy(&[
        "-r",
        s(&created),
        "-b",
        "x509",
        "-p",
        s(&k_x509_key),
        "-c",
        s(&k_cert),
        "-o",
        s(&k_x509),
    ]);
    keylime_policy(&["-r", s(&converted), "-k", s(&signed[0].1), "-o", s(&k_same)]);
    assert_eq!(
        keyid(&k_same),
        keyid(&signed[0].0),
        "Vigil's ecdsa keyid must be Keylime's for the same key"
    );

    // Public keys, from Keylime's side.
    let mut requests: Vec<Value> = signed
        .iter()
        .map(|(_, key, cert)| json!({"op": "pubkey", "private": s(cert.as_ref().unwrap_or(key))}))
        .collect();
    requests.push(json!({"op": "pubkey", "private": s(&k_ecdsa_key)}));
    let pubkeys: Vec<PathBuf> = oracle(&python, &requests)
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let path = d(&format!("pub-{i}.pem"));
            std::fs::write(&path, a["pem"].as_str().expect("pem")).unwrap();
            path
        })
        .collect();

    // 1. Keylime verifies Vigil's envelopes: its DSSE check, then its verifier's upload
    //    checks with signatures required; a tampered envelope fails both.
    let mut requests = Vec::new();
    for ((env, _, cert), public) in signed.iter().zip(&pubkeys) {
        requests.push(json!({"op": "verify", "envelope": s(env), "key": s(public)}));
        let bad = env.with_extension("tampered.json");
        tampered(env, &bad);
        requests.push(json!({"op": "verify", "envelope": s(&bad), "key": s(public)}));
        if cert.is_some() {
            // Keylime's keyless path: the certificate carried in `keyid`.
            requests
                .push(json!({"op": "verify", "envelope": s(env), "key": null, "keyless": true}));
            requests
                .push(json!({"op": "verify", "envelope": s(&bad), "key": null, "keyless": true}));
        }
    }
    // 2. Keylime's verifier accepts Vigil-made policies, plain and signed (signatures not
    //    required), and the envelopes Keylime made.
    for p in [
        &created,
        &converted,
        &signed[0].0,
        &signed[1].0,
        &k_ecdsa,
        &k_x509,
    ] {
        requests.push(json!({"op": "accept", "policy": s(p)}));
    }
    // 3. Keylime's own converter, to compare with Vigil's.
    let k_converted = d("keylime-converted.json");
    requests.push(json!({"op": "convert", "allowlist": s(&allowlist),
        "excludelist": s(&excludes), "out": s(&k_converted),
        "verification_keys": [s(&ima_keys[0]), s(&ima_keys[1])]}));
    // A pre-6.6 JSON allowlist with its own excludes, plus the exclude list.
    let json_allowlist = d("allowlist.json");
    std::fs::write(
        &json_allowlist,
        json!({"hashes": {"/bin/a": ["a".repeat(40)]}, "excludes": ["/old/.*"],
            "keyrings": {".ima": ["b".repeat(64)]}})
        .to_string(),
    )
    .unwrap();
    let json_converted = d("json-converted.json");
    ok(
        vigil(&[
            "policy",
            "convert",
            "-a",
            s(&json_allowlist),
            "-e",
            s(&excludes),
            "-o",
            s(&json_converted),
        ]),
        "convert a JSON allowlist",
    );
    let k_json_converted = d("keylime-json-converted.json");
    requests.push(json!({"op": "convert", "allowlist": s(&json_allowlist),
        "excludelist": s(&excludes), "out": s(&k_json_converted)}));
    let answers = oracle(&python, &requests);
    for (req, ans) in requests.iter().zip(&answers) {
        let env = req["envelope"].as_str().unwrap_or_default();
        match req["op"].as_str() {
            Some("verify") if env.ends_with(".tampered.json") => {
                assert_eq!(ans["dsse"], json!(false), "{req}: {ans}");
                assert_eq!(ans["accepted"], json!(false), "{req}: {ans}");
            }
            Some("verify") if req["keyless"] == json!(true) => {
                assert_eq!(ans["dsse"], json!(true), "{req}: {ans}");
            }
            Some("verify") | Some("accept") => {
                assert_eq!(ans["accepted"], json!(true), "{req}: {ans}");
                if req["op"] == "verify" {
                    assert_eq!(ans["dsse"], json!(true), "{req}: {ans}");
                }
            }
            _ => assert_eq!(ans["ok"], json!(true), "{req}: {ans}"),
        }
    }
    // The two converters agree but for the timestamp, the order and duplicates of digest
    // lists (Vigil sorts and deduplicates them as `keylime-policy create` does), and the
    // `sha256:` prefix of the sample's boot_aggregate, which Keylime copies into the
    // policy and its own verifier then refuses, while Vigil drops it.
    let refused = oracle(
        &python,
        &[json!({"op": "accept", "policy": s(&k_converted)})],
    );
    assert_eq!(refused[0]["accepted"], json!(false), "{}", refused[0]);
    assert!(refused[0]["error"].as_str().unwrap().contains("sha256:"));
    let normal = |p: &Path| {
        let mut v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        v["meta"].as_object_mut().unwrap().remove("timestamp");
        // The keyring is JSON text; Keylime writes it with Python's separators.
        let keys = v["verification-keys"].as_str().unwrap();
        if !keys.is_empty() {
            v["verification-keys"] = serde_json::from_str(keys).unwrap();
        }
        for table in ["digests", "keyrings", "ima-buf"] {
            for list in v[table].as_object_mut().unwrap().values_mut() {
                let set: BTreeSet<String> = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        let d = d.as_str().unwrap();
                        d.strip_prefix("sha256:").unwrap_or(d).to_owned()
                    })
                    .collect();
                *list = json!(set);
            }
        }
        v
    };
    assert_eq!(normal(&converted), normal(&k_converted));
    assert_eq!(normal(&json_converted), normal(&k_json_converted));

    // 4. Vigil verifies Keylime's envelopes, with the key (ecdsa) or certificate (x509),
    //    in the core and through `vigil policy validate`; the wrong key fails.
    let ecdsa_pub = pubkeys.last().unwrap();
    for (env, key) in [(&k_ecdsa, ecdsa_pub), (&k_x509, &k_cert)] {
        let p = verify_dsse(&std::fs::read(env).unwrap(), &std::fs::read(key).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", env.display()));
        assert!(p.digests_for("boot_aggregate").is_some());
        let out = ok(
            vigil(&["policy", "validate", s(env), "-k", s(key), "--json"]),
            "validate Keylime's envelope",
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["summary"]["signature"],
            json!("verified with the given key"),
            "{v}"
        );
        assert_eq!(v["warnings"], json!([]), "{v}");
    }
    // The x509 envelope also verifies with the certificate it carries.
    let out = ok(
        vigil(&["policy", "validate", s(&k_x509)]),
        "validate keyless",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("certificate the envelope carries"));
    assert!(matches!(
        verify_dsse(
            &std::fs::read(&k_ecdsa).unwrap(),
            &std::fs::read(&pubkeys[0]).unwrap()
        ),
        Err(PolicyError::Signature(DsseError::BadSignature))
    ));
    let out = vigil(&["policy", "validate", s(&k_ecdsa), "-k", s(&pubkeys[0])]);
    assert_eq!(out.status.code(), Some(1));
    let bad = d("keylime-ecdsa.tampered.json");
    tampered(&k_ecdsa, &bad);
    assert!(verify_dsse(
        &std::fs::read(&bad).unwrap(),
        &std::fs::read(ecdsa_pub).unwrap()
    )
    .is_err());

    // Keylime's ecdsa keyid is the SHA-256 of the public key PEM, the same PEM here.
    assert_eq!(
        keyid(&k_ecdsa),
        HashAlg::Sha256
            .hash(&std::fs::read(ecdsa_pub).unwrap())
            .to_hex()
    );
}
