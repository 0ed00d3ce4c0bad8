//! `/v2.x/agents…`: enrolment, status, list, delete, stop and reactivate (admin).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::{put, MethodRouter};
use vigil_core::attestation::Deletion;

use super::{admin, json_body, query, Reply};
use crate::error::ApiError;
use crate::protocol::valid_id;
use crate::service::{Service, TenantAction};
use vigil_service::reply::{empty, envelope, success};
use vigil_service::routing::RawParams;
use vigil_service::server::Peer;

/// The `{id}` of the path, as sent, if it is a valid one.
fn checked(params: &RawParams) -> Result<&str, ApiError> {
    let id = params.get("id");
    if valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::InvalidAgentId)
    }
}

pub(super) async fn list(State(s): State<Service>, peer: Peer, req: Request) -> Reply {
    admin(&peer, "get_agents")?;
    let q = query(&req)?;
    // Keylime answers in bulk whenever `bulk` has a value, whatever it is.
    s.list(q.get("verifier"), q.get("bulk").is_some())
        .await
        .map(success)
}

pub(super) async fn show(State(s): State<Service>, peer: Peer, params: RawParams) -> Reply {
    admin(&peer, "get_agent")?;
    let id = checked(&params)?;
    s.show(id).await.map(success)
}

pub(super) async fn enrol(
    State(s): State<Service>,
    peer: Peer,
    params: RawParams,
    req: Request,
) -> Reply {
    admin(&peer, "create_agent")?;
    let id = checked(&params)?;
    let body = json_body(req, s.config().max_upload_size).await?;
    s.enrol(id, &body).await.map(|()| success(empty()))
}

pub(super) async fn delete(State(s): State<Service>, peer: Peer, params: RawParams) -> Reply {
    admin(&peer, "delete_agent")?;
    let id = checked(&params)?;
    s.delete(id).await.map(|how| match how {
        Deletion::Immediate => success(empty()),
        Deletion::Deferred => envelope(StatusCode::ACCEPTED, "Accepted", empty()),
    })
}

/// `PUT …/reactivate` or `…/stop`.
pub(super) fn tenant_action(action: TenantAction) -> MethodRouter<Service> {
    let name = match action {
        TenantAction::Reactivate => "reactivate_agent",
        TenantAction::Stop => "stop_agent",
    };
    put(
        move |State(s): State<Service>, peer: Peer, params: RawParams| async move {
            admin(&peer, name)?;
            let id = checked(&params)?;
            s.tenant_action(id, action).await.map(|()| success(empty()))
        },
    )
}
