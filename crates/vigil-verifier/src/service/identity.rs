//! Workload identity (docs/spire.md), Vigil's own routes: nonces for identity quotes,
//! the selectors of an attested node, and the check a SPIFFE server side makes before
//! it issues a node identity — an identity quote over a nonce this verifier issued and
//! nobody used, from the node's enrolled AK, of a node that attests successfully —
//! answered with the SPIFFE ID and the selectors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Map, Value};
use tracing::warn;
use vigil_core::attestation::OperationalState;
use vigil_service::client::{Client, Endpoint, Limits};
use vigil_store::{NonceUse, VerifierAgent};

use super::verify::check_identity_quote;
use super::Service;
use crate::config::Config;
use crate::error::ApiError;
use crate::identity::{new_nonce, NodeLabels, MIN_NONCE_LEN, NONCE_TTL};
use crate::protocol::valid_id;

/// The longest nonce accepted (the agent's `MAX_NONCE_SIZE`).
const MAX_NONCE_LEN: usize = 64;
/// The longest SPIFFE ID accepted (SPIFFE's URI limit).
const MAX_SPIFFE_ID: usize = 2048;

/// Whether a node is trusted now, as selectors say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    Trusted,
    Failed,
}

impl Trust {
    /// `agent`'s standing: trusted while it is polled and has attested at least once,
    /// failed once a round failed or it was stopped; `Err` for a node registered and
    /// enrolled but never attested (nothing is known of it yet).
    fn of(agent: &VerifierAgent) -> Result<Self, ApiError> {
        let state = OperationalState::from_code(u64::from(agent.state.operational_state))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let id = &agent.enrolment.agent_id;
        match state {
            OperationalState::Failed
            | OperationalState::InvalidQuote
            | OperationalState::TenantFailed
            | OperationalState::Terminated => Ok(Self::Failed),
            _ if agent.state.attestation_count == 0 => Err(ApiError::NotAttested(format!(
                "node {id} is enrolled but has not been attested yet ({})",
                state.description()
            ))),
            _ => Ok(Self::Trusted),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Failed => "failed",
        }
    }
}

/// The selectors of `agent` (each `vigil:<name>:<value>`), in a fixed order.
fn selectors(agent: &VerifierAgent, trust: Trust) -> Vec<String> {
    let en = &agent.enrolment;
    let labels = NodeLabels::of(agent);
    let mut out = vec![
        format!("vigil:uuid:{}", en.agent_id),
        format!("vigil:status:{}", trust.name()),
    ];
    out.extend(labels.class.map(|c| format!("vigil:class:{c}")));
    out.extend(
        labels
            .labels
            .iter()
            .map(|(k, v)| format!("vigil:label:{k}:{v}")),
    );
    out.extend(
        en.runtime_policy
            .as_ref()
            .map(|p| format!("vigil:runtime_policy:{p}")),
    );
    out.extend(
        en.mb_policy
            .as_ref()
            .map(|p| format!("vigil:mb_policy:{p}")),
    );
    out
}

/// The answer for `agent`: its selectors and when it last attested successfully.
fn answer(
    agent: &VerifierAgent,
    trust: Trust,
    ek_cert_issuer: Option<String>,
) -> Map<String, Value> {
    let mut list = selectors(agent, trust);
    list.extend(ek_cert_issuer.map(|i| format!("vigil:ek_cert_issuer:{i}")));
    let mut m = Map::new();
    m.insert("agent_uuid".into(), agent.enrolment.agent_id.clone().into());
    m.insert("status".into(), trust.name().into());
    m.insert("selectors".into(), json!(list));
    m.insert(
        "last_successful_attestation".into(),
        agent.state.last_successful_attestation.into(),
    );
    m
}

fn str_field<'a>(body: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, ApiError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::invalid(name, "is not a string")),
        None => Err(ApiError::MissingField(name)),
    }
}

impl Service {
    /// The clock's now, in epoch seconds.
    fn unix_now(&self) -> i64 {
        i64::try_from(self.engine.clock.now().as_secs()).unwrap_or(i64::MAX)
    }

    /// `POST /vigil/v1/identity/nonce`: a fresh nonce for an identity quote, usable once
    /// within [`NONCE_TTL`].
    pub(crate) async fn identity_nonce(&self) -> Result<Value, ApiError> {
        let nonce = new_nonce();
        let now = self.unix_now();
        let ttl = i64::try_from(NONCE_TTL.as_secs()).unwrap_or(i64::MAX);
        self.engine
            .store
            .identities()
            .issue_nonce(&nonce, now, now.saturating_sub(ttl))
            .await
            .map_err(ApiError::store("issuing an identity nonce"))?;
        Ok(json!({"nonce": nonce, "expires_in": NONCE_TTL.as_secs()}))
    }

    /// `GET /vigil/v1/identity/{id}/selectors`: the selectors of an attested node
    /// (trusted or failed).
    pub(crate) async fn selectors(&self, id: &str) -> Result<Value, ApiError> {
        let agent = self.agent(id).await?;
        let trust = Trust::of(&agent)?;
        let issuer = self.ek_cert_issuer(id).await;
        Ok(Value::Object(answer(&agent, trust, issuer)))
    }

    /// `POST /vigil/v1/identity/verify` with `{agent_uuid, nonce, quote, hash_alg,
    /// spiffe_id?}`: refuses a nonce not issued by this verifier, expired or used before, a quote not from the node's AK or not
    /// over the nonce, a node never attested and a node that failed; else records the
    /// identity as issued on the node (evicted if it later fails) and answers the SPIFFE
    /// ID (by default `spiffe://<identity_trust_domain>/spire/agent/vigil/<uuid>`) with
    /// the selectors.
    pub(crate) async fn verify_workload_identity(
        &self,
        body: &Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let id = str_field(body, "agent_uuid")?;
        if !valid_id(id) {
            return Err(ApiError::InvalidAgentId);
        }
        let nonce = str_field(body, "nonce")?;
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len())
            || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ApiError::invalid(
                "nonce",
                format!("must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} letters and digits"),
            ));
        }
        let quote = str_field(body, "quote")?;
        let hash_alg = str_field(body, "hash_alg")?;
        let spiffe_id = match body.get("spiffe_id") {
            None | Some(Value::Null) => format!(
                "spiffe://{}/spire/agent/vigil/{id}",
                self.engine.config.identity_trust_domain
            ),
            Some(Value::String(s)) if s.starts_with("spiffe://") && s.len() <= MAX_SPIFFE_ID => {
                s.clone()
            }
            Some(_) => return Err(ApiError::invalid("spiffe_id", "is not a spiffe:// URI")),
        };
        let agent = self.agent(id).await?;
        // The nonce is spent before any other check, so a refused attempt cannot be
        // retried with the same challenge.
        let now = self.unix_now();
        let oldest = now.saturating_sub(i64::try_from(NONCE_TTL.as_secs()).unwrap_or(i64::MAX));
        let spent = self
            .engine
            .store
            .identities()
            .use_nonce(nonce, now, oldest)
            .await
            .map_err(ApiError::store("using an identity nonce"))?;
        match spent {
            NonceUse::Fresh => {}
            NonceUse::Used => {
                return Err(ApiError::IdentityRefused(format!(
                    "nonce {nonce} was already used: ask this verifier for a fresh nonce"
                )))
            }
            NonceUse::Unknown => {
                return Err(ApiError::IdentityRefused(format!(
                "nonce {nonce} was not issued by this verifier or has expired (nonces last {} s)",
                NONCE_TTL.as_secs()
            )))
            }
        }
        check_identity_quote(&agent, quote, nonce, hash_alg).map_err(|reason| {
            ApiError::IdentityRefused(format!(
                "the identity quote of node {id} is not valid: {reason}"
            ))
        })?;
        match Trust::of(&agent)? {
            Trust::Failed => {
                let state = OperationalState::from_code(u64::from(agent.state.operational_state))
                    .map_or("unknown", OperationalState::description);
                return Err(ApiError::IdentityRefused(format!(
                    "node {id} failed attestation ({state}): no identity is issued"
                )));
            }
            Trust::Trusted => {}
        }
        self.engine
            .store
            .identities()
            .record_issued(id, &spiffe_id, now)
            .await
            .map_err(ApiError::store("recording an issued identity"))?;
        tracing::info!(agent_id = id, spiffe_id, "workload identity issued");
        let issuer = self.ek_cert_issuer(id).await;
        let mut m = answer(&agent, Trust::Trusted, issuer);
        m.insert("spiffe_id".into(), spiffe_id.into());
        Ok(Value::Object(m))
    }

    /// The issuer of node `id`'s EK certificate. Keylime's enrolment carries no EK
    /// certificate, so the verifier asks the registrar (`identity_registrar`) for it;
    /// without one configured, or when the registrar has none, there is no issuer.
    async fn ek_cert_issuer(&self, id: &str) -> Option<String> {
        let config = &self.engine.config;
        if config.identity_registrar.is_empty() {
            return None;
        }
        match registrar_ek_issuer(config, id).await {
            Ok(issuer) => issuer,
            Err(e) => {
                warn!(agent_id = id, "EK certificate issuer unknown: {e}");
                None
            }
        }
    }
}

/// Asks the registrar of `config` for node `id`'s EK certificate: its issuer, `None`
/// when the node has no EK certificate, or why the registrar could not tell.
async fn registrar_ek_issuer(config: &Config, id: &str) -> Result<Option<String>, String> {
    use base64::Engine as _;
    let addr: SocketAddr = config
        .identity_registrar
        .parse()
        .map_err(|e| format!("identity_registrar {:?}: {e}", config.identity_registrar))?;
    let ca = config
        .trusted_client_ca
        .first()
        .map(|p| config.tls_file(p))
        .ok_or("no trusted_client_ca to check the registrar's certificate with")?;
    let (cert, key) = (
        config.tls_file(&config.client_cert),
        config.tls_file(&config.client_key),
    );
    let tls = vigil_tls::client_config(&ca, Some((&cert, &key))).map_err(|e| e.to_string())?;
    let endpoint = Endpoint::addr(addr).with_tls(Arc::new(tls));
    let limits = Limits {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        body_limit: 1 << 20,
    };
    let answer = Client::new(limits)
        .request(&endpoint, Method::GET, &format!("/v2.6/agents/{id}"), None)
        .await
        .map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(format!("registrar {addr} answered {}", answer.status));
    }
    let Some(ekcert) = answer.json()["results"]["ekcert"]
        .as_str()
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    let der = base64::engine::general_purpose::STANDARD
        .decode(ekcert.trim())
        .map_err(|e| format!("the registrar's ekcert is not base64: {e}"))?;
    vigil_tls::certificate_issuer(&der)
        .map(Some)
        .ok_or_else(|| "the registrar's ekcert is not an X.509 certificate".into())
}
