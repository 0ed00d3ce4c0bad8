//! `/v2.x/allowlists…` (runtime policies) and `/v2.x/mbpolicies…` (measured-boot
//! policies): list, show, create, update, delete (admin).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::reply::{empty, envelope, json_body, success};
use super::{Caller, Reply};
use crate::error::ApiError;
use crate::protocol::valid_id;
use crate::service::{PolicyKind, Service};

fn checked(name: &str) -> Result<(), ApiError> {
    if valid_id(name) {
        Ok(())
    } else {
        Err(ApiError::InvalidName)
    }
}

fn created() -> axum::response::Response {
    envelope(StatusCode::CREATED, "Created", empty())
}

async fn list(s: &Service, caller: &Caller, action: &'static str, kind: PolicyKind) -> Reply {
    caller.admin(action)?;
    s.policy_names(kind).await.map(success)
}

async fn show(
    s: &Service,
    caller: &Caller,
    action: &'static str,
    kind: PolicyKind,
    name: &str,
) -> Reply {
    caller.admin(action)?;
    checked(name)?;
    s.policy(kind, name).await.map(success)
}

async fn put(
    s: &Service,
    caller: &Caller,
    kind: PolicyKind,
    name: &str,
    req: Request,
    create: bool,
) -> Reply {
    let action = match kind {
        PolicyKind::Runtime => "update_allowlist",
        PolicyKind::MeasuredBoot => "update_mbpolicy",
    };
    caller.admin(action)?;
    checked(name)?;
    let body = json_body(req, s.config().max_upload_size).await?;
    let result = match kind {
        PolicyKind::Runtime => s.put_runtime_policy(name, &body, create).await,
        PolicyKind::MeasuredBoot => s.put_mb_policy(name, &body, create).await,
    };
    result.map(|()| created())
}

async fn delete(
    s: &Service,
    caller: &Caller,
    action: &'static str,
    kind: PolicyKind,
    name: &str,
) -> Reply {
    caller.admin(action)?;
    checked(name)?;
    s.delete_policy(kind, name)
        .await
        .map(|()| StatusCode::NO_CONTENT.into_response())
}

type Named = Path<(String, String)>;

pub(super) async fn list_runtime(State(s): State<Service>, c: Caller) -> Reply {
    list(&s, &c, "get_allowlists", PolicyKind::Runtime).await
}

pub(super) async fn show_runtime(
    State(s): State<Service>,
    c: Caller,
    Path((_, n)): Named,
) -> Reply {
    show(&s, &c, "get_allowlist", PolicyKind::Runtime, &n).await
}

pub(super) async fn create_runtime(
    State(s): State<Service>,
    c: Caller,
    Path((_, n)): Named,
    req: Request,
) -> Reply {
    put(&s, &c, PolicyKind::Runtime, &n, req, true).await
}

pub(super) async fn update_runtime(
    State(s): State<Service>,
    c: Caller,
    Path((_, n)): Named,
    req: Request,
) -> Reply {
    put(&s, &c, PolicyKind::Runtime, &n, req, false).await
}

pub(super) async fn delete_runtime(
    State(s): State<Service>,
    c: Caller,
    Path((_, n)): Named,
) -> Reply {
    delete(&s, &c, "delete_allowlist", PolicyKind::Runtime, &n).await
}

pub(super) async fn list_mb(State(s): State<Service>, c: Caller) -> Reply {
    list(&s, &c, "get_mbpolicies", PolicyKind::MeasuredBoot).await
}

pub(super) async fn show_mb(State(s): State<Service>, c: Caller, Path((_, n)): Named) -> Reply {
    show(&s, &c, "get_mbpolicy", PolicyKind::MeasuredBoot, &n).await
}

pub(super) async fn create_mb(
    State(s): State<Service>,
    c: Caller,
    Path((_, n)): Named,
    req: Request,
) -> Reply {
    put(&s, &c, PolicyKind::MeasuredBoot, &n, req, true).await
}

pub(super) async fn update_mb(
    State(s): State<Service>,
    c: Caller,
    Path((_, n)): Named,
    req: Request,
) -> Reply {
    put(&s, &c, PolicyKind::MeasuredBoot, &n, req, false).await
}

pub(super) async fn delete_mb(State(s): State<Service>, c: Caller, Path((_, n)): Named) -> Reply {
    delete(&s, &c, "delete_mbpolicy", PolicyKind::MeasuredBoot, &n).await
}
