//! Running the actions rules ask for, each ending in an [`Outcome`] that is recorded
//! and sent out as an `action` event: `exec` runs a command here; `quarantine` and
//! `shutdown` are signed requests to the node's agent (`POST /vigil/v1/actions`), which
//! verifies them with the node's revocation certificate and runs its configured script
//! (dry-run unless the node's operator turned that off).

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use vigil_core::attestation::UnixTime;
use vigil_core::revocation::{asctime, RevocationKey, RevocationMessage, RevocationNotice};

use crate::agent_client::{AgentClient, NodeTarget};

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// `done`, `failed` or `dry_run`.
    pub(crate) outcome: &'static str,
    /// What happened, or why it failed.
    pub(crate) detail: String,
}

impl Outcome {
    pub(crate) fn done(detail: impl Into<String>) -> Self {
        Self {
            outcome: "done",
            detail: detail.into(),
        }
    }

    pub(crate) fn failed(detail: impl Into<String>) -> Self {
        Self {
            outcome: "failed",
            detail: detail.into(),
        }
    }
}

/// The most of a command's output kept in its outcome.
const OUTPUT_LIMIT: usize = 2048;

/// Runs `command` with `event` (JSON) on its stdin, killed after `timeout`.
pub(crate) async fn exec(command: &[String], timeout: Duration, event: &str) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome::failed("empty command");
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Outcome::failed(format!("{program}: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not a failure.
        let _ = stdin.write_all(event.as_bytes()).await;
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Outcome::failed(format!("{program}: killed after {} s", timeout.as_secs())),
        Ok(Err(e)) => Outcome::failed(format!("{program}: {e}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let text: String = text.trim().chars().take(OUTPUT_LIMIT).collect();
            if out.status.success() {
                Outcome::done(format!("{program}: exit 0: {text}"))
            } else {
                Outcome::failed(format!("{program}: {}: {text}", out.status))
            }
        }
    }
}

/// The signed request for `action` (`quarantine`, `shutdown`) on `agent_id` after
/// event `uuid`: a revocation-notice envelope (the agent already verifies those with
/// the node's revocation certificate) whose `type` is `vigil_<action>`.
pub(crate) fn signed_request(
    action: &str,
    agent_id: &str,
    uuid: &str,
    key: Option<&RevocationKey>,
    now: UnixTime,
) -> Result<Vec<u8>, String> {
    let key = key.ok_or("the node has no revocation key, so its agent cannot verify actions")?;
    let message = RevocationMessage {
        kind: format!("vigil_{action}"),
        ip: Value::Null,
        agent_id: agent_id.to_owned(),
        port: Value::Null,
        tpm_policy: Value::Null,
        meta_data: Value::Null,
        event_time: asctime(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)),
        event_id: Some(uuid.to_owned()),
        severity_label: None,
        context: Some(json!({ "time_ms": now.as_millis() }).to_string()),
    };
    let notice = RevocationNotice::sign(&message, Some(key)).map_err(|e| e.to_string())?;
    serde_json::to_vec(&notice).map_err(|e| e.to_string())
}

/// Asks the node's agent to run `action`; its answer (`{"outcome", "detail"}`) is the
/// outcome.
pub(crate) async fn on_agent(agents: &AgentClient, target: &NodeTarget, body: Vec<u8>) -> Outcome {
    match agents.response_action(target, body).await {
        Err(e) => Outcome::failed(format!("the agent did not take it: {e}")),
        Ok(answer) => {
            let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            let results = v.get("results").unwrap_or(&v);
            let detail = results["detail"].as_str().unwrap_or_default().to_owned();
            match results["outcome"].as_str() {
                Some("dry_run") => Outcome {
                    outcome: "dry_run",
                    detail,
                },
                Some("done") => Outcome::done(detail),
                _ => Outcome::failed(format!("the agent answered {v}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_passes_the_event_and_bounds_the_time() {
        let cat = ["sh".to_owned(), "-c".to_owned(), "cat; exit 0".to_owned()];
        let out = exec(&cat, Duration::from_secs(5), r#"{"uuid":"u"}"#).await;
        assert_eq!(out.outcome, "done");
        assert!(out.detail.contains(r#"{"uuid":"u"}"#), "{out:?}");
        let fail = [
            "sh".to_owned(),
            "-c".to_owned(),
            "echo no >&2; exit 3".to_owned(),
        ];
        let out = exec(&fail, Duration::from_secs(5), "{}").await;
        assert_eq!(out.outcome, "failed");
        assert!(out.detail.contains("no"), "{out:?}");
        let slow = ["sleep".to_owned(), "5".to_owned()];
        let out = exec(&slow, Duration::from_millis(200), "{}").await;
        assert!(out.detail.contains("killed after"), "{out:?}");
        let out = exec(
            &["/nonexistent/hook".to_owned()],
            Duration::from_secs(1),
            "{}",
        )
        .await;
        assert_eq!(out.outcome, "failed");
    }
}
