//! What the services' axum routers share: Keylime's 404 and 405 answers for the
//! router's fallbacks, a route registered with and without its trailing slash (Keylime
//! serves both), path parameters as sent (not percent-decoded, as the services have
//! always read them), and one log line per request.

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;
use axum::Router;
use tracing::info;

use crate::reply::plain;
use crate::server::Peer;

/// Keylime's answer to a path no route serves: 404 `Not Found`, empty results.
pub async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND)
}

/// Keylime's answer to a method a route does not serve: 405 `Method Not Allowed`,
/// empty results.
pub async fn method_not_allowed() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED)
}

/// `router` with `methods` at `path` and at `path/`.
pub fn with_slash<S>(router: Router<S>, path: &str, methods: MethodRouter<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .route(path, methods.clone())
        .route(&format!("{path}/"), methods)
}

/// The route's `{name}` parameters as they appear in the request path, not
/// percent-decoded: an id is checked exactly as sent. An empty segment matches no
/// route (`/v2/agents//` is Keylime's 404, which the router alone would send to
/// `/v2/agents/{id}/`). Catch-all (`{*rest}`) parameters are not supported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawParams(Vec<(String, String)>);

impl RawParams {
    /// The segment matched by `{name}`, empty when the route has none.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The parameters of a route `template` (`/v2/agents/{id}`) in `path`.
    fn of(template: &str, path: &str) -> Self {
        Self(
            template
                .split('/')
                .zip(path.split('/'))
                .filter_map(|(t, segment)| {
                    let name = t.strip_prefix('{')?.strip_suffix('}')?;
                    Some((name.to_owned(), segment.to_owned()))
                })
                .collect(),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RawParams {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let template = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        let params = Self::of(template, parts.uri.path());
        if params.0.iter().any(|(_, v)| v.is_empty()) {
            return Err(plain(StatusCode::NOT_FOUND));
        }
        Ok(params)
    }
}

/// Middleware (`axum::middleware::from_fn`) logging each request once answered: its
/// method, path, status code and how it arrived ([`Peer`]).
pub async fn log_requests(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let peer = req.extensions().get::<Peer>().cloned().unwrap_or_default();
    let response = next.run(req).await;
    let code = response.status().as_u16();
    match &peer.client {
        Some(client) => info!(%method, %path, code, client = %client, "request"),
        None => info!(%method, %path, code, https = peer.https, "request"),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_params_are_the_segments_as_sent() {
        let p = RawParams::of("/v2.1/agents/{id}/activate", "/v2.1/agents/a%2Db/activate");
        assert_eq!(p.get("id"), "a%2Db");
        assert_eq!(p.get("other"), "");
        assert_eq!(RawParams::of("/version", "/version"), RawParams::default());
    }
}
