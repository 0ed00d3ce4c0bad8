//! vigil-spire's integration tests: one binary, one module per suite. One suite:
//! `cargo test -p vigil-spire --test it spire::`.

mod spire;
