//! Keylime's agent REST API v2.1–2.6 (compat §1.4) as axum routes, one set per API
//! version in the path. What rust-keylime answers outside its routes is kept: each
//! scope (`/keys`, `/quotes`, …) has its own 400 for an unknown path and 405 (with
//! `Allow`) for a method it does not serve, an unsupported version prefix is a 400,
//! and leading and trailing slashes are ignored.

// Early returns carry a ready `Response` as their error, the axum idiom.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::from_fn;
use axum::response::Response;
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};
use tower::{Layer, Service};
use tracing::{error, info, warn};
use vigil_core::revocation::RevocationNotice;
use vigil_service::ops::{self, Check, Ops, Readiness, ReadinessCheck, ReadinessFuture};
use vigil_service::reply::{self, empty, envelope, success, Dialect, Query};
use vigil_service::routing::log_requests;

use crate::payload::Next;
use crate::AgentState;

/// The API versions served, oldest first; the last is `supported_version`.
pub const API_VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];
/// The longest nonce accepted (rust-keylime's `MAX_NONCE_SIZE`).
pub const MAX_NONCE_SIZE: usize = 64;
/// Largest request body (a payload is at most 1 MiB before base64).
const MAX_BODY: usize = 4 << 20;

const LATEST: &str = API_VERSIONS[API_VERSIONS.len() - 1];

type Shared = State<Arc<AgentState>>;
type AppRouter = Router<Arc<AgentState>>;

fn bad_request(message: impl Into<String>) -> Response {
    let message = message.into();
    warn!("returning 400: {message}");
    reply::bad_request(message)
}

fn not_allowed(message: &str, allow: &str) -> Response {
    let mut r = envelope(StatusCode::METHOD_NOT_ALLOWED, message, empty());
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

/// A 500 with Keylime's text, followed by the cause (a TPM error names its decoded
/// response code), so the verifier's log shows why.
fn internal(message: &str, e: &dyn std::fmt::Display) -> Response {
    error!("{message}: {e}");
    envelope(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{message}: {e}"),
        empty(),
    )
}

/// The service [`crate::Agent`] serves: the routes behind [`trim_slashes`], which
/// must rewrite the path before routing.
pub(crate) fn router(
    state: Arc<AgentState>,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send + 'static>
       + Clone
       + Send
       + 'static {
    let mut app = Router::new().route("/version", get(version_info).fallback(app_default));
    for (index, api) in API_VERSIONS.into_iter().enumerate() {
        app = versioned(app, index, api);
    }
    let app = app
        .route("/vigil/v1/actions", post(response_action_handler))
        .merge(ops::routes(ops_of(&state)))
        .fallback(outside_versions)
        .layer(from_fn(log_requests))
        .with_state(state);
    from_fn(trim_slashes).layer(app)
}

/// The operator's endpoints over the agent's metrics and readiness.
pub(crate) fn ops_of(state: &Arc<AgentState>) -> Ops {
    Ops::new(state.metrics.registry.clone(), state.clone())
}

impl ReadinessCheck for AgentState {
    /// Ready once started: the TPM is set up and the TLS material loaded (`tls`, `off`
    /// without mTLS); the agent does not start otherwise.
    fn readiness(&self) -> ReadinessFuture<'_> {
        let tls = if self.mtls { Check::Ok } else { Check::Off };
        Box::pin(std::future::ready(
            Readiness::default().with("tpm", Check::Ok).with("tls", tls),
        ))
    }
}

/// `//v2.6/keys/pubkey//` is `/v2.6/keys/pubkey`, as rust-keylime reads paths.
async fn trim_slashes(mut req: Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    let trimmed = path.trim_matches('/');
    if path.len() != trimmed.len() + 1 {
        let target = match req.uri().query() {
            Some(q) => format!("/{trimmed}?{q}"),
            None => format!("/{trimmed}"),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = target.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

/// The routes of API version `api` (`index` in [`API_VERSIONS`]). A path under the
/// version that no scope serves reaches [`outside_versions`], which answers the
/// version's default.
fn versioned(app: AppRouter, index: usize, api: &'static str) -> AppRouter {
    let p = format!("/v{api}");
    let scope = |app: AppRouter, name: &str, default: MethodRouter<Arc<AgentState>>| {
        app.route(&format!("{p}/{name}"), default.clone())
            .route(&format!("{p}/{name}/{{*rest}}"), default)
    };
    let keys = any(keys_default);
    let quotes = any(quotes_default);
    let notifications = any(notifications_default);
    let mut app = app
        .route(
            &format!("{p}/keys/pubkey"),
            get(pubkey).fallback(keys_default),
        )
        .route(
            &format!("{p}/keys/verify"),
            get(verify_handler).fallback(keys_default),
        )
        .route(
            &format!("{p}/keys/ukey"),
            post(ukey_handler).fallback(keys_default),
        )
        .route(
            &format!("{p}/keys/vkey"),
            post(vkey_handler).fallback(keys_default),
        )
        .route(
            &format!("{p}/quotes/identity"),
            get(move |state: Shared, uri: Uri| async move {
                if !state.0.identity_on_network {
                    return local_only();
                }
                identity_route(&state.0, api, &uri).await
            })
            .fallback(quotes_default),
        )
        .route(
            &format!("{p}/quotes/integrity"),
            get(move |state: Shared, uri: Uri| async move {
                let r = answer(integrity(&state.0, api, &Query::all(uri.query())).await);
                state.0.metrics.quote("integrity", r.status());
                r
            })
            .fallback(quotes_default),
        )
        .route(
            &format!("{p}/notifications/revocation"),
            post(revocation_handler).fallback(notifications_default),
        );
    app = scope(app, "keys", keys);
    app = scope(app, "quotes", quotes);
    app = scope(app, "notifications", notifications);
    // `/agent` exists from API 2.2; under 2.1 it is an unknown path.
    if index >= 1 {
        app = app.route(
            &format!("{p}/agent/info"),
            get(move |state: Shared| async move {
                if !state.0.identity_on_network {
                    return local_only();
                }
                agent_info(&state.0, api)
            })
            .fallback(agent_default),
        );
        app = scope(app, "agent", any(agent_default));
    }
    app
}

/// The node-local identity socket's service: `agent/info` (API 2.2+) and
/// `quotes/identity` under every served version, nothing else (docs/spire.md).
pub(crate) fn local_router(
    state: Arc<AgentState>,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send + 'static>
       + Clone
       + Send
       + 'static {
    let mut app: AppRouter = Router::new();
    for api in API_VERSIONS {
        app =
            app.route(
                &format!("/v{api}/quotes/identity"),
                get(move |state: Shared, uri: Uri| async move {
                    identity_route(&state.0, api, &uri).await
                }),
            );
        if api >= "2.2" {
            app = app.route(
                &format!("/v{api}/agent/info"),
                get(move |state: Shared| async move { agent_info(&state.0, api) }),
            );
        }
    }
    let app = app
        .fallback(|| async {
            reply::envelope(
                StatusCode::NOT_FOUND,
                "Not Found: the identity socket serves only /agent/info and /quotes/identity",
                empty(),
            )
        })
        .layer(from_fn(log_requests))
        .with_state(state);
    from_fn(trim_slashes).layer(app)
}

/// `quotes/identity` on either listener, counted in the metrics.
async fn identity_route(state: &Arc<AgentState>, api: &'static str, uri: &Uri) -> Response {
    let r = answer(identity(state, api, &Query::all(uri.query())).await);
    state.metrics.quote("identity", r.status());
    r
}

/// The network API's answer to the identity routes when `identity_on_network` is off.
fn local_only() -> Response {
    warn!("returning 403: identity routes are served only on the node-local socket");
    envelope(
        StatusCode::FORBIDDEN,
        "Forbidden: agent/info and quotes/identity are served only on the node-local identity socket",
        empty(),
    )
}

fn answer(result: Result<Response, Response>) -> Response {
    result.unwrap_or_else(|r| r)
}

async fn version_info() -> Response {
    success(json!({
        "supported_version": LATEST,
        "supported_versions": API_VERSIONS,
    }))
}

/// rust-keylime's answer outside the versioned API (and to `/version` with another
/// method than GET).
async fn app_default(method: Method) -> Response {
    match method {
        Method::GET => bad_request(format!(
            "Not Implemented: Use /version or /v{LATEST} interfaces"
        )),
        Method::POST => bad_request(format!("Not Implemented: Use /v{LATEST} interface")),
        _ => not_allowed("Method is not supported", "GET, POST"),
    }
}

/// rust-keylime's answer under a served version, outside its scopes.
fn api_default(method: &Method) -> Response {
    match *method {
        Method::GET => bad_request("Not Implemented: Use /agent, /keys, or /quotes interfaces"),
        Method::POST => bad_request("Not Implemented: Use /keys or /notifications interfaces"),
        _ => not_allowed("Method is not supported", "GET, POST"),
    }
}

/// The router's fallback: a served version's default, 400 for a version-shaped
/// prefix not served, else the application default.
async fn outside_versions(method: Method, uri: Uri) -> Response {
    let first = uri.path().trim_matches('/').split('/').next().unwrap_or("");
    match version(first) {
        Ok(_) => api_default(&method),
        Err(Some(text)) => bad_request(text),
        Err(None) => app_default(method).await,
    }
}

async fn agent_default(method: Method) -> Response {
    match method {
        Method::GET => {
            bad_request("URI not supported, only /info is supported for GET in /agent interface")
        }
        _ => not_allowed("Method is not supported in /agent interface", "GET"),
    }
}

async fn keys_default(method: Method) -> Response {
    match method {
        Method::GET => bad_request(
            "URI not supported, only /pubkey and /verify are supported for GET in /keys/ interface",
        ),
        Method::POST => bad_request(
            "URI not supported, only /ukey and /vkey are supported for POST in /keys/ interface",
        ),
        _ => not_allowed("Method is not supported in /keys/ interface", "GET, POST"),
    }
}

async fn quotes_default(method: Method) -> Response {
    match method {
        Method::GET => bad_request(
            "URI not supported, only /identity and /integrity are supported for GET in /quotes/ interface",
        ),
        _ => not_allowed("Method is not supported in /quotes/ interface", "GET"),
    }
}

async fn notifications_default(method: Method) -> Response {
    match method {
        Method::POST => bad_request(
            "URI not supported, only /revocation is supported for POST in /notifications/ interface",
        ),
        _ => not_allowed("Method is not supported in /notifications/ interface", "POST"),
    }
}

async fn pubkey(state: Shared) -> Response {
    success(json!({ "pubkey": state.0.nk.public_pem }))
}

async fn verify_handler(state: Shared, uri: Uri) -> Response {
    answer(verify(&state.0, &Query::all(uri.query())))
}

async fn ukey_handler(state: Shared, req: Request) -> Response {
    match json_body(req).await {
        Ok(body) => answer(ukey(&state.0, body).await),
        Err(r) => r,
    }
}

async fn vkey_handler(state: Shared, req: Request) -> Response {
    match json_body(req).await {
        Ok(body) => answer(vkey(&state.0, body).await),
        Err(r) => r,
    }
}

async fn revocation_handler(state: Shared, req: Request) -> Response {
    match json_body(req).await {
        Ok(body) => answer(revocation(&state.0, body).await),
        Err(r) => r,
    }
}

/// `v2.6` → its index in [`API_VERSIONS`]; `Err(Some(text))` for a version-shaped
/// prefix not served, `Err(None)` when the segment is no version at all.
fn version(seg: &str) -> Result<usize, Option<String>> {
    let Some(v) = seg.strip_prefix('v') else {
        return Err(None);
    };
    let (maj, min) = v.split_once('.').ok_or(None)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(maj) || !digits(min) {
        return Err(None);
    }
    API_VERSIONS
        .iter()
        .position(|x| *x == v)
        .ok_or_else(|| Some(format!("API version not supported: {seg}")))
}

fn required<'a>(q: &'a Query, name: &str) -> Result<&'a str, Response> {
    q.get(name)
        .ok_or_else(|| bad_request(format!("Query deserialize error: missing field `{name}`")))
}

async fn json_body(req: Request) -> Result<Map<String, Value>, Response> {
    reply::json_object(req, MAX_BODY, Dialect::Agent)
        .await
        .map_err(|e| {
            warn!("returning 400: unusable request body: {e}");
            Response::from(e)
        })
}

fn str_field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, Response> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad_request(format!(
            "Json deserialize error: field `{name}` must be a string"
        ))),
        None => Err(bad_request(format!(
            "Json deserialize error: missing field `{name}`"
        ))),
    }
}

fn alnum(s: &str) -> bool {
    s.chars().all(char::is_alphanumeric)
}

/// `enc_alg` as the API version writes it: `rsa`/`ecc` before 2.5, sized after.
fn enc_alg(state: &AgentState, api: &str) -> String {
    let sized = state.enc_alg_sized.as_str();
    if api < "2.5" {
        match sized {
            "rsa2048" => "rsa".into(),
            "ecc256" => "ecc".into(),
            other => other.into(),
        }
    } else {
        sized.into()
    }
}

fn agent_info(state: &AgentState, api: &str) -> Response {
    success(json!({
        "agent_uuid": state.uuid,
        "tpm_hash_alg": state.bank.name(),
        "tpm_enc_alg": enc_alg(state, api),
        "tpm_sign_alg": state.sign_alg,
        "ak_handle": state.ak_handle,
    }))
}

fn check_nonce(nonce: &str) -> Result<(), Response> {
    if !alnum(nonce) {
        return Err(bad_request(format!(
            "nonce should be strictly alphanumeric: {nonce}"
        )));
    }
    if nonce.len() > MAX_NONCE_SIZE {
        return Err(bad_request(format!(
            "Nonce is too long (max size: {MAX_NONCE_SIZE}): {}",
            nonce.len()
        )));
    }
    Ok(())
}

async fn quote(state: &Arc<AgentState>, nonce: &str, mask: u32) -> Result<String, Response> {
    let tpm = state.tpm.clone();
    let bank = state.bank;
    let nonce = nonce.as_bytes().to_vec();
    tokio::task::spawn_blocking(move || tpm.quote(&nonce, mask, bank))
        .await
        .map_err(|e| internal("Unable to retrieve quote", &e))?
        .map(|q| q.to_keylime_string())
        .map_err(|e| internal("Unable to retrieve quote", &e))
}

fn quote_fields(state: &AgentState, api: &str, quote: String) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("quote".into(), Value::String(quote));
    m.insert("hash_alg".into(), state.bank.name().into());
    m.insert("enc_alg".into(), enc_alg(state, api).into());
    m.insert("sign_alg".into(), state.sign_alg.clone().into());
    m
}

async fn identity(state: &Arc<AgentState>, api: &str, q: &Query) -> Result<Response, Response> {
    let nonce = required(q, "nonce")?;
    check_nonce(nonce)?;
    let quote = quote(state, nonce, 0).await?;
    let mut m = quote_fields(state, api, quote);
    m.insert("pubkey".into(), state.nk.public_pem.clone().into());
    Ok(success(Value::Object(m)))
}

/// Seconds since the epoch at boot, from `/proc/stat`'s `btime`.
fn boottime() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

async fn integrity(state: &Arc<AgentState>, api: &str, q: &Query) -> Result<Response, Response> {
    let nonce = required(q, "nonce")?;
    let mask_text = required(q, "mask")?;
    let partial = required(q, "partial")?;
    check_nonce(nonce)?;
    if !alnum(mask_text) {
        return Err(bad_request(format!(
            "mask should be strictly alphanumeric: {mask_text}"
        )));
    }
    let mask = u32::from_str_radix(mask_text.trim_start_matches("0x"), 16).map_err(|_| {
        bad_request(format!(
            "mask should be a hex encoded 32-bit integer: {mask_text}"
        ))
    })?;
    if mask >> 24 != 0 {
        return Err(bad_request(format!(
            "mask selects PCRs above 23: {mask_text}"
        )));
    }
    let with_pubkey = match partial {
        "0" => true,
        "1" => false,
        _ => {
            return Err(bad_request(
                "uri must contain key 'partial' and value '0' or '1'",
            ))
        }
    };
    // As rust-keylime: a malformed entry number means the whole list.
    let nth: u64 = q
        .get("ima_ml_entry")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Quote first, then read the logs: the logs may run ahead of the quote, which the
    // verifier accepts, never behind it.
    let quote = quote(state, nonce, mask).await?;
    let mut m = quote_fields(state, api, quote);
    if with_pubkey {
        m.insert("pubkey".into(), state.nk.public_pem.clone().into());
    }
    if mask & 1 == 1 {
        let path = state.mb_log.clone();
        if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || std::fs::read(path)).await {
            m.insert(
                "mb_measurement_list".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into(),
            );
        }
    }
    let ima = state.ima.clone();
    match tokio::task::spawn_blocking(move || ima.read_from(nth)).await {
        Ok(Ok(slice)) => {
            m.insert("ima_measurement_list".into(), slice.text.into());
            m.insert("ima_measurement_list_entry".into(), slice.start.into());
        }
        Ok(Err(e)) => {
            tracing::debug!(path = %state.ima.path().display(), "no IMA list: {e}");
        }
        Err(e) => return Err(internal("Unable to retrieve quote", &e)),
    }
    if let Some(bt) = boottime() {
        m.insert("boottime".into(), bt.into());
    }
    Ok(success(Value::Object(m)))
}

fn verify(state: &AgentState, q: &Query) -> Result<Response, Response> {
    let challenge = required(q, "challenge")?;
    if challenge.is_empty() || !alnum(challenge) {
        return Err(bad_request(format!(
            "Parameters should be strictly alphanumeric: {challenge}"
        )));
    }
    let payload = state.payload.lock().unwrap_or_else(|p| p.into_inner());
    match payload.key() {
        Some(k) => Ok(success(json!({ "hmac": k.answer_challenge(challenge) }))),
        None => Err(bad_request("Bootstrap key not yet available.")),
    }
}

fn decrypt_share(state: &AgentState, body: &Map<String, Value>) -> Result<Vec<u8>, Response> {
    let enc = str_field(body, "encrypted_key")?;
    vigil_core::payload::decrypt_share(&state.nk.private, enc)
        .map_err(|e| bad_request(format!("Unable to decrypt encrypted_key: {e}")))
}

async fn ukey(state: &Arc<AgentState>, body: Map<String, Value>) -> Result<Response, Response> {
    let tag = str_field(&body, "auth_tag")?.to_owned();
    if tag.len() != 96 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_request(
            "auth_tag must be a hex HMAC-SHA384 (96 characters)",
        ));
    }
    let payload = match body.get("payload") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(bad_request(
                "Json deserialize error: field `payload` must be a string",
            ))
        }
    };
    let u = decrypt_share(state, &body)?;
    let next = state
        .payload
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add_u(&state.uuid, u, tag, payload);
    deliver(state, next);
    Ok(success(empty()))
}

async fn vkey(state: &Arc<AgentState>, body: Map<String, Value>) -> Result<Response, Response> {
    let v = decrypt_share(state, &body)?;
    let next = state
        .payload
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add_v(&state.uuid, v);
    deliver(state, next);
    Ok(success(empty()))
}

/// Hands a derived key to a background task: the request returns at once, as in
/// Keylime, and the script's run does not hold the connection.
fn deliver(state: &Arc<AgentState>, next: Next) {
    let Next::Deliver { key, payload } = next else {
        return;
    };
    info!("U and V combined into the bootstrap key");
    if !state.payloads_allowed {
        warn!("payload not run: mTLS is off and enable_insecure_payload is false");
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        match crate::payload::deliver(
            &key,
            payload.as_deref(),
            &state.secure_dir,
            &state.payload_script,
        )
        .await
        {
            Ok(_) => {}
            Err(e) => error!("payload: {e}"),
        }
        state.payload_runs.send_modify(|n| *n += 1);
    });
}

async fn revocation(
    state: &Arc<AgentState>,
    body: Map<String, Value>,
) -> Result<Response, Response> {
    let notice = RevocationNotice {
        msg: str_field(&body, "msg")?.to_owned(),
        signature: match body.get("signature") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        },
    };
    let cert = state.revocation_cert.clone();
    let message = match crate::revocation::verify(&notice, &cert) {
        Ok(m) => m,
        Err(e) => {
            warn!("revocation notice rejected: {e}");
            return Err(bad_request(format!(
                "Invalid revocation message signature: {e}"
            )));
        }
    };
    info!("revocation notice verified: {}", notice.msg);
    let state = state.clone();
    tokio::spawn(async move {
        let ran = state.actions.run(&message, &state.secure_dir).await;
        state.revocations.send_modify(|v| v.push(ran));
    });
    Ok(success(empty()))
}

async fn response_action_handler(state: Shared, req: Request) -> Response {
    match json_body(req).await {
        Ok(body) => answer(response_action(&state.0, body).await),
        Err(r) => r,
    }
}

/// `POST /vigil/v1/actions`: a signed response action (see [`crate::response`]).
async fn response_action(
    state: &Arc<AgentState>,
    body: Map<String, Value>,
) -> Result<Response, Response> {
    let notice = RevocationNotice {
        msg: str_field(&body, "msg")?.to_owned(),
        signature: match body.get("signature") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        },
    };
    let message = crate::revocation::verify(&notice, &state.revocation_cert).map_err(|e| {
        warn!("response action rejected: {e}");
        bad_request(format!("Invalid action signature: {e}"))
    })?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let action = crate::response::check(&message, &state.uuid, now_ms).map_err(|e| {
        warn!("response action rejected: {e}");
        bad_request(format!("Invalid action: {e}"))
    })?;
    Ok(success(state.response.run(action, &message).await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_query() {
        assert_eq!(version("v2.6"), Ok(5));
        assert_eq!(version("v2.1"), Ok(0));
        assert_eq!(
            version("v2.0"),
            Err(Some("API version not supported: v2.0".into()))
        );
        assert_eq!(
            version("v9.99").unwrap_err().unwrap(),
            "API version not supported: v9.99"
        );
        assert_eq!(version("keys"), Err(None));
        assert_eq!(version("v2"), Err(None));
    }
}
