//! The service layer: what the REST API does, as typed operations over the engine and
//! the store — enrol, status, list, delete, stop, reactivate (here), named policies
//! ([`policies`]), one-shot verification ([`verify`]) and the provisioning trust gate
//! ([`gate`]: hardware classes, node labels, "trusted now?"). Handlers parse HTTP and call
//! these; nothing here knows HTTP beyond Keylime's texts in [`ApiError`].

mod gate;
mod identity;
mod policies;
mod response;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tracing::{info, warn};
use vigil_core::attestation::{Deletion, NodeStatus, StatusEnrolment};
use vigil_service::metrics::Registry;
use vigil_service::ops::{Check, Readiness, ReadinessCheck, ReadinessFuture};
use vigil_store::{AgentStatusRecord, StoreError, VerifierAgent};

pub(crate) use policies::PolicyKind;
pub(crate) use verify::EvidenceVerdict;

use crate::config::Config;
use crate::engine::persist::{self, Restored};
use crate::engine::{Command, Engine};
use crate::enrol;
use crate::error::ApiError;

/// How long a readiness probe waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The verifier's operations, shared by every request.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    engine: Arc<Engine>,
}

/// A tenant's decision about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TenantAction {
    Stop,
    Reactivate,
}

impl Service {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// The verifier's configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.engine.config
    }

    /// The verifier's metrics.
    pub(crate) fn metrics(&self) -> Arc<Registry> {
        self.engine.metrics.registry.clone()
    }

    /// Whether the verifier is ready: the database answers a trivial query within
    /// [`PING_TIMEOUT`] (`store`); it recorded the last round (`rounds`: not after a
    /// write failed — a full disk, a lost connection — until one is recorded again);
    /// with leases on, the last renewed ones still run (`leases`); the TLS
    /// material is loaded (`tls`: the verifier does not start without it). Why a
    /// check fails is logged, not answered.
    pub(crate) async fn readiness(&self) -> Readiness {
        let e = &self.engine;
        let store = match tokio::time::timeout(PING_TIMEOUT, e.store.ping()).await {
            Ok(Ok(())) => Check::Ok,
            Ok(Err(err)) => {
                warn!("not ready: the database does not answer: {err}");
                Check::Failing("unreachable")
            }
            Err(_) => {
                warn!("not ready: the database does not answer within {PING_TIMEOUT:?}");
                Check::Failing("unreachable")
            }
        };
        let rounds = match e.not_ready() {
            Some(_) => Check::Failing("the database refuses to record rounds"),
            None => Check::Ok,
        };
        let leases = match e.leases_current() {
            None => Check::Off,
            Some(true) => Check::Ok,
            Some(false) => Check::Failing("not renewed in time: the leases expire"),
        };
        Readiness::default()
            .with("store", store)
            .with("rounds", rounds)
            .with("leases", leases)
            .with("tls", Check::Ok)
    }

    /// Checks the enrolment body and enrols agent `id`; its attestation starts.
    pub(crate) async fn enrol(&self, id: &str, body: &Map<String, Value>) -> Result<(), ApiError> {
        let e = &self.engine;
        let mut enrolment = enrol::enrolment(&e.config, &e.store, id, body).await?;
        if enrolment.hardware_class.is_some() {
            enrolment.class_since = epoch(e.clock.now().as_secs());
        }
        match e.store.verifier_agents().enrol(enrolment).await {
            Ok(()) => {
                info!(agent_id = id, "agent enrolled");
                e.enrolled(id).await;
                Ok(())
            }
            Err(StoreError::AlreadyExists { entity, id: what }) => {
                tracing::warn!(agent_id = id, "enrolment refused: {entity} {what} exists");
                Err(ApiError::Conflict(format!(
                    "{entity} {what} already exists"
                )))
            }
            Err(StoreError::NotFound { entity, id: what }) => Err(ApiError::NotFound(format!(
                "Could not find {entity} with name {what}!"
            ))),
            Err(source) => Err(ApiError::Store {
                doing: "enrolling",
                source,
            }),
        }
    }

    /// The status object of agent `id` (one query).
    pub(crate) async fn show(&self, id: &str) -> Result<Value, ApiError> {
        let records = self
            .engine
            .store
            .verifier_agents()
            .statuses(None, Some(id))
            .await
            .map_err(ApiError::store("reading an agent"))?;
        let record = records.first().ok_or(ApiError::AgentNotFound)?;
        Ok(self.status_json(record))
    }

    /// The status object, with Vigil's class and labels in its `vigil` part.
    fn status_json(&self, record: &AgentStatusRecord) -> Value {
        let mut status = self.status_of(record).to_json();
        let en = &record.enrolment;
        if en.hardware_class.is_some() || !en.labels.is_empty() {
            if let Some(vigil) = status.get_mut("vigil").and_then(Value::as_object_mut) {
                vigil.insert("class".into(), json!(en.hardware_class));
                vigil.insert("labels".into(), json!(en.labels));
            }
        }
        status
    }

    /// Agent ids (Keylime's list of one-element lists), or with `bulk` every agent's
    /// status object, in one query; only those of `verifier` if given.
    pub(crate) async fn list(&self, verifier: Option<&str>, bulk: bool) -> Result<Value, ApiError> {
        let agents = self.engine.store.verifier_agents();
        if !bulk {
            let ids = agents
                .list(verifier)
                .await
                .map_err(ApiError::store("listing agents"))?;
            // Keylime's quirk: a list of one-element lists (serialised SQL rows).
            let rows: Vec<Value> = ids.into_iter().map(|id| json!([id])).collect();
            return Ok(json!({ "uuids": rows }));
        }
        let records = agents
            .statuses(verifier, None)
            .await
            .map_err(ApiError::store("listing agents"))?;
        let out: Map<String, Value> = records
            .iter()
            .map(|r| (r.enrolment.agent_id.clone(), self.status_json(r)))
            .collect();
        Ok(Value::Object(out))
    }

    fn status_of(&self, record: &AgentStatusRecord) -> NodeStatus {
        let en = &record.enrolment;
        let has_runtime_policy = record.runtime_policy_generator.unwrap_or(0) > 1;
        let has_mb_refstate = record
            .mb_policy_text
            .as_deref()
            .is_some_and(|t| !matches!(t.trim(), "" | "null" | "{}"));
        let Restored { node, .. } = persist::restore(
            &self.engine.attestation,
            record.into(),
            self.engine.clock.now(),
        );
        let status = NodeStatus::new(
            StatusEnrolment {
                v: en.v.clone(),
                ip: en.ip.clone(),
                port: en.port,
                tpm_policy: en.tpm_policy.clone(),
                meta_data: en.meta_data.clone(),
                has_mb_refstate,
                has_runtime_policy,
                accept_tpm_hash_algs: en.accept_tpm_hash_algs.clone(),
                accept_tpm_encryption_algs: en.accept_tpm_encryption_algs.clone(),
                accept_tpm_signing_algs: en.accept_tpm_signing_algs.clone(),
                verifier_id: en.verifier_id.clone(),
                verifier_ip: en.verifier_ip.clone(),
                verifier_port: en.verifier_port,
            },
            &node,
        );
        match self.engine.config.stale_after() {
            Some(limit) => status.with_staleness(self.engine.clock.now(), limit),
            None => status,
        }
    }

    async fn agent(&self, id: &str) -> Result<VerifierAgent, ApiError> {
        self.engine
            .store
            .verifier_agents()
            .get(id)
            .await
            .map_err(ApiError::store("reading an agent"))?
            .ok_or(ApiError::AgentNotFound)
    }

    /// Deletes agent `id`: at once, or once its request in flight ends.
    pub(crate) async fn delete(&self, id: &str) -> Result<Deletion, ApiError> {
        self.agent(id).await?;
        let e = &self.engine;
        let (tx, rx) = oneshot::channel();
        if e.command(id, Command::Delete(tx)) {
            return rx.await.map_err(|_| ApiError::AgentNotFound);
        }
        // Not attested here (another replica, or stopped for good): delete the record; a
        // replica attesting it stops at its next write.
        match e.store.verifier_agents().delete(id).await {
            Ok(()) => {
                info!(agent_id = id, "agent deleted");
                Ok(Deletion::Immediate)
            }
            Err(StoreError::NotFound { .. }) => Err(ApiError::AgentNotFound),
            Err(source) => Err(ApiError::Store {
                doing: "deleting an agent",
                source,
            }),
        }
    }

    /// `PUT …/stop` or `…/reactivate`, through the node's task when this replica
    /// attests it, else recorded directly.
    pub(crate) async fn tenant_action(
        &self,
        id: &str,
        action: TenantAction,
    ) -> Result<(), ApiError> {
        let agent = self.agent(id).await?;
        let e = &self.engine;
        let (tx, rx) = oneshot::channel();
        let cmd = match action {
            TenantAction::Stop => Command::Stop(tx),
            TenantAction::Reactivate => Command::Reactivate(tx),
        };
        if e.command(id, cmd) {
            return rx.await.map_err(|_| ApiError::AgentNotFound);
        }
        if e.uses_leases() {
            let holder = match e.store.leases().get(id).await {
                Ok(Some(l)) => l.holder,
                _ => "no replica yet".to_owned(),
            };
            return Err(ApiError::HeldElsewhere {
                id: id.to_owned(),
                holder,
            });
        }
        // No task (its enrolment could not be loaded): record the tenant's decision.
        let t = e.clock.now();
        let Restored { mut node, .. } = persist::restore(&e.attestation, (&agent).into(), t);
        let _ = match action {
            TenantAction::Reactivate => node.reactivate(t),
            TenantAction::Stop => node.stop(t),
        };
        e.store
            .verifier_agents()
            .record_round(id, persist::state_only(&node), None)
            .await
            .map_err(ApiError::store("recording a tenant action"))?;
        if action == TenantAction::Reactivate {
            e.enrolled(id).await;
        }
        Ok(())
    }
}

/// Epoch seconds as the store's signed column.
pub(crate) fn epoch(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl ReadinessCheck for Service {
    fn readiness(&self) -> ReadinessFuture<'_> {
        Box::pin(Self::readiness(self))
    }
}
