//! The REST API: Keylime's verifier routes (compat §1.6), envelope and texts (§1.3),
//! dispatched by hand so versions, trailing slashes and 404/405 behave as in Keylime.

// Early returns carry a ready `Response` as their error, the axum idiom.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use vigil_service::server::Peer;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tracing::{error, info, warn};
use vigil_core::attestation::{Deletion, NodeStatus, StatusEnrolment};
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier};
use vigil_core::HashAlg;
use vigil_store::{NewMbPolicy, NewRuntimePolicy, StoreError, VerifierAgent};

use crate::engine::{self, Command, Engine};
use crate::enrol;

/// The API version Keylime 7.14.3 calls current.
pub const CURRENT_VERSION: &str = "2.6";
/// The versions served (the v2 routes; Vigil's verifier has no push mode).
pub const SUPPORTED_VERSIONS: [&str; 7] = ["2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];
/// The agent API versions the verifier can talk (for negotiation with a node).
pub(crate) const AGENT_VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];

/// Shared by every request.
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
}

/// `{"code", "status", "results"}` with the HTTP status `code`.
pub(crate) fn envelope(code: StatusCode, status: impl Into<String>, results: Value) -> Response {
    let body = json!({"code": code.as_u16(), "status": status.into(), "results": results});
    (code, Json(body)).into_response()
}

fn success(results: Value) -> Response {
    envelope(StatusCode::OK, "Success", results)
}

fn empty() -> Value {
    Value::Object(Map::new())
}

fn plain(code: StatusCode) -> Response {
    envelope(code, code.canonical_reason().unwrap_or("Error"), empty())
}

pub(crate) fn bad_request(message: impl Into<String>) -> Response {
    envelope(StatusCode::BAD_REQUEST, message, empty())
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> Response {
    error!("{what}: {e}");
    envelope(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error",
        empty(),
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Version,
    Root,
    Agents,
    Agent(String),
    Reactivate(String),
    Stop(String),
    Allowlists,
    Allowlist(String),
    MbPolicies,
    MbPolicy(String),
    VerifyIdentity,
    VerifyEvidence,
}

/// `v2`, `v2.0`…`v2.6`.
fn api_version(prefix: &str) -> bool {
    let Some(v) = prefix.strip_prefix('v') else {
        return false;
    };
    v == "2" || SUPPORTED_VERSIONS.contains(&v)
}

fn parse_route(path: &str) -> Option<Route> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut parts = trimmed.strip_prefix('/')?.split('/');
    let first = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    if (first == "version" || first == "versions") && rest.is_empty() {
        return Some(Route::Version);
    }
    if !api_version(first) {
        return None;
    }
    let s = |x: &&str| (*x).to_owned();
    Some(match rest.as_slice() {
        [] => Route::Root,
        ["agents"] => Route::Agents,
        ["agents", id] => Route::Agent(s(id)),
        ["agents", id, "reactivate"] => Route::Reactivate(s(id)),
        ["agents", id, "stop"] => Route::Stop(s(id)),
        ["allowlists"] => Route::Allowlists,
        ["allowlists", name] => Route::Allowlist(s(name)),
        ["mbpolicies"] => Route::MbPolicies,
        ["mbpolicies", name] => Route::MbPolicy(s(name)),
        ["verify", "identity"] => Route::VerifyIdentity,
        ["verify", "evidence"] => Route::VerifyEvidence,
        _ => return None,
    })
}

/// Admin routes need a verified client certificate (Keylime's admin mTLS).
fn admin(t: &Peer, action: &str) -> Result<(), Response> {
    if t.client.is_none() {
        return Err(envelope(
            StatusCode::FORBIDDEN,
            format!("Action {action} requires admin authentication (mTLS certificate)"),
            empty(),
        ));
    }
    Ok(())
}

/// Keylime's `valid_agent_id`: letters, digits, `_`, `.`, `-`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn checked_id(id: &str) -> Result<(), Response> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(bad_request("agent_id not not valid"))
    }
}

fn checked_name(name: &str) -> Result<(), Response> {
    if valid_id(name) {
        Ok(())
    } else {
        Err(bad_request("Invalid URL"))
    }
}

/// The request body as a JSON object, or Keylime's 400s.
async fn json_body(req: Request, limit: usize) -> Result<Map<String, Value>, Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_big = || {
        bad_request(format!(
            "the request body exceeds max_upload_size ({limit} bytes)"
        ))
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_big())?;
    if bytes.is_empty() {
        return Err(bad_request("Expected non zero content length"));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_request(
            "Exception error: the body must be a JSON object",
        )),
        Err(e) => Err(bad_request(format!(
            "Exception error: the body is not valid JSON: {e}"
        ))),
    }
}

/// Every request comes here.
pub(crate) async fn dispatch(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let transport = req.extensions().get::<Peer>().cloned().unwrap_or_default();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = route(&state, &transport, req).await;
    let code = response.status().as_u16();
    info!(%method, %path, code, client = transport.client.as_deref().unwrap_or("-"), "request");
    response
}

/// The query's parameters as Keylime reads them (`urllib.parse.parse_qsl`): a parameter
/// with an empty value is dropped, so `keylime_tenant -c cvlist`'s `?verifier=` (no
/// `-vi`) means "every verifier", not "the verifier with an empty id".
fn query(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!v.is_empty()).then(|| (percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

async fn route(state: &AppState, t: &Peer, req: Request) -> Response {
    let Some(route) = parse_route(req.uri().path()) else {
        return plain(StatusCode::NOT_FOUND);
    };
    let method = req.method().clone();
    let limit = state.engine.config.max_upload_size;
    let e = &state.engine;
    let result: Result<Response, Response> = async {
        Ok(match (route, method) {
            (Route::Version, Method::GET) => success(json!({
                "current_version": CURRENT_VERSION,
                "supported_versions": SUPPORTED_VERSIONS,
            })),
            (Route::Version, _) => envelope(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not Implemented: Use GET interface instead",
                empty(),
            ),
            (Route::Root, _) => envelope(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not Implemented: Use /agents/ interface instead",
                empty(),
            ),
            (Route::Agents, Method::GET) => {
                admin(t, "get_agents")?;
                let q = query(&req);
                // Keylime answers in bulk whenever `bulk` has a value, whatever it is.
                list(e, param(&q, "verifier"), param(&q, "bulk").is_some()).await
            }
            (Route::Agent(id), Method::GET) => {
                admin(t, "get_agent")?;
                checked_id(&id)?;
                show(e, &id).await
            }
            (Route::Agent(id), Method::POST) => {
                admin(t, "create_agent")?;
                checked_id(&id)?;
                let body = json_body(req, limit).await?;
                enrol::enrol(e, &id, &body).await
            }
            (Route::Agent(id), Method::DELETE) => {
                admin(t, "delete_agent")?;
                checked_id(&id)?;
                delete(e, &id).await
            }
            (Route::Reactivate(id), Method::PUT) => {
                admin(t, "reactivate_agent")?;
                checked_id(&id)?;
                tenant_action(e, &id, true).await
            }
            (Route::Stop(id), Method::PUT) => {
                admin(t, "stop_agent")?;
                checked_id(&id)?;
                tenant_action(e, &id, false).await
            }
            (Route::Allowlists, Method::GET) => {
                admin(t, "get_allowlists")?;
                match e.store.policies().list_runtime().await {
                    Ok(names) => success(json!({ "runtimepolicy names": names })),
                    Err(err) => internal("listing runtime policies", &err),
                }
            }
            (Route::Allowlist(name), Method::GET) => {
                admin(t, "get_allowlist")?;
                checked_name(&name)?;
                match e.store.policies().get_runtime(&name).await {
                    Ok(Some(p)) => success(json!({
                        "name": p.name,
                        "tmp_policy": null,
                        "runtime_policy": p.ima_policy,
                    })),
                    Ok(None) => envelope(
                        StatusCode::NOT_FOUND,
                        format!("Runtime policy {name} not found"),
                        empty(),
                    ),
                    Err(err) => internal("reading a runtime policy", &err),
                }
            }
            (Route::Allowlist(name), m @ (Method::POST | Method::PUT)) => {
                admin(t, "update_allowlist")?;
                checked_name(&name)?;
                let body = json_body(req, limit).await?;
                put_allowlist(e, &name, &body, m == Method::POST).await
            }
            (Route::Allowlist(name), Method::DELETE) => {
                admin(t, "delete_allowlist")?;
                checked_name(&name)?;
                match e.store.policies().delete_runtime(&name).await {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(StoreError::NotFound { .. }) => envelope(
                        StatusCode::NOT_FOUND,
                        format!("Runtime policy {name} not found"),
                        empty(),
                    ),
                    Err(StoreError::PolicyInUse {
                        agents, agent_id, ..
                    }) => envelope(
                        StatusCode::CONFLICT,
                        in_use_text("allowlist", agents, &agent_id),
                        empty(),
                    ),
                    Err(err) => internal("deleting a runtime policy", &err),
                }
            }
            (Route::MbPolicies, Method::GET) => {
                admin(t, "get_mbpolicies")?;
                match e.store.policies().list_mb().await {
                    Ok(names) => success(json!({ "mbpolicy names": names })),
                    Err(err) => internal("listing mb policies", &err),
                }
            }
            (Route::MbPolicy(name), Method::GET) => {
                admin(t, "get_mbpolicy")?;
                checked_name(&name)?;
                match e.store.policies().get_mb(&name).await {
                    Ok(Some(p)) => success(json!({ "name": p.name, "mb_policy": p.mb_policy })),
                    Ok(None) => envelope(
                        StatusCode::NOT_FOUND,
                        format!("Measured boot policy {name} not found"),
                        empty(),
                    ),
                    Err(err) => internal("reading an mb policy", &err),
                }
            }
            (Route::MbPolicy(name), m @ (Method::POST | Method::PUT)) => {
                admin(t, "update_mbpolicy")?;
                checked_name(&name)?;
                let body = json_body(req, limit).await?;
                put_mbpolicy(e, &name, &body, m == Method::POST).await
            }
            (Route::MbPolicy(name), Method::DELETE) => {
                admin(t, "delete_mbpolicy")?;
                checked_name(&name)?;
                match e.store.policies().delete_mb(&name).await {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(StoreError::NotFound { .. }) => envelope(
                        StatusCode::NOT_FOUND,
                        format!("Measured boot policy {name} not found"),
                        empty(),
                    ),
                    Err(StoreError::PolicyInUse {
                        agents, agent_id, ..
                    }) => envelope(
                        StatusCode::CONFLICT,
                        in_use_text("mb_policy", agents, &agent_id),
                        empty(),
                    ),
                    Err(err) => internal("deleting an mb policy", &err),
                }
            }
            (Route::VerifyIdentity, Method::GET) => {
                let q = query(&req);
                verify_identity(e, &q).await
            }
            (Route::VerifyIdentity, _) => envelope(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not Implemented: Use GET interface instead",
                empty(),
            ),
            (Route::VerifyEvidence, Method::POST) => {
                let body = json_body(req, limit).await?;
                crate::evidence::verify_evidence(&body)
            }
            (Route::VerifyEvidence, _) => envelope(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not Implemented: Use POST interface instead",
                empty(),
            ),
            _ => envelope(StatusCode::METHOD_NOT_ALLOWED, "Not Implemented", empty()),
        })
    }
    .await;
    result.unwrap_or_else(|r| r)
}

fn not_found() -> Response {
    envelope(StatusCode::NOT_FOUND, "agent id not found", empty())
}

/// The status object of a stored agent.
async fn status_of(e: &Engine, agent: &VerifierAgent) -> NodeStatus {
    let en = &agent.enrolment;
    let has_runtime_policy = match &en.runtime_policy {
        Some(name) => {
            matches!(e.store.policies().get_runtime(name).await, Ok(Some(p)) if p.generator.unwrap_or(0) > 1)
        }
        None => false,
    };
    let has_mb_refstate = match &en.mb_policy {
        Some(name) => matches!(e.store.policies().get_mb(name).await,
            Ok(Some(p)) if p.mb_policy.as_deref().is_some_and(|t| !matches!(t.trim(), "" | "null" | "{}"))),
        None => false,
    };
    let node = engine::node_of(&e.attestation, agent);
    NodeStatus::new(
        StatusEnrolment {
            v: en.v.clone(),
            ip: en.ip.clone(),
            port: en.port,
            tpm_policy: en.tpm_policy.clone(),
            meta_data: en.meta_data.clone(),
            has_mb_refstate,
            has_runtime_policy,
            accept_tpm_hash_algs: en.accept_tpm_hash_algs.clone(),
            accept_tpm_encryption_algs: en.accept_tpm_encryption_algs.clone(),
            accept_tpm_signing_algs: en.accept_tpm_signing_algs.clone(),
            verifier_id: en.verifier_id.clone(),
            verifier_ip: en.verifier_ip.clone(),
            verifier_port: en.verifier_port,
        },
        &node,
    )
}

async fn show(e: &Engine, id: &str) -> Response {
    match e.store.verifier_agents().get(id).await {
        Ok(Some(a)) => success(status_of(e, &a).await.to_json()),
        Ok(None) => not_found(),
        Err(err) => internal("reading an agent", &err),
    }
}

async fn list(e: &Engine, verifier: Option<&str>, bulk: bool) -> Response {
    let ids = match e.store.verifier_agents().list(verifier).await {
        Ok(ids) => ids,
        Err(err) => return internal("listing agents", &err),
    };
    if !bulk {
        // Keylime's quirk: a list of one-element lists (serialised SQL rows).
        let rows: Vec<Value> = ids.into_iter().map(|id| json!([id])).collect();
        return success(json!({ "uuids": rows }));
    }
    let mut out = Map::new();
    for id in ids {
        if let Ok(Some(a)) = e.store.verifier_agents().get(&id).await {
            out.insert(id, status_of(e, &a).await.to_json());
        }
    }
    success(Value::Object(out))
}

async fn delete(e: &Arc<Engine>, id: &str) -> Response {
    match e.store.verifier_agents().get(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(err) => return internal("reading an agent", &err),
    }
    let (tx, rx) = oneshot::channel();
    if e.command(id, Command::Delete(tx)) {
        return match rx.await {
            Ok(Deletion::Immediate) => success(empty()),
            Ok(Deletion::Deferred) => envelope(StatusCode::ACCEPTED, "Accepted", empty()),
            Err(_) => not_found(),
        };
    }
    // Not attested here (another replica, or stopped for good): delete the record; a
    // replica attesting it stops at its next write.
    match e.store.verifier_agents().delete(id).await {
        Ok(()) => {
            info!(agent_id = id, "agent deleted");
            success(empty())
        }
        Err(StoreError::NotFound { .. }) => not_found(),
        Err(err) => internal("deleting an agent", &err),
    }
}

async fn tenant_action(e: &Arc<Engine>, id: &str, reactivate: bool) -> Response {
    let agent = match e.store.verifier_agents().get(id).await {
        Ok(Some(a)) => a,
        Ok(None) => return not_found(),
        Err(err) => return internal("reading an agent", &err),
    };
    let (tx, rx) = oneshot::channel();
    let cmd = if reactivate {
        Command::Reactivate(tx)
    } else {
        Command::Stop(tx)
    };
    if e.command(id, cmd) {
        return match rx.await {
            Ok(()) => success(empty()),
            Err(_) => not_found(),
        };
    }
    if e.config.lease_ttl > 0 {
        let holder = match e.store.leases().get(id).await {
            Ok(Some(l)) => l.holder,
            _ => "no replica yet".to_owned(),
        };
        return envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("agent {id} is attested by replica {holder}: send this request to it"),
            empty(),
        );
    }
    // No task (its enrolment could not be loaded): record the tenant's decision.
    let mut node = engine::node_of(&e.attestation, &agent);
    let t = engine::now();
    let _ = if reactivate {
        node.reactivate(t)
    } else {
        node.stop(t)
    };
    let update = vigil_store::RoundUpdate {
        engine_state: serde_json::to_string(&node.snapshot()).ok(),
        ..vigil_store::RoundUpdate::state_only(node.state().code())
    };
    if let Err(err) = e
        .store
        .verifier_agents()
        .record_round(id, update, None)
        .await
    {
        return internal("recording a tenant action", &err);
    }
    if reactivate {
        e.enrolled(id).await;
    }
    success(empty())
}

/// `runtime_policy` (base64 of the policy JSON) → its text, validated by parsing.
pub(crate) fn runtime_policy_text(b64: &str) -> Result<(String, RuntimePolicy), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|err| format!("runtime_policy is not base64: {err}"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| "runtime_policy is not UTF-8 text".to_owned())?;
    let parsed = RuntimePolicy::from_json(text.as_bytes())
        .map_err(|err| format!("Runtime policy is malformatted: {err}"))?;
    Ok((text, parsed))
}

/// Keylime's text when a signature is required and there is no key to check it with.
const NO_POLICY_KEY: &str = "Runtime policy signature verification required but no key was given!";

/// Keylime's `require_allow_list_signatures` check (`ima.verify_runtime_policy`), run
/// only when the option is on: the policy `text` must be a DSSE envelope that verifies
/// with the request's `runtime_policy_key` (base64 of a PEM EC public key or
/// certificate). `None` is a request without an inline policy, which Keylime replaces
/// by its unsigned empty policy and so refuses the same way.
pub(crate) fn check_policy_signature(
    text: Option<&str>,
    body: &Map<String, Value>,
) -> Result<(), Response> {
    use vigil_core::policy::runtime::{dsse_payload, verify_dsse, DsseError, PolicyError};
    let unauthorized = |m: &str| envelope(StatusCode::UNAUTHORIZED, m, empty());
    // Keylime looks a key up only for an envelope: a plain policy never has one.
    let envelope_text = text.filter(|t| matches!(dsse_payload(t.as_bytes()), Ok(Some(_))));
    let key = body
        .get("runtime_policy_key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty());
    let (Some(text), Some(key)) = (envelope_text, key) else {
        return Err(unauthorized(NO_POLICY_KEY));
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|err| {
            bad_request(format!(
                "Exception error: runtime_policy_key is not base64: {err}"
            ))
        })?;
    match verify_dsse(text.as_bytes(), &key) {
        Ok(_) => Ok(()),
        // Keylime fails with a 500 on a key it cannot load; this is the caller's error.
        Err(PolicyError::Signature(DsseError::Key(m))) => Err(bad_request(format!(
            "Exception error: runtime_policy_key: {m}"
        ))),
        Err(_) => Err(unauthorized(
            "Runtime policy failed DSSE signature verification!",
        )),
    }
}

async fn put_allowlist(
    e: &Engine,
    name: &str,
    body: &Map<String, Value>,
    create: bool,
) -> Response {
    let Some(b64) = body.get("runtime_policy").and_then(Value::as_str) else {
        return bad_request(
            "Exception error: runtime_policy is required (base64 of the policy JSON)",
        );
    };
    let (text, parsed) = match runtime_policy_text(b64) {
        Ok(x) => x,
        Err(m) => return bad_request(m),
    };
    if e.config.require_allow_list_signatures {
        if let Err(refusal) = check_policy_signature(Some(&text), body) {
            return refusal;
        }
    }
    let tpm_policy = match body.get("tpm_policy") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => Some(v.to_string()),
    };
    let policy = NewRuntimePolicy {
        name: name.to_owned(),
        generator: Some(i64::from(parsed.generator())),
        tpm_policy,
        ima_policy: Some(text),
    };
    let result = if create {
        e.store.policies().create_runtime(policy).await
    } else {
        e.store.policies().update_runtime(policy).await
    };
    match result {
        Ok(_) => {
            e.cache.bump();
            envelope(StatusCode::CREATED, "Created", empty())
        }
        Err(StoreError::AlreadyExists { .. }) => envelope(
            StatusCode::CONFLICT,
            format!("Runtime policy with name {name} already exists"),
            empty(),
        ),
        Err(StoreError::NotFound { .. }) => envelope(
            StatusCode::NOT_FOUND,
            format!("Runtime policy with name {name} does not already exist, use POST to create"),
            empty(),
        ),
        Err(err) => internal("storing a runtime policy", &err),
    }
}

/// `mb_policy` must be JSON text (or null).
pub(crate) fn mb_policy_text(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s)
                .map_err(|err| format!("mb_policy is not JSON text: {err}"))?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err("mb_policy must be a JSON string".into()),
    }
}

async fn put_mbpolicy(e: &Engine, name: &str, body: &Map<String, Value>, create: bool) -> Response {
    let text = match mb_policy_text(body.get("mb_policy")) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return bad_request(
                "Exception error: mb_policy is required (the reference state as JSON text)",
            )
        }
        Err(m) => return bad_request(m),
    };
    let policy = NewMbPolicy {
        name: name.to_owned(),
        mb_policy: Some(text),
    };
    let result = if create {
        e.store.policies().create_mb(policy).await
    } else {
        e.store.policies().update_mb(policy).await
    };
    match result {
        Ok(_) => {
            e.cache.bump();
            envelope(StatusCode::CREATED, "Created", empty())
        }
        Err(StoreError::AlreadyExists { .. }) => envelope(
            StatusCode::CONFLICT,
            format!("Measured boot policy with name {name} already exists"),
            empty(),
        ),
        Err(StoreError::NotFound { .. }) => envelope(
            StatusCode::CONFLICT,
            format!("Measured boot policy with name {name} does not already exist"),
            empty(),
        ),
        Err(err) => internal("storing an mb policy", &err),
    }
}

/// Keylime's 409 text for deleting a policy in use, which names one agent. Keylime
/// fails with a 500 when several use it; Vigil names the first and counts the others.
fn in_use_text(kind: &str, agents: u64, first: &str) -> String {
    let text = format!("Can't delete {kind} as it's currently in use by agent {first}");
    match agents {
        0 | 1 => text,
        n => format!("{text} and {} more", n - 1),
    }
}

/// `GET verify/identity`: the quote's signature, nonce and PCR digest against the
/// enrolled AK (no clock and no PCR checks, as Keylime).
async fn verify_identity(e: &Engine, q: &[(String, String)]) -> Response {
    let mut args = Vec::new();
    for k in ["agent_uuid", "quote", "nonce", "hash_alg"] {
        match param(q, k) {
            Some(v) => args.push(v),
            None => return bad_request(format!("missing query parameter '{k}'")),
        }
    }
    let (id, quote, nonce, hash_alg) = (args[0], args[1], args[2], args[3]);
    let agent = match e.store.verifier_agents().get(id).await {
        Ok(Some(a)) => a,
        Ok(None) => return not_found(),
        Err(err) => return internal("reading an agent", &err),
    };
    let failure = (|| {
        let ak =
            AkPublicKey::from_spki_or_tpm2b(&agent.enrolment.ak_tpm).map_err(|e| e.to_string())?;
        let bank = HashAlg::from_name(hash_alg)
            .ok_or_else(|| format!("unknown hash algorithm {hash_alg}"))?;
        let quote = KeylimeQuote::parse(quote).map_err(|e| e.to_string())?;
        QuoteVerifier::new(ak)
            .verify(&quote, nonce.as_bytes(), bank)
            .map(|_| ())
            .map_err(|f| {
                f.events()
                    .iter()
                    .map(|ev| ev.context.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    })();
    match failure {
        Ok(()) => success(json!({"valid": 1})),
        Err(reason) => {
            warn!(agent_id = id, "identity quote rejected: {reason}");
            success(json!({"valid": 0, "reason": reason}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route("/version"), Some(Route::Version));
        assert_eq!(parse_route("/versions/"), Some(Route::Version));
        assert_eq!(parse_route("/v2.6/"), Some(Route::Root));
        assert_eq!(parse_route("/v2.1/agents/"), Some(Route::Agents));
        assert_eq!(parse_route("/v2/agents/a"), Some(Route::Agent("a".into())));
        assert_eq!(
            parse_route("/v2.6/agents/a/stop"),
            Some(Route::Stop("a".into()))
        );
        assert_eq!(
            parse_route("/v2.6/mbpolicies/p"),
            Some(Route::MbPolicy("p".into()))
        );
        assert_eq!(
            parse_route("/v2.6/verify/evidence"),
            Some(Route::VerifyEvidence)
        );
        for bad in [
            "/",
            "/v1.0/agents",
            "/v2.7/agents",
            "/v3.0/agents",
            "/v2.6/agents//x",
            "/v2.6/nope",
        ] {
            assert_eq!(parse_route(bad), None, "{bad}");
        }
        assert!(valid_id("d432fbb3-d2f1-4a97-9ef7-75bd81c00000"));
        assert!(!valid_id("a/b") && !valid_id("") && !valid_id("a b"));
        assert_eq!(percent_decode("a%2Bb+c%zz"), "a+b c%zz");
    }

    #[test]
    fn in_use_names_an_agent_as_keylime() {
        assert_eq!(
            in_use_text("allowlist", 1, "n1"),
            "Can't delete allowlist as it's currently in use by agent n1"
        );
        assert_eq!(
            in_use_text("mb_policy", 3, "n1"),
            "Can't delete mb_policy as it's currently in use by agent n1 and 2 more"
        );
    }
}
