//! The provisioning trust gate's operations: hardware classes (list, show, create or
//! replace, delete), a node's class and labels, a node's PCRs from a verified quote
//! (to learn a class from), and the gate itself — is this node trusted with evidence
//! no older than `max_age`, attesting it now when the stored evidence is older — with
//! a signed EAR token. Rules without I/O are in `crate::gate`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tracing::info;
use vigil_core::attestation::NodeAnswer;
use vigil_core::hash::HashAlg;
use vigil_core::policy::golden::GoldenPcrs;
use vigil_core::results::{self, GateResult, Judgement};
use vigil_core::tpm::quote::KeylimeQuote;
use vigil_store::{HardwareClass, StoreError};

use super::Service;
use crate::context;
use crate::engine::persist::{self, Restored};
use crate::engine::{Attested, Command};
use crate::error::ApiError;
use crate::gate::{self, TrustQuery};

/// Failures named in a gate answer, at most (the rest are counted).
const MAX_REASONS: usize = 50;

/// A store refusal about a class as the API's.
fn class_error(doing: &'static str) -> impl FnOnce(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound { entity, id } => {
            ApiError::NotFound(format!("{entity} {id} not found"))
        }
        StoreError::AlreadyExists { entity, id } => {
            ApiError::Conflict(format!("{entity} {id} already exists"))
        }
        StoreError::PolicyInUse {
            name,
            agents,
            agent_id,
            ..
        } => ApiError::Conflict(format!(
            "hardware class {name} is in use by {agents} node(s), {agent_id} first"
        )),
        source => ApiError::Store { doing, source },
    }
}

fn class_json(c: &HardwareClass, nodes: u64) -> Value {
    json!({
        "name": c.name,
        "description": c.description,
        "golden": serde_json::from_str::<Value>(&c.golden).unwrap_or(Value::Null),
        "mb_policy": c.mb_policy,
        "runtime_policy": c.runtime_policy,
        "nodes": nodes,
    })
}

fn opt_name(body: &Map<String, Value>, key: &'static str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if crate::protocol::valid_id(s) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(key, "must be a policy name")),
    }
}

/// One gate verdict, before it is answered.
struct Verdict {
    judgement: Judgement,
    reasons: Vec<Value>,
    evidence_time: Option<u64>,
    attested_now: bool,
}

impl Verdict {
    fn trusted(at: u64, attested_now: bool) -> Self {
        Self {
            judgement: Judgement::Trusted,
            reasons: Vec::new(),
            evidence_time: Some(at),
            attested_now,
        }
    }

    fn failed(failures: Vec<(String, Value)>, at: Option<u64>, attested_now: bool) -> Self {
        let total = failures.len();
        let ids = failures.iter().map(|(id, _)| id.clone()).collect();
        let mut reasons: Vec<Value> = failures
            .into_iter()
            .take(MAX_REASONS)
            .map(|(id, context)| json!({"id": id, "context": context}))
            .collect();
        if total > MAX_REASONS {
            reasons.push(json!({"id": "omitted", "context": {"count": total - MAX_REASONS}}));
        }
        Self {
            judgement: Judgement::Failed(ids),
            reasons,
            evidence_time: at,
            attested_now,
        }
    }

    fn no_evidence(id: &str, message: String, attested_now: bool) -> Self {
        Self {
            judgement: Judgement::NoEvidence(id.to_owned()),
            reasons: vec![json!({"id": id, "context": {"message": message}})],
            evidence_time: None,
            attested_now,
        }
    }
}

impl Service {
    /// Every class, with how many nodes use it.
    pub(crate) async fn classes(&self) -> Result<Value, ApiError> {
        let store = self.engine.store.hardware_classes();
        let mut out = Vec::new();
        for c in store.list().await.map_err(class_error("listing classes"))? {
            let n = store
                .users(&c.name)
                .await
                .map_err(class_error("listing classes"))?;
            out.push(class_json(&c, n));
        }
        Ok(json!({ "classes": out }))
    }

    /// One class.
    pub(crate) async fn class(&self, name: &str) -> Result<Value, ApiError> {
        let store = self.engine.store.hardware_classes();
        let c = store
            .get(name)
            .await
            .map_err(class_error("reading a class"))?
            .ok_or_else(|| ApiError::NotFound(format!("hardware class {name} not found")))?;
        let n = store
            .users(name)
            .await
            .map_err(class_error("reading a class"))?;
        Ok(class_json(&c, n))
    }

    /// Creates (`create`) or replaces a class from `{"description", "golden",
    /// "mb_policy", "runtime_policy"}`; the golden set must parse and carry the class's
    /// name, and the named policies must exist (its nodes whose enrolment names no
    /// policy of a kind use the class's). Nodes of a replaced class are judged by its
    /// new values from their next round on.
    pub(crate) async fn put_class(
        &self,
        name: &str,
        body: &Map<String, Value>,
        create: bool,
    ) -> Result<(), ApiError> {
        gate::check_class_name(name).map_err(ApiError::BadRequest)?;
        let description = match body.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if s.len() <= 1024 => s.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "description",
                    "must be a string of at most 1024 bytes",
                ))
            }
        };
        let golden_text = match body.get("golden") {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            _ => return Err(ApiError::MissingField("golden")),
        };
        let golden =
            GoldenPcrs::from_json(&golden_text).map_err(|e| ApiError::invalid("golden", e))?;
        if golden.name() != name {
            return Err(ApiError::invalid(
                "golden",
                format!(
                    "the set is named {:?}, not after the class {name:?}",
                    golden.name()
                ),
            ));
        }
        let policies = self.engine.store.policies();
        let mb_policy = opt_name(body, "mb_policy")?;
        let runtime_policy = opt_name(body, "runtime_policy")?;
        if let Some(name) = &runtime_policy {
            if policies
                .get_runtime(name)
                .await
                .map_err(ApiError::store("reading a policy"))?
                .is_none()
            {
                return Err(ApiError::NotFound(format!(
                    "runtime policy {name} not found"
                )));
            }
        }
        if let Some(name) = &mb_policy {
            if policies
                .get_mb(name)
                .await
                .map_err(ApiError::store("reading a policy"))?
                .is_none()
            {
                return Err(ApiError::NotFound(format!(
                    "measured-boot policy {name} not found"
                )));
            }
        }
        let class = HardwareClass {
            name: name.to_owned(),
            description,
            golden: golden.to_json(),
            mb_policy,
            runtime_policy,
            changed_at: super::epoch(self.engine.clock.now().as_secs()),
        };
        let store = self.engine.store.hardware_classes();
        if create {
            store
                .create(class)
                .await
                .map_err(class_error("creating a class"))?;
            info!(class = name, "hardware class created");
        } else {
            store
                .update(class)
                .await
                .map_err(class_error("replacing a class"))?;
            info!(class = name, "hardware class replaced");
            // Its nodes rebuild their context (and so its golden values) before their
            // next round.
            self.engine.cache.bump();
        }
        Ok(())
    }

    /// Deletes a class no node uses.
    pub(crate) async fn delete_class(&self, name: &str) -> Result<(), ApiError> {
        self.engine
            .store
            .hardware_classes()
            .delete(name)
            .await
            .map_err(class_error("deleting a class"))?;
        info!(class = name, "hardware class deleted");
        Ok(())
    }

    /// Sets a node's class (`"class"`: a name, or null for none) and replaces its
    /// labels (`"labels"`), each only when given; its task rebuilds its context.
    pub(crate) async fn set_node(
        &self,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        let class = match body.get("class") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(c)) => {
                gate::check_class_name(c).map_err(|m| ApiError::invalid("class", m))?;
                Some(Some(c.as_str()))
            }
            Some(_) => return Err(ApiError::invalid("class", "must be a string or null")),
        };
        let labels = body
            .get("labels")
            .map(|v| gate::labels(v).map_err(|m| ApiError::invalid("labels", m)))
            .transpose()?;
        match self
            .engine
            .store
            .verifier_agents()
            .set_class_and_labels(
                id,
                class,
                labels.as_ref(),
                super::epoch(self.engine.clock.now().as_secs()),
            )
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotFound {
                entity: vigil_store::Entity::VerifierAgent,
                ..
            }) => return Err(ApiError::AgentNotFound),
            Err(e) => return Err(class_error("setting a node's class")(e)),
        }
        self.engine.command(id, Command::Rebuild);
        info!(agent_id = id, "class and labels set");
        Ok(())
    }

    /// The ids of the nodes carrying every label of `selector`.
    pub(crate) async fn nodes(
        &self,
        selector: &BTreeMap<String, String>,
    ) -> Result<Value, ApiError> {
        let agents = self.engine.store.verifier_agents();
        let ids = agents
            .with_labels(selector)
            .await
            .map_err(ApiError::store("selecting nodes"))?;
        Ok(json!({ "nodes": ids }))
    }

    /// The node's PCRs `pcrs` from a quote taken now with a fresh nonce and verified
    /// with its AK: what a class is learnt from. The node's rounds are not touched.
    pub(crate) async fn pcrs(&self, id: &str, pcrs: &[u32]) -> Result<Value, ApiError> {
        let e = &self.engine;
        let agent = self.agent(id).await?;
        let ctx = context::build(&agent, &e.store, &e.cache)
            .await
            .map_err(|err| ApiError::Conflict(format!("node {id} cannot be attested: {err}")))?;
        let mask = pcrs.iter().fold(0u32, |m, &p| m | 1 << p);
        let nonce = e.nonces.nonce();
        let target = crate::agent_client::NodeTarget {
            addr: ctx.addr(),
            pin: ctx.pin,
            version: ctx.supported_version.clone(),
        };
        // From the node's next IMA entry: the answer carries only what is new.
        let entry = agent.state.ima.next_entry;
        let body = e
            .agents
            // A one-off connection: the node's own task keeps its connection.
            .quote(&mut None, &target, &nonce, mask, true, entry)
            .await
            .result
            .map_err(|f| ApiError::Conflict(format!("node {id} did not answer: {f}")))?;
        let bad = |why: String| ApiError::Conflict(format!("node {id}'s quote: {why}"));
        let answer = NodeAnswer::parse(&body).map_err(|err| bad(err.to_string()))?;
        let bank = HashAlg::from_name(&answer.hash_alg)
            .ok_or_else(|| bad(format!("unknown hash algorithm {}", answer.hash_alg)))?;
        let quote = KeylimeQuote::parse(&answer.quote).map_err(|err| bad(err.to_string()))?;
        let verified = ctx
            .verifier
            .verify(&quote, nonce.as_bytes(), bank)
            .map_err(|f| {
                bad(format!(
                    "{:?}",
                    f.events().iter().map(|e| &e.event_id).collect::<Vec<_>>()
                ))
            })?;
        let values: Map<String, Value> = pcrs
            .iter()
            .filter_map(|p| {
                verified
                    .pcrs
                    .get(p)
                    .map(|d| (p.to_string(), Value::from(d.to_hex())))
            })
            .collect();
        if values.len() != pcrs.len() {
            return Err(bad("it leaves out requested PCRs".into()));
        }
        Ok(json!({
            "node_id": id,
            "bank": bank.name(),
            "pcrs": values,
            "quoted_at": e.clock.now().as_secs(),
        }))
    }

    /// The attestation-results public key (PEM).
    pub(crate) fn results_key_pem(&self) -> Result<String, ApiError> {
        self.engine
            .results_key
            .public_pem()
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The gate: is node `id` trusted with evidence no older than `q.max_age`? Stored
    /// evidence answers when its last round passed recently enough; otherwise the
    /// node is attested now (a fresh nonce, not waiting for its interval), within
    /// `q.timeout`. An unreachable node is not trusted (`unreachable`), never trusted
    /// on old evidence. The answer carries an EAR token signed with the
    /// attestation-results key.
    pub(crate) async fn trust(&self, id: &str, q: &TrustQuery) -> Result<Value, ApiError> {
        let e = &self.engine;
        let agent = self.agent(id).await?;
        let now = e.clock.now();
        let Restored { node, .. } = persist::restore(&e.attestation, (&agent).into(), now);
        // Evidence judged before the node's class, or its values, last changed does not
        // count.
        let class_changed = match &agent.enrolment.hardware_class {
            Some(name) => e
                .store
                .hardware_classes()
                .get(name)
                .await
                .map_err(class_error("reading a class"))?
                .map_or(0, |c| c.changed_at),
            None => 0,
        };
        let not_before = u64::try_from(agent.enrolment.class_since.max(class_changed)).unwrap_or(0);
        let verdict = match gate::fresh(&node, now.as_secs(), q.max_age, not_before) {
            Some(at) => Verdict::trusted(at, false),
            None => self.attest_now(id, q).await?,
        };
        let en = &agent.enrolment;
        let issued_at = e.clock.now().as_secs();
        let token = results::sign(
            &e.results_key,
            &GateResult {
                node_id: id,
                class: en.hardware_class.as_deref(),
                judgement: &verdict.judgement,
                evidence_time: verdict.evidence_time,
                nonce: q.nonce.as_deref(),
                issued_at,
                expires_at: issued_at + u64::from(e.config.attestation_results_ttl.max(1)),
            },
        )
        .map_err(|err| ApiError::Internal(format!("signing the gate's answer: {err}")))?;
        let trusted = verdict.judgement == Judgement::Trusted;
        info!(
            agent_id = id,
            trusted,
            attested_now = verdict.attested_now,
            "trust gate answered"
        );
        Ok(json!({
            "node_id": id,
            "trusted": trusted,
            "status": match verdict.judgement {
                Judgement::Trusted => "affirming",
                Judgement::Failed(_) => "contraindicated",
                Judgement::NoEvidence(_) => "warning",
            },
            "reasons": verdict.reasons,
            "evidence_time": verdict.evidence_time,
            "attested_now": verdict.attested_now,
            "class": en.hardware_class,
            "labels": en.labels,
            "nonce": q.nonce,
            "token": token,
        }))
    }

    /// Runs a round of `id` now through its task and judges its end.
    async fn attest_now(&self, id: &str, q: &TrustQuery) -> Result<Verdict, ApiError> {
        let e = &self.engine;
        let (tx, rx) = oneshot::channel();
        if !e.command(id, Command::AttestNow(tx)) {
            return Ok(Verdict::no_evidence(
                "not_attested_here",
                "this verifier does not attest the node (another replica, or its enrolment cannot be used)".into(),
                false,
            ));
        }
        let answer = tokio::time::timeout(q.timeout, rx).await;
        Ok(match answer {
            Ok(Ok(Attested::Judged { at, failures })) if failures.is_empty() => {
                Verdict::trusted(at, true)
            }
            Ok(Ok(Attested::Judged { at, failures })) => Verdict::failed(failures, Some(at), true),
            Ok(Ok(Attested::NoAnswer(why))) => Verdict::no_evidence("unreachable", why, true),
            Ok(Ok(Attested::NotPolling)) => {
                // Stopped after a failure (or by the tenant): the stored record says why.
                let agent = self.agent(id).await?;
                let Restored { node, .. } =
                    persist::restore(&e.attestation, (&agent).into(), e.clock.now());
                if node.failed_unreachable() {
                    Verdict::no_evidence(
                        "unreachable",
                        "the node was unreachable and is no longer polled".into(),
                        false,
                    )
                } else if node.last_failures().is_empty() {
                    Verdict::no_evidence(
                        "not_polling",
                        format!("the node is not being attested ({})", node.state().name()),
                        false,
                    )
                } else {
                    let failures = node
                        .last_failures()
                        .iter()
                        .map(|f| (f.event_id.clone(), f.context.clone()))
                        .collect();
                    let at = node.last_received_quote();
                    Verdict::failed(failures, (at > 0).then_some(at), false)
                }
            }
            Ok(Err(_)) => Verdict::no_evidence(
                "not_attested_here",
                "the node's attestation ended before the round".into(),
                false,
            ),
            Err(_) => Verdict::no_evidence(
                "unreachable",
                format!("no round ended within {:?}", q.timeout),
                true,
            ),
        })
    }
}
