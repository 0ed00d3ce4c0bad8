//! Keylime's side of an exchange, as every service speaks it (compat §1.3): the
//! `{"code", "status", "results"}` envelope, the request body read as a JSON object
//! with a size limit and Keylime's 400 texts, and query strings.
//!
//! Keylime words a refused body differently in each service (the verifier and
//! registrar are Python, the agent is rust-keylime): [`Dialect`] holds the three
//! wordings, so a service's texts are chosen once and not copied.

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// `{"code", "status", "results"}` with the HTTP status `code`.
pub fn envelope(code: StatusCode, status: impl Into<String>, results: Value) -> Response {
    let body = json!({"code": code.as_u16(), "status": status.into(), "results": results});
    (code, Json(body)).into_response()
}

/// 200 `Success` with `results`.
pub fn success(results: Value) -> Response {
    envelope(StatusCode::OK, "Success", results)
}

/// `{}`: the `results` of an answer that has none.
pub fn empty() -> Value {
    Value::Object(Map::new())
}

/// `code` with its reason phrase as the status text and empty results: Keylime's
/// answer when a handler gives no text.
pub fn plain(code: StatusCode) -> Response {
    envelope(code, code.canonical_reason().unwrap_or("Error"), empty())
}

/// 400 with `message` as the status text.
pub fn bad_request(message: impl Into<String>) -> Response {
    envelope(StatusCode::BAD_REQUEST, message, empty())
}

/// Whose wording a refused request body gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Keylime's verifier: an empty body is refused ("Expected non zero content
    /// length"), other errors start with "Exception error:".
    Verifier,
    /// Keylime's registrar: an empty or blank body is `{}`, errors start with
    /// "Malformed Request Parameter:" (the size limit with "Bad Request:").
    Registrar,
    /// rust-keylime's agent: every error starts with "Json deserialize error:".
    Agent,
}

impl Dialect {
    fn too_large(self, limit: usize) -> String {
        match self {
            Self::Verifier => format!("the request body exceeds max_upload_size ({limit} bytes)"),
            Self::Registrar => {
                format!("Bad Request: the request body exceeds max_upload_size ({limit} bytes)")
            }
            Self::Agent => format!("Json deserialize error: body over {limit} bytes"),
        }
    }

    fn not_object(self) -> &'static str {
        match self {
            Self::Verifier => "Exception error: the body must be a JSON object",
            Self::Registrar => "Malformed Request Parameter: the body must be a JSON object",
            Self::Agent => "Json deserialize error: expected a JSON object",
        }
    }

    fn not_json(self, e: &serde_json::Error) -> String {
        match self {
            Self::Verifier => format!("Exception error: the body is not valid JSON: {e}"),
            Self::Registrar => {
                format!("Malformed Request Parameter: the body is not valid JSON: {e}")
            }
            Self::Agent => format!("Json deserialize error: {e}"),
        }
    }
}

/// A request body refused by [`json_object`]: the text is the dialect's, and the
/// answer a 400 envelope with it as the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(String);

impl From<BodyError> for Response {
    fn from(e: BodyError) -> Self {
        bad_request(e.0)
    }
}

/// The request body as a JSON object, or the 400 of `dialect`. A body over `limit`
/// bytes is refused from its declared length without being read, or as soon as the
/// limit is crossed.
pub async fn json_object(
    req: Request<Body>,
    limit: usize,
    dialect: Dialect,
) -> Result<Map<String, Value>, BodyError> {
    let too_large = || BodyError(dialect.too_large(limit));
    if declares_more_than(req.headers(), limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_large())?;
    match dialect {
        Dialect::Registrar if bytes.iter().all(u8::is_ascii_whitespace) => return Ok(Map::new()),
        Dialect::Verifier if bytes.is_empty() => {
            return Err(BodyError("Expected non zero content length".into()))
        }
        _ => {}
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BodyError(dialect.not_object().into())),
        Err(e) => Err(BodyError(dialect.not_json(&e))),
    }
}

/// Whether `headers` declare a body (`Content-Length`) over `limit` bytes: such a
/// body is refused by the services without reading it (the client's own check is
/// `client::http1`'s framing).
fn declares_more_than(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// A query string's parameters, percent- and `+`-decoded (`form_urlencoded`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Every parameter, empty values included (rust-keylime's agent reads queries
    /// this way).
    pub fn all(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// Keylime's `urllib.parse.parse_qsl`: a parameter with an empty value is
    /// dropped, so `keylime_tenant -c cvlist`'s `?verifier=` (no `-vi`) means "every
    /// verifier", not "the verifier with an empty id".
    pub fn parse_qsl(query: Option<&str>) -> Self {
        let Self(mut pairs) = Self::all(query);
        pairs.retain(|(_, v)| !v.is_empty());
        Self(pairs)
    }

    /// Whether a name or value holds a NUL character (no database stores one in text).
    pub fn has_nul(&self) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refused(body: &str, limit: usize, dialect: Dialect) -> (u16, String) {
        let req = Request::builder()
            .body(Body::from(body.to_owned()))
            .unwrap();
        let r = Response::from(json_object(req, limit, dialect).await.unwrap_err());
        let code = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["code"], code);
        assert_eq!(v["results"], json!({}));
        (code, v["status"].as_str().unwrap().to_owned())
    }

    async fn accepted(body: &str, dialect: Dialect) -> Map<String, Value> {
        let req = Request::builder()
            .body(Body::from(body.to_owned()))
            .unwrap();
        json_object(req, 100, dialect).await.unwrap()
    }

    #[tokio::test]
    async fn bodies_are_refused_in_each_services_words() {
        use Dialect::*;
        let cases: [(Dialect, &str, usize, &str); 10] = [
            (Verifier, "", 100, "Expected non zero content length"),
            (Verifier, "[1]", 100, "Exception error: the body must be a JSON object"),
            (Verifier, "{", 100, "Exception error: the body is not valid JSON: EOF while parsing an object at line 1 column 1"),
            (Verifier, "{}  ", 2, "the request body exceeds max_upload_size (2 bytes)"),
            (Registrar, "1", 100, "Malformed Request Parameter: the body must be a JSON object"),
            (Registrar, "{x", 100, "Malformed Request Parameter: the body is not valid JSON: key must be a string at line 1 column 2"),
            (Registrar, "{}  ", 2, "Bad Request: the request body exceeds max_upload_size (2 bytes)"),
            (Agent, "", 100, "Json deserialize error: EOF while parsing a value at line 1 column 0"),
            (Agent, "\"s\"", 100, "Json deserialize error: expected a JSON object"),
            (Agent, "{}  ", 2, "Json deserialize error: body over 2 bytes"),
        ];
        for (dialect, body, limit, text) in cases {
            assert_eq!(
                refused(body, limit, dialect).await,
                (400, text.to_owned()),
                "{dialect:?} {body:?}"
            );
        }
        assert!(accepted(" \n", Registrar).await.is_empty());
        assert_eq!(accepted("{\"a\":1}", Agent).await["a"], 1);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let req = Request::builder()
            .header(header::CONTENT_LENGTH, "1000")
            .body(Body::empty())
            .unwrap();
        let r = Response::from(json_object(req, 10, Dialect::Verifier).await.unwrap_err());
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn queries_decode_and_keylime_drops_empty_values() {
        let raw = Some("a=1&verifier=&b=x%2By+z&c=%zz&&d");
        let all = Query::all(raw);
        assert_eq!(all.get("verifier"), Some(""));
        assert_eq!(all.get("d"), Some(""));
        assert_eq!(all.get("b"), Some("x+y z"));
        assert_eq!(all.get("c"), Some("%zz"));
        let qsl = Query::parse_qsl(raw);
        assert_eq!(qsl.get("verifier"), None);
        assert_eq!(qsl.get("d"), None);
        assert_eq!(qsl.get("a"), Some("1"));
        assert_eq!(Query::all(None), Query::default());
    }

    #[test]
    fn plain_answers_carry_the_reason_phrase() {
        let r = plain(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(bad_request("x").status(), StatusCode::BAD_REQUEST);
    }
}
