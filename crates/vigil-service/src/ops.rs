//! The operator's endpoints every service serves on each of its ports, to anyone (no
//! client certificate: load balancers, Kubernetes probes and Prometheus scrape them):
//!
//! - `healthz`: 200 while the process serves requests;
//! - `readyz`: 200 when every readiness check passes (the store answers, leases are
//!   held, TLS is loaded…), else 503 naming the checks that fail;
//! - `metrics`: the service's [`Registry`] in the Prometheus text format.
//!
//! Each is served under `/vigil/v1/` (where Vigil's own endpoints live, beside
//! Keylime's API) and at the conventional root path (`/healthz`, `/readyz`,
//! `/metrics`), with or without a trailing slash. Answers say which check fails, never
//! why in detail (an error may name a host, a path or a user): the reason is in the
//! service's log.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::metrics::{Registry, CONTENT_TYPE};
use crate::reply::{envelope, success};
use crate::routing::with_slash;

/// The paths [`routes`] serves (each also with a trailing slash): a service that
/// requires a client certificate for everything else lets these through.
pub const PATHS: [&str; 6] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/vigil/v1/healthz",
    "/vigil/v1/readyz",
    "/vigil/v1/metrics",
];

/// Whether `path` is one of [`PATHS`], with or without a trailing slash.
pub fn is_ops_path(path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    PATHS.contains(&path)
}

/// One readiness check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Passing.
    Ok,
    /// Not in use in this configuration (leases without replicas, mTLS turned off):
    /// not a failure.
    Off,
    /// Failing: what fails, in words safe to show anyone ("unreachable"), not the
    /// error itself.
    Failing(&'static str),
}

impl Check {
    fn text(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Off => "off",
            Self::Failing(what) => what,
        }
    }
}

/// The readiness checks of a service, by name, in the order added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    /// `self` with check `name`.
    #[must_use]
    pub fn with(mut self, name: &'static str, check: Check) -> Self {
        self.checks.push((name, check));
        self
    }

    /// Whether no check fails.
    pub fn is_ready(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|(_, c)| matches!(c, Check::Failing(_)))
    }

    /// The answer: `{"ready": true, "checks": {"store": "ok", …}}`, or 503 with
    /// `"ready": false` and a `reason` listing the failing checks (`store:
    /// unreachable`), in Keylime's envelope like every other answer.
    fn answer(&self) -> Response {
        let checks: Map<String, Value> = self
            .checks
            .iter()
            .map(|(name, c)| ((*name).to_owned(), Value::from(c.text())))
            .collect();
        if self.is_ready() {
            return success(json!({"ready": true, "checks": checks}));
        }
        let reason: Vec<String> = self
            .checks
            .iter()
            .filter_map(|(name, c)| match c {
                Check::Failing(what) => Some(format!("{name}: {what}")),
                _ => None,
            })
            .collect();
        envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            json!({"ready": false, "reason": reason.join("; "), "checks": checks}),
        )
    }
}

/// A future a [`ReadinessCheck`] returns.
pub type ReadinessFuture<'a> = Pin<Box<dyn Future<Output = Readiness> + Send + 'a>>;

/// What a service checks before it says it is ready. Checks should be cheap (one
/// trivial query) and bounded in time: probes call them every few seconds.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Runs the checks.
    fn readiness(&self) -> ReadinessFuture<'_>;
}

/// What the operator's endpoints answer from: the service's metrics and its checks.
#[derive(Clone)]
pub struct Ops {
    registry: Arc<Registry>,
    checks: Arc<dyn ReadinessCheck>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}

impl Ops {
    /// The endpoints over `registry` and `checks`.
    pub fn new(registry: Arc<Registry>, checks: Arc<dyn ReadinessCheck>) -> Self {
        Self { registry, checks }
    }
}

/// The routes of [`PATHS`], to merge into a service's router (whatever its state).
pub fn routes<S>(ops: Ops) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = Router::new();
    for prefix in ["", "/vigil/v1"] {
        router = with_slash(router, &format!("{prefix}/healthz"), get(healthz));
        router = with_slash(router, &format!("{prefix}/readyz"), get(readyz));
        router = with_slash(router, &format!("{prefix}/metrics"), get(metrics));
    }
    router.with_state(ops)
}

async fn healthz() -> Response {
    success(json!({"healthy": true}))
}

async fn readyz(State(ops): State<Ops>) -> Response {
    ops.checks.readiness().await.answer()
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let mut response = ops.registry.encode().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_paths_with_and_without_slash() {
        assert!(is_ops_path("/healthz"));
        assert!(is_ops_path("/vigil/v1/metrics/"));
        assert!(!is_ops_path("/v2.6/keys/pubkey"));
        assert!(!is_ops_path("/healthz//"));
    }

    #[test]
    fn failing_checks_are_named_without_detail() {
        let ready = Readiness::default()
            .with("store", Check::Ok)
            .with("leases", Check::Off);
        assert!(ready.is_ready());
        let not = ready.with("tls", Check::Failing("not loaded"));
        assert!(!not.is_ready());
        let r = not.answer();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
