//! vigil-core's integration tests: one binary, one module per suite (each test binary links
//! the crate's whole dependency tree, so one per crate keeps a cold build short). One
//! suite: `cargo test -p vigil-core --test it eventlog_tpm2_tools::`.

mod eventlog_tpm2_tools;
mod eventlog_yaml;
mod ima_keylime_diff;
mod ima_policy;
mod mb_keylime_diff;
mod payload_keylime;
mod quote_keylime_diff;

// vigil-testkit's skip reporting, included by path (public, as in vigil-testkit): a
// dev-dependency on vigil-testkit would be a cycle (its `keylime` feature needs
// vigil-tls, which needs vigil-core).
#[path = "../../../vigil-testkit/src/skip.rs"]
pub mod skip;
