//! The registrar over real HTTP on loopback, on SQLite and PostgreSQL: the whole
//! registration flow with a software EK (activation in software, restart between
//! registration and activation), identity immutability, the bad-auth-tag deletion,
//! v3 routes and the mTLS split. Bad input on every route: `bad_input.rs`.

use crate::support;

use rand_core::OsRng;
use serde_json::{json, Value};
use support::{b64, keylime_file, status_text, Env};
use vigil_core::tpm::credential::{activate_credential, auth_tag, CredentialBlob, EkPrivateKey};
use vigil_core::tpm::public::TpmPublic;
use vigil_registrar::IDENTITY_CHANGED;

/// A P-256 EK made in software, as the TCG template would give it.
pub(crate) struct SoftEk {
    public: TpmPublic,
    key: EkPrivateKey,
}

pub(crate) fn soft_ek() -> SoftEk {
    use p256::pkcs8::EncodePublicKey;
    let key = p256::SecretKey::random(&mut OsRng);
    let spki = key.public_key().to_public_key_der().expect("SPKI");
    SoftEk {
        public: TpmPublic::ek_from_spki(spki.as_bytes()).expect("EK"),
        key: EkPrivateKey::P256(key),
    }
}

pub(crate) fn registration(ek: &SoftEk) -> Value {
    json!({
        "ek_tpm": b64(&ek.public.to_tpm2b()),
        "aik_tpm": b64(&keylime_file("ak.pub")),
        "ip": "127.0.0.1",
        "port": 9002,
    })
}

pub(crate) fn body(v: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(v).unwrap())
}

/// What the agent does with the blob: ActivateCredential, then the auth tag.
fn answer(ek: &SoftEk, agent_id: &str, reply: &Value) -> String {
    let blob = base64_decode(reply["results"]["blob"].as_str().expect("blob"));
    let blob = CredentialBlob::parse_tpm2_tools(&blob).expect("tpm2-tools credential");
    let ak = TpmPublic::parse_tpm2b(&keylime_file("ak.pub")).unwrap();
    let secret = activate_credential(&ek.public, &ek.key, &ak.name(), &blob).expect("activate");
    assert_eq!(secret.len(), 32);
    assert!(secret.iter().all(u8::is_ascii_alphanumeric));
    auth_tag(&secret, agent_id)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

async fn register_and_activate(db: String) {
    let mut env = Env::start(&db, |_| {}).await;
    let id = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    let ek = soft_ek();

    let (code, v) = env.http("GET", "/version", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["results"]["current_version"], "2.6");
    assert!(v["results"]["supported_versions"]
        .as_array()
        .unwrap()
        .contains(&json!("3.0")));

    let (code, reply) = env
        .http(
            "POST",
            &format!("/v2.6/agents/{id}"),
            body(&registration(&ek)),
        )
        .await;
    assert_eq!((code, status_text(200, &reply)), (200, "Success".into()));
    let tag = answer(&ek, id, &reply);

    // Not active yet: the admin view says so.
    let (code, v) = env.admin("GET", &format!("/v2.6/agents/{id}")).await;
    assert_eq!(code, 404);
    assert_eq!(
        status_text(404, &v),
        format!("Agent with ID '{id}' has not been activated")
    );

    // Nothing is lost across a restart between registration and activation.
    env.restart().await;
    let (code, v) = env
        .http(
            "PUT",
            &format!("/v2.6/agents/{id}"),
            body(&json!({"auth_tag": tag})),
        )
        .await;
    assert_eq!((code, status_text(200, &v)), (200, "Success".into()));

    let (code, v) = env.admin("GET", &format!("/v2.6/agents/{id}/")).await;
    assert_eq!(code, 200, "{v}");
    let r = &v["results"];
    assert_eq!(r["agent_id"], id);
    assert_eq!(r["ek_tpm"], b64(&ek.public.to_tpm2b()));
    assert_eq!(r["aik_tpm"], b64(&keylime_file("ak.pub")));
    assert_eq!(
        (r["ip"].clone(), r["port"].clone()),
        (json!("127.0.0.1"), json!(9002))
    );
    assert_eq!(
        (r["regcount"].clone(), r["ekcert"].clone()),
        (json!(1), Value::Null)
    );
    let (_, v) = env.admin("GET", "/v2.6/agents/").await;
    assert_eq!(v["results"]["uuids"], json!([id]));

    // Same identity again: accepted, still active, regcount unchanged.
    let (code, _) = env
        .http(
            "POST",
            &format!("/v2.6/agents/{id}"),
            body(&registration(&ek)),
        )
        .await;
    assert_eq!(code, 200);
    let (code, v) = env.admin("GET", &format!("/v2.6/agents/{id}")).await;
    assert_eq!((code, v["results"]["regcount"].clone()), (200, json!(1)));

    // Another EK under the same id: 403 with Keylime's text, nothing changed.
    let (code, v) = env
        .http(
            "POST",
            &format!("/v2.6/agents/{id}"),
            body(&registration(&soft_ek())),
        )
        .await;
    assert_eq!((code, status_text(403, &v)), (403, IDENTITY_CHANGED.into()));
    let (code, v) = env.admin("GET", &format!("/v2.6/agents/{id}")).await;
    assert_eq!(
        (code, v["results"]["ek_tpm"].clone()),
        (200, json!(b64(&ek.public.to_tpm2b())))
    );

    // A wrong auth tag deletes the record (Keylime's rule).
    let other = "agent-2";
    let (code, _) = env
        .http(
            "POST",
            &format!("/v2.1/agents/{other}"),
            body(&registration(&soft_ek())),
        )
        .await;
    assert_eq!(code, 200);
    let (code, v) = env
        .http(
            "PUT",
            &format!("/v2.1/agents/{other}/activate"),
            body(&json!({"auth_tag": "00ff"})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(status_text(400, &v).starts_with("Auth tag '00ff' for agent 'agent-2' does not match expected value. The agent has been deleted"));
    let (code, v) = env.admin("GET", &format!("/v2.6/agents/{other}")).await;
    assert_eq!(
        (code, status_text(404, &v)),
        (404, format!("Agent with ID '{other}' not found"))
    );

    // Delete, then it is gone.
    let (code, _) = env.admin("DELETE", &format!("/v2.6/agents/{id}")).await;
    assert_eq!(code, 200);
    let (code, _) = env.admin("DELETE", &format!("/v2.6/agents/{id}")).await;
    assert_eq!(code, 404);
    let (_, v) = env.admin("GET", "/v2.6/agents/").await;
    assert_eq!(v["results"]["uuids"], json!([]));
    env.stop().await;
}

async fn v3_routes(db: String) {
    let env = Env::start(&db, |_| {}).await;
    let ek = soft_ek();
    let id = "v3-agent";
    let (code, v) = env.http("GET", "/v3.0/", None).await;
    assert_eq!((code, status_text(200, &v)), (200, "Success".into()));
    let mut reg = registration(&ek);
    reg["agent_id"] = json!(id);
    let (code, reply) = env.http("POST", "/v3.0/agents", body(&reg)).await;
    assert_eq!(code, 200, "{reply}");
    let tag = answer(&ek, id, &reply);
    // v3 has no PUT forms.
    let (code, _) = env
        .http(
            "PUT",
            &format!("/v3.0/agents/{id}"),
            body(&json!({"auth_tag": tag})),
        )
        .await;
    assert_eq!(code, 405);
    let (code, _) = env
        .http(
            "POST",
            &format!("/v3.0/agents/{id}/activate"),
            body(&json!({"auth_tag": tag})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = env.admin("GET", &format!("/v3.0/agents/{id}")).await;
    assert_eq!(code, 200);
    env.stop().await;
}

async fn admin_routes_need_mtls(db: String) {
    let env = Env::start(&db, |_| {}).await;
    // Over plain HTTP: refused (Keylime: 400 for an HTTPS-only route).
    let (code, v) = env.http("GET", "/v2.6/agents/", None).await;
    assert_eq!(code, 400);
    assert!(status_text(400, &v).contains("HTTPS"));
    // Over HTTPS without a client certificate: 403, but /version works.
    let (code, v) = env.https(None, "GET", "/v2.6/agents/").await.unwrap();
    assert_eq!(code, 403);
    assert_eq!(
        status_text(403, &v),
        "Action list_registrations requires admin authentication (mTLS certificate)"
    );
    assert_eq!(
        env.https(None, "DELETE", "/v2.6/agents/x").await.unwrap().0,
        403
    );
    assert_eq!(env.https(None, "GET", "/version").await.unwrap().0, 200);
    // A certificate issued later by the same CA works.
    vigil_tls::ca::issue(&env.ca, "tenant-2", vigil_tls::ca::Kind::Client, &[], false).unwrap();
    assert_eq!(
        env.https(Some("tenant-2"), "GET", "/v2.6/agents/")
            .await
            .unwrap()
            .0,
        200
    );
    // A server certificate has no clientAuth usage: the handshake fails.
    assert!(env
        .https(Some("server"), "GET", "/v2.6/agents/")
        .await
        .is_err());
    // A client certificate from another CA: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    let other_ca = vigil_tls::ca::init(other.path(), &[], false).unwrap();
    let tls = std::sync::Arc::new(
        vigil_tls::client_config(
            &env.ca.ca_cert(),
            Some((&other_ca.cert("client"), &other_ca.key("client"))),
        )
        .unwrap(),
    );
    let r = support::request(env.https_addr(), Some(tls), "GET", "/v2.6/agents/", None).await;
    assert!(r.is_err(), "foreign client certificate accepted: {r:?}");
    env.stop().await;
}

on_both_backends!(register_and_activate, v3_routes, admin_routes_need_mtls,);
