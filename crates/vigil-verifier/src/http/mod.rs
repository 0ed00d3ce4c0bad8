//! The REST API on axum: Keylime's verifier routes (compat §1.6) under every served
//! version prefix, with Keylime's answers for the rest — 404 for unknown paths and
//! versions, 405 with its texts for wrong methods, 403 for admin routes without a
//! client certificate. Handlers read the request and call the [`Service`]; every
//! refusal is an [`ApiError`](crate::error::ApiError), answered in `reply`.

mod agents;
mod policies;
pub(crate) mod reply;
mod verify;

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use tower::ServiceExt as _;
use tracing::info;
use vigil_tls::http::Peer;

use crate::error::ApiError;
use crate::protocol::{served_prefix, CURRENT_VERSION, SUPPORTED_VERSIONS};
use crate::service::{PolicyKind, Service, TenantAction};
use reply::{empty, envelope, plain, success};

/// Keylime's 405 for a known path and a method it does not serve.
fn not_implemented(text: &'static str) -> MethodRouter<Service> {
    any(move || async move { envelope(StatusCode::METHOD_NOT_ALLOWED, text, empty()) })
}

/// How the request arrived (never fails: a request without TLS has no client).
pub(crate) struct Caller(pub(crate) Peer);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts.extensions.get::<Peer>().cloned().unwrap_or_default(),
        ))
    }
}

impl Caller {
    /// Admin routes need a verified client certificate (Keylime's admin mTLS).
    pub(crate) fn admin(&self, action: &'static str) -> Result<(), ApiError> {
        match self.0.client {
            Some(_) => Ok(()),
            None => Err(ApiError::AdminRequired(action)),
        }
    }
}

/// The API router over `service`.
pub(crate) fn router(service: Service) -> Router {
    let versioned = Router::new()
        .route(
            "/{v}",
            not_implemented("Not Implemented: Use /agents/ interface instead"),
        )
        .route(
            "/{v}/agents",
            get(agents::list).fallback(not_implemented_any),
        )
        .route(
            "/{v}/agents/{id}",
            get(agents::show)
                .post(agents::enrol)
                .delete(agents::delete)
                .fallback(not_implemented_any),
        )
        .route(
            "/{v}/agents/{id}/reactivate",
            agents::tenant_action(TenantAction::Reactivate).fallback(not_implemented_any),
        )
        .route(
            "/{v}/agents/{id}/stop",
            agents::tenant_action(TenantAction::Stop).fallback(not_implemented_any),
        )
        .route(
            "/{v}/allowlists",
            policies::collection(PolicyKind::Runtime).fallback(not_implemented_any),
        )
        .route(
            "/{v}/allowlists/{name}",
            policies::item(PolicyKind::Runtime).fallback(not_implemented_any),
        )
        .route(
            "/{v}/mbpolicies",
            policies::collection(PolicyKind::MeasuredBoot).fallback(not_implemented_any),
        )
        .route(
            "/{v}/mbpolicies/{name}",
            policies::item(PolicyKind::MeasuredBoot).fallback(not_implemented_any),
        )
        .route(
            "/{v}/verify/identity",
            get(verify::identity).fallback(not_implemented_use("GET")),
        )
        .route(
            "/{v}/verify/evidence",
            post(verify::evidence).fallback(not_implemented_use("POST")),
        )
        .route_layer(axum::middleware::from_fn(served_version));
    let routes = Router::new()
        .route(
            "/version",
            get(version).fallback(not_implemented_use("GET")),
        )
        .route(
            "/versions",
            get(version).fallback(not_implemented_use("GET")),
        )
        .route("/vigil/v1/readyz", get(readyz))
        .merge(versioned)
        .fallback(|| async { plain(StatusCode::NOT_FOUND) })
        .with_state(service);
    // Keylime serves every path with or without one trailing slash: strip it before
    // routing.
    let routes = routes.map_request(|mut req: Request| {
        if let Some(trimmed) = strip_trailing_slash(req.uri()) {
            *req.uri_mut() = trimmed;
        }
        req
    });
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(log_request))
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

/// `/a/b/` → `/a/b` (one slash, and not the root).
fn strip_trailing_slash(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty())?;
    let rebuilt = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_owned(),
    };
    rebuilt.parse().ok()
}

/// A route under a version prefix this verifier does not serve is Keylime's 404; a path
/// whose segments do not decode (percent-encoded bytes that are not UTF-8) is a 400 in
/// the envelope, like every other refusal, not axum's plain-text rejection.
async fn served_version(
    params: Result<Path<HashMap<String, String>>, PathRejection>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(Path(params)) = params else {
        return ApiError::InvalidName.into_response();
    };
    match params.get("v") {
        Some(v) if served_prefix(v) => next.run(req).await,
        _ => plain(StatusCode::NOT_FOUND),
    }
}

/// One log line per request, with the answer's code and the client certificate.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let client = req
        .extensions()
        .get::<Peer>()
        .and_then(|p| p.client.clone())
        .unwrap_or_else(|| "-".to_owned());
    let response = next.run(req).await;
    let code = response.status().as_u16();
    info!(%method, %path, code, client, "request");
    response
}

/// `GET /vigil/v1/readyz` (public): 200 while the verifier records rounds, 503 with the
/// reason while its database refuses them.
async fn readyz(axum::extract::State(s): axum::extract::State<Service>) -> Response {
    match s.readiness() {
        Ok(()) => success(serde_json::json!({"ready": true})),
        Err(reason) => envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            serde_json::json!({"ready": false, "reason": reason}),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_slash_is_stripped() {
        let strip = |s: &str| strip_trailing_slash(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(strip("/v2.6/agents/").as_deref(), Some("/v2.6/agents"));
        assert_eq!(strip("/versions/?a=1").as_deref(), Some("/versions?a=1"));
        assert_eq!(strip("/v2.6/agents"), None);
        assert_eq!(strip("/"), None);
    }
}
