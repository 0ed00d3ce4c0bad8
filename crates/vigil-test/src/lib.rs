//! # vigil-test
//!
//! Harnesses shared by Vigil's integration tests, so each lives once:
//!
//! - [`swtpm`]: a private software TPM per test, driven with tpm2-tools;
//! - [`db`]: a throw-away database per test, on SQLite (a temporary file) or
//!   PostgreSQL (a schema of its own, dropped afterwards).
//!
//! Both skip with a printed note when their tool or server is missing, except under
//! `CI`, where a missing one is a failure: CI must never stop testing silently.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod db;
pub mod swtpm;

/// True when running under CI (`CI` set to anything but empty, `false` or `0`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
