//! Revocation notices (compat §6.6): on INVALID_QUOTE, and on `comm_error` after the
//! retries, the engine asks for a notice; it is built and signed here with the node's
//! `revocation_key` (`vigil_core::revocation`) and handed to every enabled channel.
//! Each channel is one [`Notifier`] in its own file, so later channels (the response
//! engine) add a file, not a branch.
//!
//! Deliveries are durable: one row per (notice, channel, target) is recorded in the
//! store (`Notices`) before the first attempt, deleted once delivered, and kept with
//! its attempt count and next attempt time while it fails. At start-up the verifier
//! resumes every pending row, so a crash or restart does not drop a notice. Each
//! delivery is tried at most `max_retries` times (at least once), `retry_delay` apart
//! (Keylime's `retry_interval`/`exponential_backoff` schedule; Keylime's agent channel
//! likewise gives up after its window), then dropped with an error log line.
//!
//! When replicas share the database (`lease_ttl > 0`) each row is leased to the replica
//! that records it, renewed by its lease loop ([`Notifiers::renew_and_claim`]), and
//! claimed by another replica once a dead one's lease expired: its deliveries are made
//! by the others, as its nodes are attested by them. A replica starts by claiming only
//! free or expired rows, never a live replica's.

mod agent;
mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use vigil_core::attestation::{AttestationConfig, Notification, NotificationKind, UnixTime};
use vigil_core::revocation::{asctime, RevocationMessage, RevocationNotice};
use vigil_store::{NewNotice, NoticeLease, PendingNotice, Store, StoreError};

use crate::clock::Clock;
use crate::config::Config;
use crate::context::NodeContext;
use crate::metrics::Metrics;
use crate::node_tls::NodeTls;

/// The node a notice is about (what a channel may need besides the notice).
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) agent_id: String,
}

/// How a delivery attempt ended the notice's delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The target accepted the notice.
    Delivered,
    /// Not delivered, for a reason no retry changes (the target is gone, or cannot
    /// verify notices): said at info level, not as a failure.
    Declined(String),
}

/// A channel's answer, boxed so channels can be trait objects.
pub(crate) type ChannelFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// One notification channel.
pub(crate) trait Notifier: Send + Sync {
    /// The channel's name, for logs and the store.
    fn name(&self) -> &'static str;
    /// Where a notice about `origin` goes: one delivery (and one stored row) each.
    fn targets<'a>(&'a self, origin: &'a Origin) -> ChannelFuture<'a, Vec<String>>;
    /// One attempt at delivering `notice` (the signed JSON, as recorded) to `target`;
    /// retries are the caller's.
    fn send<'a>(&'a self, notice: &'a str, target: &'a str) -> ChannelFuture<'a, Sent>;
}

/// The enabled channels, and the durable delivery of their notices.
pub(crate) struct Notifiers {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    channels: Vec<Arc<dyn Notifier>>,
    attestation: Arc<AttestationConfig>,
    attempts: u32,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
    /// Every delivery under way, joined at shutdown before the store closes.
    tasks: Mutex<JoinSet<()>>,
    /// This replica's id and the lease TTL, when replicas share the database.
    lease: Option<(String, u32)>,
    /// Rows claimed at once.
    batch: u32,
}

fn epoch_secs(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

impl Notifiers {
    pub(crate) fn new(
        config: &Config,
        store: Store,
        metrics: Arc<Metrics>,
        tls: NodeTls,
        attestation: Arc<AttestationConfig>,
        clock: Arc<dyn Clock>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let mut channels: Vec<Arc<dyn Notifier>> = Vec::new();
        for name in &config.enabled_revocation_notifications {
            match name.as_str() {
                "agent" => channels.push(Arc::new(agent::AgentChannel::new(
                    store.clone(),
                    config.uuid.clone(),
                    tls.clone(),
                    config.request_timeout(),
                ))),
                "webhook" if !config.webhook_url.is_empty() => {
                    channels.push(Arc::new(webhook::Webhook::new(config)));
                }
                _ => {}
            }
        }
        Self {
            shared: Arc::new(Shared {
                store,
                channels,
                attestation,
                attempts: config.max_retries.max(1),
                metrics,
                clock,
                stop,
                tasks: Mutex::new(JoinSet::new()),
                lease: (config.lease_ttl > 0).then(|| (config.replica_id(), config.lease_ttl)),
                batch: config.lease_batch.max(1),
            }),
        }
    }

    /// Resumes every delivery a previous run left pending (start-up).
    /// Resumes the deliveries a previous process left: every pending row, or with
    /// leases only the free and expired ones (never a live replica's).
    pub(crate) async fn resume(&self) -> Result<(), StoreError> {
        let pending = match self.shared.notice_lease() {
            Some(lease) => {
                let claimed = self.shared.store.notices();
                claimed
                    .claim(&lease, self.shared.now_secs(), self.shared.batch)
                    .await?
            }
            None => self.shared.store.notices().pending().await?,
        };
        self.shared.metrics.notices_pending(pending.len());
        self.adopt(pending);
        Ok(())
    }

    /// With leases: renews this replica's delivery leases and takes over deliveries
    /// whose lease expired (a dead replica's). Called by the engine's lease loop.
    pub(crate) async fn renew_and_claim(&self) -> Result<(), StoreError> {
        let Some(lease) = self.shared.notice_lease() else {
            return Ok(());
        };
        let notices = self.shared.store.notices();
        let now = self.shared.now_secs();
        notices.renew(&lease, now).await?;
        let claimed = notices.claim(&lease, now, self.shared.batch).await?;
        if !claimed.is_empty() {
            info!(count = claimed.len(), holder = %lease.holder,
                "taking over revocation notice deliveries whose lease expired");
        }
        self.adopt(claimed);
        Ok(())
    }

    fn adopt(&self, rows: Vec<PendingNotice>) {
        for row in rows {
            match self.shared.channel(&row.channel) {
                Some(channel) => {
                    info!(agent_id = %row.agent_id, channel = %row.channel, target = %row.target,
                        attempts = row.attempts, "resuming revocation notice delivery");
                    self.shared.spawn(self.shared.clone().deliver(channel, row));
                }
                None => {
                    warn!(agent_id = %row.agent_id, channel = %row.channel,
                        "pending revocation notice for a channel not enabled; left pending")
                }
            }
        }
    }

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
            event_time: asctime(epoch_secs(now)),
            event_id: Some(n.event.event_id.clone()),
            severity_label: Some(n.event.severity_label.clone()),
            context: Some(n.event.context.to_string()),
        };
        let notice = RevocationNotice::sign(&message, ctx.revocation_key.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|n| serde_json::to_string(&n).map_err(|e| e.to_string()));
        let notice = match notice {
            Ok(n) => n,
            Err(e) => {
                error!(agent_id = %ctx.agent_id, "cannot sign the revocation notice: {e}");
                return;
            }
        };
        info!(agent_id = %ctx.agent_id, kind, event_id = %n.event.event_id, "sending revocation notice");
        let origin = Origin {
            agent_id: ctx.agent_id.clone(),
        };
        self.shared
            .spawn(self.shared.clone().record_and_deliver(origin, notice));
    }

    /// Waits for every delivery under way to stop (they stop when the verifier does;
    /// a pending one stays recorded for the next start), at most 10 s.
    pub(crate) async fn shutdown(&self) {
        let mut tasks = std::mem::take(&mut *self.shared.lock_tasks());
        if tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tasks.abort_all();
        }
    }
}

impl Shared {
    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `task` in the background, tracked for shutdown (finished ones are reaped).
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.lock_tasks();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    fn now_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    /// The lease a delivery recorded or claimed now is held under, with leases on.
    fn notice_lease(&self) -> Option<NoticeLease> {
        self.lease.as_ref().map(|(holder, ttl)| NoticeLease {
            holder: holder.clone(),
            until: self.now_secs().saturating_add(i64::from(*ttl)),
        })
    }

    fn channel(&self, name: &str) -> Option<Arc<dyn Notifier>> {
        self.channels.iter().find(|c| c.name() == name).cloned()
    }

    async fn record_and_deliver(self: Arc<Self>, origin: Origin, notice: String) {
        let mut rows = Vec::new();
        for channel in &self.channels {
            match channel.targets(&origin).await {
                Ok(targets) => rows.extend(targets.into_iter().map(|target| NewNotice {
                    agent_id: origin.agent_id.clone(),
                    channel: channel.name().to_owned(),
                    target,
                    notice: notice.clone(),
                })),
                Err(e) => {
                    error!(agent_id = %origin.agent_id, channel = channel.name(),
                        "revocation notice not sent: no targets: {e}")
                }
            }
        }
        let lease = self.notice_lease();
        let recorded = match self
            .store
            .notices()
            .record(&rows, self.now_secs(), lease.as_ref())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                error!(agent_id = %origin.agent_id, "revocation notice not sent: cannot record it: {e}");
                return;
            }
        };
        self.metrics.notices_pending(recorded.len());
        for row in recorded {
            if let Some(channel) = self.channel(&row.channel) {
                self.spawn(self.clone().deliver(channel, row));
            }
        }
    }

    /// Tries `row` until delivered, given up, or the verifier stops (the row then
    /// stays for the next start).
    async fn deliver(self: Arc<Self>, channel: Arc<dyn Notifier>, mut row: PendingNotice) {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return;
        }
        let wait = u64::try_from(row.next_attempt_at.saturating_sub(self.now_secs()));
        let mut wait = Duration::from_secs(wait.unwrap_or(0));
        loop {
            let attempt = async {
                tokio::time::sleep(wait).await;
                channel.send(&row.notice, &row.target).await
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.changed() => return,
            };
            let fields = (&row.agent_id, channel.name(), &row.target);
            let done = match result {
                Ok(Sent::Delivered) => {
                    info!(agent_id = %fields.0, channel = fields.1, target = %fields.2,
                        "revocation notice delivered");
                    self.metrics.notice_ended(true);
                    self.store.notices().delivered(row.id).await.map(|_| None)
                }
                Ok(Sent::Declined(why)) => {
                    info!(agent_id = %fields.0, channel = fields.1, target = %fields.2,
                        "revocation notice not delivered: {why}");
                    self.store.notices().delivered(row.id).await.map(|_| None)
                }
                Err(e) if row.attempts + 1 >= self.attempts => {
                    error!(agent_id = %fields.0, channel = fields.1, target = %fields.2,
                        "revocation notice not delivered after {} attempts, dropped: {e}",
                        row.attempts + 1);
                    self.metrics.notice_ended(false);
                    self.store.notices().delivered(row.id).await.map(|_| None)
                }
                Err(e) => {
                    warn!(agent_id = %fields.0, channel = fields.1, target = %fields.2,
                        attempt = row.attempts + 1, "revocation notice not delivered yet: {e}");
                    wait = self.attestation.retry_delay(row.attempts + 1);
                    let next = self.now_secs().saturating_add(
                        i64::try_from(wait.as_secs().saturating_add(1)).unwrap_or(i64::MAX),
                    );
                    self.store.notices().failed(row.id, next, &e).await
                }
            };
            match done {
                Ok(Some(next)) => row = next,
                Ok(None) => return,
                Err(e) => {
                    // The row stays as last written; the next start resumes it.
                    error!(agent_id = %row.agent_id, channel = channel.name(),
                        "revocation notice delivery not recorded: {e}");
                    return;
                }
            }
        }
    }
}
