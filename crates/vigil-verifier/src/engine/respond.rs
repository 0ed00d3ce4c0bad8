//! The response to a node's event once its round is recorded: the actions the rules in
//! force ask for, each recorded in the store with its outcome and sent out as an
//! `action` event. `relearn` is not here: it happens while the round is judged
//! (`task`), so that a covered change never fails the node.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};
use vigil_core::attestation::{NodeAttestation, Notification, NotificationKind};
use vigil_core::events::{EventNode, IntegrityEvent};
use vigil_store::{ActionRecord, NewEvent};

use super::task::NodeTask;
use super::Engine;
use crate::context::NodeContext;
use crate::events::act::{self, Outcome};
use crate::events::response::ActionSpec;

/// An action under way: what its record and event name.
struct Taken {
    engine: Arc<Engine>,
    node: EventNode,
    rule: String,
    action: &'static str,
    trigger: String,
}

impl Taken {
    async fn finish(self, outcome: Outcome) {
        self.engine
            .action_taken(&self.node, &self.rule, self.action, &self.trigger, outcome)
            .await;
    }
}

impl Engine {
    /// Runs the actions of every rule `event` matches (`json` is the event as sent).
    pub(super) fn respond(
        self: &Arc<Self>,
        ctx: &NodeContext,
        node: &NodeAttestation,
        event: &IntegrityEvent,
        json: &str,
    ) {
        let rules = self.rules.current();
        for rule in rules.matching(event, self.rules.severities()) {
            for action in &rule.actions {
                let taken = Taken {
                    engine: self.clone(),
                    node: event.node.clone(),
                    rule: rule.name.clone(),
                    action: action.name(),
                    trigger: event.uuid.clone(),
                };
                match action {
                    ActionSpec::Notify { sinks } => {
                        let to = if sinks.is_empty() {
                            "every sink".to_owned()
                        } else {
                            sinks.join(", ")
                        };
                        tokio::spawn(taken.finish(Outcome::done(format!("event queued for {to}"))));
                    }
                    ActionSpec::Revoke => {
                        let top = node
                            .last_failures()
                            .iter()
                            .max_by_key(|f| f.severity_level)
                            .cloned();
                        let outcome = match top {
                            Some(event) => {
                                let n = Notification {
                                    kind: NotificationKind::Revocation,
                                    event,
                                };
                                self.notifiers.notify(ctx, &n, self.clock.now());
                                Outcome::done("revocation notice sent to the enabled channels")
                            }
                            None => Outcome::failed("no failure to revoke for"),
                        };
                        tokio::spawn(taken.finish(outcome));
                    }
                    ActionSpec::Quarantine | ActionSpec::Shutdown => {
                        let body = act::signed_request(
                            action.name(),
                            &ctx.agent_id,
                            &event.uuid,
                            ctx.revocation_key.as_deref(),
                            self.clock.now(),
                        );
                        let target = NodeTask::target(ctx);
                        tokio::spawn(async move {
                            let outcome = match body {
                                Ok(body) => {
                                    act::on_agent(&taken.engine.agents, &target, body).await
                                }
                                Err(e) => Outcome::failed(e),
                            };
                            taken.finish(outcome).await;
                        });
                    }
                    ActionSpec::Exec {
                        command,
                        timeout_secs,
                    } => {
                        let (command, json) = (command.clone(), json.to_owned());
                        let timeout = Duration::from_secs(*timeout_secs);
                        tokio::spawn(async move {
                            taken
                                .finish(act::exec(&command, timeout, &json).await)
                                .await;
                        });
                    }
                    ActionSpec::Relearn => {}
                }
            }
        }
    }

    /// Records an action's outcome and sends it out as an `action` event.
    pub(crate) async fn action_taken(
        &self,
        node: &EventNode,
        rule: &str,
        action: &str,
        trigger: &str,
        outcome: Outcome,
    ) {
        let now = self.clock.now();
        info!(agent_id = %node.node_id, rule, action, outcome = outcome.outcome, detail = %outcome.detail, "response action");
        let record = ActionRecord {
            agent_id: node.node_id.clone(),
            event_uuid: trigger.to_owned(),
            rule: rule.to_owned(),
            action: action.to_owned(),
            outcome: outcome.outcome.to_owned(),
            detail: outcome.detail.clone(),
            at: self.clock.now_secs(),
        };
        if let Err(e) = self.store.response_actions().record(&record).await {
            warn!(agent_id = %node.node_id, action, "response action not recorded: {e}");
        }
        let detail = json!({
            "rule": rule,
            "action": action,
            "outcome": outcome.outcome,
            "detail": outcome.detail,
            "trigger": trigger,
        });
        let event = IntegrityEvent::action(node, detail, now, self.nonces.event_uuid());
        self.queue(&event).await;
    }

    /// Queues an event made outside a round for every sink.
    pub(crate) async fn queue(&self, event: &IntegrityEvent) {
        let sinks = self.delivery.sink_names();
        if sinks.is_empty() {
            return;
        }
        let Ok(json) = serde_json::to_string(event) else {
            return;
        };
        let row = NewEvent {
            uuid: event.uuid.clone(),
            agent_id: event.node.node_id.clone(),
            event: json,
            sinks,
        };
        match self
            .store
            .outbox()
            .enqueue(&[row], self.clock.now_secs())
            .await
        {
            Ok(()) => self.delivery.wake(),
            Err(e) => warn!(agent_id = %event.node.node_id, "event not queued: {e}"),
        }
    }
}
