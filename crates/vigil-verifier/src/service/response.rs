//! The response engine's operator side (`/vigil/v1/…`, admin): the actions taken on a
//! node, known-good measurement sets, and the explicit relearn of a node.

use serde_json::{json, Map, Value};
use tracing::info;
use vigil_core::events::{Difference, IntegrityEvent};
use vigil_core::failure::Event;
use vigil_core::relearn::{self, KnownGoodSet};
use vigil_store::{FailureRecord, KnownGood, StoreError};

use super::{Service, TenantAction};
use crate::error::ApiError;
use crate::events::act::Outcome;
use crate::events::event_node;

/// How many actions a node's listing shows.
const RECENT_ACTIONS: u32 = 50;

/// The changed measurements of a node's last failed round (what it measures now that
/// its policies do not allow), or the failure that is no changed measurement.
fn last_changes(failures: &[FailureRecord]) -> Result<Vec<Difference>, ApiError> {
    let events: Vec<Event> = failures
        .iter()
        .map(|f| Event {
            event_id: f.event_id.clone(),
            context: serde_json::from_str(&f.context).unwrap_or(Value::Null),
            recoverable: f.recoverable,
            file: f.file.clone(),
        })
        .collect();
    match relearn::changes(&events) {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(ApiError::BadRequest(
            "the node's last round did not fail on changed measurements: nothing to learn".into(),
        )),
        Err(id) => Err(ApiError::BadRequest(format!(
            "the node's last round failed on {id}, which is no changed measurement: never relearnt"
        ))),
    }
}

/// The measurements of `changes` as a known-good set.
fn as_set(changes: &[Difference]) -> KnownGoodSet {
    let mut set = KnownGoodSet::default();
    for c in changes {
        match c {
            Difference::Pcr { pcr, measured, .. } => {
                set.pcrs.entry(*pcr).or_default().push(measured.clone())
            }
            Difference::File { file, measured, .. } => set
                .files
                .entry(file.clone())
                .or_default()
                .push(measured.clone()),
        }
    }
    set
}

fn text(body: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(ApiError::InvalidField {
            field,
            reason: "must be a non-empty string".into(),
        }),
        None => Err(ApiError::MissingField(field)),
    }
}

impl Service {
    /// The node's last actions, newest first.
    pub(crate) async fn actions(&self, id: &str) -> Result<Value, ApiError> {
        let actions = self
            .engine
            .store
            .response_actions()
            .recent(id, RECENT_ACTIONS)
            .await
            .map_err(ApiError::store("reading response actions"))?;
        let list: Vec<Value> = actions
            .into_iter()
            .map(|a| {
                json!({
                    "at": a.at, "rule": a.rule, "action": a.action, "outcome": a.outcome,
                    "detail": a.detail, "event": a.event_uuid,
                })
            })
            .collect();
        Ok(json!({ "actions": list }))
    }

    /// Records a known-good set: `{name, class, recorded_by, measurements}` or, with
    /// `from_node`, the measurements the node's last round reported that its policies
    /// did not allow (a canary just updated).
    pub(crate) async fn add_known_good(
        &self,
        body: &Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let e = &self.engine;
        let name = text(body, "name")?;
        let class = text(body, "class")?;
        let recorded_by = text(body, "recorded_by")?;
        let set = match body.get("from_node") {
            Some(Value::String(node)) => {
                let agent = self.agent(node).await?;
                as_set(&last_changes(&agent.state.last_failures)?)
            }
            Some(_) => {
                return Err(ApiError::InvalidField {
                    field: "from_node",
                    reason: "must be an agent id".into(),
                })
            }
            None => serde_json::from_value(body.get("measurements").cloned().unwrap_or_default())
                .map_err(|err| ApiError::InvalidField {
                field: "measurements",
                reason: err.to_string(),
            })?,
        };
        if set.is_empty() {
            return Err(ApiError::InvalidField {
                field: "measurements",
                reason: "the set holds no value".into(),
            });
        }
        let measurements = serde_json::to_value(&set).unwrap_or_default();
        let record = KnownGood {
            name: name.clone(),
            class,
            measurements: measurements.to_string(),
            recorded_by,
            recorded_at: e.clock.now_secs(),
        };
        match e.store.known_good().add(&record).await {
            Ok(()) => {
                info!(name, class = %record.class, by = %record.recorded_by, "known-good set recorded");
                Ok(Self::known_good_json(&record))
            }
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::Conflict(format!(
                "known-good set {name} already exists"
            ))),
            Err(source) => Err(ApiError::Store {
                doing: "recording a known-good set",
                source,
            }),
        }
    }

    fn known_good_json(k: &KnownGood) -> Value {
        json!({
            "name": k.name,
            "class": k.class,
            "recorded_by": k.recorded_by,
            "recorded_at": k.recorded_at,
            "measurements": serde_json::from_str::<Value>(&k.measurements).unwrap_or(Value::Null),
        })
    }

    /// Every known-good set (of `class` if given).
    pub(crate) async fn known_good(&self, class: Option<&str>) -> Result<Value, ApiError> {
        let sets = self
            .engine
            .store
            .known_good()
            .list(class)
            .await
            .map_err(ApiError::store("listing known-good sets"))?;
        Ok(json!({ "sets": sets.iter().map(Self::known_good_json).collect::<Vec<_>>() }))
    }

    /// One known-good set.
    pub(crate) async fn known_good_set(&self, name: &str) -> Result<Value, ApiError> {
        match self.engine.store.known_good().get(name).await {
            Ok(Some(k)) => Ok(Self::known_good_json(&k)),
            Ok(None) => Err(ApiError::NotFound(format!(
                "known-good set {name} not found"
            ))),
            Err(source) => Err(ApiError::Store {
                doing: "reading a known-good set",
                source,
            }),
        }
    }

    /// Deletes a known-good set.
    pub(crate) async fn delete_known_good(&self, name: &str) -> Result<(), ApiError> {
        match self.engine.store.known_good().delete(name).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(ApiError::NotFound(format!(
                "known-good set {name} not found"
            ))),
            Err(source) => Err(ApiError::Store {
                doing: "deleting a known-good set",
                source,
            }),
        }
    }

    /// The operator adopts the node's current measurements as its baseline: the
    /// changed values of its last failed round go into a new version of its policies
    /// (the old one kept), and it is reactivated. Refused when that round failed on
    /// anything but changed measurements.
    pub(crate) async fn relearn(&self, id: &str, by: &str) -> Result<Value, ApiError> {
        let e = &self.engine;
        let agent = self.agent(id).await?;
        let changes = last_changes(&agent.state.last_failures)?;
        let bad = |err: relearn::AdoptError| ApiError::BadRequest(err.to_string());
        let tpm = relearn::adopt_tpm_policy(&agent.enrolment.tpm_policy, &changes).map_err(bad)?;
        let runtime = match &agent.enrolment.runtime_policy {
            Some(name) if changes.iter().any(|c| matches!(c, Difference::File { .. })) => {
                let stored = e
                    .store
                    .policies()
                    .get_runtime(name)
                    .await
                    .map_err(ApiError::store("reading the runtime policy"))?
                    .and_then(|p| p.ima_policy)
                    .unwrap_or_else(|| "{}".into());
                Some(relearn::adopt_runtime_policy(&stored, &changes).map_err(bad)?)
            }
            _ => None,
        };
        let reason = format!("relearnt by the operator ({by})");
        e.store
            .known_good()
            .adopt(id, &tpm, runtime.as_deref(), &reason, e.clock.now_secs())
            .await
            .map_err(ApiError::store("storing the relearnt policies"))?;
        e.cache.bump();
        info!(
            agent_id = id,
            changes = changes.len(),
            "relearnt by the operator"
        );
        let node = event_node(&agent.enrolment);
        let detail = json!({ "sets": [], "rule": "operator", "by": by });
        let event = IntegrityEvent::relearned(
            &node,
            &changes,
            detail,
            e.clock.now(),
            e.nonces.event_uuid(),
        );
        e.queue(&event).await;
        e.action_taken(
            &node,
            "operator",
            "relearn",
            &event.uuid,
            Outcome::done(reason),
        )
        .await;
        self.tenant_action(id, TenantAction::Reactivate).await?;
        Ok(json!({ "adopted": changes }))
    }
}
