//! `POST /v2.x/agents/{id}`: the enrolment body (compat §1.6) checked field by field
//! into a `vigil_store::Enrolment`. Every bad field is a 400 that names it, and nothing
//! is stored unless every field is good; the store then writes the agent and its inline
//! policies in one transaction.

use base64::Engine as _;
use serde_json::{Map, Value};
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::TpmPolicy;
use vigil_core::tpm::quote::AkPublicKey;
use vigil_store::{Enrolment, NewMbPolicy, NewRuntimePolicy, PolicyRef, Store, StoreError};

use crate::config::Config;
use crate::context;
use crate::error::ApiError;
use crate::protocol::{is_version_number, valid_id, AGENT_VERSIONS, CURRENT_VERSION};

fn req<'a>(b: &'a Map<String, Value>, key: &'static str) -> Result<&'a Value, ApiError> {
    b.get(key).ok_or(ApiError::MissingField(key))
}

fn req_str<'a>(b: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, ApiError> {
    req(b, key)?
        .as_str()
        .ok_or_else(|| ApiError::invalid(key, "must be a string"))
}

fn opt_str<'a>(b: &'a Map<String, Value>, key: &'static str) -> Result<Option<&'a str>, ApiError> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(key, "must be a string")),
    }
}

fn list(b: &Map<String, Value>, key: &'static str) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::invalid(key, "must be a list of strings");
    req(b, key)?
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

fn port(b: &Map<String, Value>, key: &'static str) -> Result<Option<u16>, ApiError> {
    let bad = || ApiError::invalid(key, "is not a port number");
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn b64(key: &'static str, s: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| ApiError::invalid(key, format!("is not base64: {e}")))
}

/// Checks the enrolment body of agent `id` field by field (reading the store only to
/// look for existing records and policies) into what the store enrols.
pub(crate) async fn enrolment(
    cfg: &Config,
    store: &Store,
    id: &str,
    b: &Map<String, Value>,
) -> Result<Enrolment, ApiError> {
    // Required keys first, in Keylime's order, so a missing one is named as Keylime does.
    let tpm_policy = req_str(b, "tpm_policy")?;
    TpmPolicy::from_json(tpm_policy).map_err(|err| ApiError::invalid("tpm_policy", err))?;
    let meta_data = req_str(b, "metadata")?;
    let ima_keys = req_str(b, "ima_sign_verification_keys")?;
    let revocation_key = req_str(b, "revocation_key")?;
    if !revocation_key.trim().is_empty() {
        context::revocation_key(revocation_key)
            .map_err(|err| ApiError::invalid("revocation_key", err))?;
    }
    let accept_hash = list(b, "accept_tpm_hash_algs")?;
    let accept_enc = list(b, "accept_tpm_encryption_algs")?;
    let accept_sign = list(b, "accept_tpm_signing_algs")?;
    let ak_tpm = b64("ak_tpm", req_str(b, "ak_tpm")?)?;
    AkPublicKey::from_spki_or_tpm2b(&ak_tpm).map_err(|err| ApiError::invalid("ak_tpm", err))?;
    let v = opt_str(b, "v")?;
    if let Some(v) = v {
        let bytes = b64("v", v)?;
        if bytes.len() != 32 {
            return Err(ApiError::invalid(
                "v",
                format!("must be 32 bytes, got {}", bytes.len()),
            ));
        }
    }
    let ip = opt_str(b, "cloudagent_ip")?;
    if let Some(ip) = ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| ApiError::invalid("cloudagent_ip", "is not an IP address"))?;
    }
    let agent_port = port(b, "cloudagent_port")?;
    let verifier_port = port(b, "verifier_port")?.unwrap_or(cfg.port);
    let verifier_ip = opt_str(b, "verifier_ip")?.map_or_else(|| cfg.ip.to_string(), str::to_owned);
    let mtls_cert = opt_str(b, "mtls_cert")?;
    if cfg.enable_agent_mtls && mtls_cert.is_none_or(|c| c == "disabled") {
        return Err(ApiError::BadRequest(
            "mTLS certificate for agent is required!".into(),
        ));
    }
    if let Some(c) = mtls_cert.filter(|c| *c != "disabled") {
        crate::node_tls::cert_der(c.as_bytes())
            .ok_or_else(|| ApiError::invalid("mtls_cert", "is not a PEM certificate"))?;
    }
    let supported_version = match opt_str(b, "supported_version")? {
        Some(v) if AGENT_VERSIONS.contains(&v) => v.to_owned(),
        // It goes into request paths: only a version number is an unknown version.
        Some(v) if !is_version_number(v) => {
            return Err(ApiError::invalid(
                "supported_version",
                "is not an API version (major.minor)",
            ))
        }
        // Keylime replaces an unknown version by its current one and negotiates later.
        _ => CURRENT_VERSION.to_owned(),
    };
    if !ima_keys.trim().is_empty() && ima_keys.trim() != "[]" {
        vigil_core::ima::keyring::ImaKeyring::from_keylime_json(ima_keys)
            .map_err(|err| ApiError::invalid("ima_sign_verification_keys", err))?;
    }

    let existing = store
        .verifier_agents()
        .get(id)
        .await
        .map_err(ApiError::store("reading an agent"))?;
    if existing.is_some() {
        return Err(ApiError::Conflict(format!(
            "Agent of uuid {id} already exists. Please use delete or update."
        )));
    }

    // Runtime policy: inline (stored under its name or the agent id) or by name.
    let rp_name = opt_str(b, "runtime_policy_name")?.filter(|n| !n.is_empty());
    let rp = req_str(b, "runtime_policy")?;
    let policies = store.policies();
    let stored = |r: Result<bool, StoreError>| r.map_err(ApiError::store("reading a policy"));
    if let Some(name) = rp_name {
        if !valid_id(name) {
            return Err(ApiError::invalid(
                "runtime_policy_name",
                "may hold only letters, digits, '_', '.', '-'",
            ));
        }
        let exists = stored(policies.get_runtime(name).await.map(|p| p.is_some()))?;
        if !rp.is_empty() && exists {
            return Err(runtime_policy_exists(name));
        }
        if rp.is_empty() && !exists {
            return Err(ApiError::NotFound(format!(
                "Could not find IMA policy with name {name}!"
            )));
        }
    }
    let runtime_policy = if rp.is_empty() {
        // Keylime enrols an unsigned empty policy when neither is given.
        if cfg.require_allow_list_signatures && rp_name.is_none() {
            check_policy_signature(None, b)?;
        }
        rp_name.map(|n| PolicyRef::Named(n.to_owned()))
    } else {
        let (text, parsed) =
            runtime_policy_text(rp).map_err(|m| ApiError::invalid("runtime_policy", m))?;
        if cfg.require_allow_list_signatures {
            check_policy_signature(Some(&text), b)?;
        }
        let name = rp_name.unwrap_or(id).to_owned();
        if rp_name.is_none() && stored(policies.get_runtime(&name).await.map(|p| p.is_some()))? {
            return Err(runtime_policy_exists(&name));
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
        mb_policy_text(b.get("mb_policy")).map_err(|m| ApiError::invalid("mb_policy", m))?;
    let mb_name_given = req(b, "mb_policy_name")?
        .as_str()
        .ok_or_else(|| ApiError::invalid("mb_policy_name", "must be a string"))?;
    let (mb_name, named) = if mb_name_given.is_empty() {
        (id, false)
    } else {
        (mb_name_given, true)
    };
    if !valid_id(mb_name) {
        return Err(ApiError::invalid(
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
        return Err(ApiError::Conflict(format!(
            "mb_policy with name {mb_name} already exists. {tail}"
        )));
    }
    if named && mb_text.is_none() && !mb_exists {
        return Err(ApiError::NotFound(format!(
            "Could not find mb_policy with name {mb_name}!"
        )));
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
        hardware_class: opt_str(b, "vigil_hardware_class")?
            .map(|c| {
                crate::gate::check_class_name(c)
                    .map(|()| c.to_owned())
                    .map_err(|m| ApiError::invalid("vigil_hardware_class", m))
            })
            .transpose()?,
        labels: match b.get("vigil_labels") {
            None | Some(Value::Null) => Default::default(),
            Some(v) => crate::gate::labels(v).map_err(|m| ApiError::invalid("vigil_labels", m))?,
        },
        // Set by the service, which has the clock.
        class_since: 0,
    })
}

fn runtime_policy_exists(name: &str) -> ApiError {
    ApiError::Conflict(format!("IMA policy with name {name} already exists. Please use a different name or delete the allowlist from the verifier."))
}

/// `runtime_policy` (base64 of the policy JSON) → its text, validated by parsing.
pub(crate) fn runtime_policy_text(b64: &str) -> Result<(String, RuntimePolicy), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|err| format!("runtime_policy is not base64: {err}"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| "runtime_policy is not UTF-8 text".to_owned())?;
    let parsed = RuntimePolicy::from_json(text.as_bytes())
        .map_err(|err| format!("Runtime policy is malformatted: {err}"))?;
    Ok((text, parsed))
}

/// `mb_policy` must be JSON text (or null).
pub(crate) fn mb_policy_text(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s)
                .map_err(|err| format!("mb_policy is not JSON text: {err}"))?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err("mb_policy must be a JSON string".into()),
    }
}

/// Keylime's text when a signature is required and there is no key to check it with.
const NO_POLICY_KEY: &str = "Runtime policy signature verification required but no key was given!";

/// Keylime's `require_allow_list_signatures` check (`ima.verify_runtime_policy`), run
/// only when the option is on: the policy `text` must be a DSSE envelope that verifies
/// with the request's `runtime_policy_key` (base64 of a PEM EC public key or
/// certificate). `None` is a request without an inline policy, which Keylime replaces
/// by its unsigned empty policy and so refuses the same way.
pub(crate) fn check_policy_signature(
    text: Option<&str>,
    body: &Map<String, Value>,
) -> Result<(), ApiError> {
    use vigil_core::policy::runtime::{dsse_payload, verify_dsse, DsseError, PolicyError};
    // Keylime looks a key up only for an envelope: a plain policy never has one.
    let envelope_text = text.filter(|t| matches!(dsse_payload(t.as_bytes()), Ok(Some(_))));
    let key = body
        .get("runtime_policy_key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty());
    let (Some(text), Some(key)) = (envelope_text, key) else {
        return Err(ApiError::Signature(NO_POLICY_KEY));
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|err| {
            ApiError::BadRequest(format!(
                "Exception error: runtime_policy_key is not base64: {err}"
            ))
        })?;
    match verify_dsse(text.as_bytes(), &key) {
        Ok(_) => Ok(()),
        // Keylime fails with a 500 on a key it cannot load; this is the caller's error.
        Err(PolicyError::Signature(DsseError::Key(m))) => Err(ApiError::BadRequest(format!(
            "Exception error: runtime_policy_key: {m}"
        ))),
        Err(_) => Err(ApiError::Signature(
            "Runtime policy failed DSSE signature verification!",
        )),
    }
}
