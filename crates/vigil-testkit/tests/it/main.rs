//! vigil-testkit's own integration tests: one binary, one module per suite (each test
//! binary links the crate's whole dependency tree, so one per crate keeps a cold build
//! short). One suite: `cargo test -p vigil-testkit --test it keylime::`.

mod keylime;
