//! Integrity events out of the verifier: the sinks (one file each behind [`Sink`]) and
//! the outbox delivery loop.
//!
//! A round's events are built by `vigil_core::events` and written to the store's outbox
//! in the round's own transaction (`engine::task`), one row per configured sink. The
//! [`Delivery`] loop claims due rows under a lease ([`LEASE_SECS`]), hands each to its
//! sink, deletes it once taken, and on failure records the attempt with an exponential
//! backoff (1 s doubling to [`MAX_BACKOFF_SECS`]). A replica that dies mid-delivery
//! leaves its rows leased; another replica (or the same one restarted) takes them once
//! the lease expires. Delivery is at least once: consumers de-duplicate by `uuid`
//! (the NATS sink also sets `Nats-Msg-Id`, so JetStream drops a redelivery itself).

pub(crate) mod act;
mod file;
mod nats;
pub(crate) mod response;
mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{debug, warn};
use vigil_core::events::EventNode;
use vigil_store::{EnrolledAgent, OutboxRow, Store};

use crate::clock::Clock;
use crate::config::Config;

/// How long a replica holds an outbox row while delivering it.
pub(crate) const LEASE_SECS: i64 = 30;
/// The longest wait between two attempts at one delivery.
const MAX_BACKOFF_SECS: i64 = 60;
/// Rows claimed at once.
const BATCH: u32 = 256;
/// How often the loop looks for due rows when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);

/// The node an event is about, as events and rules name it: its hardware class and
/// labels are its enrolment's (docs/trust-gate.md).
pub(crate) fn event_node(agent: &EnrolledAgent) -> EventNode {
    EventNode {
        node_id: agent.agent_id.clone(),
        class: agent.hardware_class.clone(),
        labels: agent.labels.clone(),
    }
}

/// A sink's answer, boxed so sinks can be trait objects.
pub(crate) type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One event as a sink delivers it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// The event's uuid (de-duplication key).
    pub(crate) uuid: &'a str,
    /// The node it is about.
    pub(crate) node_id: &'a str,
    /// The event, JSON text, as recorded.
    pub(crate) event: &'a str,
}

/// Where events go.
pub(crate) trait Sink: Send + Sync {
    /// The sink's name in the configuration, the outbox and rules.
    fn name(&self) -> &'static str;
    /// One attempt at delivering `event`; retries are the caller's.
    fn deliver<'a>(&'a self, event: Outgoing<'a>) -> SinkFuture<'a>;
}

/// The configured sinks.
pub(crate) fn sinks(config: &Config) -> Vec<Arc<dyn Sink>> {
    config
        .event_sinks
        .iter()
        .filter_map(|name| -> Option<Arc<dyn Sink>> {
            match name.as_str() {
                "file" => Some(Arc::new(file::FileSink::new(config))),
                "webhook" => Some(Arc::new(webhook::WebhookSink::new(config))),
                "nats" => Some(Arc::new(nats::NatsSink::new(config))),
                // Refused by the configuration check.
                _ => None,
            }
        })
        .collect()
}

/// The sink names the configuration check accepts.
pub(crate) const SINK_NAMES: &[&str] = &["file", "webhook", "nats"];

/// The outbox delivery loop of this replica.
pub(crate) struct Delivery {
    store: Store,
    sinks: Vec<Arc<dyn Sink>>,
    holder: String,
    clock: Arc<dyn Clock>,
    wake: Notify,
}

impl Delivery {
    pub(crate) fn new(
        store: Store,
        sinks: Vec<Arc<dyn Sink>>,
        holder: String,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            sinks,
            holder,
            clock,
            wake: Notify::new(),
        })
    }

    /// The configured sink names (what a new event is queued for).
    pub(crate) fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name().to_owned()).collect()
    }

    /// New rows were queued: deliver them now rather than at the next poll.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers until `stop`; rows left are delivered by the next start (or another
    /// replica once their lease expires).
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.sinks.is_empty() {
            return;
        }
        loop {
            let busy = tokio::select! {
                b = self.round() => b,
                _ = stop.changed() => return,
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One batch; whether it was full (more may be due).
    async fn round(&self) -> bool {
        let now = self.clock.now_secs();
        let rows = match self
            .store
            .outbox()
            .claim(&self.holder, now, LEASE_SECS, BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                warn!("event outbox: cannot claim deliveries: {e}");
                return false;
            }
        };
        let full = rows.len() == BATCH as usize;
        for row in rows {
            self.deliver(row).await;
        }
        full
    }

    async fn deliver(&self, row: OutboxRow) {
        let outbox = self.store.outbox();
        let result = match self.sinks.iter().find(|s| s.name() == row.sink) {
            Some(sink) => {
                sink.deliver(Outgoing {
                    uuid: &row.uuid,
                    node_id: &row.agent_id,
                    event: &row.event,
                })
                .await
            }
            None => Err(format!("sink {} is not configured here", row.sink)),
        };
        let written = match result {
            Ok(()) => {
                debug!(uuid = %row.uuid, sink = %row.sink, "event delivered");
                outbox.delivered(row.id).await.map(|_| ())
            }
            Err(e) => {
                let backoff = 1_i64 << row.attempts.min(6);
                warn!(uuid = %row.uuid, sink = %row.sink, attempt = row.attempts + 1,
                    "event not delivered yet: {e}");
                let next = self
                    .clock
                    .now_secs()
                    .saturating_add(backoff.min(MAX_BACKOFF_SECS));
                outbox.failed(row.id, next, &e).await
            }
        };
        if let Err(e) = written {
            // The row stays leased; it is tried again once the lease expires.
            warn!(uuid = %row.uuid, sink = %row.sink, "event delivery not recorded: {e}");
        }
    }
}
