//! The REST API: Keylime's registrar routes, envelope, status codes and texts
//! (compat §1.3, §1.5), dispatched by hand so versions, trailing slashes and
//! 404/405 behave as in Keylime.

// Early returns carry a ready `Response` as their error, the axum idiom; its size is
// irrelevant next to a network round trip.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use rand_core::OsRng;
use serde_json::{json, Map, Value};
use tracing::{error, info, warn};
use vigil_core::tpm::credential::{self, make_credential, random_challenge};
use vigil_store::{RegisterOutcome, Store, StoreError};

use crate::register::{self, check_agent_id, Checks, FieldError};

/// The API version Keylime 7.14.3 calls current.
pub const CURRENT_VERSION: &str = "2.6";
/// The versions served: every 2.x (the v2 routes) and 3.0 (the RFC 9110 routes).
pub const SUPPORTED_VERSIONS: [&str; 8] = ["2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0"];

/// Keylime's text for a refused re-registration.
pub const IDENTITY_CHANGED: &str =
    "Agent re-registration with different TPM identity is forbidden for security reasons";
/// Keylime's text for a registration with invalid data (Vigil appends the field).
pub const INVALID_DATA: &str = "Could not register agent with invalid data";

/// Shared by every request.
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) checks: Checks,
    pub(crate) max_upload_size: usize,
}

/// How the request arrived, set by the listener on every request.
type Transport = vigil_tls::http::Peer;

/// `{"code", "status", "results"}` with the HTTP status `code`.
fn envelope(code: StatusCode, status: impl Into<String>, results: Value) -> Response {
    let body = json!({"code": code.as_u16(), "status": status.into(), "results": results});
    (code, Json(body)).into_response()
}

fn success(results: Value) -> Response {
    envelope(StatusCode::OK, "Success", results)
}

fn empty() -> Value {
    Value::Object(Map::new())
}

fn reason(code: StatusCode) -> &'static str {
    code.canonical_reason().unwrap_or("Error")
}

fn plain(code: StatusCode) -> Response {
    envelope(code, reason(code), empty())
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    envelope(
        StatusCode::BAD_REQUEST,
        format!("Bad Request: {message}"),
        empty(),
    )
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> Response {
    error!("{what}: {e}");
    plain(StatusCode::INTERNAL_SERVER_ERROR)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The routes, after the version prefix.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Version,
    VersionRoot { major: u8 },
    Agents { major: u8 },
    Agent { major: u8, id: String },
    Activate { major: u8, id: String },
}

/// `v2`, `v2.0`…`v2.6`, `v3`, `v3.0` → the major version.
fn api_major(prefix: &str) -> Option<u8> {
    let v = prefix.strip_prefix('v')?;
    match v {
        "2" | "3" => v.parse().ok(),
        _ => SUPPORTED_VERSIONS
            .contains(&v)
            .then(|| v[..1].parse().ok())
            .flatten(),
    }
}

fn parse_route(path: &str) -> Option<Route> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut parts = trimmed.strip_prefix('/')?.split('/');
    let first = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    if first == "version" && rest.is_empty() {
        return Some(Route::Version);
    }
    let major = api_major(first)?;
    match rest.as_slice() {
        [] if path.ends_with('/') => Some(Route::VersionRoot { major }),
        ["agents"] => Some(Route::Agents { major }),
        ["agents", id] => Some(Route::Agent {
            major,
            id: (*id).to_owned(),
        }),
        ["agents", id, "activate"] => Some(Route::Activate {
            major,
            id: (*id).to_owned(),
        }),
        _ => None,
    }
}

/// Admin routes need the TLS port and a verified client certificate.
fn admin(t: &Transport, action: &str) -> Result<(), Response> {
    if !t.https {
        // Keylime answers 400 when an HTTPS-only route is asked for over HTTP.
        return Err(bad_request(
            "this route is served only on the HTTPS port (tls_port), with a client certificate",
        ));
    }
    if t.client.is_none() {
        return Err(envelope(
            StatusCode::FORBIDDEN,
            format!("Action {action} requires admin authentication (mTLS certificate)"),
            empty(),
        ));
    }
    Ok(())
}

/// The request body as a JSON object (`{}` when empty), or a 400.
async fn json_body(req: Request, limit: usize) -> Result<Map<String, Value>, Response> {
    let too_big = || {
        bad_request(format!(
            "the request body exceeds max_upload_size ({limit} bytes)"
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_big())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(envelope(
            StatusCode::BAD_REQUEST,
            "Malformed Request Parameter: the body must be a JSON object",
            empty(),
        )),
        Err(e) => Err(envelope(
            StatusCode::BAD_REQUEST,
            format!("Malformed Request Parameter: the body is not valid JSON: {e}"),
            empty(),
        )),
    }
}

/// Every request comes here; see the module docs.
pub(crate) async fn dispatch(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let transport = req
        .extensions()
        .get::<Transport>()
        .cloned()
        .unwrap_or_default();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = route(&state, &transport, req).await;
    let code = response.status().as_u16();
    match &transport.client {
        Some(client) => info!(%method, %path, code, client = %client, "request"),
        None => info!(%method, %path, code, https = transport.https, "request"),
    }
    response
}

async fn route(state: &AppState, t: &Transport, req: Request) -> Response {
    let Some(route) = parse_route(req.uri().path()) else {
        return plain(StatusCode::NOT_FOUND);
    };
    let method = req.method().clone();
    let limit = state.max_upload_size;
    let result: Result<Response, Response> = async {
        Ok(match (route, method) {
            (Route::Version, Method::GET) => success(json!({
                "current_version": CURRENT_VERSION,
                "supported_versions": SUPPORTED_VERSIONS,
            })),
            (Route::VersionRoot { major: 3 }, Method::GET) => success(empty()),
            (Route::VersionRoot { .. }, _) => plain(StatusCode::NOT_FOUND),
            (Route::Agents { .. }, Method::GET) => {
                admin(t, "list_registrations")?;
                list(state).await
            }
            (Route::Agents { .. }, Method::POST) => {
                let body = json_body(req, limit).await?;
                let id = register::opt_str(&body, "agent_id")
                    .map_err(field_error)?
                    .ok_or_else(|| {
                        field_error(FieldError {
                            field: "agent_id",
                            message: "is required".into(),
                        })
                    })?
                    .to_owned();
                register(state, &id, &body).await
            }
            (Route::Agent { id, .. }, Method::GET) => {
                admin(t, "read_registration")?;
                show(state, &id).await
            }
            (Route::Agent { id, .. }, Method::DELETE) => {
                admin(t, "delete_registration")?;
                delete(state, &id).await
            }
            (Route::Agent { major: 2, id }, Method::POST) => {
                let body = json_body(req, limit).await?;
                register(state, &id, &body).await
            }
            (Route::Agent { major: 2, id }, Method::PUT)
            | (Route::Activate { major: 2, id }, Method::PUT)
            | (Route::Activate { id, .. }, Method::POST) => {
                let body = json_body(req, limit).await?;
                activate(state, &id, &body).await
            }
            _ => plain(StatusCode::METHOD_NOT_ALLOWED),
        })
    }
    .await;
    result.unwrap_or_else(|r| r)
}

fn field_error(e: FieldError) -> Response {
    envelope(
        StatusCode::BAD_REQUEST,
        format!("{INVALID_DATA}: {e}"),
        empty(),
    )
}

fn checked_id(id: &str) -> Result<(), Response> {
    check_agent_id(id).map_err(bad_request)
}

async fn list(state: &AppState) -> Response {
    match state.store.registrar_agents().list().await {
        Ok(ids) => success(json!({ "uuids": ids })),
        Err(e) => internal("listing agents", &e),
    }
}

fn not_found(id: &str) -> Response {
    envelope(
        StatusCode::NOT_FOUND,
        format!("Agent with ID '{id}' not found"),
        empty(),
    )
}

async fn show(state: &AppState, id: &str) -> Response {
    if let Err(r) = checked_id(id) {
        return r;
    }
    let agent = match state.store.registrar_agents().get(id).await {
        Ok(Some(a)) => a,
        Ok(None) => return not_found(id),
        Err(e) => return internal("reading agent", &e),
    };
    if !agent.active {
        return envelope(
            StatusCode::NOT_FOUND,
            format!("Agent with ID '{id}' has not been activated"),
            empty(),
        );
    }
    success(json!({
        "agent_id": agent.agent_id,
        "ek_tpm": agent.ek_tpm.as_deref().map(b64),
        "ekcert": agent.ekcert.as_deref().map(b64),
        "aik_tpm": b64(&agent.aik_tpm),
        "mtls_cert": agent.mtls_cert,
        "ip": agent.ip,
        "port": agent.port,
        "regcount": agent.regcount,
    }))
}

async fn delete(state: &AppState, id: &str) -> Response {
    if let Err(r) = checked_id(id) {
        return r;
    }
    match state.store.registrar_agents().delete(id).await {
        Ok(()) => {
            info!(agent_id = id, "registration deleted");
            success(empty())
        }
        Err(StoreError::NotFound { .. }) => not_found(id),
        Err(e) => internal("deleting agent", &e),
    }
}

async fn register(state: &AppState, id: &str, body: &Map<String, Value>) -> Response {
    let v = match register::validate(id, body, &state.checks) {
        Ok(v) => v,
        Err(e) => {
            warn!(agent_id = id, "registration refused: {e}");
            return field_error(e);
        }
    };
    for w in &v.warnings {
        warn!(agent_id = id, "{w}");
    }
    // The challenge and the credential's seed come from the OS: the service is the
    // only place Vigil draws randomness for registration.
    let challenge = match random_challenge(&mut OsRng) {
        Ok(c) => c,
        Err(e) => return internal("drawing the challenge", &e),
    };
    let blob = match make_credential(&v.ek, &v.ak.name(), &challenge, &mut OsRng) {
        Ok(b) => b,
        Err(e) => {
            return field_error(FieldError {
                field: "ek_tpm",
                message: format!("cannot be used for credential activation: {e}"),
            })
        }
    };
    let mut registration = v.registration;
    registration.key = Some(credential::registrar_key(&challenge));
    match state.store.registrar_agents().register(registration).await {
        Ok(RegisterOutcome::Created(a) | RegisterOutcome::Updated(a)) => {
            info!(agent_id = id, regcount = a.regcount, "agent registered");
            success(json!({ "blob": b64(&blob.to_tpm2_tools()) }))
        }
        Ok(RegisterOutcome::IdentityChanged { field }) => {
            warn!(
                agent_id = id,
                %field,
                "SECURITY: re-registration with a different TPM identity refused; delete the agent first to register a new TPM"
            );
            envelope(StatusCode::FORBIDDEN, IDENTITY_CHANGED, empty())
        }
        Err(e) => internal("storing registration", &e),
    }
}

async fn activate(state: &AppState, id: &str, body: &Map<String, Value>) -> Response {
    let tag = match body.get("auth_tag") {
        Some(Value::String(s)) => s.as_str(),
        _ => return bad_request("auth_tag is required (a hex string)"),
    };
    if let Err(e) = register::check_auth_tag_format(tag) {
        return bad_request(e);
    }
    if let Err(r) = checked_id(id) {
        return r;
    }
    let agents = state.store.registrar_agents();
    let agent = match agents.get(id).await {
        Ok(Some(a)) => a,
        Ok(None) => return not_found(id),
        Err(e) => return internal("reading agent", &e),
    };
    let secret = agent
        .key
        .as_deref()
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok());
    let accepted = secret.is_some_and(|s| credential::check_auth_tag(&s, id, tag).is_ok());
    if accepted {
        return match agents.activate(id).await {
            Ok(()) => {
                info!(agent_id = id, "agent activated");
                success(empty())
            }
            Err(StoreError::NotFound { .. }) => not_found(id),
            Err(e) => internal("activating agent", &e),
        };
    }
    // Keylime deletes the record: the agent must register again.
    match agents.delete(id).await {
        Ok(()) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return internal("deleting agent", &e),
    }
    warn!(agent_id = id, "auth tag mismatch: registration deleted");
    let shown: String = tag.chars().take(128).collect();
    envelope(
        StatusCode::BAD_REQUEST,
        format!(
            "Auth tag '{shown}' for agent '{id}' does not match expected value. The agent has been \
             deleted from the database and will need to be restarted to reattempt registration"
        ),
        empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let agent = |major, id: &str| Route::Agent {
            major,
            id: id.into(),
        };
        assert_eq!(parse_route("/version"), Some(Route::Version));
        assert_eq!(parse_route("/version/"), Some(Route::Version));
        assert_eq!(
            parse_route("/v2.6/agents/"),
            Some(Route::Agents { major: 2 })
        );
        assert_eq!(parse_route("/v2/agents"), Some(Route::Agents { major: 2 }));
        assert_eq!(parse_route("/v2.1/agents/a1"), Some(agent(2, "a1")));
        assert_eq!(parse_route("/v3.0/agents/a1/"), Some(agent(3, "a1")));
        assert_eq!(
            parse_route("/v2.0/agents/a1/activate"),
            Some(Route::Activate {
                major: 2,
                id: "a1".into()
            })
        );
        assert_eq!(parse_route("/v3/"), Some(Route::VersionRoot { major: 3 }));
        for bad in [
            "/",
            "",
            "/v1.0/agents/",
            "/v2.7/agents",
            "/v4/agents",
            "/v2.6/x",
            "/v2.6/agents/a/b",
            "/v2.6/agents//",
        ] {
            assert_eq!(parse_route(bad), None, "{bad}");
        }
    }
}
