//! Request bodies, field for field (and in the order) Keylime's tenant sends them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::identity::AcceptLists;
use super::policy::Policies;

/// Everything of an enrolment (`POST /v2.x/agents/{id}` at the verifier).
#[derive(Debug, Clone)]
pub(crate) struct Enrolment<'a> {
    /// base64 V, or `None` when no payload goes to the node.
    pub(crate) v: Option<String>,
    /// The address the verifier polls.
    pub(crate) cloudagent_ip: Option<String>,
    /// The port, as Keylime types it: a string when given on the command line, a
    /// number when taken from the registrar.
    pub(crate) cloudagent_port: Value,
    /// The verifier address, as given (stored for display).
    pub(crate) verifier_ip: String,
    /// The verifier port, as given (Keylime sends its configured string).
    pub(crate) verifier_port: String,
    /// Policies.
    pub(crate) policies: &'a Policies,
    /// `metadata` JSON text (`{}` unless --cert).
    pub(crate) metadata: String,
    /// The revocation signing key (PEM) or `""`.
    pub(crate) revocation_key: String,
    /// Accepted algorithms.
    pub(crate) accept: &'a AcceptLists,
    /// The registrar's `aik_tpm`.
    pub(crate) ak_tpm: String,
    /// The registrar's `mtls_cert`.
    pub(crate) mtls_cert: Option<String>,
    /// The node's API version.
    pub(crate) supported_version: String,
    /// Vigil's hardware class for the node (`--class`), sent as `vigil_hardware_class`.
    pub(crate) hardware_class: Option<&'a str>,
    /// Vigil's node labels (`--label k=v`), sent as `vigil_labels` when there are any.
    pub(crate) labels: &'a BTreeMap<String, String>,
}

impl Enrolment<'_> {
    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        let p = self.policies;
        let mut m = Map::new();
        m.insert("v".into(), json!(self.v));
        m.insert("cloudagent_ip".into(), json!(self.cloudagent_ip));
        m.insert("cloudagent_port".into(), self.cloudagent_port.clone());
        m.insert("verifier_ip".into(), json!(self.verifier_ip));
        m.insert("verifier_port".into(), json!(self.verifier_port));
        m.insert("tpm_policy".into(), json!(p.tpm_policy_string()));
        m.insert("runtime_policy".into(), json!(p.runtime_policy));
        m.insert("runtime_policy_name".into(), json!(p.runtime_policy_name));
        m.insert("runtime_policy_key".into(), json!(p.runtime_policy_key));
        m.insert("mb_policy".into(), json!(p.mb_policy));
        m.insert("mb_policy_name".into(), json!(p.mb_policy_name));
        // Deprecated IMA keyring option of Keylime's tenant; Vigil never sends keys here.
        m.insert("ima_sign_verification_keys".into(), json!(""));
        m.insert("metadata".into(), json!(self.metadata));
        m.insert("revocation_key".into(), json!(self.revocation_key));
        m.insert("accept_tpm_hash_algs".into(), json!(self.accept.hash));
        m.insert(
            "accept_tpm_encryption_algs".into(),
            json!(self.accept.encryption),
        );
        m.insert("accept_tpm_signing_algs".into(), json!(self.accept.signing));
        m.insert("ak_tpm".into(), json!(self.ak_tpm));
        m.insert("mtls_cert".into(), json!(self.mtls_cert));
        m.insert("supported_version".into(), json!(self.supported_version));
        // Vigil's own fields only when used, so Keylime's verifier sees its body as is.
        if let Some(class) = self.hardware_class {
            m.insert("vigil_hardware_class".into(), json!(class));
        }
        if !self.labels.is_empty() {
            m.insert("vigil_labels".into(), json!(self.labels));
        }
        Value::Object(m)
    }
}

/// `POST /keys/ukey` at the node.
pub(crate) fn ukey_body(encrypted_u: &str, auth_tag: &str, payload: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("encrypted_key".into(), json!(encrypted_u));
    m.insert("auth_tag".into(), json!(auth_tag));
    if let Some(p) = payload {
        m.insert("payload".into(), json!(p));
    }
    Value::Object(m)
}

/// `POST|PUT /allowlists/{name}` at the verifier.
pub(crate) fn runtime_policy_body(p: &Policies) -> Value {
    json!({
        "tpm_policy": p.tpm_policy_string(),
        "runtime_policy": p.runtime_policy,
        "runtime_policy_key": p.runtime_policy_key,
    })
}

/// `POST|PUT /mbpolicies/{name}` at the verifier.
pub(crate) fn mb_policy_body(p: &Policies) -> Value {
    json!({ "mb_policy": p.mb_policy })
}

/// Keylime's nonces and challenges: `length` characters of `[A-Z0-9a-z]`, each a
/// random byte mod 62 (the small bias is Keylime's too).
pub(crate) fn random_password(rng: &mut impl rand_core::RngCore, length: usize) -> String {
    const CHARS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = vec![0u8; length];
    rng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(CHARS[usize::from(*b) % CHARS.len()]))
        .collect()
}
