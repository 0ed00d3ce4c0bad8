//! `/vigil/v1/…`: the provisioning trust gate (admin, mTLS like Keylime's admin routes).
//!
//! - `GET /vigil/v1/classes`; `GET|POST|PUT|DELETE /vigil/v1/classes/{name}`
//! - `GET /vigil/v1/nodes?label=k=v[,k=v]`; `PATCH /vigil/v1/nodes/{id}` (class, labels);
//!   `GET /vigil/v1/nodes/{id}/pcrs?pcrs=0,2,4,7` (values from a verified quote, now)
//! - `GET /vigil/v1/trust/{id}?max_age=S&nonce=N&timeout=S`; `GET /vigil/v1/trust/key`
//!   (the attestation-results public key, PEM; a node named `key` cannot be gated)

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use vigil_service::reply::{empty, envelope, success};
use vigil_service::routing::RawParams;
use vigil_service::server::Peer;

use super::{admin, json_body, query};
use crate::error::ApiError;
use crate::gate::{self, TrustQuery};
use crate::protocol::valid_id;
use crate::service::Service;

/// The largest class or node body read.
const MAX_BODY: usize = 1 << 20;

fn node_id(params: &RawParams) -> Result<&str, ApiError> {
    let id = params.get("id");
    if valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::InvalidAgentId)
    }
}

fn class_name(params: &RawParams) -> Result<&str, ApiError> {
    let name = params.get("name");
    gate::check_class_name(name).map_err(|_| ApiError::InvalidName)?;
    Ok(name)
}

/// The routes, to merge into the API router.
pub(super) fn routes() -> [(&'static str, MethodRouter<Service>); 6] {
    [
        (
            "/vigil/v1/classes",
            get(|State(s): State<Service>, peer: Peer| async move {
                admin(&peer, "list_classes")?;
                s.classes().await.map(success)
            }),
        ),
        ("/vigil/v1/classes/{name}", class_item()),
        (
            "/vigil/v1/nodes",
            get(
                |State(s): State<Service>, peer: Peer, req: Request| async move {
                    admin(&peer, "list_nodes")?;
                    let q = query(&req)?;
                    let mut selector = BTreeMap::new();
                    for part in q
                        .get("label")
                        .unwrap_or("")
                        .split(',')
                        .filter(|p| !p.is_empty())
                    {
                        let (k, v) = gate::selector(part).map_err(ApiError::BadRequest)?;
                        selector.insert(k, v);
                    }
                    s.nodes(&selector).await.map(success)
                },
            ),
        ),
        (
            "/vigil/v1/nodes/{id}",
            axum::routing::patch(
                |State(s): State<Service>, peer: Peer, params: RawParams, req: Request| async move {
                    admin(&peer, "update_node")?;
                    let id = node_id(&params)?;
                    let body = json_body(req, MAX_BODY).await?;
                    s.set_node(id, &body).await.map(|()| success(empty()))
                },
            ),
        ),
        (
            "/vigil/v1/nodes/{id}/pcrs",
            get(
                |State(s): State<Service>, peer: Peer, params: RawParams, req: Request| async move {
                    admin(&peer, "read_pcrs")?;
                    let id = node_id(&params)?;
                    let q = query(&req)?;
                    let pcrs = pcr_list(q.get("pcrs").unwrap_or("0,1,2,3,4,5,6,7"))?;
                    s.pcrs(id, &pcrs).await.map(success)
                },
            ),
        ),
        (
            "/vigil/v1/trust/{id}",
            get(
                |State(s): State<Service>, peer: Peer, params: RawParams, req: Request| async move {
                    admin(&peer, "trust")?;
                    let id = params.get("id");
                    if id == "key" {
                        let pem = s.results_key_pem()?;
                        return Ok::<_, ApiError>(
                            ([(header::CONTENT_TYPE, "application/x-pem-file")], pem)
                                .into_response(),
                        );
                    }
                    let id = node_id(&params)?;
                    let q = query(&req)?;
                    let tq = TrustQuery::parse(q.get("max_age"), q.get("nonce"), q.get("timeout"))
                        .map_err(ApiError::BadRequest)?;
                    s.trust(id, &tq).await.map(success)
                },
            ),
        ),
    ]
}

/// `0,2,4,7` or `0-7`, each PCR 0–23.
fn pcr_list(text: &str) -> Result<Vec<u32>, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "pcrs {text:?}: expected PCR numbers 0-23 like 0,2,4-7"
        ))
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b || b > 23 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn class_item() -> MethodRouter<Service> {
    let put = |create: bool| {
        move |State(s): State<Service>, peer: Peer, params: RawParams, req: Request| async move {
            admin(&peer, "update_class")?;
            let name = class_name(&params)?;
            let body = json_body(req, MAX_BODY).await?;
            s.put_class(name, &body, create).await.map(|()| {
                envelope(
                    if create {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    },
                    if create { "Created" } else { "Success" },
                    empty(),
                )
            })
        }
    };
    get(
        |State(s): State<Service>, peer: Peer, params: RawParams| async move {
            admin(&peer, "get_class")?;
            let name = class_name(&params)?;
            s.class(name).await.map(success)
        },
    )
    .post(put(true))
    .put(put(false))
    .delete(
        |State(s): State<Service>, peer: Peer, params: RawParams| async move {
            admin(&peer, "delete_class")?;
            let name = class_name(&params)?;
            s.delete_class(name).await.map(|()| success(empty()))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_lists() {
        assert_eq!(pcr_list("0,2,4-7").unwrap(), [0, 2, 4, 5, 6, 7]);
        assert_eq!(pcr_list("17-19,22").unwrap(), [17, 18, 19, 22]);
        assert!(pcr_list("24").is_err());
        assert!(pcr_list("x").is_err());
        assert!(pcr_list("5-3").is_err());
    }
}
