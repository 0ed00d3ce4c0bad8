//! vigil-registrar's integration tests: one binary, one module per suite (each test binary
//! links the crate's whole dependency tree, so one per crate keeps a cold build short). One
//! suite: `cargo test -p vigil-registrar --test it api::`.

// First, so that its `on_both_backends!` is in scope in the suites.
#[macro_use]
mod support;

mod api;
mod bad_input;
mod devid;
mod faults;
mod keylime_interop;
mod notify;
mod ops;
mod swtpm;
