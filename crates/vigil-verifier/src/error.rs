//! The service layer's errors. Each variant's text is the `status` Keylime answers
//! with (compat §1.3, §1.6); [`ApiError::status`] is its HTTP code, and `http` turns
//! both into the response envelope, in one place.

use vigil_store::StoreError;

/// Why a request to the verifier's API is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A required field of the body is missing (Keylime's `KeyError` text).
    #[error("Exception error: '{0}'")]
    MissingField(&'static str),
    /// A field of the body has a bad value.
    #[error("Exception error: {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// Another malformed request, with Keylime's text.
    #[error("{0}")]
    BadRequest(String),
    /// An agent id in the path that Keylime's `valid_agent_id` refuses.
    #[error("agent_id not not valid")]
    InvalidAgentId,
    /// A policy name in the path that is not a valid name, or a path segment that does
    /// not decode (percent-encoded bytes that are not UTF-8).
    #[error("Invalid URL")]
    InvalidName,
    /// An admin route without a verified client certificate (Keylime's admin mTLS).
    #[error("Action {0} requires admin authentication (mTLS certificate)")]
    AdminRequired(&'static str),
    /// A runtime policy signature is required, and missing or wrong.
    #[error("{0}")]
    Signature(&'static str),
    /// A workload-identity route without a client certificate authorised for the
    /// identity role (`identity_clients`).
    #[error("{0}")]
    IdentityRole(String),
    /// A workload-identity check refused (replayed nonce, bad quote, failed node).
    #[error("{0}")]
    IdentityRefused(String),
    /// A node enrolled but never attested: nothing can be said of it yet.
    #[error("{0}")]
    NotAttested(String),
    /// No such agent.
    #[error("agent id not found")]
    AgentNotFound,
    /// Another missing record, with Keylime's text.
    #[error("{0}")]
    NotFound(String),
    /// The record exists, or is in use, with Keylime's text.
    #[error("{0}")]
    Conflict(String),
    /// Another replica attests the node: the request must go there.
    #[error("agent {id} is attested by replica {holder}: send this request to it")]
    HeldElsewhere { id: String, holder: String },
    /// The verifier failed otherwise (a judging task that did not finish); logged,
    /// answered as Keylime's bare 500.
    #[error("Internal Server Error")]
    Internal(String),
    /// The database failed; logged, answered as Keylime's bare 500.
    #[error("Internal Server Error")]
    Store {
        doing: &'static str,
        #[source]
        source: StoreError,
    },
}

impl ApiError {
    /// The HTTP status code of the answer.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::MissingField(_)
            | Self::InvalidField { .. }
            | Self::BadRequest(_)
            | Self::InvalidAgentId
            | Self::InvalidName => 400,
            Self::Signature(_) => 401,
            Self::AdminRequired(_) | Self::IdentityRole(_) | Self::IdentityRefused(_) => 403,
            Self::AgentNotFound | Self::NotFound(_) => 404,
            Self::Conflict(_) | Self::NotAttested(_) => 409,
            Self::HeldElsewhere { .. } => 503,
            Self::Store { .. } | Self::Internal(_) => 500,
        }
    }

    /// A database failure while `doing` something.
    pub(crate) fn store(doing: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |source| Self::Store { doing, source }
    }

    /// A bad value of `field`.
    pub(crate) fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::InvalidField {
            field,
            reason: reason.to_string(),
        }
    }
}
