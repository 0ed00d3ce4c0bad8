//! `POST /v2.x/verify/evidence` (API 2.4+, public): one-shot verification of TPM
//! evidence a caller brings (`type: "tpm"`), answered as Keylime 2.5+ does:
//! `{"valid": bool, "claims": {…}, "failures": [{"type": <event id>, "context": …}]}`.
//! Only the core checks run: the quote against `tpm_ak`, then `check_pcrs` with the
//! given `tpm_policy`, the IMA list replayed against PCR 10 with the given runtime
//! policy (or accept-all), and the measured-boot policy over `mb_log`.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use vigil_core::failure::{Component, Event, Failure};
use vigil_core::ima::keyring::ImaKeyrings;
use vigil_core::ima::validate::PolicyValidator;
use vigil_core::ima::{process_measurement_list, AcceptAll, ImaConfig, IMA_PCR};
use vigil_core::policy::measured_boot::{bootlog_evaluate, LogView, MbPolicy};
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::{check_pcrs, ImaPcr, PcrCheck, TpmPolicy};
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier};
use vigil_core::{eventlog, HashAlg};

use crate::api::{bad_request, envelope};

fn event(component: Component, name: &str, message: String, recoverable: bool) -> Event {
    Event::new(component, &[], name, Event::message(message), recoverable)
}

fn answer(failure: &Failure, data: &Map<String, Value>) -> Response {
    let failures: Vec<Value> = failure
        .events()
        .iter()
        .map(|e| json!({"type": e.event_id, "context": e.context}))
        .collect();
    let param_error = failure
        .events()
        .iter()
        .any(|e| e.event_id.ends_with(".missing_param") || e.event_id.ends_with(".missing_policy"));
    let valid = failure.is_empty();
    let results = json!({
        "valid": valid,
        "claims": if valid { Value::Object(data.clone()) } else { json!({}) },
        "failures": failures,
    });
    if param_error {
        envelope(StatusCode::BAD_REQUEST, "Bad Request", results)
    } else {
        envelope(StatusCode::OK, "Success", results)
    }
}

/// Answers one `verify/evidence` request.
pub(crate) fn verify_evidence(body: &Map<String, Value>) -> Response {
    let Some(kind) = body.get("type").and_then(Value::as_str) else {
        return bad_request("missing parameter 'type'");
    };
    let Some(data) = body.get("data").and_then(Value::as_object) else {
        return bad_request("missing parameter 'data'");
    };
    if kind != "tpm" {
        return bad_request("invalid evidence type");
    }
    let mut failure = Failure::new();
    let s = |k: &str| data.get(k).and_then(Value::as_str);
    for k in ["quote", "nonce", "hash_alg", "tpm_ek", "tpm_ak"] {
        if s(k).is_none_or(str::is_empty) {
            failure.push(event(
                Component::Default,
                "missing_param",
                format!("missing parameter '{k}'"),
                false,
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
            false,
        ));
    }
    if !failure.is_empty() {
        return answer(&failure, data);
    }
    let text_or_json = |k: &str| match data.get(k) {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Null) | None => None,
        Some(v) => Some(v.to_string()),
    };
    let quote_event = |m: String| event(Component::QuoteValidation, "quote_validation", m, false);
    let bank = match HashAlg::from_name(s("hash_alg").unwrap_or("")) {
        Some(b) => b,
        None => {
            failure.push(event(
                Component::QuoteValidation,
                "invalid_hash_alg",
                "unknown hash algorithm".into(),
                false,
            ));
            return answer(&failure, data);
        }
    };
    let ak = base64::engine::general_purpose::STANDARD
        .decode(s("tpm_ak").unwrap_or(""))
        .map_err(|e| e.to_string())
        .and_then(|b| AkPublicKey::from_spki_or_tpm2b(&b).map_err(|e| e.to_string()));
    let ak = match ak {
        Ok(a) => a,
        Err(e) => {
            failure.push(quote_event(format!("tpm_ak: {e}")));
            return answer(&failure, data);
        }
    };
    let quote = match KeylimeQuote::parse(s("quote").unwrap_or("")) {
        Ok(q) => q,
        Err(e) => {
            failure.push(quote_event(e.to_string()));
            return answer(&failure, data);
        }
    };
    let verified =
        match QuoteVerifier::new(ak).verify(&quote, s("nonce").unwrap_or("").as_bytes(), bank) {
            Ok(v) => v,
            Err(f) => return answer(&f, data),
        };
    let tpm_policy = match text_or_json("tpm_policy") {
        Some(t) => match TpmPolicy::from_json(&t) {
            Ok(p) => p,
            Err(e) => return bad_request(format!("tpm_policy: {e}")),
        },
        None => TpmPolicy::empty(),
    };
    let runtime = match text_or_json("runtime_policy") {
        Some(t) => match RuntimePolicy::from_json(t.as_bytes()) {
            Ok(p) => Some(p),
            Err(e) => return bad_request(format!("runtime_policy: {e}")),
        },
        None => None,
    };
    let mut keyrings = ImaKeyrings::new();
    let ima = match (verified.pcrs.get(&IMA_PCR), s("ima_measurement_list")) {
        (Some(quoted), Some(list)) => {
            let mut cfg = ImaConfig::new(bank);
            if let Some(p) = &runtime {
                cfg.log_hash_alg = p.log_hash_alg();
            }
            let verdict = match &runtime {
                Some(p) => process_measurement_list(
                    cfg,
                    None,
                    list,
                    Some(*quoted),
                    PolicyValidator::new(p, &[], &mut keyrings),
                ),
                None => process_measurement_list(cfg, None, list, Some(*quoted), AcceptAll),
            };
            ImaPcr::Checked(verdict.failure)
        }
        _ => ImaPcr::NoList,
    };
    let pcrs = check_pcrs(
        bank,
        &verified.pcrs,
        &PcrCheck {
            tpm_policy: &tpm_policy,
            data: None,
            ima: &ima,
            measured_boot: None,
        },
    );
    failure.merge(pcrs.failure);
    if let (Some(refstate), Some(log)) = (text_or_json("mb_policy"), s("mb_log")) {
        let refstate: Value = match serde_json::from_str(&refstate) {
            Ok(v) => v,
            Err(e) => return bad_request(format!("mb_policy: {e}")),
        };
        match base64::engine::general_purpose::STANDARD.decode(log.trim()) {
            Ok(bytes) => match eventlog::parse(&bytes) {
                Ok(parsed) => {
                    let quoted: BTreeSet<u32> = verified.pcrs.keys().copied().collect();
                    failure.merge(bootlog_evaluate(
                        MbPolicy::Example,
                        &refstate,
                        &LogView::new(&parsed),
                        &quoted,
                    ));
                }
                Err(e) => failure.push(event(
                    Component::MeasuredBoot,
                    "invalid_pcrs",
                    format!("mb_log cannot be parsed: {e}"),
                    true,
                )),
            },
            Err(e) => failure.push(event(
                Component::MeasuredBoot,
                "invalid_pcrs",
                format!("mb_log is not base64: {e}"),
                true,
            )),
        }
    }
    answer(&failure, data)
}
