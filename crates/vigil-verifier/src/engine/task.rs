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
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, info_span, warn, Instrument, Span};
use vigil_core::attestation::{
    evaluate_round, Action, CommFailure, Deletion, MeasuredBootPolicy, NodeAnswer, NodeAttestation,
    RequestId, RoundOutcome, RoundPolicy, UnixTime,
};
use vigil_service::client::KeptConnection;
use vigil_store::{Fence, StoreError};

use super::persist::{self, RoundNote, Written};
use super::{Command, Engine};
use crate::agent_client::{Exchange, NodeTarget};
use crate::config::MbEvaluate;
use crate::context::{self, NodeContext};

/// A quote request under way: its span and when it was sent.
struct Round {
    span: Span,
    started: Instant,
}

/// The result of a request, fed back to the state machine.
enum Done {
    Quote {
        id: RequestId,
        nonce: String,
        exchange: Exchange<Bytes>,
        round: Round,
        /// The node's connection, back for the next round (if the node kept it open).
        conn: Option<KeptConnection>,
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
    /// The node's open connection between rounds (with the round in flight while one
    /// is): one TLS handshake per node rather than per round.
    conn: Option<KeptConnection>,
}

/// A node's state machine and the context it is judged in, moved together to the
/// blocking pool and back.
struct Judged {
    node: NodeAttestation,
    ctx: NodeContext,
    note: RoundNote,
}

impl NodeTask {
    pub(super) fn new(engine: Arc<Engine>, id: String, fence: Option<Fence>) -> Self {
        Self {
            engine,
            id,
            fence,
            written: Written::default(),
            rounds: 0,
            conn: None,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let e = self.engine.clone();
        let agent = match e.store.verifier_agents().get(&self.id).await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(err) => {
                error!(agent_id = %self.id, "cannot load the node: {err}");
                return;
            }
        };
        let mut ctx = match context::build(&agent, &e.store, &e.cache, e.agents.identity()).await {
            Ok(c) => c,
            Err(err) => {
                error!(agent_id = %self.id, "cannot attest this node: {err}");
                return;
            }
        };
        let t = e.clock.now();
        let persist::Restored { mut node, fresh } =
            persist::restore(&e.attestation, (&agent).into(), t);
        if fresh {
            if node.state() != vigil_core::attestation::OperationalState::TenantFailed {
                let _ = node.start(t);
            }
        } else {
            info!(agent_id = %self.id, state = node.state().name(), ima_next_entry = node.ima_state().next_entry, "resuming node");
        }
        let mut inflight: Option<InFlight> = None;
        let mut stop = e.stop.clone();
        let mut gauge = e.metrics.node_gauge();
        // The deadline slept towards: a quote request pulled after it is that late.
        let mut due: Option<UnixTime> = None;
        self.written.learned_keyrings = agent.state.learned_ima_keyrings.clone();
        if self
            .persist(&node, &ctx, RoundNote::default())
            .await
            .is_err()
        {
            return;
        }
        loop {
            // Pull every action the state machine wants now.
            while let Some(action) = node.poll_action(e.clock.now()) {
                match action {
                    Action::GetQuote {
                        id,
                        partial,
                        ima_ml_entry,
                    } => {
                        if e.leases_current() == Some(false) {
                            // Not renewed within the TTL: the lease may have expired and
                            // another replica may attest the node now. Stop rather than
                            // poll it twice; the lease loop claims it again (new epoch)
                            // if it is still this replica's.
                            warn!(agent_id = %self.id, "leases not renewed within their TTL: no longer attesting this node");
                            return;
                        }
                        if let Some(due) = due.take() {
                            e.metrics.poll_lag(e.clock.now().saturating_since(due));
                        }
                        inflight = Some(self.get_quote(&ctx, id, partial, ima_ml_entry));
                    }
                    Action::ProvideV { id } => inflight = Some(self.provide_v(&ctx, &node, id)),
                    Action::Notify(n) => e.notifiers.notify(&ctx, &n, e.clock.now()),
                    Action::Remove => {
                        self.remove().await;
                        return;
                    }
                }
            }
            gauge.set(node.state());
            let deadline = node.next_deadline();
            due = deadline;
            let clock = e.clock.clone();
            let sleep = async move {
                match deadline {
                    Some(d) => tokio::time::sleep(d.saturating_since(clock.now())).await,
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
                mut done = request => {
                    inflight = None;
                    if let Done::Quote { conn, .. } = &mut done {
                        self.conn = conn.take();
                    }
                    let span = match &done {
                        Done::Quote { round, .. } => round.span.clone(),
                        Done::V { .. } => Span::current(),
                    };
                    let Some(judged) = self.apply(ctx, node, done).instrument(span.clone()).await else { return };
                    Judged { node, ctx, .. } = judged;
                    let note = judged.note;
                    if self.persist(&node, &ctx, note).instrument(span).await.is_err() {
                        return;
                    }
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    let t = e.clock.now();
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
                            self.rebuild(&mut ctx).await;
                            if node.reactivate(t).is_ok() {
                                info!(agent_id = %self.id, "reactivated by the tenant: polling restarts, TPM clock monotonicity starts afresh");
                            }
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
                            let written = self.persist(&node, &ctx, RoundNote::default()).await;
                            let _ = r.send(how);
                            if written.is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                    let written = self.persist(&node, &ctx, RoundNote::default()).await;
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
                self.rebuild(&mut ctx).await;
            }
        }
    }

    /// Rebuilds the context from the stored enrolment, keeping what the old one learnt
    /// from the node's log (the IMA state carries on, so its learnt keys must too).
    async fn rebuild(&self, ctx: &mut NodeContext) {
        let e = &self.engine;
        let agent = match e.store.verifier_agents().get(&self.id).await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(err) => {
                warn!(agent_id = %self.id, "keeping the old policies: {err}");
                return;
            }
        };
        match context::build(&agent, &e.store, &e.cache, e.agents.identity()).await {
            Ok(mut new) => {
                new.keyrings.adopt_learned(&mut ctx.keyrings);
                *ctx = new;
            }
            Err(err) => warn!(agent_id = %self.id, "keeping the old policies: {err}"),
        }
    }

    fn target(ctx: &NodeContext) -> NodeTarget {
        NodeTarget {
            addr: ctx.addr(),
            tls: ctx.tls.clone(),
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
        mut ctx: NodeContext,
        mut node: NodeAttestation,
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
                    let _ = node.request_failed(e.clock.now(), id, f);
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
        })
    }

    /// Parses and judges a quote answer on the blocking pool, at most as many at once
    /// as the engine allows, and feeds the outcome to the state machine.
    async fn judge(
        &self,
        ctx: NodeContext,
        node: NodeAttestation,
        id: RequestId,
        nonce: String,
        body: Bytes,
        started: Instant,
    ) -> Option<Judged> {
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
                    let _ = node.request_failed(t, id, failure);
                    return Judged { node, ctx, note };
                }
            };
            drop(body);
            note.quote_at = Some(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
            let outcome = evaluate(&e, &mut ctx, &node, &answer, nonce.as_bytes());
            log_outcome(&agent_id, &outcome, &answer);
            e.metrics.round_judged(&outcome, started);
            drop(answer);
            if !outcome.rebooted {
                note.verdict = Some(outcome.failure.is_empty());
            }
            if node.quote_received(t, id, outcome).is_ok() && note.verdict == Some(false) {
                note.failures = Some(RoundNote::failures_of(&node));
            }
            Judged { node, ctx, note }
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
        note: RoundNote,
    ) -> Result<(), Ended> {
        let snap = node.snapshot();
        let keyrings = ctx.keyrings.learned_to_keylime_json();
        let Some(update) = persist::round_update(&snap, &self.written, note, &keyrings) else {
            return Ok(());
        };
        let e = &self.engine;
        let written = e
            .metrics
            .store
            .time(
                "record_round",
                e.store
                    .verifier_agents()
                    .record_round(&self.id, update, self.fence.as_ref()),
            )
            .await;
        self.engine.store_written(written.as_ref().map(|_| ()));
        match written {
            Ok(()) => {
                self.written = Written {
                    snapshot: Some(snap),
                    learned_keyrings: Some(keyrings),
                };
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

    async fn remove(&self) {
        match self.engine.store.verifier_agents().delete(&self.id).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {
                info!(agent_id = %self.id, "node deleted");
            }
            Err(err) => error!(agent_id = %self.id, "deleting the node: {err}"),
        }
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
    };
    evaluate_round(node, &answer.as_quote_answer(), &policy, &mut ctx.keyrings)
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
