//! `POST /v2.x/agents/{id}`: the enrolment body (compat §1.6) checked field by field
//! into a `vigil_store::Enrolment`. Every bad field is a 400 that names it, and nothing
//! is stored unless every field is good; the store then writes the agent and its inline
//! policies in one transaction.

// Early returns carry a ready `Response` as their error, the axum idiom.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value};
use tracing::{info, warn};
use vigil_core::policy::tpm::TpmPolicy;
use vigil_core::tpm::quote::AkPublicKey;
use vigil_store::{Enrolment, NewMbPolicy, NewRuntimePolicy, PolicyRef, StoreError};

use crate::api::{
    bad_request, check_policy_signature, envelope, runtime_policy_text, SUPPORTED_VERSIONS,
};
use crate::context;
use crate::engine::Engine;

fn empty() -> Value {
    Value::Object(Map::new())
}

/// Keylime answers a missing required key with its `KeyError`: `Exception error: 'key'`.
fn missing(key: &str) -> Response {
    bad_request(format!("Exception error: '{key}'"))
}

fn invalid(key: &str, why: impl std::fmt::Display) -> Response {
    bad_request(format!("Exception error: {key}: {why}"))
}

fn req<'a>(b: &'a Map<String, Value>, key: &str) -> Result<&'a Value, Response> {
    b.get(key).ok_or_else(|| missing(key))
}

fn req_str<'a>(b: &'a Map<String, Value>, key: &str) -> Result<&'a str, Response> {
    req(b, key)?
        .as_str()
        .ok_or_else(|| invalid(key, "must be a string"))
}

fn opt_str<'a>(b: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Response> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(key, "must be a string")),
    }
}

fn list(b: &Map<String, Value>, key: &str) -> Result<Vec<String>, Response> {
    let bad = || invalid(key, "must be a list of strings");
    req(b, key)?
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

fn port(b: &Map<String, Value>, key: &str) -> Result<Option<u16>, Response> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(key, "is not a port number")),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(key, "is not a port number")),
        Some(_) => Err(invalid(key, "is not a port number")),
    }
}

fn b64(key: &str, s: &str) -> Result<Vec<u8>, Response> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| invalid(key, format!("is not base64: {e}")))
}

/// Checks the body and enrols the agent.
pub(crate) async fn enrol(e: &Arc<Engine>, id: &str, b: &Map<String, Value>) -> Response {
    match build(e, id, b).await {
        Ok(enrolment) => match e.store.verifier_agents().enrol(enrolment).await {
            Ok(()) => {
                info!(agent_id = id, "agent enrolled");
                e.enrolled(id).await;
                envelope(StatusCode::OK, "Success", empty())
            }
            Err(StoreError::AlreadyExists { entity, id: what }) => {
                warn!(agent_id = id, "enrolment refused: {entity} {what} exists");
                envelope(
                    StatusCode::CONFLICT,
                    format!("{entity} {what} already exists"),
                    empty(),
                )
            }
            Err(StoreError::NotFound { entity, id: what }) => envelope(
                StatusCode::NOT_FOUND,
                format!("Could not find {entity} with name {what}!"),
                empty(),
            ),
            Err(err) => {
                tracing::error!(agent_id = id, "enrolling: {err}");
                envelope(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    empty(),
                )
            }
        },
        Err(r) => r,
    }
}

async fn build(e: &Engine, id: &str, b: &Map<String, Value>) -> Result<Enrolment, Response> {
    let cfg = &e.config;
    // Required keys first, in Keylime's order, so a missing one is named as Keylime does.
    let tpm_policy = req_str(b, "tpm_policy")?;
    TpmPolicy::from_json(tpm_policy).map_err(|err| invalid("tpm_policy", err))?;
    let meta_data = req_str(b, "metadata")?;
    let ima_keys = req_str(b, "ima_sign_verification_keys")?;
    let revocation_key = req_str(b, "revocation_key")?;
    if !revocation_key.trim().is_empty() {
        context::revocation_key(revocation_key).map_err(|err| invalid("revocation_key", err))?;
    }
    let accept_hash = list(b, "accept_tpm_hash_algs")?;
    let accept_enc = list(b, "accept_tpm_encryption_algs")?;
    let accept_sign = list(b, "accept_tpm_signing_algs")?;
    let ak_tpm = b64("ak_tpm", req_str(b, "ak_tpm")?)?;
    AkPublicKey::from_spki_or_tpm2b(&ak_tpm).map_err(|err| invalid("ak_tpm", err))?;
    let v = opt_str(b, "v")?;
    if let Some(v) = v {
        let bytes = b64("v", v)?;
        if bytes.len() != 32 {
            return Err(invalid(
                "v",
                format!("must be 32 bytes, got {}", bytes.len()),
            ));
        }
    }
    let ip = opt_str(b, "cloudagent_ip")?;
    if let Some(ip) = ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| invalid("cloudagent_ip", "is not an IP address"))?;
    }
    let agent_port = port(b, "cloudagent_port")?;
    let verifier_port = port(b, "verifier_port")?.unwrap_or(cfg.port);
    let verifier_ip = opt_str(b, "verifier_ip")?.map_or_else(|| cfg.ip.to_string(), str::to_owned);
    let mtls_cert = opt_str(b, "mtls_cert")?;
    if cfg.enable_agent_mtls && mtls_cert.is_none_or(|c| c == "disabled") {
        return Err(bad_request("mTLS certificate for agent is required!"));
    }
    if let Some(c) = mtls_cert.filter(|c| *c != "disabled") {
        crate::client::cert_der(c.as_bytes())
            .ok_or_else(|| invalid("mtls_cert", "is not a PEM certificate"))?;
    }
    let supported_version = match opt_str(b, "supported_version")? {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => v.to_owned(),
        // Keylime replaces an unknown version by its current one and negotiates later.
        _ => crate::api::CURRENT_VERSION.to_owned(),
    };
    if !ima_keys.trim().is_empty() && ima_keys.trim() != "[]" {
        vigil_core::ima::keyring::ImaKeyring::from_keylime_json(ima_keys)
            .map_err(|err| invalid("ima_sign_verification_keys", err))?;
    }

    match e.store.verifier_agents().get(id).await {
        Ok(Some(_)) => {
            return Err(envelope(
                StatusCode::CONFLICT,
                format!("Agent of uuid {id} already exists. Please use delete or update."),
                empty(),
            ))
        }
        Ok(None) => {}
        Err(err) => {
            tracing::error!("reading an agent: {err}");
            return Err(envelope(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                empty(),
            ));
        }
    }

    // Runtime policy: inline (stored under its name or the agent id) or by name.
    let rp_name = opt_str(b, "runtime_policy_name")?.filter(|n| !n.is_empty());
    let rp = req_str(b, "runtime_policy")?;
    let policies = e.store.policies();
    let stored = |r: Result<bool, StoreError>| {
        r.map_err(|err| {
            tracing::error!("reading a policy: {err}");
            envelope(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                empty(),
            )
        })
    };
    if let Some(name) = rp_name {
        if !crate::api::valid_id(name) {
            return Err(invalid(
                "runtime_policy_name",
                "may hold only letters, digits, '_', '.', '-'",
            ));
        }
        let exists = stored(policies.get_runtime(name).await.map(|p| p.is_some()))?;
        if !rp.is_empty() && exists {
            return Err(envelope(StatusCode::CONFLICT, format!("IMA policy with name {name} already exists. Please use a different name or delete the allowlist from the verifier."), empty()));
        }
        if rp.is_empty() && !exists {
            return Err(envelope(
                StatusCode::NOT_FOUND,
                format!("Could not find IMA policy with name {name}!"),
                empty(),
            ));
        }
    }
    let runtime_policy = if rp.is_empty() {
        // Keylime enrols an unsigned empty policy when neither is given.
        if cfg.require_allow_list_signatures && rp_name.is_none() {
            check_policy_signature(None, b)?;
        }
        rp_name.map(|n| PolicyRef::Named(n.to_owned()))
    } else {
        let (text, parsed) = runtime_policy_text(rp).map_err(|m| invalid("runtime_policy", m))?;
        if cfg.require_allow_list_signatures {
            check_policy_signature(Some(&text), b)?;
        }
        let name = rp_name.unwrap_or(id).to_owned();
        if rp_name.is_none() && stored(policies.get_runtime(&name).await.map(|p| p.is_some()))? {
            return Err(envelope(StatusCode::CONFLICT, format!("IMA policy with name {name} already exists. Please use a different name or delete the allowlist from the verifier."), empty()));
        }
        Some(PolicyRef::Inline(NewRuntimePolicy {
            name,
            generator: Some(i64::from(parsed.generator())),
            tpm_policy: None,
            ima_policy: Some(text),
        }))
    };

    // Measured-boot policy: the same rules, the agent id as the default name.
    req(b, "mb_policy")?;
    let mb_text =
        crate::api::mb_policy_text(b.get("mb_policy")).map_err(|m| invalid("mb_policy", m))?;
    let mb_name_given = req(b, "mb_policy_name")?
        .as_str()
        .ok_or_else(|| invalid("mb_policy_name", "must be a string"))?;
    let (mb_name, named) = if mb_name_given.is_empty() {
        (id, false)
    } else {
        (mb_name_given, true)
    };
    if !crate::api::valid_id(mb_name) {
        return Err(invalid(
            "mb_policy_name",
            "may hold only letters, digits, '_', '.', '-'",
        ));
    }
    let mb_exists = stored(policies.get_mb(mb_name).await.map(|p| p.is_some()))?;
    if mb_text.is_some() && mb_exists {
        let tail = if named {
            "Please use a different name or delete the mb_policy from the verifier."
        } else {
            "You can delete the mb_policy from the verifier."
        };
        return Err(envelope(
            StatusCode::CONFLICT,
            format!("mb_policy with name {mb_name} already exists. {tail}"),
            empty(),
        ));
    }
    if named && mb_text.is_none() && !mb_exists {
        return Err(envelope(
            StatusCode::NOT_FOUND,
            format!("Could not find mb_policy with name {mb_name}!"),
            empty(),
        ));
    }
    let mb_policy = match (mb_text, mb_exists) {
        (Some(text), _) => Some(PolicyRef::Inline(NewMbPolicy {
            name: mb_name.to_owned(),
            mb_policy: Some(text),
        })),
        (None, true) => Some(PolicyRef::Named(mb_name.to_owned())),
        (None, false) => None,
    };

    Ok(Enrolment {
        agent_id: id.to_owned(),
        v: v.map(str::to_owned),
        ip: ip.map(str::to_owned),
        port: agent_port,
        verifier_id: cfg.uuid.clone(),
        verifier_ip,
        verifier_port,
        operational_state: 1,
        public_key: None,
        tpm_policy: tpm_policy.to_owned(),
        meta_data: meta_data.to_owned(),
        runtime_policy,
        mb_policy,
        ima_sign_verification_keys: ima_keys.to_owned(),
        revocation_key: (!revocation_key.is_empty()).then(|| revocation_key.to_owned()),
        accept_tpm_hash_algs: accept_hash,
        accept_tpm_encryption_algs: accept_enc,
        accept_tpm_signing_algs: accept_sign,
        supported_version,
        ak_tpm,
        mtls_cert: mtls_cert.map(str::to_owned),
        accept_attestations: true,
    })
}
