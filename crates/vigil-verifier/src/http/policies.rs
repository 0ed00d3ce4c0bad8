//! `/v2.x/allowlists…` (runtime policies) and `/v2.x/mbpolicies…` (measured-boot
//! policies): list, show, create, update, delete (admin).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

use super::{admin, json_body};
use crate::error::ApiError;
use crate::protocol::valid_id;
use crate::service::{PolicyKind, Service};
use vigil_service::reply::{empty, envelope, success};
use vigil_service::routing::RawParams;
use vigil_service::server::Peer;

/// The `{name}` of the path, as sent, if it is a valid one.
fn checked(params: &RawParams) -> Result<&str, ApiError> {
    let name = params.get("name");
    if valid_id(name) {
        Ok(name)
    } else {
        Err(ApiError::InvalidName)
    }
}

fn created() -> axum::response::Response {
    envelope(StatusCode::CREATED, "Created", empty())
}

/// Keylime's action names, for the admin check's text.
struct Actions {
    list: &'static str,
    show: &'static str,
    update: &'static str,
    delete: &'static str,
}

fn actions(kind: PolicyKind) -> Actions {
    match kind {
        PolicyKind::Runtime => Actions {
            list: "get_allowlists",
            show: "get_allowlist",
            update: "update_allowlist",
            delete: "delete_allowlist",
        },
        PolicyKind::MeasuredBoot => Actions {
            list: "get_mbpolicies",
            show: "get_mbpolicy",
            update: "update_mbpolicy",
            delete: "delete_mbpolicy",
        },
    }
}

/// `GET /v2.x/allowlists` or `/v2.x/mbpolicies`.
pub(super) fn collection(kind: PolicyKind) -> MethodRouter<Service> {
    get(move |State(s): State<Service>, peer: Peer| async move {
        admin(&peer, actions(kind).list)?;
        s.policy_names(kind).await.map(success)
    })
}

/// `/v2.x/allowlists/{name}` or `/v2.x/mbpolicies/{name}`: show, create (POST),
/// replace (PUT), delete.
pub(super) fn item(kind: PolicyKind) -> MethodRouter<Service> {
    let put = move |create: bool| {
        move |State(s): State<Service>, peer: Peer, params: RawParams, req: Request| async move {
            admin(&peer, actions(kind).update)?;
            let name = checked(&params)?;
            let body = json_body(req, s.config().max_upload_size).await?;
            let stored = match kind {
                PolicyKind::Runtime => s.put_runtime_policy(name, &body, create).await,
                PolicyKind::MeasuredBoot => s.put_mb_policy(name, &body, create).await,
            };
            stored.map(|()| created())
        }
    };
    get(
        move |State(s): State<Service>, peer: Peer, params: RawParams| async move {
            admin(&peer, actions(kind).show)?;
            let name = checked(&params)?;
            s.policy(kind, name).await.map(success)
        },
    )
    .post(put(true))
    .put(put(false))
    .delete(
        move |State(s): State<Service>, peer: Peer, params: RawParams| async move {
            admin(&peer, actions(kind).delete)?;
            let name = checked(&params)?;
            s.delete_policy(kind, name)
                .await
                .map(|()| StatusCode::NO_CONTENT.into_response())
        },
    )
}
