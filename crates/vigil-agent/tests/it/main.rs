//! vigil-agent's integration tests: one binary, one module per suite (each test binary
//! links the crate's whole dependency tree, so one per crate keeps a cold build short). One
//! suite: `cargo test -p vigil-agent --test it agent::`.

mod agent;
mod bad_input;
mod bench;
mod socket;
