//! The verifier's refusals as Keylime's answer envelope (compat §1.3): an [`ApiError`]
//! becomes `{"code","status","results":{}}` with its code and text, here and only here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vigil_service::reply::{empty, envelope, BodyError};

use crate::error::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Store { doing, source } => tracing::error!("{doing}: {source}"),
            Self::Internal(what) => tracing::error!("{what}"),
            _ => {}
        }
        let code = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        envelope(code, self.to_string(), empty())
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        Self::BadRequest(e.to_string())
    }
}
