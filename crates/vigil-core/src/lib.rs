//! # vigil-core
//!
//! The deterministic heart of Vigil: every parser and verifier for TPM 2.0 remote
//! attestation evidence, with no network, database, clock, TPM or randomness of its own.
//! Inputs go in, verdicts come out, so every verdict is reproducible in a test, fuzzable
//! and benchmarkable. Services (`vigil-agent`, the registrar, the verifier) are thin
//! shells that drive this crate.
//!
//! Modules follow the domain:
//! - [`attestation`]: the verifier's per-node attestation engine (states, retries,
//!   severity, revocation triggers), a state machine with time passed in.
//! - [`events`]: integrity events (verdict changes, new boots, relearns, actions) for
//!   the verifier's sinks.
//! - [`failure`]: Keylime-compatible failure events (event ids, context, recoverability).
//! - [`hash`]: hash algorithms and inline digests shared by all evidence types.
//! - [`ima`]: the IMA measurement list (`ascii_runtime_measurements`): parsing,
//!   template hashes, PCR 10 replay, incremental attestation, validation.
//! - [`policy`]: policies that evidence is judged against (Keylime runtime policies).
//! - [`tpm`]: TPM 2.0 structures and quotes.
//! - [`eventlog`]: the TCG PC Client (UEFI) event log and measured boot.
//! - [`payload`]: Keylime's U/V bootstrap key and encrypted payloads.
//! - [`relearn`]: adopting changed measurements that known-good sets cover.
//! - [`revocation`]: signed revocation notices.
//! - [`results`]: the trust gate's signed attestation results (EAR tokens).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attestation;
pub mod eventlog;
pub mod events;
pub mod failure;
pub mod hash;
pub mod ima;
pub mod payload;
pub mod policy;
pub mod relearn;
pub mod results;
pub mod revocation;
pub mod tpm;

pub use hash::{Digest, HashAlg};
