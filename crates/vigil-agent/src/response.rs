//! Response actions the verifier asks for (`POST /vigil/v1/actions`): `quarantine`
//! (drop the network but for the control plane) and `shutdown` (power off).
//!
//! A request is a revocation-notice envelope (`{"msg", "signature"}`) whose message has
//! `type` `vigil_quarantine` or `vigil_shutdown`, this agent's id, and the time it was
//! signed; it must verify with the node's `RevocationNotifier` certificate (the one
//! revocation notices verify with), name this agent, and be at most
//! [`MAX_AGE_SECS`] old. The action then runs its script (`quarantine_script`,
//! `shutdown_script`; the defaults ship in `crates/vigil-agent/actions/`), the request
//! JSON on stdin and `VIGIL_CONTROL_PLANE` set from `control_plane`. With
//! `response_dry_run` (the default) nothing runs: the agent logs and answers what it
//! would have done.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

/// How old a signed request may be.
pub const MAX_AGE_SECS: u64 = 300;

/// How this agent runs response actions.
#[derive(Debug, Clone)]
pub struct ResponseActions {
    /// Only log and answer what would be done.
    pub dry_run: bool,
    /// The quarantine script.
    pub quarantine: PathBuf,
    /// The shutdown script.
    pub shutdown: PathBuf,
    /// The control plane's addresses, for the quarantine script.
    pub control_plane: Vec<String>,
    /// How long a script may run.
    pub timeout: Duration,
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    /// The message's type is no response action.
    #[error("unknown action type {0:?}")]
    Unknown(String),
    /// It names another agent.
    #[error("the request is for agent {0:?}")]
    OtherAgent(String),
    /// It is too old (or from the future).
    #[error("the request was signed {0} s away from now")]
    Stale(i64),
}

/// What a verified message asks for: the action's name, after the checks.
pub fn check(message: &Value, agent_id: &str, now_ms: u64) -> Result<&'static str, ActionError> {
    let kind = message["type"].as_str().unwrap_or_default();
    let action = match kind {
        "vigil_quarantine" => "quarantine",
        "vigil_shutdown" => "shutdown",
        other => return Err(ActionError::Unknown(other.to_owned())),
    };
    let target = message["agent_id"].as_str().unwrap_or_default();
    if target != agent_id {
        return Err(ActionError::OtherAgent(target.to_owned()));
    }
    let signed_ms = message["context"]
        .as_str()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|c| c["time_ms"].as_u64())
        .unwrap_or(0);
    let age = (i128::from(now_ms) - i128::from(signed_ms)) / 1000;
    if age.unsigned_abs() > u128::from(MAX_AGE_SECS) {
        return Err(ActionError::Stale(i64::try_from(age).unwrap_or(i64::MAX)));
    }
    Ok(action)
}

impl ResponseActions {
    /// Runs (or, in dry-run, describes) `action` for the verified `message`: the answer
    /// `{"outcome": "done"|"failed"|"dry_run", "detail": …}`.
    pub async fn run(&self, action: &str, message: &Value) -> Value {
        let (script, what) = match action {
            "quarantine" => (
                &self.quarantine,
                "drop the network except to the control plane",
            ),
            _ => (&self.shutdown, "power the node off"),
        };
        let event = message["event_id"].as_str().unwrap_or_default();
        if self.dry_run {
            let detail = format!(
                "dry-run: would run {} to {what} (event {event})",
                script.display()
            );
            warn!(action, "{detail}");
            return json!({ "outcome": "dry_run", "detail": detail });
        }
        info!(action, script = %script.display(), event, "running response action");
        let child = tokio::process::Command::new(script)
            .env("VIGIL_CONTROL_PLANE", self.control_plane.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return failed(format!("{}: {e}", script.display())),
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(message.to_string().as_bytes()).await;
        }
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => failed(format!(
                "{}: killed after {:?}",
                script.display(),
                self.timeout
            )),
            Ok(Err(e)) => failed(format!("{}: {e}", script.display())),
            Ok(Ok(out)) if out.status.success() => {
                json!({ "outcome": "done", "detail": format!("ran {} to {what}", script.display()) })
            }
            Ok(Ok(out)) => failed(format!(
                "{}: {}: {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .chars()
                    .take(1024)
                    .collect::<String>()
            )),
        }
    }
}

fn failed(detail: String) -> Value {
    warn!("response action failed: {detail}");
    json!({ "outcome": "failed", "detail": detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: &str, agent: &str, time_ms: u64) -> Value {
        json!({
            "type": kind,
            "agent_id": agent,
            "event_id": "u1",
            "context": json!({ "time_ms": time_ms }).to_string(),
        })
    }

    #[test]
    fn only_fresh_actions_for_this_agent() {
        let now = 1_000_000_000;
        assert_eq!(
            check(&msg("vigil_quarantine", "a", now), "a", now),
            Ok("quarantine")
        );
        assert_eq!(
            check(&msg("vigil_shutdown", "a", now - 1000), "a", now),
            Ok("shutdown")
        );
        assert!(matches!(
            check(&msg("revocation", "a", now), "a", now),
            Err(ActionError::Unknown(_))
        ));
        assert!(matches!(
            check(&msg("vigil_shutdown", "b", now), "a", now),
            Err(ActionError::OtherAgent(_))
        ));
        assert!(matches!(
            check(&msg("vigil_shutdown", "a", now - 301_000), "a", now),
            Err(ActionError::Stale(_))
        ));
    }

    #[tokio::test]
    async fn dry_run_says_what_it_would_do_and_scripts_run_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let script = dir.path().join("q.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat > {}\necho \"$VIGIL_CONTROL_PLANE\" >> {}\n",
                out.display(),
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut actions = ResponseActions {
            dry_run: true,
            quarantine: script.clone(),
            shutdown: PathBuf::from("/nonexistent/shutdown.sh"),
            control_plane: vec!["10.0.0.1".into()],
            timeout: Duration::from_secs(5),
        };
        let m = msg("vigil_quarantine", "a", 0);
        let a = actions.run("quarantine", &m).await;
        assert_eq!(a["outcome"], "dry_run");
        assert!(a["detail"].as_str().unwrap().contains("would run"), "{a}");
        assert!(!out.exists());
        actions.dry_run = false;
        assert_eq!(actions.run("quarantine", &m).await["outcome"], "done");
        let got = std::fs::read_to_string(&out).unwrap();
        assert!(
            got.contains("vigil_quarantine") && got.contains("10.0.0.1"),
            "{got}"
        );
        assert_eq!(actions.run("shutdown", &m).await["outcome"], "failed");
    }
}
