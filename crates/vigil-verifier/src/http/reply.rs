//! Keylime's answer envelope and request-body rules (compat §1.3).

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// `{"code", "status", "results"}` with the HTTP status `code`.
pub(crate) fn envelope(code: StatusCode, status: impl Into<String>, results: Value) -> Response {
    let body = json!({"code": code.as_u16(), "status": status.into(), "results": results});
    (code, Json(body)).into_response()
}

/// `200 Success` with `results`.
pub(crate) fn success(results: Value) -> Response {
    envelope(StatusCode::OK, "Success", results)
}

/// An empty `results` object.
pub(crate) fn empty() -> Value {
    Value::Object(Map::new())
}

/// `code` with its reason phrase as the status and empty results.
pub(crate) fn plain(code: StatusCode) -> Response {
    envelope(code, code.canonical_reason().unwrap_or("Error"), empty())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Store { doing, source } = &self {
            tracing::error!("{doing}: {source}");
        }
        let code = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        envelope(code, self.to_string(), empty())
    }
}

/// The request body as a JSON object of at most `limit` bytes, or Keylime's 400s.
pub(crate) async fn json_body(req: Request, limit: usize) -> Result<Map<String, Value>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_big = || {
        ApiError::BadRequest(format!(
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
        return Err(ApiError::BadRequest(
            "Expected non zero content length".into(),
        ));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) if map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) => {
            Err(ApiError::BadRequest(format!("Exception error: {NUL}")))
        }
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest(
            "Exception error: the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "Exception error: the body is not valid JSON: {e}"
        ))),
    }
}

/// Why a request with a NUL character is refused: no field or parameter may hold one,
/// and PostgreSQL cannot store one in text (it would fail as a server error).
const NUL: &str = "the request contains a NUL character";

/// Whether a string anywhere in `v` (a key or a value) holds a NUL character.
/// (serde_json bounds the nesting, so the recursion is bounded.)
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The query's parameters as Keylime reads them (`urllib.parse.parse_qsl`): a parameter
/// with an empty value is dropped, so `keylime_tenant -c cvlist`'s `?verifier=` (no
/// `-vi`) means "every verifier", not "the verifier with an empty id". A NUL character
/// (`%00`) is refused.
pub(crate) fn query(req: &Request) -> Result<Vec<(String, String)>, ApiError> {
    let q: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    if q.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err(ApiError::BadRequest(format!("Invalid URL: {NUL}")));
    }
    Ok(q)
}

/// The first value of parameter `k`.
pub(crate) fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}
