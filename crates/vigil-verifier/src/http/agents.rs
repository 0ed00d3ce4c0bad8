//! `/v2.x/agents…`: enrolment, status, list, delete, stop and reactivate (admin).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::routing::{put, MethodRouter};
use vigil_core::attestation::Deletion;

use super::reply::{empty, envelope, json_body, param, query, success};
use super::{Caller, Reply};
use crate::error::ApiError;
use crate::protocol::valid_id;
use crate::service::{Service, TenantAction};

fn checked(id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::InvalidAgentId)
    }
}

pub(super) async fn list(State(s): State<Service>, caller: Caller, req: Request) -> Reply {
    caller.admin("get_agents")?;
    let q = query(&req)?;
    // Keylime answers in bulk whenever `bulk` has a value, whatever it is.
    s.list(param(&q, "verifier"), param(&q, "bulk").is_some())
        .await
        .map(success)
}

pub(super) async fn show(
    State(s): State<Service>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Reply {
    caller.admin("get_agent")?;
    checked(&id)?;
    s.show(&id).await.map(success)
}

pub(super) async fn enrol(
    State(s): State<Service>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    caller.admin("create_agent")?;
    checked(&id)?;
    let body = json_body(req, s.config().max_upload_size).await?;
    s.enrol(&id, &body).await.map(|()| success(empty()))
}

pub(super) async fn delete(
    State(s): State<Service>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Reply {
    caller.admin("delete_agent")?;
    checked(&id)?;
    s.delete(&id).await.map(|how| match how {
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
        move |State(s): State<Service>, caller: Caller, Path((_, id)): Path<(String, String)>| async move {
            caller.admin(name)?;
            checked(&id)?;
            s.tenant_action(&id, action)
                .await
                .map(|()| success(empty()))
        },
    )
}
