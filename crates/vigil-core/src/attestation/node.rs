//! [`NodeAttestation`]: the pull-mode attestation loop of one node (Keylime's
//! `process_agent`, `invoke_get_quote`, `invoke_provide_v`), as a state machine that is
//! driven by its caller.
//!
//! Inputs are the `handle`-style methods ([`NodeAttestation::quote_received`],
//! [`NodeAttestation::request_failed`], [`NodeAttestation::v_delivered`], the tenant's
//! [`start`](NodeAttestation::start), [`stop`](NodeAttestation::stop),
//! [`reactivate`](NodeAttestation::reactivate) and [`deleted`](NodeAttestation::deleted)),
//! each given the current time. Outputs are pulled: after every input the driver calls
//! [`NodeAttestation::poll_action`] until it returns `None`, then sleeps until
//! [`NodeAttestation::next_deadline`] and polls again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::severity::{RatedEvent, RatedFailure, SeverityConfig};
use super::state::OperationalState;
use super::time::UnixTime;
use crate::failure::{Component, Event, Failure};
use crate::hash::HashAlg;
use crate::ima::{ImaAttestState, ImaCounts};
use crate::tpm::attest::ClockInfo;

/// At most this many events of the last failed round are kept (a round can fail on
/// every line of a long IMA log); [`NodeAttestation::last_failures_omitted`] counts the
/// rest.
pub const MAX_KEPT_FAILURES: usize = 64;

/// The longest retry delay exponential backoff may produce. Keylime has no cap
/// (`retry_interval ** n`); with its defaults the longest delay is 32 s, so the cap
/// only stops absurd configurations from scheduling a retry centuries away.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// The verifier options that drive every node (compat §1.9).
#[derive(Clone, Debug)]
pub struct AttestationConfig {
    /// `quote_interval`: the pause between two successful rounds (Keylime default 2 s;
    /// 0 polls again at once).
    pub quote_interval: Duration,
    /// `retry_interval`: the base retry delay (2 s).
    pub retry_interval: Duration,
    /// `max_retries`: failed requests tolerated before FAILED (5).
    pub max_retries: u32,
    /// `exponential_backoff`: retry `n` waits `retry_interval ** n` seconds (true).
    pub exponential_backoff: bool,
    /// Vigil only: keep probing a node that FAILED only because it was unreachable,
    /// and bring it back to GET_QUOTE when it answers with good evidence (false, which
    /// is Keylime's behaviour: such a node waits for `reactivate`).
    pub auto_recover: bool,
    /// Severity labels and policy.
    pub severity: SeverityConfig,
}

impl Default for AttestationConfig {
    /// Keylime's defaults.
    fn default() -> Self {
        Self {
            quote_interval: Duration::from_secs(2),
            retry_interval: Duration::from_secs(2),
            max_retries: 5,
            exponential_backoff: true,
            auto_recover: false,
            severity: SeverityConfig::default(),
        }
    }
}

impl AttestationConfig {
    /// The delay before retry number `n` (1-based), as Keylime's `retry_time`:
    /// `retry_interval ** n` seconds with exponential backoff and an interval above one
    /// second, else `retry_interval` (capped at [`MAX_RETRY_DELAY`]).
    pub fn retry_delay(&self, n: u32) -> Duration {
        let base = self.retry_interval.as_secs_f64();
        if !(self.exponential_backoff && base > 1.0) {
            return self.retry_interval.min(MAX_RETRY_DELAY);
        }
        let secs = base.powi(i32::try_from(n).unwrap_or(i32::MAX));
        if secs.is_finite() && secs < MAX_RETRY_DELAY.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            MAX_RETRY_DELAY
        }
    }

    /// How often a FAILED-but-only-unreachable node is probed with `auto_recover`: the
    /// longest delay of the retry schedule, so a dead node costs no more than a node
    /// at the end of its retries.
    pub fn probe_interval(&self) -> Duration {
        self.retry_delay(self.max_retries.max(1))
    }

    /// `attestation_period` of the status object: `"{int(quote_interval)}s"`.
    pub fn attestation_period(&self) -> String {
        format!("{}s", self.quote_interval.as_secs())
    }

    /// `maximum_attestation_interval`: five quote intervals, as Keylime.
    pub fn maximum_attestation_interval(&self) -> String {
        format!("{}s", (self.quote_interval.as_secs_f64() * 5.0) as u64)
    }
}

/// Identifies one request the engine asked for, so a late answer to a request that
/// was abandoned (stop, reactivate) is never taken for the answer to a newer one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Which kind of revocation notice to send (the `type` of Keylime's message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// `revocation`: the node failed attestation.
    Revocation,
    /// `comm_error`: the node could not be reached after every retry.
    CommError,
}

/// A revocation notice to send. The driver adds the enrolment fields (ip, port,
/// tpm_policy, meta_data), the event time and the signature (compat §6.6).
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// `type`.
    pub kind: NotificationKind,
    /// The failure's highest-severity event (`event_id`, `severity_label`, `context`).
    pub event: RatedEvent,
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `GET /v{ver}/quotes/integrity` with a fresh nonce and the tpm_policy's mask;
    /// answer with [`NodeAttestation::quote_received`] or
    /// [`NodeAttestation::request_failed`].
    GetQuote {
        /// Pass it back with the answer.
        id: RequestId,
        /// `partial=1`: the node may leave out its public key (one is cached).
        partial: bool,
        /// `ima_ml_entry`: the first IMA entry wanted.
        ima_ml_entry: u64,
    },
    /// `POST /v{ver}/keys/vkey` with V encrypted to the node's public key; answer with
    /// [`NodeAttestation::v_delivered`] or [`NodeAttestation::request_failed`].
    ProvideV {
        /// Pass it back with the answer.
        id: RequestId,
    },
    /// Send a revocation notice on the configured channels.
    Notify(Notification),
    /// The node was deleted and nothing is in flight any more: drop its record.
    Remove,
}

/// How a request failed, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommFailure {
    /// No HTTP answer at all: connection refused, timeout, TLS failure (tornado's 599).
    Unreachable(String),
    /// An HTTP status other than 200. 408, 500 and 599 are retried as Keylime does;
    /// any other is fatal (`no_quote` / `no_v`).
    Status(u16),
    /// The node rejected the API version and the driver switched to one it supports:
    /// retried, counting as one retry (as Keylime).
    VersionRenegotiated,
    /// The node rejected the API version and no common version was found
    /// (`version_not_supported`).
    VersionUnsupported,
    /// The answer could not be processed (Keylime's `exception` event).
    BadResponse(String),
    /// The answer was larger than the verifier accepts from a node (Vigil's
    /// `answer_too_large` event): refused before it was read whole, so one node cannot
    /// exhaust the verifier's memory.
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

impl CommFailure {
    /// True for the failures Keylime retries with backoff.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::VersionRenegotiated => true,
            Self::Status(s) => matches!(s, 408 | 500 | 599),
            Self::VersionUnsupported | Self::BadResponse(_) | Self::TooLarge { .. } => false,
        }
    }

    /// True when the failure says the node did not answer.
    fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Status(408 | 500 | 599))
    }

    fn detail(&self) -> String {
        match self {
            Self::Unreachable(d) | Self::BadResponse(d) => d.clone(),
            Self::Status(s) => format!("HTTP {s}"),
            Self::VersionRenegotiated => "API version renegotiated".into(),
            Self::VersionUnsupported => "API version not supported".into(),
            Self::TooLarge { limit } => format!("the answer exceeds {limit} bytes"),
        }
    }
}

impl std::fmt::Display for CommFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail())
    }
}

/// The algorithms a quote reported (`hash_alg`, `enc_alg`, `sign_alg`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteAlgs {
    /// Hash algorithm.
    pub hash_alg: String,
    /// Encryption algorithm.
    pub enc_alg: String,
    /// Signing algorithm.
    pub sign_alg: String,
}

/// What one answered round established: the verdict and what the engine keeps from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundOutcome {
    /// The round's failure events in Keylime's order; empty means the evidence passed.
    pub failure: Failure,
    /// The node rebooted (its boot time changed on a continuation batch): the IMA state
    /// is reset and the round is skipped without a verdict (compat §3.3 step 4).
    pub rebooted: bool,
    /// The algorithms the quote used, once they were accepted.
    pub algs: Option<QuoteAlgs>,
    /// The public key the node sent (`None` for a partial quote).
    pub public_key: Option<String>,
    /// The verified quote's clock, kept for the next clock check on success.
    pub clock_info: Option<ClockInfo>,
    /// The IMA state after the round (`None`: unchanged), with the bank its running PCR
    /// is in.
    pub ima: Option<(ImaAttestState, Option<HashAlg>)>,
    /// The counters of the IMA batch replayed in this round, for the verifier's log
    /// (`None` when no list was checked).
    pub ima_counts: Option<ImaCounts>,
}

impl RoundOutcome {
    /// A passing round.
    pub fn passed() -> Self {
        Self::default()
    }

    /// A round with these failure events (passing if there are none).
    pub fn failed(failure: Failure) -> Self {
        Self {
            failure,
            ..Self::default()
        }
    }

    /// The boot-time rule fired: reset IMA, skip the round.
    pub fn rebooted() -> Self {
        Self {
            rebooted: true,
            ..Self::default()
        }
    }

    /// With the quote's algorithms.
    pub fn with_algs(mut self, algs: QuoteAlgs) -> Self {
        self.algs = Some(algs);
        self
    }

    /// With the public key the node sent.
    pub fn with_public_key(mut self, key: impl Into<String>) -> Self {
        self.public_key = Some(key.into());
        self
    }

    /// With the verified quote's clock.
    pub fn with_clock(mut self, clock: ClockInfo) -> Self {
        self.clock_info = Some(clock);
        self
    }

    /// With the IMA state after the round.
    pub fn with_ima(mut self, ima: ImaAttestState, bank: Option<HashAlg>) -> Self {
        self.ima = Some((ima, bank));
        self
    }

    /// With the counters of the IMA batch checked in the round.
    pub fn with_ima_counts(mut self, counts: ImaCounts) -> Self {
        self.ima_counts = Some(counts);
        self
    }
}

/// Why an input was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// The answer is not for the request in flight (it was abandoned, or never made).
    #[error("request {got:?} is not the one in flight ({in_flight:?})")]
    Stale {
        /// The answer's request.
        got: RequestId,
        /// The request in flight, if any.
        in_flight: Option<RequestId>,
    },
    /// The answer's kind does not match the request (a quote answer to `ProvideV`).
    #[error("request {0:?} was not of this kind")]
    WrongKind(RequestId),
    /// The node is TERMINATED: nothing changes it any more.
    #[error("the node is terminated")]
    Terminated,
}

/// What `DELETE` should answer (Keylime's pull mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Nothing is in flight (or the state is one Keylime deletes at once): delete the
    /// record now and answer 200.
    Immediate,
    /// A request is in flight: answer 202; [`Action::Remove`] follows when it ends.
    Deferred,
}

/// Whether the node answers, beyond Keylime's states: an unreachable node is not an
/// untrusted one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reachability {
    /// The last request got an answer (or none was made yet).
    Reachable,
    /// Requests are failing and being retried.
    Retrying {
        /// First failure of the current streak.
        since: UnixTime,
        /// Failed requests in the streak.
        attempts: u32,
    },
    /// Retries were exhausted: the node is FAILED for communication only.
    Unreachable {
        /// First failure of the streak.
        since: UnixTime,
        /// Failed requests in the streak.
        attempts: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Quote { partial: bool },
    ProvideV,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Nothing scheduled: stopped, or waiting for a tenant action.
    Idle,
    /// Make `request` at `at`.
    Due { at: UnixTime, request: Request },
    /// `request` was handed out and its answer is awaited.
    InFlight { id: RequestId, request: Request },
}

/// The streak of failed requests, for [`Reachability`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CommStreak {
    since: UnixTime,
    attempts: u32,
}

/// The persistent part of a node's attestation state (everything but what is in
/// flight), for the store: restore it with [`NodeAttestation::restore`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// The operational state.
    pub operational_state: OperationalState,
    /// Whether the enrolment carries a V key half.
    pub v_present: bool,
    /// The node's public key from its last good round.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Successful rounds.
    pub attestation_count: u64,
    /// Epoch seconds of the last answered round, 0 = never.
    pub last_received_quote: u64,
    /// Epoch seconds of the last successful round, 0 = never.
    pub last_successful_attestation: u64,
    /// The algorithms of the last quote (`""` until one came).
    #[serde(default)]
    pub algs: QuoteAlgs,
    /// The clock of the last accepted quote.
    #[serde(default)]
    pub tpm_clockinfo: Option<ClockInfo>,
    /// IMA incremental state: next entry, running PCR, boot time, quote progress.
    #[serde(default)]
    pub ima: ImaAttestState,
    /// The bank `ima.running_pcr` is in.
    #[serde(default)]
    pub ima_bank: Option<HashAlg>,
    /// Highest severity level so far (Keylime never lowers it).
    #[serde(default)]
    pub severity_level: Option<u8>,
    /// The event that set `severity_level`.
    #[serde(default)]
    pub last_event_id: Option<String>,
    /// The level up to which revocation notices were sent since the last (re)start.
    #[serde(default)]
    pub notified_level: Option<u8>,
    /// The failures of the last failed round.
    #[serde(default)]
    pub last_failures: Vec<RatedEvent>,
    /// Events of that round not kept.
    #[serde(default)]
    pub last_failures_omitted: u64,
    /// FAILED only because the node could not be reached.
    #[serde(default)]
    pub failed_unreachable: bool,
    /// The current streak of failed requests.
    #[serde(default)]
    comm_streak: Option<CommStreak>,
    /// The next request id, so ids are not reused across restarts.
    #[serde(default)]
    pub next_request: u64,
}

/// The attestation engine of one node. See the module documentation.
#[derive(Clone, Debug)]
pub struct NodeAttestation {
    config: Arc<AttestationConfig>,
    state: OperationalState,
    v_present: bool,
    /// Keylime's in-memory `provide_V`: deliver V after the next good round.
    provide_v: bool,
    public_key: Option<String>,
    attestation_count: u64,
    last_received_quote: u64,
    last_successful_attestation: u64,
    algs: QuoteAlgs,
    clock_info: Option<ClockInfo>,
    ima: ImaAttestState,
    ima_bank: Option<HashAlg>,
    severity_level: Option<u8>,
    last_event_id: Option<String>,
    notified_level: Option<u8>,
    last_failures: Vec<RatedEvent>,
    last_failures_omitted: u64,
    failed_unreachable: bool,
    comm_streak: Option<CommStreak>,
    num_retries: u32,
    next: Next,
    next_request: u64,
    outbox: VecDeque<Action>,
    /// A deferred deletion is waiting for the request in flight.
    remove_pending: bool,
}

impl NodeAttestation {
    /// A newly enrolled node in START; nothing happens until [`start`](Self::start).
    /// `v_present`: the enrolment carries a V key half to deliver.
    pub fn new(config: Arc<AttestationConfig>, v_present: bool) -> Self {
        Self {
            config,
            state: OperationalState::Start,
            v_present,
            provide_v: true,
            public_key: None,
            attestation_count: 0,
            last_received_quote: 0,
            last_successful_attestation: 0,
            algs: QuoteAlgs::default(),
            clock_info: None,
            ima: ImaAttestState::new(),
            ima_bank: None,
            severity_level: None,
            last_event_id: None,
            notified_level: None,
            last_failures: Vec::new(),
            last_failures_omitted: 0,
            failed_unreachable: false,
            comm_streak: None,
            num_retries: 0,
            next: Next::Idle,
            next_request: 0,
            outbox: VecDeque::new(),
            remove_pending: false,
        }
    }

    /// Begins polling: START, first quote (with the public key) due at `now`.
    pub fn start(&mut self, now: UnixTime) -> Result<(), Ignored> {
        self.begin(now)
    }

    /// `PUT …/reactivate`: back to START from any state but TERMINATED, retries and the
    /// notice gate cleared, V delivered again after the first good round. A reactivation
    /// is the operator's decision to trust the node again, so the TPM clock's
    /// monotonicity starts afresh too: a node whose TPM was reset without a reboot
    /// being seen (its clock went backwards) can be brought back without re-enrolling.
    pub fn reactivate(&mut self, now: UnixTime) -> Result<(), Ignored> {
        self.begin(now)?;
        self.clock_info = None;
        Ok(())
    }

    fn begin(&mut self, now: UnixTime) -> Result<(), Ignored> {
        if self.state == OperationalState::Terminated {
            return Err(Ignored::Terminated);
        }
        self.state = OperationalState::Start;
        self.num_retries = 0;
        self.provide_v = true;
        self.failed_unreachable = false;
        self.comm_streak = None;
        // Keylime never lowers severity_level; Vigil keeps that field but re-arms
        // notices, so a node that fails again after a reactivation is reported again.
        self.notified_level = None;
        self.next = Next::Due {
            at: now,
            request: Request::Quote { partial: false },
        };
        Ok(())
    }

    /// `PUT …/stop`: TENANT_FAILED, nothing scheduled; an answer in flight is ignored.
    pub fn stop(&mut self, _now: UnixTime) -> Result<(), Ignored> {
        if self.state == OperationalState::Terminated {
            return Err(Ignored::Terminated);
        }
        self.state = OperationalState::TenantFailed;
        self.next = Next::Idle;
        Ok(())
    }

    /// `DELETE`: TERMINATED (final). Says whether the record can go now or only after
    /// the request in flight ends ([`Action::Remove`]).
    pub fn deleted(&mut self, _now: UnixTime) -> Deletion {
        let immediate =
            self.state.deletes_immediately() || !matches!(self.next, Next::InFlight { .. });
        self.state = OperationalState::Terminated;
        if immediate {
            self.next = Next::Idle;
            self.remove_pending = false;
            Deletion::Immediate
        } else {
            self.remove_pending = true;
            Deletion::Deferred
        }
    }

    /// The next action due at `now`: queued notices first, then a request whose time
    /// has come. Call until it returns `None` after every input.
    pub fn poll_action(&mut self, now: UnixTime) -> Option<Action> {
        if let Some(action) = self.outbox.pop_front() {
            return Some(action);
        }
        let Next::Due { at, request } = self.next else {
            return None;
        };
        if at > now || self.state == OperationalState::Terminated {
            return None;
        }
        let id = RequestId(self.next_request);
        self.next_request = self.next_request.wrapping_add(1);
        self.next = Next::InFlight { id, request };
        Some(match request {
            Request::Quote { partial } => Action::GetQuote {
                id,
                partial,
                ima_ml_entry: self.ima.next_entry,
            },
            Request::ProvideV => Action::ProvideV { id },
        })
    }

    /// Vigil's trust gate: the next round now rather than at its scheduled time. A
    /// request already scheduled (quote, V delivery, retry, probe of an unreachable
    /// node) falls due at `now`; one in flight is awaited. Says whether a round is
    /// coming: `false` once polling has stopped (a failure that stops it, the
    /// tenant's stop, TERMINATED), when only a reactivation resumes it.
    pub fn attest_now(&mut self, now: UnixTime) -> bool {
        if self.state == OperationalState::Terminated {
            return false;
        }
        match &mut self.next {
            Next::Due { at, .. } => {
                *at = (*at).min(now);
                true
            }
            Next::InFlight { .. } => true,
            Next::Idle => false,
        }
    }

    /// When the next request falls due, if one is scheduled (`None` while a request is
    /// in flight or nothing is scheduled).
    pub fn next_deadline(&self) -> Option<UnixTime> {
        match self.next {
            Next::Due { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The node answered a [`Action::GetQuote`] and the evidence was evaluated.
    pub fn quote_received(
        &mut self,
        now: UnixTime,
        id: RequestId,
        outcome: RoundOutcome,
    ) -> Result<(), Ignored> {
        self.take_in_flight(id, |r| matches!(r, Request::Quote { .. }))?;
        if self.finish_deferred_delete() {
            return Ok(());
        }
        // It answered: whatever the verdict, the node is reachable.
        self.comm_streak = None;
        self.num_retries = 0;
        if let Some((ima, bank)) = outcome.ima {
            self.ima = ima;
            self.ima_bank = bank;
        }
        if outcome.rebooted {
            // Keylime skips the round and waits quote_interval; the node is not
            // attested meanwhile, so Vigil asks again at once (from entry 0).
            self.ima.reset();
            self.ima_bank = None;
            if self.state == OperationalState::GetQuoteRetry {
                self.state = OperationalState::GetQuote;
            }
            self.schedule_quote(now, Duration::ZERO, false);
            return Ok(());
        }
        self.last_received_quote = self.last_received_quote.max(now.as_secs());
        if let Some(algs) = outcome.algs {
            self.algs = algs;
        }
        if outcome.failure.is_empty() {
            self.round_passed(now, outcome.public_key, outcome.clock_info);
        } else {
            let rated = self.config.severity.rate(&outcome.failure);
            self.failed_unreachable = false;
            self.record_failure(now, rated, OperationalState::InvalidQuote);
        }
        Ok(())
    }

    /// The node accepted V ([`Action::ProvideV`]): back to GET_QUOTE after
    /// `quote_interval`.
    pub fn v_delivered(&mut self, now: UnixTime, id: RequestId) -> Result<(), Ignored> {
        self.take_in_flight(id, |r| r == Request::ProvideV)?;
        if self.finish_deferred_delete() {
            return Ok(());
        }
        self.comm_streak = None;
        self.num_retries = 0;
        self.provide_v = false;
        self.state = OperationalState::GetQuote;
        self.schedule_quote(now, self.config.quote_interval, true);
        Ok(())
    }

    /// A request got no usable answer.
    pub fn request_failed(
        &mut self,
        now: UnixTime,
        id: RequestId,
        failure: CommFailure,
    ) -> Result<(), Ignored> {
        let request = self.take_in_flight(id, |_| true)?;
        if self.finish_deferred_delete() {
            return Ok(());
        }
        if failure.is_unreachable() {
            let streak = self.comm_streak.get_or_insert(CommStreak {
                since: now,
                attempts: 0,
            });
            streak.attempts = streak.attempts.saturating_add(1);
        } else {
            self.comm_streak = None;
        }
        let is_v = request == Request::ProvideV;

        if !failure.is_retryable() {
            let (event, context) = match &failure {
                CommFailure::Status(status) if is_v => (
                    "no_v",
                    json!({"message": "Unexpected provide V response", "data": status}),
                ),
                CommFailure::Status(_) => (
                    "no_quote",
                    Event::message("Unexpected Get Quote reponse from agent"),
                ),
                CommFailure::VersionUnsupported => (
                    "version_not_supported",
                    json!({"context": "Agent API version not supported"}),
                ),
                CommFailure::TooLarge { limit } => (
                    "answer_too_large",
                    json!({
                        "message": format!("the node's answer exceeds the verifier's limit of {limit} bytes"),
                        "limit": limit,
                    }),
                ),
                other => (
                    "exception",
                    json!({
                        "context": "Agent caused the verifier to throw an exception",
                        "data": other.detail(),
                    }),
                ),
            };
            self.failed_unreachable = false;
            let rated = self.rate_internal(event, context);
            self.record_failure(now, rated, OperationalState::Failed);
            return Ok(());
        }

        // A probe of a node that is FAILED for unreachability (auto_recover).
        if self.state == OperationalState::Failed {
            self.schedule_probe(now);
            return Ok(());
        }

        if self.num_retries >= self.config.max_retries {
            let (event, message) = if is_v {
                ("not_reachable_v", "agent was not reachable to provide V")
            } else {
                ("not_reachable", "agent was not reachable from verifier")
            };
            let rated = self.rate_internal(event, Event::message(message));
            // Keylime sends comm_error before recording FAILED, regardless of the
            // severity gate: for V always, for quotes only for nodes that attested.
            if is_v || self.attestation_count > 0 {
                if let Some(event) = rated.highest_event() {
                    self.outbox.push_back(Action::Notify(Notification {
                        kind: NotificationKind::CommError,
                        event: event.clone(),
                    }));
                }
            }
            self.record_failure(now, rated, OperationalState::Failed);
            self.failed_unreachable = true;
            if self.config.auto_recover {
                self.schedule_probe(now);
            }
            return Ok(());
        }

        self.num_retries += 1;
        let delay = self.config.retry_delay(self.num_retries);
        let request = if is_v {
            self.state = OperationalState::ProvideVRetry;
            Request::ProvideV
        } else {
            self.state = OperationalState::GetQuoteRetry;
            // Keylime asks for the public key again on retries.
            Request::Quote { partial: false }
        };
        self.next = Next::Due {
            at: now.saturating_add(delay),
            request,
        };
        Ok(())
    }

    fn take_in_flight(
        &mut self,
        id: RequestId,
        kind: impl Fn(Request) -> bool,
    ) -> Result<Request, Ignored> {
        match self.next {
            Next::InFlight {
                id: current,
                request,
            } if current == id => {
                if !kind(request) {
                    return Err(Ignored::WrongKind(id));
                }
                self.next = Next::Idle;
                Ok(request)
            }
            _ if self.state == OperationalState::Terminated => Err(Ignored::Terminated),
            Next::InFlight { id: current, .. } => Err(Ignored::Stale {
                got: id,
                in_flight: Some(current),
            }),
            _ => Err(Ignored::Stale {
                got: id,
                in_flight: None,
            }),
        }
    }

    /// After a deferred `DELETE`, the end of the request in flight removes the node.
    fn finish_deferred_delete(&mut self) -> bool {
        if self.state != OperationalState::Terminated {
            return false;
        }
        if self.remove_pending {
            self.remove_pending = false;
            self.outbox.push_back(Action::Remove);
        }
        true
    }

    fn round_passed(
        &mut self,
        now: UnixTime,
        public_key: Option<String>,
        clock: Option<ClockInfo>,
    ) {
        self.attestation_count = self.attestation_count.saturating_add(1);
        self.last_successful_attestation = self.last_successful_attestation.max(now.as_secs());
        if clock.is_some() {
            self.clock_info = clock;
        }
        match public_key {
            // A new key invalidates any V encrypted to the old one.
            Some(key) if self.public_key.as_deref() != Some(key.as_str()) => {
                self.public_key = Some(key);
                self.provide_v = true;
            }
            Some(_) => {}
            None => self.provide_v = false,
        }
        self.failed_unreachable = false;
        if self.provide_v && self.v_present {
            self.state = OperationalState::ProvideV;
            self.next = Next::Due {
                at: now,
                request: Request::ProvideV,
            };
        } else {
            self.state = OperationalState::GetQuote;
            self.schedule_quote(now, self.config.quote_interval, true);
        }
    }

    /// Schedules a quote. `partial` is what Keylime would ask; Vigil asks for the key
    /// anyway when it has none cached, where Keylime would fail with `no_pubkey`.
    fn schedule_quote(&mut self, now: UnixTime, after: Duration, partial: bool) {
        self.next = Next::Due {
            at: now.saturating_add(after),
            request: Request::Quote {
                partial: partial && self.public_key.is_some(),
            },
        };
    }

    fn schedule_probe(&mut self, now: UnixTime) {
        self.next = Next::Due {
            at: now.saturating_add(self.config.probe_interval()),
            request: Request::Quote { partial: false },
        };
    }

    fn rate_internal(&self, event: &str, context: Value) -> RatedFailure {
        let mut f = Failure::new();
        f.push(Event::new(
            Component::Internal,
            &["verifier"],
            event,
            context,
            false,
        ));
        self.config.severity.rate(&f)
    }

    /// Records a failed round in `state` (FAILED or INVALID_QUOTE) with Keylime's
    /// severity gate, and schedules the next round unless polling stops.
    fn record_failure(&mut self, now: UnixTime, rated: RatedFailure, state: OperationalState) {
        let Some(top) = rated.highest_event().cloned() else {
            return;
        };
        let level = top.severity_level;
        // Keylime: severity_level and last_event_id only ever rise.
        if self.severity_level.is_none_or(|l| level > l) {
            self.severity_level = Some(level);
            self.last_event_id = Some(top.event_id.clone());
        }
        // Keylime notifies only when severity rises; repeated failures are silent.
        if state == OperationalState::InvalidQuote && self.notified_level.is_none_or(|l| level > l)
        {
            self.notified_level = Some(level);
            self.outbox.push_back(Action::Notify(Notification {
                kind: NotificationKind::Revocation,
                event: top,
            }));
        }
        // Keylime leaves the state unchanged when severity did not rise (so a stopped
        // node can show "Get Quote"); Vigil always shows the failure.
        self.state = state;
        let total = rated.events.len();
        let mut events = rated.events;
        events.truncate(MAX_KEPT_FAILURES);
        self.last_failures_omitted = (total - events.len()) as u64 + rated.omitted;
        self.last_failures = events;
        if rated.stops_polling {
            self.next = Next::Idle;
        } else {
            // Keylime polls again at once after a recoverable failure.
            self.schedule_quote(now, Duration::ZERO, true);
        }
    }

    /// The persistent state.
    pub fn snapshot(&self) -> NodeSnapshot {
        NodeSnapshot {
            operational_state: self.state,
            v_present: self.v_present,
            public_key: self.public_key.clone(),
            attestation_count: self.attestation_count,
            last_received_quote: self.last_received_quote,
            last_successful_attestation: self.last_successful_attestation,
            algs: self.algs.clone(),
            tpm_clockinfo: self.clock_info,
            ima: self.ima.clone(),
            ima_bank: self.ima_bank,
            severity_level: self.severity_level,
            last_event_id: self.last_event_id.clone(),
            notified_level: self.notified_level,
            last_failures: self.last_failures.clone(),
            last_failures_omitted: self.last_failures_omitted,
            failed_unreachable: self.failed_unreachable,
            comm_streak: self.comm_streak,
            next_request: self.next_request,
        }
    }

    /// Rebuilds a node after a verifier restart and schedules what resumes at `now`:
    /// - START: the first quote again;
    /// - GET_QUOTE and its retry state: GET_QUOTE, a quote asking for the public key
    ///   (a changed key means the node restarted and needs V again), from the stored
    ///   IMA offset, at once or a quote interval after the last answer if that is
    ///   later;
    /// - PROVIDE_V and its retry state: V again (START if no key is known);
    /// - FAILED for unreachability with `auto_recover`: a probe at once;
    /// - TERMINATED: [`Action::Remove`];
    /// - anything else stays stopped.
    pub fn restore(config: Arc<AttestationConfig>, snap: NodeSnapshot, now: UnixTime) -> Self {
        let mut node = Self::new(config, snap.v_present);
        node.state = snap.operational_state;
        node.public_key = snap.public_key;
        node.attestation_count = snap.attestation_count;
        node.last_received_quote = snap.last_received_quote;
        node.last_successful_attestation = snap.last_successful_attestation;
        node.algs = snap.algs;
        node.clock_info = snap.tpm_clockinfo;
        node.ima = snap.ima;
        node.ima_bank = snap.ima_bank;
        node.severity_level = snap.severity_level;
        node.last_event_id = snap.last_event_id;
        node.notified_level = snap.notified_level;
        node.last_failures = snap.last_failures;
        node.last_failures_omitted = snap.last_failures_omitted;
        node.failed_unreachable = snap.failed_unreachable;
        node.comm_streak = snap.comm_streak;
        node.next_request = snap.next_request;
        node.provide_v = false;
        use OperationalState as S;
        match node.state {
            S::Start => {
                node.provide_v = true;
                node.schedule_quote(now, Duration::ZERO, false);
            }
            S::GetQuote | S::GetQuoteRetry => {
                node.state = S::GetQuote;
                node.comm_streak = None;
                // Not sooner than a quote interval after the last answer: a node
                // handed over by another replica right after its round keeps its
                // pace. The answer's time is stored in whole seconds; the middle of
                // that second is the best guess.
                let due = UnixTime::from_millis(node.last_received_quote.saturating_mul(1000))
                    .saturating_add(Duration::from_millis(500) + node.config.quote_interval);
                node.schedule_quote(now, due.saturating_since(now), false);
            }
            S::ProvideV | S::ProvideVRetry if node.public_key.is_some() => {
                node.state = S::ProvideV;
                node.provide_v = true;
                node.next = Next::Due {
                    at: now,
                    request: Request::ProvideV,
                };
            }
            S::ProvideV | S::ProvideVRetry => {
                node.state = S::Start;
                node.provide_v = true;
                node.schedule_quote(now, Duration::ZERO, false);
            }
            S::Failed if node.failed_unreachable && node.config.auto_recover => {
                node.next = Next::Due {
                    at: now,
                    request: Request::Quote { partial: false },
                };
            }
            S::Terminated => node.outbox.push_back(Action::Remove),
            S::Registered | S::Saved | S::Failed | S::InvalidQuote | S::TenantFailed => {}
        }
        node
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &AttestationConfig {
        &self.config
    }

    /// The operational state.
    pub fn state(&self) -> OperationalState {
        self.state
    }

    /// Successful rounds.
    pub fn attestation_count(&self) -> u64 {
        self.attestation_count
    }

    /// Epoch seconds of the last answered round (0 = never).
    pub fn last_received_quote(&self) -> u64 {
        self.last_received_quote
    }

    /// Epoch seconds of the last successful round (0 = never).
    pub fn last_successful_attestation(&self) -> u64 {
        self.last_successful_attestation
    }

    /// Highest severity level so far.
    pub fn severity_level(&self) -> Option<u8> {
        self.severity_level
    }

    /// The event id that set [`severity_level`](Self::severity_level).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The failures of the last failed round (at most [`MAX_KEPT_FAILURES`]).
    pub fn last_failures(&self) -> &[RatedEvent] {
        &self.last_failures
    }

    /// Events of the last failed round that were not kept.
    pub fn last_failures_omitted(&self) -> u64 {
        self.last_failures_omitted
    }

    /// The algorithms of the last quote.
    pub fn algs(&self) -> &QuoteAlgs {
        &self.algs
    }

    /// The node's public key from its last good round.
    pub fn public_key(&self) -> Option<&str> {
        self.public_key.as_deref()
    }

    /// The clock of the last accepted quote, the reference for the next clock check
    /// (`None` before the first).
    pub fn tpm_clockinfo(&self) -> Option<&ClockInfo> {
        self.clock_info.as_ref()
    }

    /// The IMA incremental state the next round starts from.
    pub fn ima_state(&self) -> &ImaAttestState {
        &self.ima
    }

    /// The bank the IMA running PCR is in, if any entry was replayed.
    pub fn ima_bank(&self) -> Option<HashAlg> {
        self.ima_bank
    }

    /// Retries made in the current streak (Keylime's `num_retries`).
    pub fn num_retries(&self) -> u32 {
        self.num_retries
    }

    /// Whether the node answers (beyond Keylime's states).
    pub fn reachability(&self) -> Reachability {
        match self.comm_streak {
            None => Reachability::Reachable,
            Some(CommStreak { since, attempts })
                if self.state == OperationalState::Failed && self.failed_unreachable =>
            {
                Reachability::Unreachable { since, attempts }
            }
            Some(CommStreak { since, attempts }) => Reachability::Retrying { since, attempts },
        }
    }

    /// True when the node is FAILED only because it could not be reached.
    pub fn failed_unreachable(&self) -> bool {
        self.state == OperationalState::Failed && self.failed_unreachable
    }

    /// True while a request is out and its answer awaited.
    pub fn in_flight(&self) -> Option<RequestId> {
        match self.next {
            Next::InFlight { id, .. } => Some(id),
            _ => None,
        }
    }
}
