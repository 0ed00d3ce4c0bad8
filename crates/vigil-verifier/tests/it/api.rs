//! The verifier's REST API over real HTTPS, on SQLite and PostgreSQL: enrolment with
//! every field, status, list and bulk, policies CRUD, signed policies, admin routes
//! refused without mTLS. Bad input on every route: `bad_input.rs`.

use crate::support;

use base64::Engine as _;
use serde_json::{json, Value};
use support::{Pki, B64};

/// A syntactically valid enrolment without a reachable node (no agent runs here).
pub(crate) fn body() -> Value {
    // An RSA AK public area (TPM2B_PUBLIC) from Keylime's test vectors.
    let ak = std::fs::read("../../../shared/testdata/keylime/test-data/files/ak.pub").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    json!({
        "v": B64.encode([1u8; 32]),
        "cloudagent_ip": "127.0.0.1",
        "cloudagent_port": 9,
        "tpm_policy": "{\"mask\": \"0x400\"}",
        "runtime_policy": "",
        "mb_policy": null,
        "mb_policy_name": "",
        "ima_sign_verification_keys": "",
        "metadata": "{}",
        "revocation_key": "",
        "accept_tpm_hash_algs": ["sha256"],
        "accept_tpm_encryption_algs": ["rsa"],
        "accept_tpm_signing_algs": ["rsassa"],
        "ak_tpm": B64.encode(ak),
        "mtls_cert": cert.pem(),
    })
}

const ADMIN: bool = true;

async fn enrol_show_list_delete(db: String) {
    let pki = Pki::new();
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(ADMIN));

    let (code, r) = c.call(a, "GET", "/version", None).await;
    assert_eq!(code, 200);
    assert_eq!(r["results"]["current_version"], "2.6");

    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(body())).await;
    assert_eq!((code, r["status"].as_str()), (200, Some("Success")), "{r}");
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(body())).await;
    assert_eq!(code, 409, "{r}");
    assert_eq!(
        r["status"],
        "Agent of uuid n1 already exists. Please use delete or update."
    );

    let (code, r) = c.call(a, "GET", "/v2.6/agents/n1", None).await;
    assert_eq!(code, 200);
    let s = &r["results"];
    assert_eq!(s["ip"], "127.0.0.1");
    assert_eq!(s["port"], 9);
    assert_eq!(s["tpm_policy"], "{\"mask\": \"0x400\"}");
    assert_eq!(s["verifier_id"], "default");
    assert_eq!(s["attestation_period"], "0s");
    assert_eq!(s["has_runtime_policy"], 0);
    assert_eq!(s["accept_tpm_hash_algs"], json!(["sha256"]));
    assert!(s["operational_state"].as_u64().unwrap() <= 9);

    let (code, r) = c.call(a, "GET", "/v2.6/agents/", None).await;
    assert_eq!((code, &r["results"]["uuids"]), (200, &json!([["n1"]])));
    let (_, r) = c
        .call(a, "GET", "/v2.6/agents/?bulk=True&verifier=default", None)
        .await;
    assert_eq!(r["results"]["n1"]["ip"], "127.0.0.1");
    let (_, r) = c.call(a, "GET", "/v2.6/agents/?verifier=other", None).await;
    assert_eq!(r["results"]["uuids"], json!([]));
    // As Keylime (parse_qsl): an empty value is no parameter, so `keylime_tenant -c
    // cvlist`'s `?verifier=` lists every node, and `?bulk=` is the plain list; any
    // other value of `bulk` asks for the bulk answer.
    let (_, r) = c.call(a, "GET", "/v2.6/agents/?verifier=", None).await;
    assert_eq!(r["results"]["uuids"], json!([["n1"]]));
    let (_, r) = c
        .call(a, "GET", "/v2.6/agents/?bulk=&verifier=", None)
        .await;
    assert_eq!(r["results"]["uuids"], json!([["n1"]]));
    let (_, r) = c.call(a, "GET", "/v2.6/agents/?bulk=False", None).await;
    assert_eq!(r["results"]["n1"]["ip"], "127.0.0.1", "{r}");

    let (code, _) = c.call(a, "PUT", "/v2.6/agents/n1/stop", None).await;
    assert_eq!(code, 200);
    let (_, r) = c.call(a, "GET", "/v2.6/agents/n1", None).await;
    assert_eq!(r["results"]["operational_state"], 10);
    assert_eq!(r["results"]["attestation_status"], "FAIL");
    let (code, _) = c.call(a, "DELETE", "/v2.6/agents/n1", None).await;
    assert_eq!(code, 200);
    let (code, r) = c.call(a, "GET", "/v2.6/agents/n1", None).await;
    assert_eq!(
        (code, r["status"].as_str()),
        (404, Some("agent id not found"))
    );
    let (code, _) = c.call(a, "DELETE", "/v2.6/agents/n1", None).await;
    assert_eq!(code, 404);
    v.shutdown().await;
}

async fn policies_crud(db: String) {
    let pki = Pki::new();
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(ADMIN));
    let policy = support::TestAgent::policy_b64(&[("/bin/sh", b"sh")]);

    let (code, r) = c
        .call(
            a,
            "POST",
            "/v2.6/allowlists/p1",
            Some(json!({"runtime_policy": policy})),
        )
        .await;
    assert_eq!((code, r["status"].as_str()), (201, Some("Created")));
    let (code, r) = c
        .call(
            a,
            "POST",
            "/v2.6/allowlists/p1",
            Some(json!({"runtime_policy": policy})),
        )
        .await;
    assert_eq!(
        (code, r["status"].as_str()),
        (409, Some("Runtime policy with name p1 already exists"))
    );
    let (code, _) = c
        .call(
            a,
            "PUT",
            "/v2.6/allowlists/p1",
            Some(json!({"runtime_policy": policy})),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = c
        .call(
            a,
            "PUT",
            "/v2.6/allowlists/nope",
            Some(json!({"runtime_policy": policy})),
        )
        .await;
    assert_eq!(code, 404);
    let (code, r) = c.call(a, "GET", "/v2.6/allowlists/p1", None).await;
    assert_eq!(code, 200);
    assert_eq!(r["results"]["name"], "p1");
    assert_eq!(r["results"]["tmp_policy"], Value::Null);
    assert!(r["results"]["runtime_policy"]
        .as_str()
        .unwrap()
        .contains("/bin/sh"));
    let (_, r) = c.call(a, "GET", "/v2.6/allowlists/", None).await;
    assert_eq!(r["results"]["runtimepolicy names"], json!(["p1"]));

    // A node using p1 by name: the policy cannot be deleted while it does.
    let mut b = body();
    b["runtime_policy_name"] = json!("p1");
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(b)).await;
    assert_eq!(code, 200, "{r}");
    let (_, r) = c.call(a, "GET", "/v2.6/agents/n1", None).await;
    assert_eq!(r["results"]["has_runtime_policy"], 1);
    let (code, r) = c.call(a, "DELETE", "/v2.6/allowlists/p1", None).await;
    assert_eq!(code, 409, "{r}");
    assert_eq!(
        r["status"],
        "Can't delete allowlist as it's currently in use by agent n1"
    );
    // Inline policy under a taken name: 409; unknown name without a policy: 404.
    let mut b = body();
    b["runtime_policy_name"] = json!("p1");
    b["runtime_policy"] = json!(policy);
    assert_eq!(c.call(a, "POST", "/v2.6/agents/n2", Some(b)).await.0, 409);
    let mut b = body();
    b["runtime_policy_name"] = json!("ghost");
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n2", Some(b)).await;
    assert_eq!(
        (code, r["status"].as_str()),
        (404, Some("Could not find IMA policy with name ghost!"))
    );
    assert_eq!(c.call(a, "GET", "/v2.6/agents/n2", None).await.0, 404);

    // 200 when no request to the node is in flight, 202 (deferred) when one is: the
    // engine polls n1 (unreachable) from its enrolment on, so under load either may
    // come. Either way the node must be gone before its policy can be deleted.
    let code = c.call(a, "DELETE", "/v2.6/agents/n1", None).await.0;
    assert!(code == 200 || code == 202, "DELETE answered {code}");
    let mut gone = false;
    for _ in 0..100 {
        if c.call(a, "GET", "/v2.6/agents/n1", None).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "n1 still enrolled 5 s after DELETE");
    let (code, r) = c.call(a, "DELETE", "/v2.6/allowlists/p1", None).await;
    assert_eq!((code, r), (204, Value::Null));
    assert_eq!(
        c.call(a, "DELETE", "/v2.6/allowlists/p1", None).await.0,
        404
    );

    // Measured-boot policies.
    let mb = json!({"mb_policy": "{\"has_secureboot\": false}"});
    assert_eq!(
        c.call(a, "POST", "/v2.6/mbpolicies/m1", Some(mb.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        c.call(a, "POST", "/v2.6/mbpolicies/m1", Some(mb.clone()))
            .await
            .0,
        409
    );
    assert_eq!(
        c.call(a, "PUT", "/v2.6/mbpolicies/m1", Some(mb)).await.0,
        201
    );
    let (_, r) = c.call(a, "GET", "/v2.6/mbpolicies/m1", None).await;
    assert_eq!(r["results"]["mb_policy"], "{\"has_secureboot\": false}");
    let (_, r) = c.call(a, "GET", "/v2.6/mbpolicies/", None).await;
    assert_eq!(r["results"]["mbpolicy names"], json!(["m1"]));
    let mut b = body();
    b["mb_policy_name"] = json!("m1");
    assert_eq!(c.call(a, "POST", "/v2.6/agents/n3", Some(b)).await.0, 200);
    let (_, r) = c.call(a, "GET", "/v2.6/agents/n3", None).await;
    assert_eq!(r["results"]["has_mb_refstate"], 1);
    assert_eq!(
        c.call(a, "DELETE", "/v2.6/mbpolicies/m1", None).await.0,
        409
    );
    assert_eq!(
        c.call(a, "DELETE", "/v2.6/mbpolicies/ghost", None).await.0,
        404
    );
    v.shutdown().await;
}

async fn admin_routes_need_mtls(db: String) {
    let pki = Pki::new();
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(false));
    assert_eq!(c.call(a, "GET", "/version", None).await.0, 200);
    for (m, p) in [
        ("GET", "/v2.6/agents/"),
        ("GET", "/v2.6/agents/x"),
        ("POST", "/v2.6/agents/x"),
        ("DELETE", "/v2.6/agents/x"),
        ("GET", "/v2.6/allowlists/"),
        ("PUT", "/v2.6/agents/x/stop"),
    ] {
        let (code, r) = c.call(a, m, p, Some(body())).await;
        assert_eq!(code, 403, "{m} {p}: {r}");
    }
    assert_eq!(
        pki.client(ADMIN)
            .call(a, "GET", "/v2.6/agents/x", None)
            .await
            .0,
        404
    );
    v.shutdown().await;
}

/// Keylime's texts for a refused runtime-policy signature.
const NO_KEY: &str = "Runtime policy signature verification required but no key was given!";
const BAD_SIG: &str = "Runtime policy failed DSSE signature verification!";

/// A runtime policy signed in the test (P-256, as `keylime-policy sign` makes), with
/// the keys and policy texts the signature tests send.
struct Signing {
    /// PEM public key of the signer.
    key: String,
    /// PEM public key of another P-256 key.
    other: String,
    /// The policy, unsigned.
    plain: String,
    /// The DSSE envelope of `plain`.
    signed: String,
    /// `signed` with another payload under the same signature.
    forged: String,
}

impl Signing {
    fn new() -> Self {
        use vigil_core::policy::runtime::{sign_dsse, DsseSigningKey};
        let p256 = || {
            let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .unwrap()
                .serialize_pem();
            DsseSigningKey::from_pem(&pem).unwrap()
        };
        let (key, other) = (p256(), p256());
        let plain = support::TestAgent::policy(&[("/bin/sh", b"sh")]).to_string();
        let signed = sign_dsse(plain.as_bytes(), &key, Some(&key.ecdsa_keyid().unwrap()));
        let mut forged: Value = serde_json::from_str(&signed).unwrap();
        forged["payload"] =
            json!(B64.encode(support::TestAgent::policy(&[("/bin/sh", b"evil")]).to_string()));
        Self {
            key: key.public_key_pem().unwrap(),
            other: other.public_key_pem().unwrap(),
            plain,
            signed,
            forged: forged.to_string(),
        }
    }

    /// Request bodies Vigil refuses, with the code and text; the same cases as
    /// [`keylime_refuses_the_same_policies`] asks Keylime's own check about.
    fn refusals(&self) -> Vec<(Value, u16, &'static str)> {
        let body = |policy: &str, key: Option<&str>| {
            let mut b = json!({ "runtime_policy": B64.encode(policy) });
            if let Some(k) = key {
                b["runtime_policy_key"] = json!(B64.encode(k));
            }
            b
        };
        vec![
            (body(&self.plain, None), 401, NO_KEY),
            (body(&self.plain, Some(&self.key)), 401, NO_KEY),
            (body(&self.signed, None), 401, NO_KEY),
            (body(&self.signed, Some(&self.other)), 401, BAD_SIG),
            (body(&self.forged, Some(&self.key)), 401, BAD_SIG),
        ]
    }
}

/// `require_allow_list_signatures`: runtime policies must be DSSE envelopes that verify
/// with the request's `runtime_policy_key`, at `allowlists/{name}` upload and at
/// enrolment; every refusal has Keylime's code and text and stores nothing.
async fn signed_policies_when_required(db: String) {
    let pki = Pki::new();
    let mut config = pki.config(&db);
    config.require_allow_list_signatures = true;
    let v = support::start(&config).await;
    let (a, c) = (v.addr(), pki.client(ADMIN));
    let sig = Signing::new();
    let (signed, key_b64) = (B64.encode(&sig.signed), B64.encode(&sig.key));
    let refusals = sig.refusals();
    for (body, code, text) in &refusals {
        let (got, r) = c
            .call(a, "POST", "/v2.6/allowlists/p1", Some(body.clone()))
            .await;
        assert_eq!((got, r["status"].as_str()), (*code, Some(*text)), "{body}");
    }
    // A key that is not base64 is the caller's error, not a server error.
    let (code, r) = c
        .call(
            a,
            "POST",
            "/v2.6/allowlists/p1",
            Some(json!({"runtime_policy": signed, "runtime_policy_key": "%%"})),
        )
        .await;
    assert_eq!(code, 400, "{r}");
    let (_, r) = c.call(a, "GET", "/v2.6/allowlists/", None).await;
    assert_eq!(r["results"]["runtimepolicy names"], json!([]));

    // Enrolment: no policy at all (Keylime enrols its unsigned empty one), then the
    // same refusals inline.
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(body())).await;
    assert_eq!((code, r["status"].as_str()), (401, Some(NO_KEY)));
    for (fields, code, text) in &refusals {
        let mut b = body();
        for (k, v) in fields.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (got, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(b)).await;
        assert_eq!(
            (got, r["status"].as_str()),
            (*code, Some(*text)),
            "{fields}"
        );
    }
    assert_eq!(
        c.call(a, "GET", "/v2.6/agents/", None).await.1["results"]["uuids"],
        json!([])
    );
    let (_, r) = c.call(a, "GET", "/v2.6/allowlists/", None).await;
    assert_eq!(r["results"]["runtimepolicy names"], json!([]));

    // Signed with the given key: stored, inline and uploaded.
    let mut b = body();
    b["runtime_policy"] = json!(signed);
    b["runtime_policy_key"] = json!(key_b64);
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(b)).await;
    assert_eq!(code, 200, "{r}");
    let (_, r) = c.call(a, "GET", "/v2.6/agents/n1", None).await;
    assert_eq!(r["results"]["has_runtime_policy"], 1, "{r}");
    let (code, r) = c
        .call(
            a,
            "POST",
            "/v2.6/allowlists/p1",
            Some(json!({"runtime_policy": signed, "runtime_policy_key": key_b64})),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    // A stored policy enrolled by name is not verified again (as in Keylime).
    let mut b = body();
    b["runtime_policy_name"] = json!("p1");
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n2", Some(b)).await;
    assert_eq!(code, 200, "{r}");
    v.shutdown().await;
}

/// Keylime's own check (`ima.verify_runtime_policy` with signatures required, through
/// `tests/keylime/policy_oracle.py`) refuses the policies of [`Signing::refusals`] with
/// the same codes and texts, and accepts the signed one. Keylime's verifier hands that
/// check the request's key only for an envelope (`signing.get_runtime_policy_keys`),
/// so a plain policy is asked about without one. Skipped without the Keylime venv,
/// except under `CI`.
#[test]
fn keylime_refuses_the_same_policies() {
    let Some(bin) = vigil_testkit::keylime::venv_bin("keylime_refuses_the_same_policies") else {
        return;
    };
    let sig = Signing::new();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (plain, signed, forged) = (
        file("plain.json", &sig.plain),
        file("signed.json", &sig.signed),
        file("forged.json", &sig.forged),
    );
    let (key, other) = (file("key.pem", &sig.key), file("other.pem", &sig.other));
    let ask =
        |policy: &str, key: Option<&str>| json!({"op": "require", "policy": policy, "key": key});
    let requests = [
        ask(&plain, None),
        ask(&plain, None),
        ask(&signed, None),
        ask(&signed, Some(&other)),
        ask(&forged, Some(&key)),
        ask(&signed, Some(&key)),
    ];
    let mut child = std::process::Command::new(bin.join("python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/keylime/policy_oracle.py"
        ))
        .env_remove("KEYLIME_VERIFIER_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run policy_oracle.py");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(json!(requests).to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "policy_oracle.py failed");
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for ((body, code, text), answer) in sig.refusals().iter().zip(&answers) {
        assert_eq!(answer["error"], format!("{code}: {text}"), "{body}");
    }
    assert_eq!(answers[5]["accepted"], true, "{}", answers[5]);
}

on_both_backends!(
    enrol_show_list_delete,
    policies_crud,
    signed_policies_when_required,
    admin_routes_need_mtls,
);
