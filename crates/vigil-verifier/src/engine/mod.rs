//! The attestation engine: one tokio task per attested node (tasks, not threads: a
//! verifier runs thousands on a few worker threads), each driving the node's
//! `vigil_core` [`NodeAttestation`](vigil_core::attestation::NodeAttestation) — pull
//! its actions, make the requests, feed the answers back, sleep until its next
//! deadline — and recording every change in the store in one transaction, fenced by
//! the node's lease when replicas share the database.
//!
//! - [`Engine`] (this file): the task registry and the commands the service layer
//!   sends to a node's task;
//! - [`leases`]: which nodes a replica attests when replicas share the database;
//! - [`task`]: the per-node driver (judging runs on the blocking pool, bounded);
//! - [`persist`]: the node's state mapped to the store's rows;
//! - [`writer`]: rounds written in batches, one transaction for many nodes.
//!
//! Which nodes a replica attests: without leases (`lease_ttl = 0`), every node
//! enrolled with this verifier's `uuid`; with leases, the nodes whose lease it holds.

mod leases;
mod mailbox;
pub(crate) mod persist;
mod respond;
mod task;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify, Semaphore};
use tracing::{warn, Instrument};
use vigil_core::attestation::{AttestationConfig, Deletion, UnixTime};
use vigil_core::policy::measured_boot::MbPolicy;
use vigil_core::results::ResultsKey;
use vigil_store::{Fence, Store, StoreError};

use crate::agent_client::AgentClient;
use crate::clock::{Clock, NonceSource};
use crate::config::Config;
use crate::context::PolicyCache;
use crate::events::response::Rules;
use crate::events::Delivery;
use crate::metrics::Metrics;
use crate::notify::Notifiers;
use mailbox::Mailbox;

/// How long a lease must still run for a node's task to start a round: a round begun
/// just before the lease expires, and not recorded before another replica claims the
/// node at expiry, would be followed at once by that replica's first round.
const LEASE_GUARD: Duration = Duration::from_millis(250);

/// A tenant action for a node's task. Each is answered once the change is recorded,
/// so the tenant's next read sees it.
#[derive(Debug)]
pub(crate) enum Command {
    Stop(oneshot::Sender<()>),
    Reactivate(oneshot::Sender<()>),
    Delete(oneshot::Sender<Deletion>),
    /// The trust gate: attest now rather than at the next interval, and say how the
    /// round ended.
    AttestNow(oneshot::Sender<Attested>),
    /// The node's class or labels changed: rebuild its context before the next round.
    Rebuild,
    /// Stop attesting without touching the store (shutdown, lease lost).
    Shutdown,
    /// Hand the node over to another replica: finish the round under way, then give
    /// up the lease (which another replica claims at a new epoch) and stop.
    Release,
}

/// How an on-demand round ([`Command::AttestNow`]) ended.
#[derive(Debug, Clone)]
pub(crate) enum Attested {
    /// A quote was judged at `at` (epoch seconds); `failures` is empty when it passed.
    Judged {
        at: u64,
        failures: Vec<(String, serde_json::Value)>,
    },
    /// The request got no usable answer (unreachable, bad answer).
    NoAnswer(String),
    /// Polling has stopped (a failure that stops it, the tenant's stop): no round.
    NotPolling,
}

struct NodeHandle {
    mailbox: Arc<Mailbox>,
    serial: u64,
}

/// What the engine is built from: the service's parts and the sources of time and
/// nonces (tests pass their own).
pub(crate) struct EngineParts {
    pub(crate) store: Store,
    pub(crate) config: Arc<Config>,
    pub(crate) attestation: Arc<AttestationConfig>,
    pub(crate) agents: AgentClient,
    pub(crate) notifiers: Notifiers,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) nonces: Arc<dyn NonceSource>,
    pub(crate) rules: Arc<Rules>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) results_key: ResultsKey,
}

/// Shared by the service layer and every node task.
pub(crate) struct Engine {
    pub(crate) store: Store,
    pub(crate) config: Arc<Config>,
    pub(crate) attestation: Arc<AttestationConfig>,
    pub(crate) cache: PolicyCache,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) holder: String,
    pub(crate) metrics: Arc<Metrics>,
    /// Workload identity: used nonces, issued identities, eviction.
    pub(crate) identity: crate::identity::IdentityBook,
    /// Signs the trust gate's attestation results.
    pub(crate) results_key: ResultsKey,
    /// This replica's event outbox delivery.
    pub(crate) delivery: Arc<Delivery>,
    /// The response rules in force.
    pub(crate) rules: Arc<Rules>,
    pub(crate) nonces: Arc<dyn NonceSource>,
    pub(crate) agents: AgentClient,
    /// Writes the nodes' rounds, many per transaction.
    pub(crate) writer: writer::RoundWriter,
    mb_policy: MbPolicy,
    leases: bool,
    nodes: Mutex<HashMap<String, NodeHandle>>,
    serial: AtomicU64,
    notifiers: Notifiers,
    wake_leases: Notify,
    stop: watch::Receiver<bool>,
    tasks: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
    /// The last failure to record a round, until a round is recorded again: the
    /// verifier is not ready while its database refuses writes.
    store_fault: Mutex<Option<String>>,
    /// Until when the leases the lease loop last renewed run, as the database has it
    /// (with leases on): the verifier is not ready, and starts no round, past that.
    leases_valid_until: Mutex<Option<UnixTime>>,
    /// The nodes whose lease the lease loop last renewed, and a wake-up for node tasks
    /// waiting for that renewal.
    leases_held: Mutex<HashSet<String>>,
    renewed: Notify,
    /// Answers judged at once: judging is CPU work on the blocking pool, and an answer
    /// may hold hundreds of megabytes, so more than a core's worth at a time would
    /// only add memory.
    judging: Semaphore,
    /// Quote rounds under way (`max_rounds_in_flight`): each holds one from before its
    /// request is sent until it is recorded.
    rounds: Arc<Semaphore>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(parts: EngineParts) -> Arc<Self> {
        let EngineParts {
            store,
            config,
            attestation,
            agents,
            notifiers,
            metrics,
            clock,
            nonces,
            rules,
            stop,
            results_key,
        } = parts;
        let mb_policy = config
            .measured_boot_policy_name
            .parse()
            .unwrap_or(MbPolicy::AcceptAll);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rounds = Arc::new(Semaphore::new(config.max_rounds_in_flight.max(1)));
        let holder = config.replica_id();
        let delivery = Delivery::new(
            store.clone(),
            crate::events::sinks(&config),
            holder.clone(),
            clock.clone(),
        );
        Arc::new(Self {
            writer: writer::RoundWriter::start(store.clone()),
            holder,
            delivery,
            rules,
            metrics,
            identity: crate::identity::IdentityBook::new(config.identity_evict_command.clone()),
            results_key,
            leases: config.lease_ttl > 0,
            store,
            attestation,
            cache: PolicyCache::default(),
            clock,
            nonces,
            agents,
            mb_policy,
            nodes: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            notifiers,
            wake_leases: Notify::new(),
            stop,
            config,
            tasks: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
            judging: Semaphore::new(cores),
            rounds,
            store_fault: Mutex::new(None),
            leases_valid_until: Mutex::new(None),
            leases_held: Mutex::new(HashSet::new()),
            renewed: Notify::new(),
        })
    }

    /// The measured-boot policy every node is judged with.
    pub(crate) fn mb_policy(&self) -> MbPolicy {
        self.mb_policy
    }

    /// Starts attesting: every node of this verifier, or the lease loop.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        self.notifiers.resume().await?;
        let delivery = self.delivery.clone();
        let stop = self.stop.clone();
        self.tasks
            .lock()
            .await
            .spawn(async move { delivery.run(stop).await });
        let (rules, mut stop) = (self.rules.clone(), self.stop.clone());
        self.tasks.lock().await.spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                warn!("cannot listen for SIGHUP: response rules are not reloaded");
                return;
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => rules.reload(),
                    _ = stop.changed() => return,
                }
            }
        });
        if self.leases {
            let me = self.clone();
            self.tasks
                .lock()
                .await
                .spawn(async move { me.lease_loop().await });
            let me = self.clone();
            self.tasks
                .lock()
                .await
                .spawn(async move { me.notice_loop().await });
        } else {
            for id in self
                .store
                .verifier_agents()
                .list(Some(&self.config.uuid))
                .await?
            {
                self.spawn_node(id, None).await;
            }
        }
        Ok(())
    }

    /// A node was enrolled (or reactivated without a task) through this replica.
    pub(crate) async fn enrolled(self: &Arc<Self>, id: &str) {
        if self.leases {
            self.wake_leases.notify_one();
        } else {
            self.spawn_node(id.to_owned(), None).await;
        }
    }

    /// Notes whether the last attempt to record a round worked (the reason `readyz`
    /// gives, with the database's own words), logging the changes.
    pub(crate) fn store_written(&self, result: Result<(), &StoreError>) {
        let mut fault = self.store_fault.lock().unwrap_or_else(|e| e.into_inner());
        match (result, fault.is_some()) {
            (Ok(()), true) => {
                tracing::info!("the database records rounds again");
                *fault = None;
            }
            (Err(e), _) => *fault = Some(with_causes(e)),
            (Ok(()), false) => {}
        }
    }

    /// Why the verifier is not ready (its database refused the last round), if so.
    pub(crate) fn not_ready(&self) -> Option<String> {
        self.store_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes that the lease loop renewed this replica's leases on `held` until `until`
    /// (the expiry it wrote), and wakes the node tasks waiting for it.
    pub(crate) fn leases_renewed(&self, until: UnixTime, held: HashSet<String>) {
        *self
            .leases_valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(until);
        *self.leases_held.lock().unwrap_or_else(|e| e.into_inner()) = held;
        self.renewed.notify_waiters();
    }

    /// For a node task whose replica's leases were not renewed in time: waits (at most
    /// a lease TTL) for the next renewal, and says whether its node's lease was
    /// renewed then. A busy replica whose lease loop runs late thus delays its rounds
    /// instead of stopping its node tasks (which it would start again, adding to the
    /// load that made it late).
    pub(crate) async fn lease_renewed_for(&self, id: &str) -> bool {
        let renewed = self.renewed.notified();
        if self.leases_current() != Some(true) {
            let ttl = Duration::from_secs(u64::from(self.config.lease_ttl));
            if tokio::time::timeout(ttl, renewed).await.is_err() {
                return false;
            }
        }
        self.leases_current() == Some(true)
            && self
                .leases_held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(id)
    }

    /// With leases on, whether they still run for [`LEASE_GUARD`] (`None` with leases
    /// off). Measured against the expiry written in the database, in whole seconds,
    /// not the time since the renewal: the written expiry can be up to a second short
    /// of `lease_ttl`, and past it another replica may claim the node and poll it.
    pub(crate) fn leases_current(&self) -> Option<bool> {
        if !self.leases {
            return None;
        }
        let until = *self
            .leases_valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        Some(until.is_some_and(|until| until.saturating_since(now) > LEASE_GUARD))
    }

    /// Whether replicas share nodes through leases.
    pub(crate) fn uses_leases(&self) -> bool {
        self.leases
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeHandle>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `cmd` to the node's task; `false` if this replica does not attest it.
    pub(crate) fn command(&self, id: &str, cmd: Command) -> bool {
        self.lock_nodes()
            .get(id)
            .is_some_and(|h| h.mailbox.send(cmd))
    }

    /// How many nodes this replica attests.
    pub(crate) fn local_count(&self) -> usize {
        self.lock_nodes().len()
    }

    async fn spawn_node(self: &Arc<Self>, id: String, fence: Option<Fence>) {
        let mailbox = Arc::new(Mailbox::new());
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        {
            let mut nodes = self.lock_nodes();
            if nodes.contains_key(&id) {
                return;
            }
            nodes.insert(
                id.clone(),
                NodeHandle {
                    mailbox: mailbox.clone(),
                    serial,
                },
            );
        }
        let me = self.clone();
        let span = tracing::info_span!("node", agent_id = %id);
        self.tasks.lock().await.spawn(async move {
            // Boxed: an async method taking `self` by value held it twice in its future
            // (the argument and the binding), which every idle node kept.
            Box::new(task::NodeTask::new(me.clone(), id.clone(), fence))
                .run(&mailbox)
                .instrument(span)
                .await;
            mailbox.close();
            let mut nodes = me.lock_nodes();
            if nodes.get(&id).is_some_and(|h| h.serial == serial) {
                nodes.remove(&id);
            }
        });
    }

    /// Stops every node task (no store writes) and releases the leases.
    pub(crate) async fn shutdown(&self) {
        let ids: Vec<String> = self.lock_nodes().keys().cloned().collect();
        for id in ids {
            self.command(&id, Command::Shutdown);
        }
        let mut tasks = self.tasks.lock().await;
        if tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tasks.abort_all();
        }
        self.notifiers.shutdown().await;
        if self.leases {
            if let Err(e) = self.store.leases().release_all(&self.holder).await {
                warn!("releasing leases: {e}");
            }
        }
    }
}

/// `e` followed by its causes, `: `-separated ("database error while trying to record
/// attestation round: database is locked"): the log and `readyz` say why a write
/// failed, not only which.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
