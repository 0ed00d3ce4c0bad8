//! Every REST route of the verifier against a table of bad inputs, on SQLite and
//! PostgreSQL, over real HTTPS: malformed JSON, wrong types, missing fields, bodies over
//! `max_upload_size`, bad ids and policy names, bad base64, bad query strings, wrong
//! methods, unknown paths and versions, admin routes without a client certificate.
//! Each gets its 4xx (Keylime's code and text where Keylime has one) within a bound —
//! never a 5xx, never a hang — and nothing stored changes: the enrolled node, the
//! stored policies and the lists read back the same.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::body;
use crate::support::{self, Client, Pki, B64};

/// One bad request and the answer it must get.
struct Case {
    admin: bool,
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
    code: u16,
    /// A part of the envelope's `status`.
    text: &'static str,
}

fn case(
    admin: bool,
    method: &'static str,
    path: impl Into<String>,
    body: Option<Vec<u8>>,
    code: u16,
    text: &'static str,
) -> Case {
    Case {
        admin,
        method,
        path: path.into(),
        body,
        code,
        text,
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

/// The enrolment body with `field` set to `value`, or removed when `value` is null.
fn enrolment_with(field: &str, value: Value) -> Option<Vec<u8>> {
    let mut b = body();
    if value.is_null() {
        b.as_object_mut().expect("object").remove(field);
    } else {
        b[field] = value;
    }
    bytes(&b)
}

/// Sends `c`, bounded in time.
async fn send(clients: &(Client, Client), a: std::net::SocketAddr, c: &Case) -> (u16, Value) {
    let client = if c.admin { &clients.0 } else { &clients.1 };
    tokio::time::timeout(
        Duration::from_secs(20),
        client.call_unread(a, c.method, &c.path, c.body.as_deref().unwrap_or_default()),
    )
    .await
    .unwrap_or_else(|_| panic!("{} {} hung", c.method, c.path))
}

/// What must not change: the node's stored fields, the policies, the lists.
async fn stored(c: &Client, a: std::net::SocketAddr) -> Value {
    let (_, node) = c.call(a, "GET", "/v2.6/agents/kept", None).await;
    let node = &node["results"];
    let fields = [
        "ip",
        "port",
        "tpm_policy",
        "metadata",
        "accept_tpm_hash_algs",
        "accept_tpm_encryption_algs",
        "accept_tpm_signing_algs",
        "has_runtime_policy",
        "has_mb_refstate",
        "verifier_id",
    ];
    let mut out = json!({});
    for f in fields {
        out[f] = node[f].clone();
    }
    for path in [
        "/v2.6/agents/",
        "/v2.6/allowlists/",
        "/v2.6/allowlists/p1",
        "/v2.6/mbpolicies/",
        "/v2.6/mbpolicies/m1",
    ] {
        out[path] = c.call(a, "GET", path, None).await.1["results"].clone();
    }
    out
}

async fn bad_input_is_rejected_and_stores_nothing(db: String) {
    let pki = Pki::new();
    let limit = 64 << 10;
    let mut config = pki.config(&db);
    config.max_upload_size = limit;
    let v = support::start(&config).await;
    let a = v.addr();
    let clients = (pki.client(true), pki.client(false));
    let c = &clients.0;

    // What must survive the table: a node using stored policies by name.
    let policy = support::TestAgent::policy_b64(&[("/bin/sh", b"sh")]);
    let (code, r) = c
        .call(
            a,
            "POST",
            "/v2.6/allowlists/p1",
            Some(json!({"runtime_policy": policy})),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let mb = json!({"mb_policy": "{\"has_secureboot\": false}"});
    assert_eq!(
        c.call(a, "POST", "/v2.6/mbpolicies/m1", Some(mb)).await.0,
        201
    );
    let mut kept = body();
    kept["runtime_policy_name"] = json!("p1");
    kept["mb_policy_name"] = json!("m1");
    let (code, r) = c.call(a, "POST", "/v2.6/agents/kept", Some(kept)).await;
    assert_eq!(code, 200, "{r}");
    let before = stored(c, a).await;

    let long = "a".repeat(256);
    let mut oversized = body().to_string().into_bytes();
    oversized.extend(std::iter::repeat_n(b' ', limit));
    let rp = |v: Value| bytes(&json!({ "runtime_policy": v }));
    let rp_with = |k: &str, v: Value| bytes(&json!({ "runtime_policy": policy, k: v }));
    const ADMIN: bool = true;
    const NO_CERT: bool = false;
    #[rustfmt::skip]
    let mut cases = vec![
        // Enrolment: the body.
        case(ADMIN, "POST", "/v2.6/agents/n1", None, 400, "Expected non zero content length"),
        case(ADMIN, "POST", "/v2.6/agents/n1", Some(b"{not json".to_vec()), 400, "not valid JSON"),
        case(ADMIN, "POST", "/v2.6/agents/n1", Some(vec![0xff, b'{']), 400, "not valid JSON"),
        case(ADMIN, "POST", "/v2.6/agents/n1", Some(b"[1]".to_vec()), 400, "must be a JSON object"),
        case(ADMIN, "POST", "/v2.6/agents/n1", Some(b"null".to_vec()), 400, "must be a JSON object"),
        case(ADMIN, "POST", "/v2.6/agents/n1", Some(b"{}".to_vec()), 400, "'"),
        case(ADMIN, "POST", "/v2.6/agents/n1", Some(oversized.clone()), 400, "max_upload_size"),
        // Enrolment: missing fields, wrong types, bad values.
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("tpm_policy", Value::Null), 400, "'tpm_policy'"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("metadata", Value::Null), 400, "'metadata'"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("ak_tpm", Value::Null), 400, "'ak_tpm'"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("accept_tpm_hash_algs", Value::Null), 400, "'accept_tpm_hash_algs'"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("tpm_policy", json!(5)), 400, "tpm_policy"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("tpm_policy", json!("{\"10\": 5}")), 400, "tpm_policy"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("tpm_policy", json!("{\"mask\": \"0xZZ\"}")), 400, "tpm_policy"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("tpm_policy", json!("{\"mask\": \"0x1000000\"}")), 400, "tpm_policy"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("tpm_policy", json!("{\"10\": [\"abcd\"]}")), 400, "tpm_policy"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("metadata", json!(5)), 400, "metadata"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("accept_tpm_hash_algs", json!("sha256")), 400, "accept_tpm_hash_algs"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("accept_tpm_signing_algs", json!([5])), 400, "accept_tpm_signing_algs"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("ak_tpm", json!("!!")), 400, "ak_tpm"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("ak_tpm", json!("AAAA")), 400, "ak_tpm"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("ak_tpm", json!(5)), 400, "ak_tpm"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("v", json!("AAAA")), 400, "v: must be 32 bytes"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("v", json!("%%%")), 400, "v"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("v", json!(5)), 400, "v"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("cloudagent_ip", json!("not-an-ip")), 400, "cloudagent_ip"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("cloudagent_ip", json!(5)), 400, "cloudagent_ip"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("cloudagent_port", json!(70000)), 400, "cloudagent_port"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("cloudagent_port", json!("x")), 400, "cloudagent_port"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("cloudagent_port", json!(-1)), 400, "cloudagent_port"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("mtls_cert", json!("disabled")), 400, "mTLS certificate for agent is required!"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("mtls_cert", json!("garbage")), 400, "mtls_cert"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("mtls_cert", json!(5)), 400, "mtls_cert"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("revocation_key", json!("not a key")), 400, "revocation_key"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("runtime_policy", json!("e30=")), 400, "Runtime policy is malformatted"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("runtime_policy", json!("%%%")), 400, "runtime_policy"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("runtime_policy", json!(5)), 400, "runtime_policy"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("mb_policy", json!("{not json")), 400, "mb_policy"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("mb_policy_name", json!(3)), 400, "mb_policy_name"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("runtime_policy_name", json!("..")), 400, "runtime_policy_name"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("supported_version", json!("abc/../")), 400, "supported_version"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("supported_version", json!("2.6/../../version?")), 400, "supported_version"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("supported_version", json!("2.6\r\nX: y")), 400, "supported_version"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("supported_version", json!(2.6)), 400, "supported_version"),
        // NUL characters, which PostgreSQL cannot store in text.
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("verifier_ip", json!("\u{0}")), 400, "NUL"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("metadata", json!("{\"a\": \"\u{0}\"}")), 400, "NUL"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("accept_tpm_hash_algs", json!(["sha256", "\u{0}"])), 400, "NUL"),
        case(ADMIN, "POST", "/v2.6/agents/n1", enrolment_with("ima_sign_verification_keys", json!("\u{0}")), 400, "NUL"),
        case(NO_CERT, "GET", "/v2.6/verify/identity?agent_uuid=%00&quote=r&nonce=1&hash_alg=sha256", None, 400, "NUL"),
        case(ADMIN, "GET", "/v2.6/agents/?verifier=%00", None, 400, "NUL"),
        // A second enrolment of the kept node, with another body: refused, unchanged.
        case(ADMIN, "POST", "/v2.6/agents/kept", bytes(&body()), 409, "already exists"),
        // Bad ids on every agent route.
        case(ADMIN, "POST", "/v2.6/agents/.", bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "POST", "/v2.6/agents/..", bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "POST", "/v2.6/agents/...", bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "POST", "/v2.6/agents/%2E", bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "POST", "/v2.6/agents/%2E%2E/", bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "POST", "/v2.6/agents/bad%20id", bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "POST", "/v2.6/agents/a%2Fb", bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "POST", format!("/v2.6/agents/{long}"), bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "GET", "/v2.6/agents/..", None, 400, "agent_id not not valid"),
        // Ids are checked as sent (not percent-decoded), as the registrar and the agent do.
        case(ADMIN, "GET", "/v2.6/agents/%FF", None, 400, "agent_id not not valid"),
        case(ADMIN, "POST", "/v2.6/agents/a%80b", bytes(&body()), 400, "agent_id not not valid"),
        case(ADMIN, "GET", "/v2.6/allowlists/%C3%28", None, 400, "Invalid URL"),
        case(ADMIN, "GET", format!("/v2.6/agents/{long}"), None, 400, "agent_id not not valid"),
        case(ADMIN, "DELETE", "/v2.6/agents/%2E%2E", None, 400, "agent_id not not valid"),
        case(ADMIN, "DELETE", "/v2.6/agents/a$b", None, 400, "agent_id not not valid"),
        case(ADMIN, "PUT", "/v2.6/agents/../stop", None, 400, "agent_id not not valid"),
        case(ADMIN, "PUT", "/v2.6/agents/%2E/reactivate", None, 400, "agent_id not not valid"),
        // Unknown nodes.
        case(ADMIN, "GET", "/v2.6/agents/ghost", None, 404, "agent id not found"),
        case(ADMIN, "DELETE", "/v2.6/agents/ghost", None, 404, "agent id not found"),
        case(ADMIN, "PUT", "/v2.6/agents/ghost/stop", None, 404, "agent id not found"),
        case(ADMIN, "PUT", "/v2.6/agents/ghost/reactivate", None, 404, "agent id not found"),
        // Policies: bodies and names.
        case(ADMIN, "POST", "/v2.6/allowlists/x", None, 400, "Expected non zero content length"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", Some(b"{".to_vec()), 400, "not valid JSON"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", Some(b"[]".to_vec()), 400, "must be a JSON object"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", Some(oversized.clone()), 400, "max_upload_size"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", Some(b"{}".to_vec()), 400, "runtime_policy"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", rp(json!(5)), 400, "runtime_policy"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", rp(json!("%%%")), 400, "runtime_policy"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", rp(json!("e30=")), 400, "Runtime policy is malformatted"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", rp_with("tpm_policy", json!("{")), 400, "tpm_policy"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", rp_with("tpm_policy", json!("{\"mask\": \"0xZZ\"}")), 400, "tpm_policy"),
        case(ADMIN, "POST", "/v2.6/allowlists/x", rp_with("tpm_policy", json!(5)), 400, "tpm_policy"),
        case(ADMIN, "PUT", "/v2.6/allowlists/p1", Some(b"{".to_vec()), 400, "not valid JSON"),
        case(ADMIN, "PUT", "/v2.6/allowlists/p1", rp(json!("e30=")), 400, "Runtime policy is malformatted"),
        case(ADMIN, "POST", "/v2.6/allowlists/p1", bytes(&json!({"runtime_policy": policy})), 409, "already exists"),
        case(ADMIN, "PUT", "/v2.6/allowlists/ghost", bytes(&json!({"runtime_policy": policy})), 404, ""),
        case(ADMIN, "DELETE", "/v2.6/allowlists/p1", None, 409, "currently in use by agent kept"),
        case(ADMIN, "DELETE", "/v2.6/allowlists/ghost", None, 404, ""),
        case(ADMIN, "GET", "/v2.6/allowlists/ghost", None, 404, ""),
        case(ADMIN, "POST", "/v2.6/allowlists/..", rp(json!(policy)), 400, "Invalid URL"),
        case(ADMIN, "POST", "/v2.6/allowlists/%2E%2E", rp(json!(policy)), 400, "Invalid URL"),
        case(ADMIN, "POST", format!("/v2.6/allowlists/{long}"), rp(json!(policy)), 400, "Invalid URL"),
        case(ADMIN, "PUT", "/v2.6/allowlists/a%2Fb", rp(json!(policy)), 400, "Invalid URL"),
        case(ADMIN, "GET", "/v2.6/allowlists/.", None, 400, "Invalid URL"),
        case(ADMIN, "DELETE", "/v2.6/allowlists/..", None, 400, "Invalid URL"),
        case(ADMIN, "POST", "/v2.6/mbpolicies/x", None, 400, "Expected non zero content length"),
        case(ADMIN, "POST", "/v2.6/mbpolicies/x", Some(b"{".to_vec()), 400, "not valid JSON"),
        case(ADMIN, "POST", "/v2.6/mbpolicies/x", Some(oversized.clone()), 400, "max_upload_size"),
        case(ADMIN, "POST", "/v2.6/mbpolicies/x", bytes(&json!({"mb_policy": "{"})), 400, "mb_policy"),
        case(ADMIN, "POST", "/v2.6/mbpolicies/x", bytes(&json!({"mb_policy": 5})), 400, "mb_policy"),
        case(ADMIN, "PUT", "/v2.6/mbpolicies/m1", bytes(&json!({"mb_policy": "[1"})), 400, "mb_policy"),
        case(ADMIN, "DELETE", "/v2.6/mbpolicies/m1", None, 409, "in use"),
        case(ADMIN, "GET", "/v2.6/mbpolicies/..", None, 400, "Invalid URL"),
        case(ADMIN, "PUT", "/v2.6/mbpolicies/%2E", bytes(&json!({"mb_policy": "{}"})), 400, "Invalid URL"),
        case(ADMIN, "DELETE", format!("/v2.6/mbpolicies/{long}"), None, 400, "Invalid URL"),
        // Public verification routes.
        case(NO_CERT, "GET", "/v2.6/verify/identity", None, 400, "missing query parameter 'agent_uuid'"),
        case(NO_CERT, "GET", "/v2.6/verify/identity?agent_uuid=kept", None, 400, "missing query parameter 'quote'"),
        case(NO_CERT, "GET", "/v2.6/verify/identity?agent_uuid=kept&quote=&nonce=1&hash_alg=sha256", None, 400, "missing query parameter 'quote'"),
        case(NO_CERT, "GET", "/v2.6/verify/identity?%ZZ&&==&agent_uuid", None, 400, "missing query parameter"),
        case(NO_CERT, "GET", "/v2.6/verify/identity?agent_uuid=ghost&quote=r&nonce=1&hash_alg=sha256", None, 404, "agent id not found"),
        case(NO_CERT, "POST", "/v2.6/verify/evidence", None, 400, "Expected non zero content length"),
        case(NO_CERT, "POST", "/v2.6/verify/evidence", Some(b"{".to_vec()), 400, "not valid JSON"),
        case(NO_CERT, "POST", "/v2.6/verify/evidence", Some(b"7".to_vec()), 400, "must be a JSON object"),
        case(NO_CERT, "POST", "/v2.6/verify/evidence", Some(oversized.clone()), 400, "max_upload_size"),
        case(NO_CERT, "POST", "/v2.6/verify/evidence", bytes(&json!({"type": "tpm", "data": {}})), 400, "Bad Request"),
        case(NO_CERT, "POST", "/v2.6/verify/evidence", bytes(&json!({"type": "tpm", "data": 5})), 400, ""),
        case(NO_CERT, "POST", "/v2.6/verify/evidence", bytes(&json!({"type": "sgx", "data": {}})), 400, ""),
        case(NO_CERT, "POST", "/v2.6/verify/evidence", bytes(&json!({"data": {}})), 400, ""),
        // Admin routes without a client certificate: 403, whatever the body.
        case(NO_CERT, "GET", "/v2.6/agents/", None, 403, "requires admin authentication"),
        case(NO_CERT, "GET", "/v2.6/agents/?bulk=True", None, 403, "requires admin authentication"),
        case(NO_CERT, "GET", "/v2.6/agents/kept", None, 403, "requires admin authentication"),
        case(NO_CERT, "POST", "/v2.6/agents/n1", bytes(&body()), 403, "requires admin authentication"),
        case(NO_CERT, "POST", "/v2.6/agents/..", Some(b"{".to_vec()), 403, "requires admin authentication"),
        case(NO_CERT, "DELETE", "/v2.6/agents/kept", None, 403, "requires admin authentication"),
        case(NO_CERT, "PUT", "/v2.6/agents/kept/stop", None, 403, "requires admin authentication"),
        case(NO_CERT, "PUT", "/v2.6/agents/kept/reactivate", None, 403, "requires admin authentication"),
        case(NO_CERT, "GET", "/v2.6/allowlists/", None, 403, "requires admin authentication"),
        case(NO_CERT, "GET", "/v2.6/allowlists/p1", None, 403, "requires admin authentication"),
        case(NO_CERT, "POST", "/v2.6/allowlists/x", rp(json!(policy)), 403, "requires admin authentication"),
        case(NO_CERT, "PUT", "/v2.6/allowlists/p1", rp(json!(policy)), 403, "requires admin authentication"),
        case(NO_CERT, "DELETE", "/v2.6/allowlists/p1", None, 403, "requires admin authentication"),
        case(NO_CERT, "GET", "/v2.6/mbpolicies/", None, 403, "requires admin authentication"),
        case(NO_CERT, "GET", "/v2.6/mbpolicies/m1", None, 403, "requires admin authentication"),
        case(NO_CERT, "POST", "/v2.6/mbpolicies/x", bytes(&json!({"mb_policy": "{}"})), 403, "requires admin authentication"),
        case(NO_CERT, "PUT", "/v2.6/mbpolicies/m1", bytes(&json!({"mb_policy": "{}"})), 403, "requires admin authentication"),
        case(NO_CERT, "DELETE", "/v2.6/mbpolicies/m1", None, 403, "requires admin authentication"),
        // Wrong methods: Keylime's 405s.
        case(ADMIN, "GET", "/v2.6", None, 405, "Use /agents/ interface instead"),
        case(ADMIN, "POST", "/v2.6/", None, 405, "Use /agents/ interface instead"),
        case(ADMIN, "POST", "/v2.6/agents/", bytes(&body()), 405, "Not Implemented"),
        case(ADMIN, "DELETE", "/v2.6/agents/", None, 405, "Not Implemented"),
        case(ADMIN, "PATCH", "/v2.6/agents/kept", None, 405, "Not Implemented"),
        case(ADMIN, "PUT", "/v2.6/agents/kept", bytes(&body()), 405, "Not Implemented"),
        case(ADMIN, "GET", "/v2.6/agents/kept/stop", None, 405, "Not Implemented"),
        case(ADMIN, "POST", "/v2.6/agents/kept/reactivate", None, 405, "Not Implemented"),
        case(ADMIN, "DELETE", "/v2.6/agents/kept/stop", None, 405, "Not Implemented"),
        case(ADMIN, "POST", "/v2.6/allowlists/", rp(json!(policy)), 405, "Not Implemented"),
        case(ADMIN, "PATCH", "/v2.6/allowlists/p1", rp(json!(policy)), 405, "Not Implemented"),
        case(ADMIN, "DELETE", "/v2.6/mbpolicies/", None, 405, "Not Implemented"),
        case(ADMIN, "PATCH", "/v2.6/mbpolicies/m1", None, 405, "Not Implemented"),
        case(NO_CERT, "POST", "/v2.6/verify/identity", None, 405, "Use GET interface instead"),
        case(NO_CERT, "GET", "/v2.6/verify/evidence", None, 405, "Use POST interface instead"),
        case(NO_CERT, "POST", "/version", None, 405, "Use GET interface instead"),
        case(NO_CERT, "DELETE", "/versions", None, 405, "Use GET interface instead"),
        // Unknown paths and versions: 404.
        case(ADMIN, "GET", "/", None, 404, "Not Found"),
        case(ADMIN, "GET", "/agents/", None, 404, "Not Found"),
        case(ADMIN, "GET", "/v1.0/agents/", None, 404, "Not Found"),
        case(ADMIN, "GET", "/v2.7/agents/", None, 404, "Not Found"),
        case(ADMIN, "GET", "/v3.0/agents/", None, 404, "Not Found"),
        case(ADMIN, "POST", "/v9/agents/n1", bytes(&body()), 404, "Not Found"),
        case(ADMIN, "POST", "/2.6/agents/n1", bytes(&body()), 404, "Not Found"),
        case(ADMIN, "GET", "/v2.6/nothing", None, 404, "Not Found"),
        case(ADMIN, "GET", "/v2.6/agents/kept/other", None, 404, "Not Found"),
        case(ADMIN, "PUT", "/v2.6/agents/kept/stop/x", None, 404, "Not Found"),
        case(ADMIN, "GET", "/v2.6/allowlists/p1/x", None, 404, "Not Found"),
        case(ADMIN, "GET", "/v2.6/verify", None, 404, "Not Found"),
        case(NO_CERT, "GET", "/vigil/v2/readyz", None, 404, "Not Found"),
    ];
    // Bad query strings on the list: an unknown or undecodable verifier id is no
    // match, never an error.
    for q in ["verifier=%ZZ", "verifier=%C3%28&bulk=%FF", "&&==&", "bulk"] {
        cases.push(case(
            ADMIN,
            "GET",
            format!("/v2.6/agents/?{q}&verifier=nobody"),
            None,
            200,
            "Success",
        ));
    }

    for case in &cases {
        let (code, r) = send(&clients, a, case).await;
        let sent: String = case
            .body
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).chars().take(200).collect())
            .unwrap_or_default();
        assert_eq!(code, case.code, "{} {} {sent}: {r}", case.method, case.path);
        if code == 204 {
            continue;
        }
        assert_eq!(r["code"], code, "{} {}: {r}", case.method, case.path);
        let status = r["status"].as_str().unwrap_or_default();
        assert!(
            status.contains(case.text),
            "{} {}: expected '{}' in '{status}'",
            case.method,
            case.path,
            case.text
        );
    }
    // The list queries with a bad verifier id matched nothing.
    let (_, r) = c.call(a, "GET", "/v2.6/agents/?verifier=%ZZ", None).await;
    assert_eq!(r["results"]["uuids"], json!([]));

    // By design not a 4xx: an identity quote that does not parse is "not valid".
    let (code, r) = c
        .call(
            a,
            "GET",
            "/v2.6/verify/identity?agent_uuid=kept&quote=rAAAA&nonce=1&hash_alg=sha256",
            None,
        )
        .await;
    assert_eq!((code, &r["results"]["valid"]), (200, &json!(0)), "{r}");
    let (code, r) = c
        .call(
            a,
            "GET",
            &format!(
                "/v2.6/verify/identity?agent_uuid=kept&quote=r{}&nonce=1&hash_alg=md5",
                B64.encode([0u8; 64])
            ),
            None,
        )
        .await;
    assert_eq!((code, &r["results"]["valid"]), (200, &json!(0)), "{r}");
    // Evidence with every parameter, none of them usable: Keylime's 200 "not valid".
    let evidence = json!({"type": "tpm", "data": {
        "quote": "r", "nonce": "n", "hash_alg": "sha256", "tpm_ek": "%%", "tpm_ak": "%%",
        "tpm_policy": "{}"}});
    let (code, r) = c
        .call(a, "POST", "/v2.6/verify/evidence", Some(evidence))
        .await;
    assert_eq!((code, &r["results"]["valid"]), (200, &json!(false)), "{r}");

    assert_eq!(stored(c, a).await, before);
    v.shutdown().await;
}

on_both_backends!(bad_input_is_rejected_and_stores_nothing);
