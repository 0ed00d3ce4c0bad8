//! Skipping a test whose peer is missing (swtpm or tpm2-tools, the Keylime reference
//! venv, a PostgreSQL server), in one place, so that no skip is silent.
//!
//! Outside CI a skipped test returns early and libtest reports it `ok`. So [`skip`]
//! writes `SKIPPED: <suite>: <reason>` straight to the process's stderr (libtest
//! captures only what `print!` and `eprint!` write, so the line shows in a plain
//! `cargo test` run) and appends it to the file named by `VIGIL_SKIP_LOG`, which
//! `scripts/test.sh` empties before `cargo test` and prints, one line per suite, after
//! it. The suite is the test file that skipped: every function on the way here is
//! `#[track_caller]`. Under CI ([`under_ci`]) a missing peer fails the test instead:
//! CI must never stop testing silently.
//!
//! Only `std` here: vigil-core's tests include this file by path, since a
//! dev-dependency of vigil-core on vigil-testkit would be a cycle (the `keylime`
//! feature needs vigil-tls, which needs vigil-core).

use std::ffi::OsString;
use std::io::Write;
use std::panic::Location;

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`), where a
/// missing tool or database fails the test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips `test` because `reason` (a missing peer and how to provide it): under CI this
/// panics; otherwise it reports `SKIPPED: <the caller's file>: <reason>` (see the module
/// documentation) and the caller returns.
#[track_caller]
pub fn skip(test: &str, reason: &str) {
    skip_at(Location::caller(), test, reason);
}

/// [`skip`] with the caller's location taken earlier, for an `async` function (which
/// cannot be `#[track_caller]`): a `#[track_caller]` function that returns its future.
pub fn skip_at(caller: &Location<'_>, test: &str, reason: &str) {
    assert!(!under_ci(), "{test} ({caller}): {reason}");
    let line = format!("SKIPPED: {}: {reason}\n", caller.file());
    // Not `eprint!`: libtest would capture it, and a passing test's output is dropped.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("VIGIL_SKIP_LOG") {
        // One `write` of an `O_APPEND` file: lines from parallel tests do not interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("VIGIL_SKIP_LOG {}: {e}", log.to_string_lossy()));
    }
}

/// The Keylime reference venv's Python (`VIGIL_KEYLIME_PYTHON`, set by sourcing the env
/// file `scripts/keylime-reference.sh` prints), or `None` after [`skip`]ping `test`.
#[track_caller]
pub fn keylime_python(test: &str) -> Option<OsString> {
    let python = std::env::var_os("VIGIL_KEYLIME_PYTHON");
    if python.is_none() {
        skip(
            test,
            "no Keylime reference venv (VIGIL_KEYLIME_PYTHON is not set); \
             run: . \"$(bash scripts/keylime-reference.sh)\"",
        );
    }
    python
}
