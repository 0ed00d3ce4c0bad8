//! The attestation engine: one tokio task per attested node (tasks, not threads: a
//! verifier runs thousands on a few worker threads), each driving the node's
//! `vigil_core` [`NodeAttestation`] — pull its actions, make the requests, feed the
//! answers back, sleep until its next deadline — and recording every change in the
//! store in one transaction, fenced by the node's lease when replicas share the
//! database.
//!
//! Which nodes a replica attests: without leases (`lease_ttl = 0`), every node
//! enrolled with this verifier's `uuid`; with leases, the nodes whose lease it holds.
//! A lease loop renews them, drops the nodes whose lease was lost, and claims free or
//! expired ones, so the nodes of a replica that died are taken over once their leases
//! expire.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{debug, error, info, warn};
use vigil_core::attestation::{
    Action, AttestationConfig, CommFailure, Deletion, NodeAttestation, NodeSnapshot,
    OperationalState, RequestId, RoundOutcome,
};
use vigil_core::policy::measured_boot::MbPolicy;
use vigil_store::{FailureRecord, Fence, ImaProgress, QuoteAlgs, RoundUpdate, Store, StoreError};

use crate::client::{self, ClientIdentity};
use crate::config::{Config, MbEvaluate};
use crate::context::{self, NodeContext, PolicyCache};
use crate::notify::Notifiers;
use crate::round;

/// The wall clock, as the engine's `UnixTime`.
pub(crate) fn now() -> vigil_core::attestation::UnixTime {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    vigil_core::attestation::UnixTime::from_millis(ms)
}

fn now_secs() -> i64 {
    i64::try_from(now().as_secs()).unwrap_or(i64::MAX)
}

/// Keylime's nonce: 20 characters of `[A-Za-z0-9]` from the OS generator (rejection
/// sampling, so every character is equally likely).
pub fn nonce() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(20);
    let mut buf = [0u8; 32];
    while out.len() < 20 {
        OsRng.fill_bytes(&mut buf);
        for b in buf {
            // 248 = 4 × 62: bytes above it would bias the first characters.
            if b < 248 && out.len() < 20 {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    out
}

/// A tenant action for a node's task.
#[derive(Debug)]
pub(crate) enum Command {
    Stop(oneshot::Sender<()>),
    Reactivate(oneshot::Sender<()>),
    Delete(oneshot::Sender<Deletion>),
    /// Stop attesting without touching the store (shutdown, lease lost).
    Shutdown,
}

struct NodeHandle {
    tx: mpsc::UnboundedSender<Command>,
    serial: u64,
}

/// Shared by the API and every node task.
pub(crate) struct Engine {
    pub(crate) store: Store,
    pub(crate) config: Arc<Config>,
    pub(crate) attestation: Arc<AttestationConfig>,
    pub(crate) cache: PolicyCache,
    identity: Option<ClientIdentity>,
    mb_policy: MbPolicy,
    pub(crate) holder: String,
    leases: bool,
    nodes: Mutex<HashMap<String, NodeHandle>>,
    serial: AtomicU64,
    notifiers: Notifiers,
    wake_leases: Notify,
    stop: watch::Receiver<bool>,
    tasks: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(
        store: Store,
        config: Arc<Config>,
        attestation: Arc<AttestationConfig>,
        identity: Option<ClientIdentity>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let mb_policy = config
            .measured_boot_policy_name
            .parse()
            .unwrap_or(MbPolicy::AcceptAll);
        let notifiers = Notifiers::new(
            &config,
            store.clone(),
            identity.clone(),
            attestation.clone(),
            stop.clone(),
        );
        Arc::new(Self {
            holder: config.replica_id(),
            leases: config.lease_ttl > 0,
            store,
            attestation,
            cache: PolicyCache::default(),
            identity,
            mb_policy,
            nodes: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            notifiers,
            wake_leases: Notify::new(),
            stop,
            config,
            tasks: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
        })
    }

    /// Starts attesting: every node of this verifier, or the lease loop.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        self.notifiers.resume().await?;
        if self.leases {
            let me = self.clone();
            self.tasks
                .lock()
                .await
                .spawn(async move { me.lease_loop().await });
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

    /// A node was enrolled through this replica.
    pub(crate) async fn enrolled(self: &Arc<Self>, id: &str) {
        if self.leases {
            self.wake_leases.notify_one();
        } else {
            self.spawn_node(id.to_owned(), None).await;
        }
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeHandle>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `cmd` to the node's task; `false` if this replica does not attest it.
    pub(crate) fn command(&self, id: &str, cmd: Command) -> bool {
        self.lock_nodes()
            .get(id)
            .is_some_and(|h| h.tx.send(cmd).is_ok())
    }

    /// How many nodes this replica attests.
    pub(crate) fn local_count(&self) -> usize {
        self.lock_nodes().len()
    }

    async fn spawn_node(self: &Arc<Self>, id: String, fence: Option<Fence>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        {
            let mut nodes = self.lock_nodes();
            if nodes.contains_key(&id) {
                return;
            }
            nodes.insert(id.clone(), NodeHandle { tx, serial });
        }
        let me = self.clone();
        self.tasks.lock().await.spawn(async move {
            let task = NodeTask {
                engine: me.clone(),
                id: id.clone(),
                fence,
            };
            task.run(rx).await;
            let mut nodes = me.lock_nodes();
            if nodes.get(&id).is_some_and(|h| h.serial == serial) {
                nodes.remove(&id);
            }
        });
    }

    /// Renews held leases, drops lost nodes, claims free ones; every `ttl / 3`.
    async fn lease_loop(self: Arc<Self>) {
        let ttl = self.config.lease_ttl;
        let period = Duration::from_secs(u64::from((ttl / 3).clamp(1, 10)));
        let mut stop = self.stop.clone();
        loop {
            let leases = self.store.leases();
            match leases.renew(&self.holder, now_secs(), ttl).await {
                Ok(held) => {
                    let held: std::collections::HashSet<_> =
                        held.into_iter().map(|l| l.agent_id).collect();
                    let lost: Vec<String> = self
                        .lock_nodes()
                        .keys()
                        .filter(|id| !held.contains(*id))
                        .cloned()
                        .collect();
                    for id in lost {
                        warn!(agent_id = %id, holder = %self.holder, "lease lost: no longer attesting this node");
                        self.command(&id, Command::Shutdown);
                    }
                }
                Err(e) => error!("renewing leases: {e}"),
            }
            match leases
                .acquire(
                    &self.holder,
                    now_secs(),
                    ttl,
                    self.config.lease_batch.max(1),
                )
                .await
            {
                Ok(got) => {
                    for lease in got {
                        info!(agent_id = %lease.agent_id, epoch = lease.epoch, holder = %self.holder, "lease acquired");
                        let fence = lease.fence();
                        self.spawn_node(lease.agent_id, Some(fence)).await;
                    }
                }
                Err(e) => error!("acquiring leases: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.wake_leases.notified() => {}
                _ = stop.changed() => return,
            }
        }
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
        if self.leases {
            if let Err(e) = self.store.leases().release_all(&self.holder).await {
                warn!("releasing leases: {e}");
            }
        }
    }
}

/// The result of a request, fed back to the engine.
enum Done {
    Quote {
        id: RequestId,
        nonce: String,
        result: Result<round::Answer, CommFailure>,
        version: Option<String>,
    },
    V {
        id: RequestId,
        result: Result<(), CommFailure>,
        version: Option<String>,
    },
}

type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What the store holds for a node, as last written by this task: a write is skipped
/// when nothing changed, and the keyrings are written only when they changed.
#[derive(Default)]
struct Written {
    snapshot: Option<NodeSnapshot>,
    learned_keyrings: Option<String>,
}

/// What one input changed, for the store.
#[derive(Default)]
struct RoundNote {
    quote_at: Option<i64>,
    verdict: Option<bool>,
}

struct NodeTask {
    engine: Arc<Engine>,
    id: String,
    fence: Option<Fence>,
}

/// Keylime's version negotiation: the highest version both sides list.
fn negotiate(ours: &[&str], theirs: &[String]) -> Option<String> {
    let key = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').unwrap_or((v, "0"));
        (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
    };
    theirs
        .iter()
        .filter(|v| ours.contains(&v.as_str()))
        .max_by_key(|v| key(v))
        .cloned()
}

impl NodeTask {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let e = self.engine.clone();
        let agent = match e.store.verifier_agents().get(&self.id).await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(err) => {
                error!(agent_id = %self.id, "cannot load the node: {err}");
                return;
            }
        };
        let mut ctx = match context::build(&agent, &e.store, &e.cache, e.identity.as_ref()).await {
            Ok(c) => c,
            Err(err) => {
                error!(agent_id = %self.id, "cannot attest this node: {err}");
                return;
            }
        };
        let t = now();
        let restored = agent
            .state
            .engine_state
            .as_deref()
            .and_then(|s| serde_json::from_str::<NodeSnapshot>(s).ok());
        let mut node = match restored {
            Some(snap) => {
                info!(agent_id = %self.id, state = snap.operational_state.name(), ima_next_entry = snap.ima.next_entry, "resuming node");
                NodeAttestation::restore(e.attestation.clone(), snap, t)
            }
            None => {
                let mut n = NodeAttestation::new(e.attestation.clone(), ctx.v.is_some());
                let _ = n.start(t);
                n
            }
        };
        let mut inflight: Option<InFlight> = None;
        let mut stop = e.stop.clone();
        let mut last_written = Written {
            snapshot: None,
            learned_keyrings: agent.state.learned_ima_keyrings.clone(),
        };
        if self
            .persist(&node, &ctx, &mut last_written, RoundNote::default(), None)
            .await
            .is_err()
        {
            return;
        }
        loop {
            // Pull every action the engine wants now.
            while let Some(action) = node.poll_action(now()) {
                match action {
                    Action::GetQuote {
                        id,
                        partial,
                        ima_ml_entry,
                    } => inflight = Some(self.get_quote(&ctx, id, partial, ima_ml_entry)),
                    Action::ProvideV { id } => inflight = Some(self.provide_v(&ctx, &node, id)),
                    Action::Notify(n) => e.notifiers.notify(&ctx, &n, now()),
                    Action::Remove => {
                        self.remove().await;
                        return;
                    }
                }
            }
            let deadline = node.next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => {
                        let wait = d.saturating_since(now());
                        tokio::time::sleep(wait).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let request = async {
                match inflight.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                done = request => {
                    inflight = None;
                    let (note, failures) = self.apply(&mut ctx, &mut node, done);
                    if self.persist(&node, &ctx, &mut last_written, note, failures).await.is_err() {
                        return;
                    }
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    let t = now();
                    // Answered once the change is recorded, so the tenant's next read
                    // sees it.
                    let reply: oneshot::Sender<()>;
                    match cmd {
                        Command::Shutdown => return,
                        Command::Stop(r) => {
                            let _ = node.stop(t);
                            inflight = None;
                            reply = r;
                        }
                        Command::Reactivate(r) => {
                            // The tenant may have fixed the enrolment's policies.
                            if let Ok(Some(a)) = e.store.verifier_agents().get(&self.id).await {
                                if let Ok(c) = context::build(&a, &e.store, &e.cache, e.identity.as_ref()).await {
                                    ctx = rebuilt(ctx, c);
                                }
                            }
                            let _ = node.reactivate(t);
                            inflight = None;
                            reply = r;
                        }
                        Command::Delete(r) => {
                            let how = node.deleted(t);
                            if how == Deletion::Immediate {
                                self.remove().await;
                                let _ = r.send(how);
                                return;
                            }
                            let written = self.persist(&node, &ctx, &mut last_written, RoundNote::default(), None).await;
                            let _ = r.send(how);
                            if written.is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                    let written = self.persist(&node, &ctx, &mut last_written, RoundNote::default(), None).await;
                    let _ = reply.send(());
                    if written.is_err() {
                        return;
                    }
                }
                () = sleep => {}
                _ = stop.changed() => return,
            }
            // A named policy changed: rebuild before the next round.
            if ctx.generation != e.cache.generation() {
                if let Ok(Some(a)) = e.store.verifier_agents().get(&self.id).await {
                    match context::build(&a, &e.store, &e.cache, e.identity.as_ref()).await {
                        Ok(c) => ctx = rebuilt(ctx, c),
                        Err(err) => warn!(agent_id = %self.id, "keeping the old policies: {err}"),
                    }
                }
            }
        }
    }

    fn base(&self, ctx: &NodeContext) -> Option<(std::net::SocketAddr, String)> {
        let addr = ctx.addr()?;
        Some((addr, addr.to_string()))
    }

    fn get_quote(&self, ctx: &NodeContext, id: RequestId, partial: bool, entry: u64) -> InFlight {
        let nonce = nonce();
        let target = self.base(ctx);
        let tls = ctx.tls.clone();
        let path = format!(
            "/v{}/quotes/integrity?nonce={nonce}&mask={:#x}&partial={}&ima_ml_entry={entry}",
            ctx.supported_version,
            ctx.mask,
            u8::from(partial),
        );
        let timeout = self.engine.config.request_timeout();
        let version = ctx.supported_version.clone();
        Box::pin(async move {
            let mut new_version = None;
            let result = async {
                let (addr, host) = target.ok_or_else(|| {
                    CommFailure::BadResponse("the node has no usable ip and port".into())
                })?;
                let answer = client::request(
                    addr,
                    &host,
                    tls.clone(),
                    hyper::Method::GET,
                    &path,
                    None,
                    timeout,
                )
                .await
                .map_err(|e| CommFailure::Unreachable(e.to_string()))?;
                check_status(
                    &answer,
                    addr,
                    &host,
                    tls,
                    &version,
                    timeout,
                    &mut new_version,
                )
                .await?;
                round::parse_answer(&answer.body).map_err(CommFailure::BadResponse)
            }
            .await;
            Done::Quote {
                id,
                nonce,
                result,
                version: new_version,
            }
        })
    }

    fn provide_v(&self, ctx: &NodeContext, node: &NodeAttestation, id: RequestId) -> InFlight {
        let target = self.base(ctx);
        let tls = ctx.tls.clone();
        let timeout = self.engine.config.request_timeout();
        let version = ctx.supported_version.clone();
        let path = format!("/v{version}/keys/vkey");
        // Encrypted now, so the future holds no borrow of the node.
        let body = match (ctx.v.as_deref(), node.public_key()) {
            (Some(v), Some(pem)) => {
                use rsa::pkcs8::DecodePublicKey;
                rsa::RsaPublicKey::from_public_key_pem(pem)
                    .map_err(|e| format!("the node's public key is not RSA: {e}"))
                    .and_then(|key| {
                        vigil_core::payload::encrypt_share(&key, v, &mut OsRng)
                            .map_err(|e| e.to_string())
                    })
                    .map(|ct| json!({ "encrypted_key": ct }).to_string().into_bytes())
            }
            _ => Err("no V or no public key to encrypt it to".to_owned()),
        };
        Box::pin(async move {
            let mut new_version = None;
            let result = async {
                let body = body.map_err(CommFailure::BadResponse)?;
                let (addr, host) = target.ok_or_else(|| {
                    CommFailure::BadResponse("the node has no usable ip and port".into())
                })?;
                let answer = client::request(
                    addr,
                    &host,
                    tls.clone(),
                    hyper::Method::POST,
                    &path,
                    Some(body),
                    timeout,
                )
                .await
                .map_err(|e| CommFailure::Unreachable(e.to_string()))?;
                check_status(
                    &answer,
                    addr,
                    &host,
                    tls,
                    &version,
                    timeout,
                    &mut new_version,
                )
                .await
            }
            .await;
            Done::V {
                id,
                result,
                version: new_version,
            }
        })
    }

    /// Feeds a finished request to the engine.
    fn apply(
        &self,
        ctx: &mut NodeContext,
        node: &mut NodeAttestation,
        done: Done,
    ) -> (RoundNote, Option<Vec<FailureRecord>>) {
        let e = &self.engine;
        let t = now();
        let mut note = RoundNote::default();
        let mut failures = None;
        let version = match &done {
            Done::Quote { version, .. } | Done::V { version, .. } => version.clone(),
        };
        if let Some(v) = version {
            info!(agent_id = %self.id, from = %ctx.supported_version, to = %v, "agent API version renegotiated");
            ctx.supported_version = v;
        }
        match done {
            Done::Quote {
                id, nonce, result, ..
            } => match result {
                Ok(answer) => {
                    note.quote_at = Some(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
                    let mb = ctx.mb_refstate.as_deref().map(|r| (e.mb_policy, r));
                    let evaluate_now = match e.config.measured_boot_evaluate {
                        MbEvaluate::Always => true,
                        MbEvaluate::Once => node.attestation_count() == 0,
                    };
                    let judge = round::Judge {
                        verifier: &ctx.verifier,
                        tpm_policy: &ctx.tpm_policy,
                        mask: ctx.mask,
                        runtime_policy: ctx.runtime_policy.as_deref(),
                        mb,
                        mb_evaluate_now: evaluate_now,
                        accept_hash_algs: &ctx.accept_hash_algs,
                        accept_enc_algs: &ctx.accept_enc_algs,
                        accept_sign_algs: &ctx.accept_sign_algs,
                        ignore_tomtou_errors: e.config.ignore_tomtou_errors,
                    };
                    let outcome =
                        round::judge(node, &answer, nonce.as_bytes(), &judge, &mut ctx.keyrings);
                    log_outcome(&self.id, &outcome, &answer);
                    if !outcome.rebooted {
                        note.verdict = Some(outcome.failure.is_empty());
                    }
                    if node.quote_received(t, id, outcome).is_ok() && note.verdict == Some(false) {
                        failures = Some(
                            node.last_failures()
                                .iter()
                                .map(|f| FailureRecord {
                                    event_id: f.event_id.clone(),
                                    severity_label: Some(f.severity_label.clone()),
                                    recoverable: f.recoverable,
                                    context: f.context.to_string(),
                                    file: f.file.clone(),
                                })
                                .collect(),
                        );
                    }
                }
                Err(f) => {
                    warn!(agent_id = %self.id, "quote request failed: {}", describe(&f));
                    let _ = node.request_failed(t, id, f);
                }
            },
            Done::V { id, result, .. } => match result {
                Ok(()) => {
                    info!(agent_id = %self.id, "V delivered");
                    let _ = node.v_delivered(t, id);
                }
                Err(f) => {
                    warn!(agent_id = %self.id, "V delivery failed: {}", describe(&f));
                    let _ = node.request_failed(t, id, f);
                }
            },
        }
        (note, failures)
    }

    /// Writes the node's state after an input, in one transaction (fenced).
    async fn persist(
        &self,
        node: &NodeAttestation,
        ctx: &NodeContext,
        last: &mut Written,
        note: RoundNote,
        failures: Option<Vec<FailureRecord>>,
    ) -> Result<(), ()> {
        let snap = node.snapshot();
        // Learnt with the IMA offset they belong to, in the same transaction, so a
        // restart resumes the log with the keys its earlier entries taught.
        let keyrings = ctx.keyrings.learned_to_keylime_json();
        let keyrings_changed = last.learned_keyrings.as_deref().unwrap_or("{}") != keyrings;
        if last.snapshot.as_ref() == Some(&snap) && note.quote_at.is_none() && !keyrings_changed {
            return Ok(());
        }
        let prev = last.snapshot.as_ref();
        let outcome = match (note.verdict, failures) {
            (Some(true), _) => vigil_store::RoundOutcome::Passed {
                at: i64::try_from(snap.last_successful_attestation).unwrap_or(i64::MAX),
            },
            (Some(false), Some(failures)) => vigil_store::RoundOutcome::Failed { failures },
            _ => vigil_store::RoundOutcome::NoVerdict,
        };
        let ima_changed = prev.is_none_or(|p| p.ima != snap.ima || p.ima_bank != snap.ima_bank);
        let ima = ima_changed.then(|| ImaProgress {
            next_entry: snap.ima.next_entry,
            running_pcrs: match (snap.ima_bank, snap.ima.running_pcr) {
                (Some(bank), Some(pcr)) => {
                    [(bank.name().to_owned(), pcr.as_bytes().to_vec())].into()
                }
                _ => Default::default(),
            },
        });
        let severity = (prev.is_none_or(|p| p.severity_level != snap.severity_level))
            .then(|| snap.severity_level.zip(snap.last_event_id.clone()))
            .flatten();
        let update = RoundUpdate {
            operational_state: snap.operational_state.code(),
            outcome,
            received_quote_at: note.quote_at,
            algs: (!snap.algs.hash_alg.is_empty()).then(|| QuoteAlgs {
                hash_alg: snap.algs.hash_alg.clone(),
                enc_alg: snap.algs.enc_alg.clone(),
                sign_alg: snap.algs.sign_alg.clone(),
            }),
            ima,
            boottime: i64::try_from(snap.ima.boottime).ok(),
            tpm_clockinfo: snap
                .tpm_clockinfo
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok()),
            learned_ima_keyrings: keyrings_changed.then(|| keyrings.clone()),
            severity,
            public_key: snap.public_key.clone(),
            engine_state: serde_json::to_string(&snap).ok(),
        };
        match self
            .engine
            .store
            .verifier_agents()
            .record_round(&self.id, update, self.fence.as_ref())
            .await
        {
            Ok(()) => {
                last.snapshot = Some(snap);
                last.learned_keyrings = Some(keyrings);
                Ok(())
            }
            Err(StoreError::LeaseLost { .. }) => {
                warn!(agent_id = %self.id, "lease lost: the round was not recorded; stopping");
                Err(())
            }
            Err(StoreError::NotFound { .. }) => {
                info!(agent_id = %self.id, "the node was deleted");
                Err(())
            }
            Err(err) => {
                // The next write carries the whole snapshot again.
                error!(agent_id = %self.id, "recording the round: {err}");
                Ok(())
            }
        }
    }

    async fn remove(&self) {
        match self.engine.store.verifier_agents().delete(&self.id).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {
                info!(agent_id = %self.id, "node deleted");
            }
            Err(err) => error!(agent_id = %self.id, "deleting the node: {err}"),
        }
    }
}

/// The context `new` rebuilt from the enrolment, keeping what `old` learnt from the
/// node's log: the IMA state carries on, so its learnt keys must too.
fn rebuilt(mut old: NodeContext, mut new: NodeContext) -> NodeContext {
    new.keyrings.adopt_learned(&mut old.keyrings);
    new
}

fn describe(f: &CommFailure) -> String {
    match f {
        CommFailure::Unreachable(d) | CommFailure::BadResponse(d) => d.clone(),
        CommFailure::Status(s) => format!("HTTP {s}"),
        CommFailure::VersionRenegotiated => "API version renegotiated".into(),
        CommFailure::VersionUnsupported => "API version not supported".into(),
    }
}

/// Logs a failed round as operators need it: every failing event, with its context.
fn log_outcome(id: &str, outcome: &RoundOutcome, answer: &round::Answer) {
    if outcome.rebooted {
        info!(agent_id = %id, "the node rebooted: IMA attestation restarts from entry 0");
        return;
    }
    let entries = answer
        .ima_measurement_list
        .as_deref()
        .map_or(0, |l| l.lines().count());
    if outcome.failure.is_empty() {
        debug!(agent_id = %id, from_entry = answer.ima_measurement_list_entry, entries, "attestation passed");
        return;
    }
    for event in outcome.failure.events() {
        let message = event
            .context
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| event.context.to_string(), str::to_owned);
        match &event.file {
            // Keylime's hash-mismatch message names no file; the annotation does.
            Some(file) if !message.contains(file.as_str()) => {
                warn!(agent_id = %id, event_id = %event.event_id, "{message}: {file}");
            }
            _ => warn!(agent_id = %id, event_id = %event.event_id, "{message}"),
        }
    }
    if let Some(counts) = &outcome.ima_counts {
        if let Some(summary) = counts.error_summary() {
            warn!(agent_id = %id, "{summary} ({})", counts.counters_line());
        }
    }
    warn!(agent_id = %id, from_entry = answer.ima_measurement_list_entry, entries, events = outcome.failure.events().len(), "attestation failed");
}

/// Maps a non-200 answer to the engine's failure, negotiating the API version on
/// Keylime's "API version not supported" 400 (compat §1.2).
async fn check_status(
    answer: &client::Answer,
    addr: std::net::SocketAddr,
    host: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    version: &str,
    timeout: Duration,
    new_version: &mut Option<String>,
) -> Result<(), CommFailure> {
    if answer.status == 200 {
        return Ok(());
    }
    let status: String = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    if answer.status == 400 && status.contains("API version not supported") {
        let v = client::request(
            addr,
            host,
            tls,
            hyper::Method::GET,
            "/version",
            None,
            timeout,
        )
        .await
        .map_err(|e| CommFailure::Unreachable(e.to_string()))?;
        let theirs: Vec<String> = serde_json::from_slice::<Value>(&v.body)
            .ok()
            .and_then(|v| v.get("results").cloned())
            .map(|r| {
                r.get("supported_versions")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .or_else(|| {
                        r.get("supported_version")
                            .and_then(Value::as_str)
                            .map(|s| vec![s.to_owned()])
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        return match negotiate(&crate::api::AGENT_VERSIONS, &theirs) {
            Some(v) if v != version => {
                *new_version = Some(v);
                Err(CommFailure::VersionRenegotiated)
            }
            _ => Err(CommFailure::VersionUnsupported),
        };
    }
    Err(CommFailure::Status(answer.status))
}

/// The status object of a stored node (from its engine snapshot).
pub(crate) fn node_of(
    attestation: &Arc<AttestationConfig>,
    agent: &vigil_store::VerifierAgent,
) -> NodeAttestation {
    match agent
        .state
        .engine_state
        .as_deref()
        .and_then(|s| serde_json::from_str::<NodeSnapshot>(s).ok())
    {
        Some(snap) => NodeAttestation::restore(attestation.clone(), snap, now()),
        None => {
            let mut n = NodeAttestation::new(
                attestation.clone(),
                agent.enrolment.v.as_deref().is_some_and(|v| !v.is_empty()),
            );
            if let Ok(state) = OperationalState::from_code(u64::from(agent.state.operational_state))
            {
                if state == OperationalState::TenantFailed {
                    let _ = n.stop(now());
                }
            }
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_keylimes_shape_and_fresh() {
        let a = nonce();
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, nonce());
    }

    #[test]
    fn negotiation_takes_the_highest_common_version() {
        let theirs = ["2.1", "2.2", "2.10", "3.0"].map(String::from);
        assert_eq!(
            negotiate(&["2.1", "2.2", "2.10"], &theirs).as_deref(),
            Some("2.10")
        );
        assert_eq!(negotiate(&["2.5"], &theirs), None);
    }
}
