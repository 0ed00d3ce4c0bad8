//! `/vigil/v1/…` (admin): the response engine's operator routes — a node's actions and
//! explicit relearn, and the known-good measurement sets.

use axum::extract::{Request, State};
use axum::routing::{get, post, MethodRouter};
use vigil_service::reply::{empty, success};
use vigil_service::routing::RawParams;
use vigil_service::server::Peer;

use super::{admin, json_body, query};
use crate::error::ApiError;
use crate::protocol::valid_id;
use crate::service::Service;

/// A known-good set's body is a few thousand digests at most.
const SET_LIMIT: usize = 1 << 20;

fn id(params: &RawParams) -> Result<&str, ApiError> {
    let id = params.get("id");
    valid_id(id).then_some(id).ok_or(ApiError::InvalidAgentId)
}

fn name(params: &RawParams) -> Result<&str, ApiError> {
    let name = params.get("name");
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then_some(name).ok_or(ApiError::InvalidName)
}

/// The routes, relative to the root.
pub(super) fn routes() -> [(&'static str, MethodRouter<Service>); 4] {
    [
        (
            "/vigil/v1/agents/{id}/actions",
            get(
                |State(s): State<Service>, peer: Peer, params: RawParams| async move {
                    admin(&peer, "get_actions")?;
                    s.actions(id(&params)?).await.map(success)
                },
            ),
        ),
        (
            "/vigil/v1/agents/{id}/relearn",
            post(
                |State(s): State<Service>, peer: Peer, params: RawParams| async move {
                    admin(&peer, "relearn_agent")?;
                    let by = peer.client.as_deref().unwrap_or("admin").to_owned();
                    s.relearn(id(&params)?, &by).await.map(success)
                },
            ),
        ),
        (
            "/vigil/v1/known-good",
            get(
                |State(s): State<Service>, peer: Peer, req: Request| async move {
                    admin(&peer, "get_known_good")?;
                    let q = query(&req)?;
                    s.known_good(q.get("class")).await.map(success)
                },
            )
            .post(
                |State(s): State<Service>, peer: Peer, req: Request| async move {
                    admin(&peer, "add_known_good")?;
                    let body = json_body(req, SET_LIMIT).await?;
                    s.add_known_good(&body).await.map(success)
                },
            ),
        ),
        (
            "/vigil/v1/known-good/{name}",
            get(
                |State(s): State<Service>, peer: Peer, params: RawParams| async move {
                    admin(&peer, "get_known_good")?;
                    s.known_good_set(name(&params)?).await.map(success)
                },
            )
            .delete(
                |State(s): State<Service>, peer: Peer, params: RawParams| async move {
                    admin(&peer, "delete_known_good")?;
                    s.delete_known_good(name(&params)?)
                        .await
                        .map(|()| success(empty()))
                },
            ),
        ),
    ]
}
