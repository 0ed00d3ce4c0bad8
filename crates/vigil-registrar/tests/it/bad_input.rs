//! Every REST route of the registrar against a table of bad inputs, on SQLite and
//! PostgreSQL, over real sockets: malformed JSON, wrong types, missing fields, bodies
//! over `max_upload_size`, bad agent ids, bad base64, bad auth tags, wrong methods,
//! unknown paths and versions, admin routes without a client certificate. Each gets its
//! 4xx within a bound (never a 5xx, never a hang), and nothing stored changes: a
//! pending registration still activates with its original challenge afterwards, an
//! active one reads back the same.

use crate::support;

use std::time::Duration;

use rand_core::OsRng;
use serde_json::{json, Value};
use support::{b64, keylime_file, status_text, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_core::tpm::credential::{activate_credential, auth_tag, CredentialBlob, EkPrivateKey};
use vigil_core::tpm::public::TpmPublic;
use vigil_registrar::INVALID_DATA;

/// A P-256 EK made in software.
struct SoftEk {
    public: TpmPublic,
    key: EkPrivateKey,
}

fn soft_ek() -> SoftEk {
    use p256::pkcs8::EncodePublicKey;
    let key = p256::SecretKey::random(&mut OsRng);
    let spki = key.public_key().to_public_key_der().expect("SPKI");
    SoftEk {
        public: TpmPublic::ek_from_spki(spki.as_bytes()).expect("EK"),
        key: EkPrivateKey::P256(key),
    }
}

fn registration(ek: &SoftEk) -> Value {
    json!({
        "ek_tpm": b64(&ek.public.to_tpm2b()),
        "aik_tpm": b64(&keylime_file("ak.pub")),
        "ip": "127.0.0.1",
        "port": 9002,
    })
}

/// The auth tag an agent with `ek` computes from a registration `reply`.
fn answer(ek: &SoftEk, agent_id: &str, reply: &Value) -> String {
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(reply["results"]["blob"].as_str().expect("blob"))
        .expect("base64 blob");
    let blob = CredentialBlob::parse_tpm2_tools(&blob).expect("tpm2-tools credential");
    let ak = TpmPublic::parse_tpm2b(&keylime_file("ak.pub")).expect("AK");
    let secret = activate_credential(&ek.public, &ek.key, &ak.name(), &blob).expect("activate");
    auth_tag(&secret, agent_id)
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON")
}

/// Which port a case goes to: the plain-HTTP one, or HTTPS with or without the
/// admin's client certificate.
#[derive(Clone, Copy, Debug)]
enum Via {
    Http,
    Admin,
    NoCert,
}

/// One bad request and the answer it must get.
struct Case {
    via: Via,
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
    code: u16,
    /// A part of the `status` text.
    text: &'static str,
}

fn case(
    via: Via,
    method: &'static str,
    path: impl Into<String>,
    body: Option<Vec<u8>>,
    code: u16,
    text: &'static str,
) -> Case {
    Case {
        via,
        method,
        path: path.into(),
        body,
        code,
        text,
    }
}

/// Sends `c`, bounded in time; the status and the body.
async fn send(env: &Env, c: &Case) -> (u16, Value) {
    let call = async {
        match c.via {
            Via::Http => env.http(c.method, &c.path, c.body.clone()).await,
            Via::Admin => {
                let tls = env.client_tls(Some("client"));
                support::request(
                    env.https_addr(),
                    Some(tls),
                    c.method,
                    &c.path,
                    c.body.clone(),
                )
                .await
                .expect("mTLS request")
            }
            Via::NoCert => env
                .https(None, c.method, &c.path)
                .await
                .expect("HTTPS request"),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("{} {} hung", c.method, c.path))
}

/// A raw HTTP/1.1 request on the plain port: the status line's code.
async fn raw(env: &Env, request: &[u8]) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(env.http_addr())
        .await
        .expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut head = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = tcp.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an answer, not a hang");
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line}"))
}

async fn every_route_refuses_bad_input(db: String) {
    let limit = 64 << 10;
    let env = Env::start(&db, |c| c.max_upload_size = limit).await;

    // What must survive the table: a pending registration and an active one.
    let (pending_ek, active_ek) = (soft_ek(), soft_ek());
    let (code, pending_reply) = env
        .http(
            "POST",
            "/v2.6/agents/pending",
            Some(json_bytes(&registration(&pending_ek))),
        )
        .await;
    assert_eq!(code, 200, "{pending_reply}");
    let (code, reply) = env
        .http(
            "POST",
            "/v2.6/agents/active",
            Some(json_bytes(&registration(&active_ek))),
        )
        .await;
    assert_eq!(code, 200, "{reply}");
    let tag = answer(&active_ek, "active", &reply);
    let (code, _) = env
        .http(
            "PUT",
            "/v2.6/agents/active",
            Some(json_bytes(&json!({ "auth_tag": tag }))),
        )
        .await;
    assert_eq!(code, 200);
    let (code, active_before) = env.admin("GET", "/v2.6/agents/active").await;
    assert_eq!(code, 200);

    let good = registration(&soft_ek());
    let with = |field: &str, value: Value| {
        let mut v = good.clone();
        v[field] = value;
        Some(json_bytes(&v))
    };
    let without = |field: &str| {
        let mut v = good.clone();
        v.as_object_mut().expect("object").remove(field);
        Some(json_bytes(&v))
    };
    let long_id = "a".repeat(256);
    let mut oversized = json_bytes(&good);
    oversized.extend(std::iter::repeat_n(b' ', limit));

    use Via::{Admin, Http, NoCert};
    let ek_pub = json!(b64(&keylime_file("ek.pub")));
    let not_a_cert = json!(String::from_utf8(keylime_file("ekpub.pem")).expect("PEM"));
    #[rustfmt::skip]
    let mut cases = vec![
        // Registration (v2: id in the path), at the pending agent's id: a bad body must
        // not replace its record.
        case(Http, "POST", "/v2.6/agents/pending", Some(b"{not json".to_vec()), 400, "not valid JSON"),
        case(Http, "POST", "/v2.6/agents/pending", Some(b"[1,2]".to_vec()), 400, "must be a JSON object"),
        case(Http, "POST", "/v2.6/agents/pending", Some(b"\"x\"".to_vec()), 400, "must be a JSON object"),
        case(Http, "POST", "/v2.6/agents/pending", Some(b"{}".to_vec()), 400, "aik_tpm is required"),
        case(Http, "POST", "/v2.6/agents/pending", None, 400, "aik_tpm is required"),
        case(Http, "POST", "/v2.6/agents/pending", Some(vec![0xff, 0xfe, b'{']), 400, "not valid JSON"),
        case(Http, "POST", "/v2.6/agents/pending", Some(oversized.clone()), 400, "max_upload_size"),
        case(Http, "POST", "/v2.6/agents/pending", without("aik_tpm"), 400, "aik_tpm is required"),
        case(Http, "POST", "/v2.6/agents/pending", without("ek_tpm"), 400, "ek_tpm"),
        case(Http, "POST", "/v2.6/agents/pending", with("aik_tpm", json!(5)), 400, "aik_tpm must be a string"),
        case(Http, "POST", "/v2.6/agents/pending", with("aik_tpm", json!(["x"])), 400, "aik_tpm must be a string"),
        case(Http, "POST", "/v2.6/agents/pending", with("ek_tpm", json!({})), 400, "ek_tpm must be a string"),
        case(Http, "POST", "/v2.6/agents/pending", with("ek_tpm", json!("@@@")), 400, "ek_tpm is not valid base64"),
        case(Http, "POST", "/v2.6/agents/pending", with("ek_tpm", json!("QUJD=")), 400, "ek_tpm"),
        case(Http, "POST", "/v2.6/agents/pending", with("aik_tpm", json!("")), 400, "aik_tpm"),
        case(Http, "POST", "/v2.6/agents/pending", with("aik_tpm", json!("AAECAwQF")), 400, "aik_tpm must be a valid TPM2B_PUBLIC"),
        case(Http, "POST", "/v2.6/agents/pending", with("ekcert", json!("MIIB")), 400, "ekcert must be a PEM or base64 DER certificate"),
        case(Http, "POST", "/v2.6/agents/pending", with("ekcert", json!(7)), 400, "ekcert"),
        case(Http, "POST", "/v2.6/agents/pending", with("mtls_cert", json!("garbage")), 400, "mtls_cert"),
        // The EK as AK: not a restricted signing key; a public key is no certificate.
        case(Http, "POST", "/v2.6/agents/pending", with("aik_tpm", ek_pub), 400, "aik_tpm must be a restricted signing key"),
        case(Http, "POST", "/v2.6/agents/pending", with("mtls_cert", not_a_cert), 400, "mtls_cert must be"),
        case(Http, "POST", "/v2.6/agents/pending", with("port", json!(-1)), 400, "port must be a port number"),
        case(Http, "POST", "/v2.6/agents/pending", with("port", json!(65536)), 400, "port must be a port number"),
        case(Http, "POST", "/v2.6/agents/pending", with("port", json!(1.5)), 400, "port must be a port number"),
        case(Http, "POST", "/v2.6/agents/pending", with("port", json!("x")), 400, "port must be a port number"),
        case(Http, "POST", "/v2.6/agents/pending", with("ip", json!(5)), 400, "ip"),
        // NUL characters, which PostgreSQL cannot store in text.
        case(Http, "POST", "/v2.6/agents/fresh", with("ip", json!("\u{0}")), 400, "NUL"),
        case(Http, "POST", "/v2.6/agents/fresh", with("mtls_cert", json!("disabled\u{0}")), 400, "NUL"),
        case(Http, "POST", "/v2.6/agents/fresh", with("x\u{0}", json!(1)), 400, "NUL"),
        case(Http, "POST", "/v2.6/agents/pending", with("iak_tpm", json!("%%%")), 400, "iak_tpm"),
        case(Http, "POST", "/v2.6/agents/pending", with("idevid_cert", json!("nope")), 400, "idevid_cert"),
        // Registration: bad ids in the path (v2) and in the body (v3).
        case(Http, "POST", "/v2.6/agents/.", Some(json_bytes(&good)), 400, "agent_id must not be made only of dots"),
        case(Http, "POST", "/v2.6/agents/..", Some(json_bytes(&good)), 400, "agent_id must not be made only of dots"),
        case(Http, "POST", "/v2.6/agents/...", Some(json_bytes(&good)), 400, "agent_id must not be made only of dots"),
        case(Http, "POST", "/v2.6/agents/%2E", Some(json_bytes(&good)), 400, "agent_id may contain only"),
        case(Http, "POST", "/v2.6/agents/%2E%2E/", Some(json_bytes(&good)), 400, "agent_id may contain only"),
        case(Http, "POST", "/v2.6/agents/bad%20id", Some(json_bytes(&good)), 400, "agent_id may contain only"),
        case(Http, "POST", "/v2.6/agents/a$b", Some(json_bytes(&good)), 400, "agent_id may contain only"),
        case(Http, "POST", format!("/v2.6/agents/{long_id}"), Some(json_bytes(&good)), 400, "agent_id must be 1 to 80 characters"),
        case(Http, "POST", "/v2.6/agents/a%2Fb", Some(json_bytes(&good)), 400, "agent_id may contain only"),
        case(Http, "POST", "/v3.0/agents", Some(json_bytes(&good)), 400, "agent_id is required"),
        case(Http, "POST", "/v3.0/agents", with("agent_id", json!(5)), 400, "agent_id must be a string"),
        case(Http, "POST", "/v3.0/agents", with("agent_id", json!("")), 400, "agent_id must be 1 to 80"),
        case(Http, "POST", "/v3.0/agents", with("agent_id", json!("..")), 400, "agent_id must not be made only of dots"),
        case(Http, "POST", "/v3.0/agents", with("agent_id", json!("a/b")), 400, "agent_id may contain only"),
        case(Http, "POST", "/v3.0/agents", with("agent_id", json!(long_id.clone())), 400, "agent_id must be 1 to 80"),
        case(Http, "POST", "/v3.0/agents", Some(b"{".to_vec()), 400, "not valid JSON"),
        case(Http, "POST", "/v3.0/agents/", Some(oversized.clone()), 400, "max_upload_size"),
        // Activation, at the pending agent: a malformed request keeps the registration.
        case(Http, "PUT", "/v2.6/agents/pending", Some(b"{not json".to_vec()), 400, "not valid JSON"),
        case(Http, "PUT", "/v2.6/agents/pending", Some(b"[]".to_vec()), 400, "must be a JSON object"),
        case(Http, "PUT", "/v2.6/agents/pending", None, 400, "auth_tag is required"),
        case(Http, "PUT", "/v2.6/agents/pending", Some(oversized.clone()), 400, "max_upload_size"),
        case(Http, "PUT", "/v2.6/agents/pending/activate", Some(json_bytes(&json!({"auth_tag": 5}))), 400, "auth_tag is required"),
        case(Http, "PUT", "/v2.6/agents/pending", Some(json_bytes(&json!({"auth_tag": null}))), 400, "auth_tag is required"),
        case(Http, "PUT", "/v2.6/agents/pending", Some(json_bytes(&json!({"auth_tag": "not hex"}))), 400, "auth_tag must be a hex string"),
        case(Http, "PUT", "/v2.6/agents/pending", Some(json_bytes(&json!({"auth_tag": ""}))), 400, "auth_tag must be a hex string"),
        case(Http, "PUT", "/v2.6/agents/pending/", Some(json_bytes(&json!({"auth_tag": "0xab"}))), 400, "auth_tag must be a hex string"),
        case(Http, "POST", "/v3.0/agents/pending/activate", Some(json_bytes(&json!({"auth_tag": "zz"}))), 400, "auth_tag must be a hex string"),
        case(Http, "PUT", "/v2.6/agents/../activate", Some(json_bytes(&json!({"auth_tag": "ab"}))), 400, "agent_id must not be made only of dots"),
        case(Http, "PUT", format!("/v2.6/agents/{long_id}"), Some(json_bytes(&json!({"auth_tag": "ab"}))), 400, "agent_id must be 1 to 80"),
        case(Http, "PUT", "/v2.6/agents/ghost", Some(json_bytes(&json!({"auth_tag": "ab"}))), 404, "Agent with ID 'ghost' not found"),
        // Admin routes: bad ids, unknown agents, no client certificate, plain HTTP.
        case(Admin, "GET", "/v2.6/agents/.", None, 400, "agent_id must not be made only of dots"),
        case(Admin, "GET", "/v2.6/agents/%2E", None, 400, "agent_id may contain only"),
        case(Admin, "GET", format!("/v2.6/agents/{long_id}"), None, 400, "agent_id must be 1 to 80"),
        case(Admin, "DELETE", "/v2.6/agents/..", None, 400, "agent_id must not be made only of dots"),
        case(Admin, "DELETE", "/v2.6/agents/a%20b", None, 400, "agent_id may contain only"),
        case(Admin, "DELETE", "/v2.6/agents/ghost", None, 404, "not found"),
        case(Admin, "GET", "/v2.6/agents/pending", None, 404, "has not been activated"),
        case(NoCert, "GET", "/v2.6/agents/", None, 403, "requires admin authentication"),
        case(NoCert, "GET", "/v2.6/agents/active", None, 403, "requires admin authentication"),
        case(NoCert, "DELETE", "/v2.6/agents/active", None, 403, "requires admin authentication"),
        case(NoCert, "DELETE", "/v3.0/agents/pending/", None, 403, "requires admin authentication"),
        case(Http, "GET", "/v2.6/agents/active", None, 400, "HTTPS"),
        case(Http, "DELETE", "/v2.6/agents/active", None, 400, "HTTPS"),
        // Wrong methods: 405.
        case(Http, "POST", "/version", None, 405, "Method Not Allowed"),
        case(Http, "DELETE", "/version", None, 405, "Method Not Allowed"),
        case(Http, "PUT", "/v2.6/agents/", None, 405, "Method Not Allowed"),
        case(Admin, "DELETE", "/v2.6/agents/", None, 405, "Method Not Allowed"),
        case(Http, "PATCH", "/v2.6/agents/pending", None, 405, "Method Not Allowed"),
        case(Http, "GET", "/v2.6/agents/pending/activate", None, 405, "Method Not Allowed"),
        case(Http, "DELETE", "/v2.6/agents/pending/activate", None, 405, "Method Not Allowed"),
        case(Http, "PUT", "/v3.0/agents/pending", Some(json_bytes(&json!({"auth_tag": "ab"}))), 405, "Method Not Allowed"),
        case(Http, "POST", "/v3.0/agents/pending", Some(json_bytes(&good)), 405, "Method Not Allowed"),
        case(Http, "PUT", "/v3.0/agents/pending/activate", Some(json_bytes(&json!({"auth_tag": "ab"}))), 405, "Method Not Allowed"),
        // Unknown paths and versions: 404.
        case(Http, "GET", "/", None, 404, "Not Found"),
        case(Http, "GET", "/v2.6/", None, 404, "Not Found"),
        case(Http, "POST", "/v3.0/", None, 404, "Not Found"),
        case(Http, "GET", "/versions", None, 404, "Not Found"),
        case(Http, "GET", "/agents/", None, 404, "Not Found"),
        case(Http, "GET", "/v1.0/agents/", None, 404, "Not Found"),
        case(Http, "POST", "/v2.7/agents/x", Some(json_bytes(&good)), 404, "Not Found"),
        case(Http, "POST", "/v4/agents/x", Some(json_bytes(&good)), 404, "Not Found"),
        case(Http, "POST", "/2.6/agents/x", Some(json_bytes(&good)), 404, "Not Found"),
        case(Http, "POST", "/v2.6/agents/x/y", Some(json_bytes(&good)), 404, "Not Found"),
        case(Http, "POST", "/v2.6/agents//", Some(json_bytes(&good)), 404, "Not Found"),
        case(Http, "PUT", "/v2.6/agents/pending/activate/x", None, 404, "Not Found"),
        case(Http, "GET", "/v2.6/registrations", None, 404, "Not Found"),
        case(Admin, "GET", "/v2.6/agents//", None, 404, "Not Found"),
    ];
    // Query strings are not read by any route: a bad one changes nothing.
    for path in ["/v2.6/agents/pending?x=%ZZ", "/v2.6/agents/pending?&&=="] {
        cases.push(case(
            Http,
            "POST",
            path,
            Some(b"{".to_vec()),
            400,
            "not valid JSON",
        ));
    }

    for c in &cases {
        let (code, v) = send(&env, c).await;
        assert_eq!(code, c.code, "{} {}: {v}", c.method, c.path);
        let text = status_text(code, &v);
        assert!(
            text.contains(c.text),
            "{} {}: expected '{}' in '{text}'",
            c.method,
            c.path,
            c.text
        );
    }

    // Field errors carry Keylime's prefix.
    let (_, v) = env
        .http("POST", "/v2.6/agents/pending", with("ek_tpm", json!("@@@")))
        .await;
    assert!(status_text(400, &v).starts_with(INVALID_DATA), "{v}");

    // A body larger than the limit, announced and never sent: refused at once.
    let code = raw(
        &env,
        b"POST /v2.6/agents/pending HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000000\r\n\r\n",
    )
    .await;
    assert_eq!(code, 400);
    // A request line that is no HTTP: a 4xx from the server, not a hang.
    let code = raw(&env, b"\x16\x03\x01 garbage\r\n\r\n").await;
    assert!((400..500).contains(&code), "{code}");

    // Nothing changed: the same two records, the pending one still activates with
    // its original challenge, the active one reads back the same.
    let (_, v) = env.admin("GET", "/v2.6/agents/").await;
    let mut ids: Vec<String> = serde_json::from_value(v["results"]["uuids"].clone()).unwrap();
    ids.sort();
    assert_eq!(ids, ["active", "pending"]);
    let (code, after) = env.admin("GET", "/v2.6/agents/active").await;
    assert_eq!((code, after), (200, active_before));
    let tag = answer(&pending_ek, "pending", &pending_reply);
    let (code, v) = env
        .http(
            "PUT",
            "/v2.6/agents/pending",
            Some(json_bytes(&json!({ "auth_tag": tag }))),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    env.stop().await;
}

/// A well-formed wrong auth tag still deletes the registration (Keylime's rule); a
/// malformed one (not hex) is refused and keeps it.
async fn malformed_auth_tag_keeps_the_registration(db: String) {
    let env = Env::start(&db, |_| {}).await;
    let ek = soft_ek();
    let (code, reply) = env
        .http(
            "POST",
            "/v2.6/agents/a1",
            Some(json_bytes(&registration(&ek))),
        )
        .await;
    assert_eq!(code, 200);
    for tag in ["g", "ab cd", "ab\u{e9}"] {
        let (code, v) = env
            .http(
                "PUT",
                "/v2.6/agents/a1",
                Some(json_bytes(&json!({ "auth_tag": tag }))),
            )
            .await;
        assert_eq!(
            (code, status_text(400, &v)),
            (400, "Bad Request: auth_tag must be a hex string".into()),
            "{tag}"
        );
    }
    let (code, v) = env
        .http(
            "PUT",
            "/v2.6/agents/a1",
            Some(json_bytes(
                &json!({ "auth_tag": answer(&ek, "a1", &reply) }),
            )),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    // A hex tag that does not match: deleted.
    let (code, _) = env
        .http(
            "POST",
            "/v2.6/agents/a2",
            Some(json_bytes(&registration(&soft_ek()))),
        )
        .await;
    assert_eq!(code, 200);
    let (code, v) = env
        .http(
            "PUT",
            "/v2.6/agents/a2",
            Some(json_bytes(&json!({ "auth_tag": "abcdef" }))),
        )
        .await;
    assert_eq!(code, 400);
    assert!(status_text(400, &v).contains("has been deleted"), "{v}");
    let (_, v) = env.admin("GET", "/v2.6/agents/").await;
    assert_eq!(v["results"]["uuids"], json!(["a1"]));
    env.stop().await;
}

on_both_backends!(
    every_route_refuses_bad_input,
    malformed_auth_tag_keeps_the_registration,
);
