//! One-shot verification (public routes): `verify/identity` checks a quote against an
//! enrolled node's AK; `verify/evidence` (API 2.4+) judges evidence a caller brings
//! (`type: "tpm"`) with `vigil-core`'s one round evaluation — the same checks and event
//! ids as the polling rounds — on a node with no history.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value};
use tracing::warn;
use vigil_core::attestation::{
    evaluate_round, MeasuredBootPolicy, NodeAttestation, QuoteAnswer, RoundPolicy,
};
use vigil_core::failure::{Component, Event, Failure};
use vigil_core::ima::keyring::ImaKeyrings;
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::TpmPolicy;
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier};
use vigil_core::HashAlg;

use super::Service;
use crate::error::ApiError;

/// The judgement of `verify/evidence`: the failure (empty when valid) and the
/// caller's `data`, echoed as the claims of valid evidence.
#[derive(Debug)]
pub(crate) struct EvidenceVerdict {
    pub(crate) failure: Failure,
    pub(crate) data: Map<String, Value>,
}

impl EvidenceVerdict {
    /// Whether the failure is a missing parameter or policy (Keylime answers 400 with
    /// the result body then).
    pub(crate) fn is_param_error(&self) -> bool {
        self.failure.events().iter().any(|e| {
            e.event_id.ends_with(".missing_param") || e.event_id.ends_with(".missing_policy")
        })
    }
}

/// An identity quote of `agent` over `nonce` in bank `hash_alg`: its signature by the
/// enrolled AK, nonce and PCR digest (no clock and no PCR checks, as Keylime's
/// `verify/identity`); `Err` carries the reasons, joined by `; `.
pub(crate) fn check_identity_quote(
    agent: &vigil_store::VerifierAgent,
    quote: &str,
    nonce: &str,
    hash_alg: &str,
) -> Result<(), String> {
    let ak = AkPublicKey::from_spki_or_tpm2b(&agent.enrolment.ak_tpm).map_err(|e| e.to_string())?;
    let bank =
        HashAlg::from_name(hash_alg).ok_or_else(|| format!("unknown hash algorithm {hash_alg}"))?;
    let quote = KeylimeQuote::parse(quote).map_err(|e| e.to_string())?;
    QuoteVerifier::new(ak)
        .verify(&quote, nonce.as_bytes(), bank)
        .map(|_| ())
        .map_err(|f| {
            f.events()
                .iter()
                .map(|ev| ev.context.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
}

fn event(component: Component, name: &str, message: String) -> Event {
    Event::new(component, &[], name, Event::message(message), false)
}

impl Service {
    /// `GET verify/identity`: the quote's signature, nonce and PCR digest against the
    /// enrolled AK (no clock and no PCR checks, as Keylime). `Ok` carries Keylime's
    /// `{"valid": 1}` or `{"valid": 0, "reason": …}`.
    pub(crate) async fn verify_identity(
        &self,
        id: &str,
        quote: &str,
        nonce: &str,
        hash_alg: &str,
    ) -> Result<Value, ApiError> {
        let agent = self.agent(id).await?;
        let failure = check_identity_quote(&agent, quote, nonce, hash_alg);
        Ok(match failure {
            Ok(()) => serde_json::json!({"valid": 1}),
            Err(reason) => {
                warn!(agent_id = id, "identity quote rejected: {reason}");
                serde_json::json!({"valid": 0, "reason": reason})
            }
        })
    }

    /// `POST verify/evidence`: judges the evidence in `body` on the blocking pool.
    pub(crate) async fn verify_evidence(
        &self,
        body: Map<String, Value>,
    ) -> Result<EvidenceVerdict, ApiError> {
        let kind = body
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::BadRequest("missing parameter 'type'".into()))?;
        if !body.get("data").is_some_and(Value::is_object) {
            return Err(ApiError::BadRequest("missing parameter 'data'".into()));
        }
        if kind != "tpm" {
            return Err(ApiError::BadRequest("invalid evidence type".into()));
        }
        let Some(Value::Object(data)) = body
            .into_iter()
            .find_map(|(k, v)| (k == "data").then_some(v))
        else {
            return Err(ApiError::BadRequest("missing parameter 'data'".into()));
        };
        let attestation = self.engine.attestation.clone();
        let mb_policy = self.engine.mb_policy();
        let judged = tokio::task::spawn_blocking(move || {
            let failure = judge_evidence(&data, attestation, mb_policy)?;
            Ok(EvidenceVerdict { failure, data })
        })
        .await;
        judged.unwrap_or_else(|e| Err(ApiError::Internal(format!("judging evidence: {e}"))))
    }
}

/// `data`'s text field `k`: a string as is, other JSON as its text.
fn text_or_json(data: &Map<String, Value>, k: &str) -> Option<String> {
    match data.get(k) {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Null) | None => None,
        Some(v) => Some(v.to_string()),
    }
}

/// Judges `type: "tpm"` evidence: required fields, then the policies given, then the
/// round's evaluation on a fresh node.
fn judge_evidence(
    data: &Map<String, Value>,
    attestation: Arc<vigil_core::attestation::AttestationConfig>,
    mb_policy: vigil_core::policy::measured_boot::MbPolicy,
) -> Result<Failure, ApiError> {
    let mut failure = Failure::new();
    let s = |k: &str| data.get(k).and_then(Value::as_str);
    for k in ["quote", "nonce", "hash_alg", "tpm_ek", "tpm_ak"] {
        if s(k).is_none_or(str::is_empty) {
            failure.push(event(
                Component::Default,
                "missing_param",
                format!("missing parameter '{k}'"),
            ));
        }
    }
    if ["tpm_policy", "runtime_policy", "mb_policy"]
        .iter()
        .all(|k| data.get(*k).is_none_or(Value::is_null))
    {
        failure.push(event(
            Component::Default,
            "missing_policy",
            "at least one of tpm_policy, runtime_policy and mb_policy is required".into(),
        ));
    }
    if !failure.is_empty() {
        return Ok(failure);
    }
    if HashAlg::from_name(s("hash_alg").unwrap_or("")).is_none() {
        failure.push(event(
            Component::QuoteValidation,
            "invalid_hash_alg",
            "unknown hash algorithm".into(),
        ));
        return Ok(failure);
    }
    let ak = base64::engine::general_purpose::STANDARD
        .decode(s("tpm_ak").unwrap_or(""))
        .map_err(|e| e.to_string())
        .and_then(|b| AkPublicKey::from_spki_or_tpm2b(&b).map_err(|e| e.to_string()));
    let ak = match ak {
        Ok(a) => a,
        Err(e) => {
            failure.push(event(
                Component::QuoteValidation,
                "quote_validation",
                format!("tpm_ak: {e}"),
            ));
            return Ok(failure);
        }
    };
    let tpm_policy = match text_or_json(data, "tpm_policy") {
        Some(t) => TpmPolicy::from_json(&t)
            .map_err(|e| ApiError::BadRequest(format!("tpm_policy: {e}")))?,
        None => TpmPolicy::empty(),
    };
    let runtime = text_or_json(data, "runtime_policy")
        .map(|t| RuntimePolicy::from_json(t.as_bytes()))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("runtime_policy: {e}")))?;
    let refstate: Option<Value> = text_or_json(data, "mb_policy")
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("mb_policy: {e}")))?;
    let verifier = QuoteVerifier::new(ak);
    let node = NodeAttestation::new(attestation, false);
    let answer = QuoteAnswer {
        quote: s("quote").unwrap_or(""),
        hash_alg: s("hash_alg").unwrap_or(""),
        ima_measurement_list: s("ima_measurement_list"),
        mb_measurement_list: s("mb_log"),
        ..QuoteAnswer::default()
    };
    let policy = RoundPolicy {
        verifier: &verifier,
        nonce: s("nonce").unwrap_or("").as_bytes(),
        accept_hash_algs: None,
        accept_enc_algs: None,
        accept_sign_algs: None,
        bind_public_key: false,
        // Evidence answers no request of this verifier.
        requested_pcrs: 0,
        tpm_policy: &tpm_policy,
        runtime_policy: runtime.as_ref(),
        measured_boot: refstate.as_ref().map(|refstate| MeasuredBootPolicy {
            policy: mb_policy,
            refstate,
            evaluate_now: true,
        }),
        ignore_tomtou_errors: false,
        golden: None,
    };
    let outcome = evaluate_round(&node, &answer, &policy, &mut ImaKeyrings::new());
    failure.merge(outcome.failure);
    Ok(failure)
}
