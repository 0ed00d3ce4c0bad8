//! vigil-verifier's integration tests: one binary, one module per suite (each test binary
//! links the crate's whole dependency tree, so one per crate keeps a cold build short). One
//! suite: `cargo test -p vigil-verifier --test it attest::`.

// First, so that its `on_both_backends!` is in scope in the suites.
#[macro_use]
mod support;

mod adversarial;
mod api;
mod attest;
mod bad_input;
mod crash;
mod events;
mod faults;
mod figures;
mod fleet;
mod gate;
mod identity;
mod keylime_tenant;
mod ops;
mod real_logs;
mod response;
