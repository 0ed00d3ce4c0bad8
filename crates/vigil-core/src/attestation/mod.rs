//! The verifier's per-node attestation engine: Keylime's pull-mode polling loop
//! (operational states, retries with backoff, severity gating, revocation triggers,
//! IMA offset bookkeeping) as a deterministic state machine.
//!
//! The engine does no I/O and reads no clock, in the manner of quinn-proto: the
//! verifier service feeds it inputs stamped with the current time
//! ([`NodeAttestation::quote_received`], [`NodeAttestation::request_failed`], …),
//! pulls the actions it asks for ([`NodeAttestation::poll_action`]: fetch a quote,
//! deliver V, send a revocation notice, remove the record) and sleeps until
//! [`NodeAttestation::next_deadline`]. Evidence is evaluated outside the engine (quote,
//! PCR, IMA and measured-boot checks) and handed in as a [`RoundOutcome`]. Every
//! transition is therefore a plain function call in a test.
//!
//! ```text
//!   start ─► START ──quote ok──► GET_QUOTE ◄──────────────┐ (quote_interval)
//!              │      (V to deliver) └─► PROVIDE_V ──ok───┘
//!              │ comm failure ─► GET_QUOTE_RETRY ─(max_retries)─► FAILED
//!              │ evidence failure ─► INVALID_QUOTE (stop, or poll again if recoverable
//!              │                                    and below the top severity)
//!   stop ─► TENANT_FAILED     delete ─► TERMINATED (final)     reactivate ─► START
//! ```
//!
//! What differs from Keylime, and why, is listed in `docs/attestation.md`.
//!
//! - [`state`]: [`OperationalState`] (0–10) and [`AttestationStatus`].
//! - [`severity`]: labels, `severity_policy`, rating a round's failure.
//! - [`node`]: [`NodeAttestation`], its inputs, actions and [`NodeSnapshot`].
//! - [`status`]: the `GET /agents/{id}` status object.
//! - [`answer`]: [`NodeAnswer`], a node's `quotes/integrity` answer read from its body.
//! - [`evaluate`]: [`evaluate_round`], one answer checked into a [`RoundOutcome`]
//!   (quote, PCRs, IMA, measured boot).

pub mod answer;
pub mod evaluate;
pub mod node;
pub mod severity;
pub mod state;
pub mod status;
mod time;

pub use answer::{AnswerError, NodeAnswer};
pub use evaluate::{
    evaluate_round, evaluate_round_memo, BootLogMemo, MeasuredBootPolicy, QuoteAnswer, RoundPolicy,
};
pub use node::{
    Action, AttestationConfig, CommFailure, Deletion, Ignored, NodeAttestation, NodeSnapshot,
    Notification, NotificationKind, QuoteAlgs, Reachability, RequestId, RoundOutcome,
};
pub use severity::{RatedEvent, RatedFailure, SeverityConfig, SeverityConfigError, SeverityRule};
pub use state::{AttestationStatus, InvalidState, OperationalState};
pub use status::{NodeStatus, StatusEnrolment, VigilStatus};
pub use time::UnixTime;

#[cfg(test)]
mod tests;
