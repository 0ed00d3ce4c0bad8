//! The `vigil` binary's integration tests: one binary, one module per suite (each test
//! binary links the crate's whole dependency tree, so one per crate keeps a cold build
//! short). One suite: `cargo test -p vigil-cli --test it cli::`.

mod cli;
mod config_import;
mod demo;
mod ekcert_swtpm;
mod gate_token;
mod keylime_deployment;
mod keylime_differential;
mod keylime_import;
mod keylime_measured_boot;
mod policy_create_diff;
mod policy_sign_diff;
mod swtpm_tpm2_tools;
mod tenant;
mod ux;
