//! Revocation notices (compat §6.6): on INVALID_QUOTE, and on `comm_error` after the
//! retries, the engine asks for a notice; it is built and signed here with the node's
//! `revocation_key` (`vigil_core::revocation`) and handed to every enabled channel.
//! Each channel is one [`Notifier`] in its own file, so later channels (the response
//! engine) add a file, not a branch.

mod agent;
mod webhook;

use std::sync::Arc;

use rand_core::OsRng;
use serde_json::Value;
use tracing::{error, info};
use vigil_core::attestation::{Notification, NotificationKind, UnixTime};
use vigil_core::revocation::{asctime, RevocationMessage, RevocationNotice};
use vigil_store::Store;

use crate::client::ClientIdentity;
use crate::config::Config;
use crate::context::NodeContext;

/// The node a notice is about (what a channel may need besides the notice).
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) agent_id: String,
}

/// One notification channel.
pub(crate) trait Notifier: Send + Sync {
    /// The channel's name, for logs.
    fn name(&self) -> &'static str;
    /// Delivers `notice` (retrying as the channel sees fit).
    fn send(
        &self,
        notice: Arc<RevocationNotice>,
        origin: Origin,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>;
}

/// The enabled channels.
pub(crate) struct Notifiers {
    channels: Vec<Arc<dyn Notifier>>,
}

impl Notifiers {
    pub(crate) fn new(config: &Config, store: Store, identity: Option<ClientIdentity>) -> Self {
        let mut channels: Vec<Arc<dyn Notifier>> = Vec::new();
        for name in &config.enabled_revocation_notifications {
            match name.as_str() {
                "agent" => channels.push(Arc::new(agent::AgentChannel::new(
                    store.clone(),
                    config.uuid.clone(),
                    identity.clone(),
                    config.request_timeout(),
                ))),
                "webhook" if !config.webhook_url.is_empty() => {
                    channels.push(Arc::new(webhook::Webhook::new(config)));
                }
                _ => {}
            }
        }
        Self { channels }
    }

    /// Builds, signs and sends the notice on every channel, in the background.
    pub(crate) fn notify(&self, ctx: &NodeContext, n: &Notification, now: UnixTime) {
        let kind = match n.kind {
            NotificationKind::Revocation => "revocation",
            NotificationKind::CommError => "comm_error",
        };
        let message = RevocationMessage {
            kind: kind.to_owned(),
            ip: ctx.ip.clone().map_or(Value::Null, Value::String),
            agent_id: ctx.agent_id.clone(),
            port: ctx.port.map_or(Value::Null, Value::from),
            tpm_policy: Value::String(ctx.tpm_policy_text.clone()),
            meta_data: Value::String(ctx.meta_data.clone()),
            event_time: asctime(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)),
            event_id: Some(n.event.event_id.clone()),
            severity_label: Some(n.event.severity_label.clone()),
            context: Some(n.event.context.to_string()),
        };
        let notice =
            match RevocationNotice::sign(&message, ctx.revocation_key.as_deref(), &mut OsRng) {
                Ok(n) => Arc::new(n),
                Err(e) => {
                    error!(agent_id = %ctx.agent_id, "cannot sign the revocation notice: {e}");
                    return;
                }
            };
        info!(agent_id = %ctx.agent_id, kind, event_id = %n.event.event_id, "sending revocation notice");
        for channel in &self.channels {
            let channel = channel.clone();
            let notice = notice.clone();
            let origin = Origin {
                agent_id: ctx.agent_id.clone(),
            };
            tokio::spawn(async move {
                let id = origin.agent_id.clone();
                match channel.send(notice, origin).await {
                    Ok(()) => {
                        info!(agent_id = %id, channel = channel.name(), "revocation notice delivered")
                    }
                    Err(e) => {
                        error!(agent_id = %id, channel = channel.name(), "revocation notice not delivered: {e}")
                    }
                }
            });
        }
    }
}
