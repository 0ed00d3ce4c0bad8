//! vigil-tls's integration tests: one binary, one module per suite (each test binary links
//! the crate's whole dependency tree, so one per crate keeps a cold build short). One
//! suite: `cargo test -p vigil-tls --test it resumption::`.

mod resumption;

// vigil-testkit's skip reporting, included by path (public, as in vigil-testkit): a
// dev-dependency on vigil-testkit would be a cycle (its `keylime` feature needs
// vigil-tls).
#[path = "../../../vigil-testkit/src/skip.rs"]
pub mod skip;
