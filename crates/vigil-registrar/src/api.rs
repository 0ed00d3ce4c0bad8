//! The REST API: Keylime's registrar routes (compat §1.3, §1.5) as axum routes, one
//! set per API version in the path (`/v2.1/agents/{id}`, `/v3/agents`), each with and
//! without its trailing slash; the router's fallbacks give Keylime's 404 for an
//! unknown path or version and 405 for a method a route does not serve. The
//! operator's endpoints (`healthz`, `readyz`, `metrics`) are `vigil_service::ops`'s,
//! on both ports, without a client certificate.

// Early returns carry a ready `Response` as their error, the axum idiom; its size is
// irrelevant next to a network round trip.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::response::Response;
use axum::routing::{any, get, post, put, MethodRouter};
use axum::Router;
use base64::Engine;
use rand_core::OsRng;
use serde_json::{json, Map, Value};
use tracing::{error, info, warn};
use vigil_core::tpm::credential::{self, make_credential, random_challenge};
use vigil_service::ops::{self, Check, Ops, Readiness, ReadinessCheck, ReadinessFuture};
use vigil_service::reply::{self, empty, envelope, plain, success, Dialect};
use vigil_service::routing::{self, with_slash, RawParams};
use vigil_service::server::Peer;
use vigil_store::{RegisterOutcome, Store, StoreError};

use crate::metrics::Metrics;
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
    pub(crate) metrics: Metrics,
}

/// How long a readiness probe waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

impl ReadinessCheck for AppState {
    /// Ready when the database answers a trivial query (`store`); the TLS material is
    /// loaded (`tls`: the registrar does not start without it). Why the store check
    /// fails is logged, not answered.
    fn readiness(&self) -> ReadinessFuture<'_> {
        Box::pin(async {
            let store = match tokio::time::timeout(PING_TIMEOUT, self.store.ping()).await {
                Ok(Ok(())) => Check::Ok,
                Ok(Err(e)) => {
                    warn!("not ready: the database does not answer: {e}");
                    Check::Failing("unreachable")
                }
                Err(_) => {
                    warn!("not ready: the database does not answer within {PING_TIMEOUT:?}");
                    Check::Failing("unreachable")
                }
            };
            Readiness::default()
                .with("store", store)
                .with("tls", Check::Ok)
        })
    }
}

type AppRouter = Router<Arc<AppState>>;

fn bad_request(message: impl std::fmt::Display) -> Response {
    reply::bad_request(format!("Bad Request: {message}"))
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> Response {
    error!("{what}: {e}");
    plain(StatusCode::INTERNAL_SERVER_ERROR)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The router: `/version`, then the routes of each version prefix — `v2` and `v2.0`
/// to `v2.6` (the v2 routes, where `POST`/`PUT /agents/{id}` register and activate),
/// `v3` and `v3.0` (the RFC 9110 routes only).
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut app = with_slash(Router::new(), "/version", get(version));
    for v in ["2", "3"].into_iter().chain(SUPPORTED_VERSIONS) {
        app = versioned(app, &format!("/v{v}"), v.starts_with('2'));
    }
    let ops = ops::routes(Ops::new(state.metrics.registry.clone(), state.clone()));
    app.merge(ops)
        .fallback(routing::not_found)
        .method_not_allowed_fallback(routing::method_not_allowed)
        .layer(from_fn(routing::log_requests))
        .with_state(state)
}

/// The routes under `prefix`; `v2` adds Keylime's legacy registration routes.
fn versioned(app: AppRouter, prefix: &str, v2: bool) -> AppRouter {
    let root = if v2 {
        any(routing::not_found)
    } else {
        // `GET /v3/`: v3 is supported (Keylime means 200 here).
        get(|| async { success(empty()) }).fallback(routing::not_found)
    };
    let agent: MethodRouter<Arc<AppState>> = get(show).delete(delete);
    let (agent, activation) = if v2 {
        (
            agent.post(register_at_path).put(activate),
            put(activate).post(activate),
        )
    } else {
        (agent, post(activate))
    };
    // `/v2` alone is no route (404); `/v2/` is the version root.
    let app = app.route(&format!("{prefix}/"), root);
    let app = with_slash(
        app,
        &format!("{prefix}/agents"),
        get(list).post(register_from_body),
    );
    let app = with_slash(app, &format!("{prefix}/agents/{{id}}"), agent);
    with_slash(app, &format!("{prefix}/agents/{{id}}/activate"), activation)
}

async fn version() -> Response {
    success(json!({
        "current_version": CURRENT_VERSION,
        "supported_versions": SUPPORTED_VERSIONS,
    }))
}

/// Admin routes need the TLS port and a verified client certificate.
fn admin(t: &Peer, action: &str) -> Result<(), Response> {
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
async fn json_body(state: &AppState, req: Request) -> Result<Map<String, Value>, Response> {
    reply::json_object(req, state.max_upload_size, Dialect::Registrar)
        .await
        .map_err(Response::from)
}

/// `POST /v{2,3}/agents`: the id is in the body.
async fn register_from_body(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let result: Result<Response, Response> = async {
        let body = json_body(&state, req).await?;
        let id = register::opt_str(&body, "agent_id")
            .map_err(field_error)?
            .ok_or_else(|| {
                field_error(FieldError {
                    field: "agent_id",
                    message: "is required".into(),
                })
            })?
            .to_owned();
        Ok(register(&state, &id, &body).await)
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// `POST /v2/agents/{id}`.
async fn register_at_path(
    State(state): State<Arc<AppState>>,
    params: RawParams,
    req: Request,
) -> Response {
    match json_body(&state, req).await {
        Ok(body) => register(&state, params.get("id"), &body).await,
        Err(r) => r,
    }
}

/// `PUT /v2/agents/{id}`, `PUT /v2/agents/{id}/activate`, `POST …/activate`.
async fn activate(State(state): State<Arc<AppState>>, params: RawParams, req: Request) -> Response {
    match json_body(&state, req).await {
        Ok(body) => {
            let response = activate_with(&state, params.get("id"), &body).await;
            state.metrics.activation(match response.status() {
                StatusCode::OK => "activated",
                s if s.is_server_error() => "error",
                _ => "refused",
            });
            response
        }
        Err(r) => r,
    }
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

async fn list(State(state): State<Arc<AppState>>, peer: Peer) -> Response {
    if let Err(r) = admin(&peer, "list_registrations") {
        return r;
    }
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

async fn show(State(state): State<Arc<AppState>>, peer: Peer, params: RawParams) -> Response {
    let id = params.get("id");
    if let Err(r) = admin(&peer, "read_registration") {
        return r;
    }
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

async fn delete(State(state): State<Arc<AppState>>, peer: Peer, params: RawParams) -> Response {
    let id = params.get("id");
    if let Err(r) = admin(&peer, "delete_registration") {
        return r;
    }
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

/// Registers agent `id`, counting the outcome by the answer's status.
async fn register(state: &AppState, id: &str, body: &Map<String, Value>) -> Response {
    let response = register_checked(state, id, body).await;
    state.metrics.registration(match response.status() {
        StatusCode::OK => "registered",
        StatusCode::FORBIDDEN => "identity_changed",
        s if s.is_server_error() => "error",
        _ => "refused",
    });
    response
}

async fn register_checked(state: &AppState, id: &str, body: &Map<String, Value>) -> Response {
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
    let stored = state
        .metrics
        .store
        .time(
            "register",
            state.store.registrar_agents().register(registration),
        )
        .await;
    match stored {
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

async fn activate_with(state: &AppState, id: &str, body: &Map<String, Value>) -> Response {
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
    use axum::http::Method;
    use tower::ServiceExt;

    /// Every route and version prefix reaches its handler (an admin route asked for
    /// over plain HTTP answers the handler's 400); unknown paths and versions are 404
    /// and unserved methods 405, as Keylime's router answers.
    #[tokio::test]
    async fn routes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("r.sqlite").display()
        );
        let store = Store::open(&url).await.unwrap();
        let app = router(Arc::new(AppState {
            store: store.clone(),
            checks: Checks {
                malformed_cert_action: crate::MalformedCertAction::Warn,
                trust_store: None,
                require_ek_cert: false,
                check_ak_attributes: true,
            },
            max_upload_size: 1 << 20,
            metrics: Metrics::new(),
        }));
        let call = |method: Method, path: &str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let app = app.clone();
            async move { app.oneshot(req).await.unwrap().status().as_u16() }
        };
        let admin_over_http = 400;
        for (method, path, code) in [
            (Method::GET, "/version", 200),
            (Method::GET, "/version/", 200),
            (Method::GET, "/v3/", 200),
            (Method::GET, "/v3.0/", 200),
            (Method::GET, "/v2.6/agents/", admin_over_http),
            (Method::GET, "/v2/agents", admin_over_http),
            (Method::GET, "/v2.1/agents/a1", admin_over_http),
            (Method::DELETE, "/v3.0/agents/a1/", admin_over_http),
            // Activation without auth_tag: the handler's 400.
            (Method::PUT, "/v2.0/agents/a1/activate", 400),
            (Method::PUT, "/v2.0/agents/a1", 400),
            (Method::POST, "/v3/agents/a1/activate/", 400),
            (Method::POST, "/v2.6/agents", 400),
            (Method::GET, "/", 404),
            (Method::GET, "/v3", 404),
            (Method::GET, "/v2/", 404),
            (Method::POST, "/v2.6/", 404),
            (Method::GET, "/v1.0/agents/", 404),
            (Method::GET, "/v2.7/agents", 404),
            (Method::GET, "/v4/agents", 404),
            (Method::PATCH, "/v4/agents", 404),
            (Method::GET, "/v2.6/x", 404),
            (Method::GET, "/v2.6/agents/a/b", 404),
            (Method::GET, "/v2.6/agents//", 404),
            (Method::GET, "/version/x", 404),
            (Method::DELETE, "/version", 405),
            (Method::PATCH, "/v2.6/agents/a1", 405),
            (Method::POST, "/v3/agents/a1", 405),
            (Method::PUT, "/v3.0/agents/a1", 405),
            (Method::PUT, "/v3/agents/a1/activate", 405),
            (Method::DELETE, "/v2.6/agents", 405),
            (Method::GET, "/healthz", 200),
            (Method::GET, "/vigil/v1/healthz/", 200),
            (Method::GET, "/readyz/", 200),
            (Method::GET, "/vigil/v1/readyz", 200),
            (Method::GET, "/metrics", 200),
            (Method::GET, "/vigil/v1/metrics", 200),
            (Method::POST, "/healthz", 405),
        ] {
            assert_eq!(call(method.clone(), path).await, code, "{method} {path}");
        }
        // The store closed (unreachable): not ready, while the process is healthy.
        store.close().await;
        assert_eq!(call(Method::GET, "/readyz").await, 503);
        assert_eq!(call(Method::GET, "/vigil/v1/healthz").await, 200);
    }
}
