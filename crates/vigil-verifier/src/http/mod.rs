//! The REST API on axum: Keylime's verifier routes (compat §1.6) under every served
//! version prefix, with Keylime's answers for the rest — 404 for unknown paths and
//! versions, 405 with its texts for wrong methods, 403 for admin routes without a
//! client certificate. Handlers read the request and call the [`Service`]; every
//! refusal is an [`ApiError`](crate::error::ApiError), answered in `reply`. The
//! operator's endpoints (`healthz`, `readyz`, `metrics`, public) are
//! `vigil_service::ops`'s.

mod agents;
mod gate;
mod identity;
mod policies;
mod reply;
mod response;
mod verify;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use vigil_service::ops::{self, Ops};
use vigil_service::reply::{empty, envelope, plain, success, Dialect, Query};
use vigil_service::routing::{log_requests, with_slash, RawParams};
use vigil_service::server::Peer;

use crate::error::ApiError;
use crate::protocol::{served_prefix, CURRENT_VERSION, SUPPORTED_VERSIONS};
use crate::service::{PolicyKind, Service, TenantAction};

/// Keylime's 405 for a known path and a method it does not serve.
fn not_implemented(text: &'static str) -> MethodRouter<Service> {
    any(move || async move { envelope(StatusCode::METHOD_NOT_ALLOWED, text, empty()) })
}

/// Admin routes need a verified client certificate (Keylime's admin mTLS).
pub(crate) fn admin(peer: &Peer, action: &'static str) -> Result<(), ApiError> {
    match peer.client {
        Some(_) => Ok(()),
        None => Err(ApiError::AdminRequired(action)),
    }
}

/// Why a request with a NUL character is refused: no field or parameter may hold one,
/// and PostgreSQL cannot store one in text (it would fail as a server error).
const NUL: &str = "the request contains a NUL character";

/// The query string as Keylime reads it; a NUL character (`%00`) is refused.
pub(crate) fn query(req: &Request) -> Result<Query, ApiError> {
    let q = Query::parse_qsl(req.uri().query());
    if q.has_nul() {
        return Err(ApiError::BadRequest(format!("Invalid URL: {NUL}")));
    }
    Ok(q)
}

/// The request body as a JSON object of at most `limit` bytes, or Keylime's 400s; a
/// NUL character in any key or string is refused.
pub(crate) async fn json_body(
    req: Request,
    limit: usize,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let map = vigil_service::reply::json_object(req, limit, Dialect::Verifier).await?;
    if map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Err(ApiError::BadRequest(format!("Exception error: {NUL}")));
    }
    Ok(map)
}

/// Whether a string anywhere in `v` (a key or a value) holds a NUL character.
/// (serde_json bounds the nesting, so the recursion is bounded.)
fn has_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The API router over `service`. Every route is served with and without one
/// trailing slash, as Keylime does.
pub(crate) fn router(service: Service) -> Router {
    let versioned: [(&str, MethodRouter<Service>); 11] = [
        (
            "/{v}",
            not_implemented("Not Implemented: Use /agents/ interface instead"),
        ),
        (
            "/{v}/agents",
            get(agents::list).fallback(not_implemented_any),
        ),
        (
            "/{v}/agents/{id}",
            get(agents::show)
                .post(agents::enrol)
                .delete(agents::delete)
                .fallback(not_implemented_any),
        ),
        (
            "/{v}/agents/{id}/reactivate",
            agents::tenant_action(TenantAction::Reactivate).fallback(not_implemented_any),
        ),
        (
            "/{v}/agents/{id}/stop",
            agents::tenant_action(TenantAction::Stop).fallback(not_implemented_any),
        ),
        (
            "/{v}/allowlists",
            policies::collection(PolicyKind::Runtime).fallback(not_implemented_any),
        ),
        (
            "/{v}/allowlists/{name}",
            policies::item(PolicyKind::Runtime).fallback(not_implemented_any),
        ),
        (
            "/{v}/mbpolicies",
            policies::collection(PolicyKind::MeasuredBoot).fallback(not_implemented_any),
        ),
        (
            "/{v}/mbpolicies/{name}",
            policies::item(PolicyKind::MeasuredBoot).fallback(not_implemented_any),
        ),
        (
            "/{v}/verify/identity",
            get(verify::identity).fallback(not_implemented_use("GET")),
        ),
        (
            "/{v}/verify/evidence",
            post(verify::evidence).fallback(not_implemented_use("POST")),
        ),
    ];
    let versioned = versioned
        .into_iter()
        .fold(Router::new(), |r, (path, methods)| {
            with_slash(r, path, methods)
        })
        .route_layer(axum::middleware::from_fn(served_version));
    let unversioned = ["/version", "/versions"]
        .into_iter()
        .fold(Router::new(), |r, path| {
            with_slash(r, path, get(version).fallback(not_implemented_use("GET")))
        });
    let vigil = with_slash(
        Router::new(),
        "/vigil/v1/identity/{id}/selectors",
        get(identity::selectors).fallback(not_implemented_use("GET")),
    );
    let vigil = with_slash(
        vigil,
        "/vigil/v1/identity/nonce",
        post(identity::nonce).fallback(not_implemented_use("POST")),
    );
    let vigil = with_slash(
        vigil,
        "/vigil/v1/identity/verify",
        post(identity::verify).fallback(not_implemented_use("POST")),
    );
    let vigil = gate::routes()
        .into_iter()
        .fold(vigil, |r, (path, methods)| {
            with_slash(r, path, methods.fallback(not_implemented_any))
        });
    let vigil = response::routes()
        .into_iter()
        .fold(vigil, |r, (path, methods)| {
            with_slash(r, path, methods.fallback(not_implemented_any))
        });
    let ops = ops::routes(Ops::new(service.metrics(), Arc::new(service.clone())));
    unversioned
        .merge(vigil)
        .merge(versioned)
        .merge(ops)
        .fallback(|| async { plain(StatusCode::NOT_FOUND) })
        .with_state(service)
        .layer(axum::middleware::from_fn(log_requests))
}

async fn not_implemented_any() -> Response {
    envelope(StatusCode::METHOD_NOT_ALLOWED, "Not Implemented", empty())
}

fn not_implemented_use(method: &'static str) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || {
        std::future::ready(envelope(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Not Implemented: Use {method} interface instead"),
            empty(),
        ))
    }
}

/// A route under a version prefix this verifier does not serve is Keylime's 404.
async fn served_version(params: RawParams, req: Request, next: Next) -> Response {
    match params.get("v") {
        "" => next.run(req).await,
        v if served_prefix(v) => next.run(req).await,
        _ => plain(StatusCode::NOT_FOUND),
    }
}

async fn version() -> Response {
    success(serde_json::json!({
        "current_version": CURRENT_VERSION,
        "supported_versions": SUPPORTED_VERSIONS,
    }))
}

/// A handler's answer: a response, or the refusal `reply` turns into one.
pub(crate) type Reply = Result<Response, ApiError>;
