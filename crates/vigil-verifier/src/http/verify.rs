//! `/v2.x/verify/identity` and `/v2.x/verify/evidence` (public).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{json_body, query, Reply};
use crate::error::ApiError;
use crate::service::{EvidenceVerdict, Service};
use vigil_service::reply::{envelope, success};

pub(super) async fn identity(State(s): State<Service>, req: Request) -> Reply {
    let q = query(&req)?;
    let mut args = Vec::new();
    for k in ["agent_uuid", "quote", "nonce", "hash_alg"] {
        match q.get(k) {
            Some(v) => args.push(v),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "missing query parameter '{k}'"
                )))
            }
        }
    }
    let [id, quote, nonce, hash_alg] = args[..] else {
        return Err(ApiError::BadRequest("missing query parameters".into()));
    };
    s.verify_identity(id, quote, nonce, hash_alg)
        .await
        .map(success)
}

pub(super) async fn evidence(State(s): State<Service>, req: Request) -> Reply {
    let body = json_body(req, s.config().max_upload_size).await?;
    s.verify_evidence(body).await.map(answer)
}

/// Keylime 2.5+'s answer: `{"valid", "claims", "failures": [{"type", "context"}]}`,
/// with 400 for a missing parameter or policy.
fn answer(verdict: EvidenceVerdict) -> axum::response::Response {
    let failures: Vec<Value> = verdict
        .failure
        .events()
        .iter()
        .map(|e| json!({"type": e.event_id, "context": e.context}))
        .collect();
    let valid = verdict.failure.is_empty();
    let results = json!({
        "valid": valid,
        "claims": if valid { Value::Object(verdict.data.clone()) } else { json!({}) },
        "failures": failures,
    });
    if verdict.is_param_error() {
        envelope(StatusCode::BAD_REQUEST, "Bad Request", results)
    } else {
        success(results)
    }
}
