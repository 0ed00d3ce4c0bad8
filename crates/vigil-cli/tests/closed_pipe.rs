//! Issue 18, item 2: output into a pipe nobody reads ends quietly, with the status of a
//! tool killed by SIGPIPE (never 0 or 1, which are verdicts).
//!
//! A test binary of its own, with one test: while a child's pipe exists, any process
//! another test thread forks holds a copy of its read end until that process execs, and
//! an output smaller than the pipe's buffer is then written without EPIPE — the child
//! exits 0 through no fault of its own. Alone in its binary, nothing else forks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(path)
}

#[test]
fn writing_into_a_closed_pipe_ends_quietly() {
    let log = shared("testdata/tpm2-tools/event-arch-linux.bin");
    let log = log.to_str().expect("UTF-8 path");
    for args in [
        &["eventlog", "dump", log][..],
        &["eventlog", "dump", log, "--json"][..],
        &["eventlog", "replay", log][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(args)
            .env_remove("VIGIL_STATE_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vigil");
        // The reader is gone before the first write, as `| head` is after its lines.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for vigil");
        assert_eq!(out.status.code(), Some(141), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}
