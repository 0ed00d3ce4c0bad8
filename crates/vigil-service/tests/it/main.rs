//! vigil-service's integration tests: one binary, one module per suite. One suite:
//! `cargo test -p vigil-service --test it client::`.

mod client;
mod ops;
