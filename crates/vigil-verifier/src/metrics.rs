//! The verifier's Prometheus series (`vigil_verifier_…`, listed in
//! `docs/operations.md`): what the engine attests and how, the revocation-notice
//! backlog, and how long the store takes to record a round. Node tasks and the
//! notifiers update them as they go, so a scrape reads memory, never the database.
//!
//! Nodes are counted by operational state only: there are no hardware classes yet to
//! label them by.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_core::attestation::{CommFailure, OperationalState, RoundOutcome};
use vigil_service::metrics::prometheus_client::metrics::counter::Counter;
use vigil_service::metrics::prometheus_client::metrics::family::Family;
use vigil_service::metrics::prometheus_client::metrics::gauge::Gauge;
use vigil_service::metrics::prometheus_client::metrics::histogram::Histogram;
use vigil_service::metrics::{latency_buckets, Label, OwnedLabel, Registry, StoreLatency};

/// The `kind` label of a failed quote request.
fn failure_kind(f: &CommFailure) -> &'static str {
    match f {
        CommFailure::Unreachable(_) => "unreachable",
        CommFailure::Status(_) => "status",
        CommFailure::BadResponse(_) => "bad_response",
        CommFailure::TooLarge { .. } => "too_large",
        CommFailure::VersionRenegotiated | CommFailure::VersionUnsupported => "version",
    }
}

const FAILURE_KINDS: [&str; 5] = [
    "unreachable",
    "status",
    "bad_response",
    "too_large",
    "version",
];

/// How a round ended: `pass`, `fail` (the answer failed a check), `reboot` (the node
/// rebooted; IMA attestation restarts) or `error` (no answer to judge).
const OUTCOMES: [&str; 4] = ["pass", "fail", "reboot", "error"];

/// Every series the verifier exports, and the registry `GET /metrics` encodes.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Arc<Registry>,
    nodes: Family<Label, Gauge>,
    rounds: Family<Label, Counter>,
    failures: Family<OwnedLabel, Counter>,
    round_duration: Histogram,
    poll_lag: Histogram,
    quote_errors: Family<Label, Counter>,
    notices_pending: Gauge,
    notices: Family<Label, Counter>,
    pub(crate) store: StoreLatency,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::new("verifier");
        let nodes = Family::<Label, Gauge>::default();
        let rounds = Family::<Label, Counter>::default();
        let failures = Family::<OwnedLabel, Counter>::default();
        let round_duration = Histogram::new(latency_buckets());
        let poll_lag = Histogram::new(latency_buckets());
        let quote_errors = Family::<Label, Counter>::default();
        let notices_pending = Gauge::default();
        let notices = Family::<Label, Counter>::default();
        // Every fixed label value starts at 0, so rates and alerts see the series
        // before the first event.
        for state in OperationalState::ALL {
            drop(nodes.get_or_create(&[("state", state.name())]));
        }
        for outcome in OUTCOMES {
            drop(rounds.get_or_create(&[("outcome", outcome)]));
        }
        for kind in FAILURE_KINDS {
            drop(quote_errors.get_or_create(&[("kind", kind)]));
        }
        for outcome in ["delivered", "dropped"] {
            drop(notices.get_or_create(&[("outcome", outcome)]));
        }
        let r = registry.series();
        r.register(
            "nodes",
            "Nodes this verifier attests, by operational state (Keylime's names)",
            nodes.clone(),
        );
        r.register(
            "rounds",
            "Attestation rounds (quote requests) by outcome: pass, fail, reboot, error (no answer to judge)",
            rounds.clone(),
        );
        r.register(
            "round_failures",
            "Failing events of failed rounds, by event id",
            failures.clone(),
        );
        r.register(
            "round_duration_seconds",
            "From a quote request to its verdict (fetch and judging)",
            round_duration.clone(),
        );
        r.register(
            "poll_lag_seconds",
            "How late a quote request starts after it was due",
            poll_lag.clone(),
        );
        r.register(
            "quote_fetch_errors",
            "Quote requests that got no usable answer, by kind",
            quote_errors.clone(),
        );
        r.register(
            "revocation_notices_pending",
            "Revocation notice deliveries recorded and not yet delivered or dropped",
            notices_pending.clone(),
        );
        r.register(
            "revocation_notices",
            "Revocation notice deliveries ended, by outcome: delivered, dropped (after every attempt failed)",
            notices.clone(),
        );
        let store = StoreLatency::register(&mut registry);
        Self {
            registry: Arc::new(registry),
            nodes,
            rounds,
            failures,
            round_duration,
            poll_lag,
            quote_errors,
            notices_pending,
            notices,
            store,
        }
    }

    /// A node's place in the `nodes` gauge, moved with [`NodeGauge::set`] and left
    /// when dropped (the node's task ends).
    pub(crate) fn node_gauge(self: &Arc<Self>) -> NodeGauge {
        NodeGauge {
            metrics: self.clone(),
            state: None,
        }
    }

    /// A quote request that got no usable answer, `started` when it was sent.
    pub(crate) fn quote_failed(&self, failure: &CommFailure, started: Instant) {
        self.quote_errors
            .get_or_create(&[("kind", failure_kind(failure))])
            .inc();
        self.round_ended("error", started);
    }

    /// A quote answer judged, `started` when it was requested.
    pub(crate) fn round_judged(&self, outcome: &RoundOutcome, started: Instant) {
        let name = if outcome.rebooted {
            "reboot"
        } else if outcome.failure.is_empty() {
            "pass"
        } else {
            for event in outcome.failure.events() {
                self.failures
                    .get_or_create(&[("event_id", event.event_id.clone())])
                    .inc();
            }
            "fail"
        };
        self.round_ended(name, started);
    }

    fn round_ended(&self, outcome: &'static str, started: Instant) {
        self.rounds.get_or_create(&[("outcome", outcome)]).inc();
        self.round_duration.observe(started.elapsed().as_secs_f64());
    }

    /// A quote request started `lag` after it was due.
    pub(crate) fn poll_lag(&self, lag: Duration) {
        self.poll_lag.observe(lag.as_secs_f64());
    }

    /// `n` notice deliveries recorded (or found pending at start-up).
    pub(crate) fn notices_pending(&self, n: usize) {
        self.notices_pending
            .inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A notice delivery ended: delivered, or dropped after its last attempt.
    pub(crate) fn notice_ended(&self, delivered: bool) {
        self.notices_pending.dec();
        let outcome = if delivered { "delivered" } else { "dropped" };
        self.notices.get_or_create(&[("outcome", outcome)]).inc();
    }
}

/// One node's count in `vigil_verifier_nodes{state}`.
#[derive(Debug)]
pub(crate) struct NodeGauge {
    metrics: Arc<Metrics>,
    state: Option<OperationalState>,
}

impl NodeGauge {
    /// The node is in `state` now.
    pub(crate) fn set(&mut self, state: OperationalState) {
        if self.state == Some(state) {
            return;
        }
        self.leave();
        self.metrics
            .nodes
            .get_or_create(&[("state", state.name())])
            .inc();
        self.state = Some(state);
    }

    fn leave(&mut self) {
        if let Some(old) = self.state.take() {
            self.metrics
                .nodes
                .get_or_create(&[("state", old.name())])
                .dec();
        }
    }
}

impl Drop for NodeGauge {
    fn drop(&mut self) {
        self.leave();
    }
}
