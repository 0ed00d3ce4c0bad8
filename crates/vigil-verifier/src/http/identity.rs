//! `/vigil/v1/identity/…` (docs/spire.md): workload identity for a client certificate
//! authorised for the identity role — every client certificate the admin API accepts,
//! or with `identity_clients` set, only those whose subject CN it lists.

use axum::extract::{Request, State};

use super::{json_body, Reply};
use crate::config::Config;
use crate::error::ApiError;
use crate::protocol::valid_id;
use crate::service::Service;
use vigil_service::reply::success;
use vigil_service::routing::RawParams;
use vigil_service::server::Peer;

/// The largest `verify` body: a nonce, a quote and a few names.
const MAX_BODY: usize = 64 << 10;

/// Whether `peer` holds the identity role.
fn identity_role(peer: &Peer, config: &Config) -> Result<(), ApiError> {
    let Some(cert) = &peer.client_cert else {
        return Err(ApiError::IdentityRole(
            "the identity role requires a client certificate (mTLS)".into(),
        ));
    };
    if config.identity_clients.is_empty() {
        return Ok(());
    }
    match vigil_tls::peer_common_name(cert) {
        Some(cn) if config.identity_clients.contains(&cn) => Ok(()),
        cn => Err(ApiError::IdentityRole(format!(
            "client certificate CN={} is not authorised for the identity role (identity_clients)",
            cn.as_deref().unwrap_or("(none)")
        ))),
    }
}

pub(super) async fn selectors(State(s): State<Service>, peer: Peer, params: RawParams) -> Reply {
    identity_role(&peer, s.config())?;
    let id = params.get("id");
    if !valid_id(id) {
        return Err(ApiError::InvalidAgentId);
    }
    s.selectors(id).await.map(success)
}

pub(super) async fn nonce(State(s): State<Service>, peer: Peer) -> Reply {
    identity_role(&peer, s.config())?;
    s.identity_nonce().await.map(success)
}

pub(super) async fn verify(State(s): State<Service>, peer: Peer, req: Request) -> Reply {
    identity_role(&peer, s.config())?;
    let body = json_body(req, MAX_BODY).await?;
    s.verify_workload_identity(&body).await.map(success)
}
