//! One node's driver: pulls the actions of its [`NodeAttestation`], makes the requests,
//! judges answers on the blocking pool, feeds the results back and records every
//! change — a thin loop in the manner of quinn's connection driver. Every decision is
//! the state machine's; every check is `vigil_core::attestation::evaluate_round`'s.
//!
//! The task runs in a `node` span (`agent_id`), each quote request and what follows
//! from its answer in a `round` span (`round`: 1, 2, … since the task started), and
//! updates the verifier's metrics as rounds end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Bytes;
use rand_core::OsRng;
use serde_json::{json, Value};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::{debug, error, info, info_span, warn, Instrument, Span};
use vigil_core::attestation::NodeSnapshot;
use vigil_core::attestation::{
    evaluate_round_memo, Action, CommFailure, Deletion, MeasuredBootPolicy, NodeAnswer,
    NodeAttestation, RequestId, RoundOutcome, RoundPolicy, UnixTime,
};
use vigil_core::events::{round_events, Difference, EventNode, IntegrityEvent, RoundFacts};
use vigil_core::policy::tpm::TpmPolicy;
use vigil_core::relearn::{self, KnownGoodSet, Relearn};
use vigil_service::client::KeptConnection;
use vigil_store::{Fence, NewEvent, StoreError};

use super::mailbox::Mailbox;
use super::persist::{self, Adopted, RoundNote, Written};
use super::{Attested, Command, Engine};
use crate::agent_client::{Exchange, NodeTarget};
use crate::config::MbEvaluate;
use crate::context::{self, checksum, NodeContext};
use crate::events::act::Outcome;
use crate::events::response::ActionSpec;

/// A quote request under way: its span and when it was sent.
struct Round {
    span: Span,
    started: Instant,
}

/// The result of a request, fed back to the state machine. A quote's is the larger:
/// it is boxed as soon as it is woken on (`Wake::Done`), and only one exists per node.
#[allow(clippy::large_enum_variant)]
enum Done {
    Quote {
        id: RequestId,
        nonce: String,
        exchange: Exchange<Bytes>,
        round: Round,
        /// The node's connection, back for the next round (if the node kept it open).
        conn: Option<KeptConnection>,
        /// The round's place among those under way (`max_rounds_in_flight`), given back
        /// once it is recorded (always there: the engine never closes its semaphore).
        slot: Option<OwnedSemaphorePermit>,
    },
    V {
        id: RequestId,
        exchange: Exchange<()>,
    },
}

type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Why a node's task ends.
#[derive(Debug, thiserror::Error)]
enum Ended {
    /// Another replica holds the node's lease now.
    #[error("lease lost: the round was not recorded")]
    LeaseLost,
    /// The node's record is gone.
    #[error("the node was deleted")]
    Deleted,
}

pub(super) struct NodeTask {
    engine: Arc<Engine>,
    id: String,
    fence: Option<Fence>,
    written: Written,
    /// Quote requests made so far.
    rounds: u64,
    /// The node as its events name it.
    event_node: EventNode,
    /// The node's verdict as last recorded (what a verdict change is measured from).
    verdict: Option<bool>,
    /// The node's open connection between rounds (with the round in flight while one
    /// is): one TLS handshake per node rather than per round.
    conn: Option<KeptConnection>,
}

/// A node's state machine and the context it is judged in, moved together to the
/// blocking pool and back. Both are boxed: moved by pointer each round, and held once
/// by the node's task rather than at each of its await points.
struct Judged {
    node: Box<NodeAttestation>,
    ctx: Box<NodeContext>,
    note: RoundNote,
    /// How a quote request ended, if this was one: `Ok` answered (judged, or skipped
    /// for a reboot), `Err` without a usable answer.
    quote: Option<Result<(), String>>,
}

/// What a node's task carries from one wake-up to the next besides the task itself.
struct Driving {
    node: Box<NodeAttestation>,
    ctx: Box<NodeContext>,
    /// The request under way, if any.
    inflight: Option<InFlight>,
    /// The trust gate's requests for a round now, answered when a quote round ends.
    waiters: Vec<oneshot::Sender<Attested>>,
    /// Handing over: release the lease once the request under way is recorded.
    release: bool,
}

/// What woke a node's task.
enum Wake {
    Done(Box<Done>),
    Command(Command),
    Slept,
}

/// What a node's task does after a wake-up.
enum Next {
    /// Wait again at once.
    Wait(Driving),
    /// Check for changed policies and waiting gate requests first.
    Check(Driving),
    /// The task ends.
    End,
}

impl NodeTask {
    pub(super) fn new(engine: Arc<Engine>, id: String, fence: Option<Fence>) -> Self {
        Self {
            engine,
            id,
            fence,
            written: Written::default(),
            rounds: 0,
            event_node: EventNode::default(),
            verdict: None,
            conn: None,
        }
    }

    /// Drives the node until it is deleted, stopped by a shutdown, or its lease is lost.
    ///
    /// An idle node's task is this loop waiting, for as long as the node is attested
    /// here: what it holds while it waits is kept small. Whatever happens on a wake-up
    /// is handled in [`Self::wake`], whose future exists only while it runs, and every
    /// other future awaited here is boxed (a future is as large as the largest one it
    /// awaits).
    pub(super) async fn run(mut self: Box<Self>, mailbox: &Mailbox) {
        let e = self.engine.clone();
        let Some((node, ctx)) = Box::pin(self.start()).await else {
            return;
        };
        let mut d = Driving {
            node,
            ctx,
            inflight: None,
            waiters: Vec::new(),
            release: false,
        };
        let mut stop = e.stop.clone();
        let mut gauge = e.metrics.node_gauge();
        // The deadline slept towards: a quote request pulled after it is that late.
        let mut due: Option<UnixTime> = None;
        loop {
            // Pull every action the state machine wants now.
            while let Some(action) = d.node.poll_action(e.clock.now()) {
                match action {
                    Action::GetQuote {
                        id,
                        partial,
                        ima_ml_entry,
                    } => {
                        if e.leases_current() == Some(false)
                            && !Box::pin(e.lease_renewed_for(&self.id)).await
                        {
                            // Not renewed in time: the lease expired and another
                            // replica may attest the node now. Stop rather than poll it
                            // twice; the lease loop claims it again (new epoch) if it is
                            // still this replica's.
                            warn!(agent_id = %self.id, "leases not renewed in time: no longer attesting this node");
                            return;
                        }
                        if let Some(due) = due.take() {
                            e.metrics.poll_lag(e.clock.now().saturating_since(due));
                        }
                        d.inflight = Some(self.get_quote(&d.ctx, id, partial, ima_ml_entry));
                    }
                    Action::ProvideV { id } => {
                        d.inflight = Some(self.provide_v(&d.ctx, &d.node, id));
                    }
                    Action::Notify(n) => {
                        // A failure notice: the node's workload identities go too.
                        e.identity.failed(&e.store, &self.id);
                        e.notifiers.notify(&d.ctx, &n, e.clock.now());
                    }
                    Action::Remove => {
                        Box::pin(self.remove()).await;
                        return;
                    }
                }
            }
            gauge.set(d.node.state());
            let deadline = d.node.next_deadline();
            due = deadline;
            let clock = e.clock.clone();
            let sleep = async move {
                match deadline {
                    Some(t) => tokio::time::sleep(t.saturating_since(clock.now())).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let request = async {
                match d.inflight.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                done = request => Wake::Done(Box::new(done)),
                cmd = mailbox.recv() => Wake::Command(cmd),
                () = sleep => Wake::Slept,
                _ = stop.changed() => return,
            };
            d = match Box::pin(self.wake(d, wake)).await {
                Next::End => return,
                Next::Wait(d) => d,
                Next::Check(mut d) => {
                    // A named policy changed: rebuild before the next round.
                    if d.ctx.generation != e.cache.generation() {
                        Box::pin(self.rebuild(&mut d.ctx)).await;
                    }
                    // Someone waits for a round: keep it due now, unless polling stopped.
                    if !d.waiters.is_empty() && !d.node.attest_now(e.clock.now()) {
                        for w in d.waiters.drain(..) {
                            let _ = w.send(Attested::NotPolling);
                        }
                    }
                    d
                }
            };
        }
    }

    /// Handles what woke the node's task: a request that ended, a command, or a
    /// deadline.
    async fn wake(&mut self, mut d: Driving, wake: Wake) -> Next {
        let e = self.engine.clone();
        let t = e.clock.now();
        let reply: oneshot::Sender<()>;
        match wake {
            Wake::Slept => return Next::Check(d),
            Wake::Done(done) => {
                let mut done = *done;
                d.inflight = None;
                // Held until the round is recorded, then another node's may start.
                let mut slot = None;
                if let Done::Quote { conn, slot: s, .. } = &mut done {
                    self.conn = conn.take();
                    slot = s.take();
                }
                let span = match &done {
                    Done::Quote { round, .. } => round.span.clone(),
                    Done::V { .. } => Span::current(),
                };
                let Some(judged) =
                    Box::pin(self.apply(d.ctx, d.node, done).instrument(span.clone())).await
                else {
                    return Next::End;
                };
                (d.node, d.ctx) = (judged.node, judged.ctx);
                let mut note = judged.note;
                if let Some(adopted) = note.relearned.take() {
                    Box::pin(self.adopt(adopted).instrument(span.clone())).await;
                }
                let answer = judged
                    .quote
                    .and_then(|end| round_answer(&d.node, end, &note));
                if Box::pin(self.persist(&d.node, &d.ctx, note).instrument(span))
                    .await
                    .is_err()
                {
                    return Next::End;
                }
                drop(slot);
                // Once recorded, so that the gate's next read sees the round.
                if let Some(answer) = answer {
                    for w in d.waiters.drain(..) {
                        let _ = w.send(answer.clone());
                    }
                }
                if d.release {
                    Box::pin(self.release()).await;
                    return Next::End;
                }
                return Next::Check(d);
            }
            Wake::Command(cmd) => match cmd {
                Command::Shutdown => return Next::End,
                Command::Release if d.inflight.is_none() => {
                    Box::pin(self.release()).await;
                    return Next::End;
                }
                Command::Release => {
                    // Handing over: release the lease once the request under way is
                    // recorded.
                    d.release = true;
                    return Next::Wait(d);
                }
                Command::AttestNow(r) => {
                    if d.node.attest_now(t) {
                        d.waiters.push(r);
                    } else {
                        let _ = r.send(Attested::NotPolling);
                    }
                    return Next::Wait(d);
                }
                Command::Rebuild => {
                    Box::pin(self.rebuild(&mut d.ctx)).await;
                    return Next::Wait(d);
                }
                Command::Stop(r) => {
                    let _ = d.node.stop(t);
                    d.inflight = None;
                    reply = r;
                }
                Command::Reactivate(r) => {
                    // The tenant may have fixed the enrolment's policies.
                    Box::pin(self.rebuild(&mut d.ctx)).await;
                    if d.node.reactivate(t).is_ok() {
                        info!(agent_id = %self.id, "reactivated by the tenant: polling restarts, TPM clock monotonicity starts afresh");
                    }
                    d.inflight = None;
                    reply = r;
                }
                Command::Delete(r) => {
                    let how = d.node.deleted(t);
                    if how == Deletion::Immediate {
                        Box::pin(self.remove()).await;
                        let _ = r.send(how);
                        return Next::End;
                    }
                    let written =
                        Box::pin(self.persist(&d.node, &d.ctx, RoundNote::default())).await;
                    let _ = r.send(how);
                    if written.is_err() {
                        return Next::End;
                    }
                    return Next::Wait(d);
                }
            },
        }
        let written = Box::pin(self.persist(&d.node, &d.ctx, RoundNote::default())).await;
        let _ = reply.send(());
        if written.is_err() {
            return Next::End;
        }
        Next::Check(d)
    }

    /// Loads the node, builds its context, restores its state machine and records
    /// where it starts. `None` if the node cannot be attested (the task ends).
    ///
    /// The loaded record (policies' names, certificates, the stored state) is dropped
    /// here: not held for the node's lifetime.
    async fn start(&mut self) -> Option<(Box<NodeAttestation>, Box<NodeContext>)> {
        let e = self.engine.clone();
        let agent = match e.store.verifier_agents().get(&self.id).await {
            Ok(Some(a)) => a,
            Ok(None) => return None,
            Err(err) => {
                error!(agent_id = %self.id, "cannot load the node: {err}");
                return None;
            }
        };
        let ctx = match context::build(&agent, &e.store, &e.cache).await {
            Ok(c) => Box::new(c),
            Err(err) => {
                error!(agent_id = %self.id, "cannot attest this node: {err}");
                return None;
            }
        };
        self.event_node = crate::events::event_node(&agent.enrolment);
        self.verdict = persist::stored_verdict(&agent.state);
        let t = e.clock.now();
        let persist::Restored {
            node,
            fresh,
            stored,
        } = persist::restore(&e.attestation, (&agent).into(), t);
        self.written.snapshot = stored;
        self.written.learned_keyrings = agent.state.learned_ima_keyrings.clone();
        drop(agent);
        let mut node = Box::new(node);
        if fresh {
            if node.state() != vigil_core::attestation::OperationalState::TenantFailed {
                let _ = node.start(t);
            }
        } else {
            info!(agent_id = %self.id, state = node.state().name(), ima_next_entry = node.ima_state().next_entry, "resuming node");
        }
        self.persist(&node, &ctx, RoundNote::default()).await.ok()?;
        Some((node, ctx))
    }

    /// Rebuilds the context from the stored enrolment, keeping what the old one learnt
    /// from the node's log (the IMA state carries on, so its learnt keys must too).
    async fn rebuild(&mut self, ctx: &mut NodeContext) {
        let e = self.engine.clone();
        let agent = match e.store.verifier_agents().get(&self.id).await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(err) => {
                warn!(agent_id = %self.id, "keeping the old policies: {err}");
                return;
            }
        };
        // The node's class and labels may have changed with its record.
        self.event_node = crate::events::event_node(&agent.enrolment);
        match context::build(&agent, &e.store, &e.cache).await {
            Ok(mut new) => {
                new.keyrings.adopt_learned(&mut ctx.keyrings);
                // What the log replayed to does not depend on the policies.
                new.boot_memo = std::mem::take(&mut ctx.boot_memo);
                *ctx = new;
            }
            Err(err) => warn!(agent_id = %self.id, "keeping the old policies: {err}"),
        }
    }

    pub(super) fn target(ctx: &NodeContext) -> NodeTarget {
        NodeTarget {
            addr: ctx.addr(),
            pin: ctx.pin,
            version: ctx.supported_version.clone(),
        }
    }

    fn get_quote(
        &mut self,
        ctx: &NodeContext,
        id: RequestId,
        partial: bool,
        entry: u64,
    ) -> InFlight {
        let e = self.engine.clone();
        let nonce = e.nonces.nonce();
        let target = Self::target(ctx);
        let mask = ctx.mask;
        self.rounds += 1;
        let round = Round {
            span: info_span!("round", round = self.rounds),
            started: Instant::now(),
        };
        let span = round.span.clone();
        let mut conn = self.conn.take();
        Box::pin(
            async move {
                let slot = e.rounds.clone().acquire_owned().await.ok();
                let exchange = e
                    .agents
                    .quote(&mut conn, &target, &nonce, mask, partial, entry)
                    .await;
                Done::Quote {
                    id,
                    nonce,
                    exchange,
                    round,
                    conn,
                    slot,
                }
            }
            .instrument(span),
        )
    }

    fn provide_v(&self, ctx: &NodeContext, node: &NodeAttestation, id: RequestId) -> InFlight {
        let e = self.engine.clone();
        let target = Self::target(ctx);
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
            let exchange = match body {
                Ok(body) => e.agents.deliver_v(&target, body).await,
                Err(why) => Exchange {
                    result: Err(CommFailure::BadResponse(why)),
                    renegotiated: None,
                },
            };
            Done::V { id, exchange }
        })
    }

    /// Feeds a finished request to the state machine; an answer is judged on the
    /// blocking pool. `None` if judging could not finish (the task ends).
    async fn apply(
        &self,
        mut ctx: Box<NodeContext>,
        mut node: Box<NodeAttestation>,
        done: Done,
    ) -> Option<Judged> {
        let e = &self.engine;
        let renegotiated = match &done {
            Done::Quote { exchange, .. } => exchange.renegotiated.clone(),
            Done::V { exchange, .. } => exchange.renegotiated.clone(),
        };
        if let Some(v) = renegotiated {
            info!(agent_id = %self.id, from = %ctx.supported_version, to = %v, "agent API version renegotiated");
            ctx.supported_version = v;
        }
        match done {
            Done::Quote {
                id,
                nonce,
                exchange,
                round,
                ..
            } => match exchange.result {
                Ok(body) => return self.judge(ctx, node, id, nonce, body, round.started).await,
                Err(f) => {
                    warn!(agent_id = %self.id, "quote request failed: {f}");
                    e.metrics.quote_failed(&f, round.started);
                    let why = f.to_string();
                    let _ = node.request_failed(e.clock.now(), id, f);
                    return Some(Judged {
                        node,
                        ctx,
                        note: RoundNote::default(),
                        quote: Some(Err(why)),
                    });
                }
            },
            Done::V { id, exchange } => match exchange.result {
                Ok(()) => {
                    info!(agent_id = %self.id, "V delivered");
                    let _ = node.v_delivered(e.clock.now(), id);
                }
                Err(f) => {
                    warn!(agent_id = %self.id, "V delivery failed: {f}");
                    let _ = node.request_failed(e.clock.now(), id, f);
                }
            },
        }
        Some(Judged {
            node,
            ctx,
            note: RoundNote::default(),
            quote: None,
        })
    }

    /// Parses and judges a quote answer on the blocking pool, at most as many at once
    /// as the engine allows, and feeds the outcome to the state machine.
    async fn judge(
        &self,
        ctx: Box<NodeContext>,
        node: Box<NodeAttestation>,
        id: RequestId,
        nonce: String,
        body: Bytes,
        started: Instant,
    ) -> Option<Judged> {
        let relearn = self.relearn_input(&ctx).await;
        let event_node = self.event_node.clone();
        let permit = self.engine.judging.acquire().await.ok()?;
        let e = self.engine.clone();
        let agent_id = self.id.clone();
        let span = Span::current();
        let judged = tokio::task::spawn_blocking(move || {
            let _round = span.enter();
            let (mut ctx, mut node) = (ctx, node);
            let mut note = RoundNote::default();
            let t = e.clock.now();
            let answer = match NodeAnswer::parse(&body) {
                Ok(a) => a,
                Err(err) => {
                    drop(body);
                    warn!(agent_id = %agent_id, "quote request failed: {err}");
                    let failure = CommFailure::BadResponse(err.to_string());
                    e.metrics.quote_failed(&failure, started);
                    let why = failure.to_string();
                    let _ = node.request_failed(t, id, failure);
                    return Judged {
                        node,
                        ctx,
                        note,
                        quote: Some(Err(why)),
                    };
                }
            };
            drop(body);
            note.quote_at = Some(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
            let mut outcome = evaluate(&e, &mut ctx, &node, &answer, nonce.as_bytes());
            if let Some(input) =
                relearn.filter(|_| !outcome.failure.is_empty() && !outcome.rebooted)
            {
                relearn_round(
                    &e,
                    &mut ctx,
                    &node,
                    &answer,
                    nonce.as_bytes(),
                    &event_node,
                    input,
                    &mut outcome,
                    &mut note,
                    t,
                );
            }
            log_outcome(&agent_id, &outcome, &answer);
            e.metrics.round_judged(&outcome, started);
            drop(answer);
            if !outcome.rebooted {
                note.verdict = Some(outcome.failure.is_empty());
            }
            if node.quote_received(t, id, outcome).is_ok() && note.verdict == Some(false) {
                note.failures = Some(RoundNote::failures_of(&node));
            }
            Judged {
                node,
                ctx,
                note,
                quote: Some(Ok(())),
            }
        })
        .await;
        drop(permit);
        match judged {
            Ok(j) => Some(j),
            Err(err) => {
                error!(agent_id = %self.id, "judging the answer failed: {err}; no longer attesting this node");
                None
            }
        }
    }

    /// Writes the node's state after an input, in one transaction (fenced).
    async fn persist(
        &mut self,
        node: &NodeAttestation,
        ctx: &NodeContext,
        mut note: RoundNote,
    ) -> Result<(), Ended> {
        let snap = node.snapshot();
        let keyrings = ctx.keyrings.learned_to_keylime_json();
        let verdict = note.verdict;
        let refused = note.relearn_refused.take();
        let Some(mut update) = persist::round_update(&snap, &self.written, note, &keyrings) else {
            return Ok(());
        };
        let e = &self.engine;
        let event = self.round_event(node, &snap, verdict, refused);
        update.at = e.clock.now_secs();
        if let Some((_, queued)) = &event {
            update.events.push(queued.clone());
        }
        let written = e
            .metrics
            .store
            .time(
                "record_round",
                e.writer.record(&self.id, update, self.fence.as_ref()),
            )
            .await;
        self.engine.store_written(written.as_ref().map(|_| ()));
        match written {
            Ok(()) => {
                self.written = Written {
                    snapshot: Some(snap),
                    learned_keyrings: Some(keyrings),
                };
                if verdict.is_some() {
                    self.verdict = verdict;
                }
                if let Some((event, queued)) = &event {
                    e.delivery.wake();
                    e.respond(ctx, node, event, &queued.event);
                }
                Ok(())
            }
            Err(StoreError::LeaseLost { .. }) => {
                warn!(agent_id = %self.id, "{}; stopping", Ended::LeaseLost);
                Err(Ended::LeaseLost)
            }
            Err(StoreError::NotFound { .. }) => {
                info!(agent_id = %self.id, "{}", Ended::Deleted);
                Err(Ended::Deleted)
            }
            Err(err) => {
                // The next write carries the whole snapshot again, so the round is
                // recorded once the database takes writes again (a full disk freed).
                error!(
                    agent_id = %self.id,
                    "recording the round: {}; the verifier is not ready until a round is recorded",
                    super::with_causes(&err)
                );
                Ok(())
            }
        }
    }

    /// The integrity event this round makes, if any, with its outbox rows (one per
    /// configured sink).
    fn round_event(
        &self,
        node: &NodeAttestation,
        snap: &NodeSnapshot,
        verdict: Option<bool>,
        refused: Option<(String, Vec<Difference>)>,
    ) -> Option<(IntegrityEvent, NewEvent)> {
        let e = &self.engine;
        let previous_boot = self
            .written
            .snapshot
            .as_ref()
            .map(persist::boot_mark)
            .unwrap_or_default();
        let facts = RoundFacts {
            previous_verdict: self.verdict,
            verdict,
            previous_boot,
            boot: persist::boot_mark(snap),
            failures: node.last_failures(),
        };
        let mut event = round_events(
            &self.event_node,
            &facts,
            e.clock.now(),
            e.nonces.event_uuid(),
        )?;
        if let Some((rule, uncovered)) = refused {
            event.detail = Some(json!({
                "relearn": { "rule": rule, "refused": "not every change is in a known-good set", "uncovered": uncovered }
            }));
        }
        let sinks =
            e.rules
                .current()
                .sinks_for(&event, e.rules.severities(), &e.delivery.sink_names());
        let json = serde_json::to_string(&event).ok()?;
        let queued = NewEvent {
            uuid: event.uuid.clone(),
            agent_id: self.id.clone(),
            event: json,
            sinks,
        };
        Some((event, queued))
    }

    /// What a relearn needs besides the answer, fetched before judging when a rule may
    /// ask for one: the known-good sets of the node's class and its runtime policy's
    /// text. `None` when no rule relearns or the node has no class.
    async fn relearn_input(&self, ctx: &NodeContext) -> Option<RelearnInput> {
        let e = &self.engine;
        let rules = e.rules.current();
        if !rules
            .rules
            .iter()
            .any(|r| r.actions.contains(&ActionSpec::Relearn))
        {
            return None;
        }
        let class = self.event_node.class.as_deref()?;
        let sets = match e.store.known_good().list(Some(class)).await {
            Ok(sets) => sets,
            Err(err) => {
                warn!(agent_id = %self.id, "known-good sets not read, no relearn this round: {err}");
                return None;
            }
        };
        let sets = sets
            .into_iter()
            .filter_map(|s| Some((s.name, serde_json::from_str(&s.measurements).ok()?)))
            .collect();
        let runtime_policy = match &ctx.runtime_policy_name {
            Some(name) => e.store.policies().get_runtime(name).await.ok()??.ima_policy,
            None => None,
        };
        Some(RelearnInput {
            sets,
            runtime_policy,
        })
    }

    /// Stores the policies a relearn adopted (the old ones kept as a version) and sends
    /// out the `relearned` event.
    async fn adopt(&self, adopted: Adopted) {
        let e = self.engine.clone();
        let reason = format!(
            "relearnt from {} (rule {})",
            adopted.sets.join(", "),
            adopted.rule
        );
        let stored = e
            .store
            .known_good()
            .adopt(
                &self.id,
                &adopted.tpm_policy,
                adopted.runtime_policy.as_deref(),
                &reason,
                e.clock.now_secs(),
            )
            .await;
        let outcome = match &stored {
            Ok(()) => {
                info!(agent_id = %self.id, sets = %adopted.sets.join(", "), changes = adopted.changes.len(), "relearnt: new policy version adopted");
                e.cache.bump();
                Outcome::done(reason)
            }
            Err(err) => {
                error!(agent_id = %self.id, "relearnt policies not stored: {err}");
                Outcome::failed(format!("the new policies were not stored: {err}"))
            }
        };
        let detail =
            json!({ "sets": adopted.sets, "rule": adopted.rule, "stored": stored.is_ok() });
        let event = IntegrityEvent::relearned(
            &self.event_node,
            &adopted.changes,
            detail,
            e.clock.now(),
            e.nonces.event_uuid(),
        );
        e.queue(&event).await;
        e.action_taken(
            &self.event_node,
            &adopted.rule,
            "relearn",
            &event.uuid,
            outcome,
        )
        .await;
    }

    /// Gives the node's lease up to hand the node over (its last round recorded):
    /// another replica claims it at a new epoch.
    async fn release(&self) {
        let e = &self.engine;
        match e.store.leases().release(&e.holder, &self.id).await {
            Ok(_) => info!(agent_id = %self.id, "handed over: lease released"),
            Err(err) => {
                warn!(agent_id = %self.id, "releasing the lease to hand the node over: {err}; this replica adopts it again");
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

/// What the trust gate's waiters are told once a quote round ended: judged (passed,
/// or the failures it recorded), or without an answer. A round skipped for a reboot
/// has no verdict (`None`): the next one, asked at once, answers them.
fn round_answer(
    node: &NodeAttestation,
    end: Result<(), String>,
    note: &RoundNote,
) -> Option<Attested> {
    Some(match (end, note.verdict, note.quote_at) {
        (Err(why), _, _) => Attested::NoAnswer(why),
        (Ok(()), Some(passed), Some(at)) => Attested::Judged {
            at: u64::try_from(at).unwrap_or(0),
            failures: if passed {
                Vec::new()
            } else {
                node.last_failures()
                    .iter()
                    .map(|f| (f.event_id.clone(), f.context.clone()))
                    .collect()
            },
        },
        (Ok(()), _, _) => return None,
    })
}

/// What [`relearn_round`] needs that judging does not.
struct RelearnInput {
    sets: Vec<(String, KnownGoodSet)>,
    runtime_policy: Option<String>,
}

/// A failed round that a relearn rule matches: when every change is covered by a
/// known-good set, the node's policies take the changes and the answer is judged again
/// with them (so the node does not fail); otherwise the uncovered values are noted for
/// the round's event.
#[allow(clippy::too_many_arguments)]
fn relearn_round(
    e: &Engine,
    ctx: &mut NodeContext,
    node: &NodeAttestation,
    answer: &NodeAnswer,
    nonce: &[u8],
    event_node: &EventNode,
    input: RelearnInput,
    outcome: &mut RoundOutcome,
    note: &mut RoundNote,
    t: UnixTime,
) {
    let rated = e.attestation.severity.rate(&outcome.failure);
    let facts = RoundFacts {
        previous_verdict: Some(true),
        verdict: Some(false),
        previous_boot: Default::default(),
        boot: Default::default(),
        failures: &rated.events,
    };
    let Some(probe) = round_events(event_node, &facts, t, [0; 16]) else {
        return;
    };
    let rules = e.rules.current();
    let Some(rule) = rules.relearn_rule(&probe, e.rules.severities()) else {
        return;
    };
    let (sets, changes) = match relearn::judge(outcome.failure.events(), &input.sets) {
        Relearn::NotEligible(why) => {
            info!(agent_id = %ctx.agent_id, rule, "no relearn: {why} is no changed measurement");
            return;
        }
        Relearn::Uncovered(uncovered) => {
            warn!(agent_id = %ctx.agent_id, rule, uncovered = uncovered.len(), "no relearn: not every change is in a known-good set");
            note.relearn_refused = Some((rule.to_owned(), uncovered));
            return;
        }
        Relearn::Covered { sets, changes } => (sets, changes),
    };
    let files_changed = changes.iter().any(|c| matches!(c, Difference::File { .. }));
    let adopted = (|| -> Result<_, String> {
        let tpm_text =
            relearn::adopt_tpm_policy(&ctx.tpm_policy_text, &changes).map_err(|e| e.to_string())?;
        let tpm = TpmPolicy::from_json(&tpm_text).map_err(|e| e.to_string())?;
        let runtime = match (&input.runtime_policy, files_changed) {
            (Some(text), true) => {
                let new =
                    relearn::adopt_runtime_policy(text, &changes).map_err(|e| e.to_string())?;
                let parsed = e
                    .cache
                    .runtime(&checksum(&new), &new)
                    .map_err(|e| e.to_string())?;
                Some((new, parsed))
            }
            (None, true) => return Err("files changed but the node has no runtime policy".into()),
            (_, false) => None,
        };
        Ok((tpm_text, tpm, runtime))
    })();
    let (tpm_text, tpm, runtime) = match adopted {
        Ok(a) => a,
        Err(why) => {
            warn!(agent_id = %ctx.agent_id, rule, "no relearn: {why}");
            return;
        }
    };
    let old = (
        ctx.tpm_policy_text.clone(),
        ctx.tpm_policy.clone(),
        ctx.runtime_policy.clone(),
    );
    ctx.tpm_policy_text = tpm_text.clone();
    ctx.tpm_policy = tpm;
    if let Some((_, parsed)) = &runtime {
        ctx.runtime_policy = Some(parsed.clone());
    }
    let again = evaluate(e, ctx, node, answer, nonce);
    if again.failure.is_empty() {
        *outcome = again;
        note.relearned = Some(Adopted {
            rule: rule.to_owned(),
            sets,
            changes,
            tpm_policy: tpm_text,
            runtime_policy: runtime.map(|(text, _)| text),
        });
    } else {
        warn!(agent_id = %ctx.agent_id, rule, "no relearn: the answer still fails with the adopted values");
        (ctx.tpm_policy_text, ctx.tpm_policy, ctx.runtime_policy) = old;
    }
}

/// Judges one answer of the node with `vigil-core`'s one evaluation.
fn evaluate(
    e: &Engine,
    ctx: &mut NodeContext,
    node: &NodeAttestation,
    answer: &NodeAnswer,
    nonce: &[u8],
) -> RoundOutcome {
    let evaluate_now = match e.config.measured_boot_evaluate {
        MbEvaluate::Always => true,
        MbEvaluate::Once => node.attestation_count() == 0,
    };
    let measured_boot = ctx
        .mb_refstate
        .as_deref()
        .map(|refstate| MeasuredBootPolicy {
            policy: e.mb_policy(),
            refstate,
            evaluate_now,
        });
    let policy = RoundPolicy {
        verifier: &ctx.verifier,
        nonce,
        accept_hash_algs: Some(&ctx.accept_hash_algs),
        accept_enc_algs: Some(&ctx.accept_enc_algs),
        accept_sign_algs: Some(&ctx.accept_sign_algs),
        bind_public_key: true,
        requested_pcrs: ctx.mask,
        tpm_policy: &ctx.tpm_policy,
        runtime_policy: ctx.runtime_policy.as_deref(),
        measured_boot,
        ignore_tomtou_errors: e.config.ignore_tomtou_errors,
        golden: ctx.golden.as_deref(),
    };
    evaluate_round_memo(
        node,
        &answer.as_quote_answer(),
        &policy,
        &mut ctx.keyrings,
        &mut ctx.boot_memo,
    )
}

/// Logs a failed round as operators need it: every failing event, with its context.
fn log_outcome(id: &str, outcome: &RoundOutcome, answer: &NodeAnswer) {
    if outcome.rebooted {
        info!(agent_id = %id, "the node rebooted: IMA attestation restarts from entry 0");
        return;
    }
    let entries = answer.ima_entries();
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
