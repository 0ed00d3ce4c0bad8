//! Workload identity (docs/spire.md): what the verifier remembers for the
//! `/vigil/v1/identity/…` routes — the nonces already used (a replayed nonce is
//! refused), the identities issued on each node, and the eviction hook run when such a
//! node fails attestation. Issued identities are kept in memory: after a restart the
//! verifier evicts only identities issued since.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tracing::{info, warn};
use vigil_core::attestation::UnixTime;

/// How long a used nonce is remembered; an identity quote older than this is refused
/// by its caller's own freshness (the plugin's nonce lives for one exchange).
pub(crate) const NONCE_MEMORY: Duration = Duration::from_secs(600);
/// The most nonces remembered at once; past it the oldest are forgotten first.
pub(crate) const MAX_NONCES: usize = 100_000;
/// The shortest nonce accepted by `/vigil/v1/identity/verify` (alphanumeric, as the
/// agent requires): shorter ones could be guessed and replayed.
pub(crate) const MIN_NONCE_LEN: usize = 16;
/// How long the eviction command may run.
const EVICT_TIMEOUT: Duration = Duration::from_secs(30);

/// The class and labels of a node, as selectors need them. The node's hardware class
/// and labels are stored by the admission gate (issue 20); until that is merged this
/// is the one place that yields them, empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeLabels {
    pub(crate) class: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
}

impl NodeLabels {
    /// The class and labels of node `agent` (nothing yet; see the type's doc).
    pub(crate) fn of(_agent: &vigil_store::VerifierAgent) -> Self {
        Self::default()
    }
}

/// Nonces seen, oldest first, and the set for lookups.
#[derive(Debug, Default)]
struct NonceLog {
    order: VecDeque<(UnixTime, String)>,
    seen: HashMap<String, UnixTime>,
}

impl NonceLog {
    /// Records `nonce` at `now`; `false` if it was seen within [`NONCE_MEMORY`].
    fn first_use(&mut self, nonce: &str, now: UnixTime) -> bool {
        while let Some((t, n)) = self.order.front() {
            if now.saturating_since(*t) < NONCE_MEMORY && self.order.len() < MAX_NONCES {
                break;
            }
            self.seen.remove(n);
            self.order.pop_front();
        }
        if self.seen.contains_key(nonce) {
            return false;
        }
        self.seen.insert(nonce.to_owned(), now);
        self.order.push_back((now, nonce.to_owned()));
        true
    }
}

/// The verifier's workload-identity memory, shared by the service and the node tasks.
#[derive(Debug)]
pub(crate) struct IdentityBook {
    nonces: Mutex<NonceLog>,
    /// agent id → the SPIFFE IDs issued on it.
    issued: Mutex<HashMap<String, Vec<String>>>,
    evict_command: Vec<String>,
}

impl IdentityBook {
    pub(crate) fn new(evict_command: Vec<String>) -> Self {
        Self {
            nonces: Mutex::default(),
            issued: Mutex::default(),
            evict_command,
        }
    }

    /// Whether `nonce` is used for the first time (it is remembered from now on).
    pub(crate) fn first_use(&self, nonce: &str, now: UnixTime) -> bool {
        self.nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_use(nonce, now)
    }

    /// Notes that `spiffe_id` was issued on node `agent_id`.
    pub(crate) fn issued(&self, agent_id: &str, spiffe_id: &str) {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let ids = issued.entry(agent_id.to_owned()).or_default();
        if !ids.iter().any(|i| i == spiffe_id) {
            info!(agent_id, spiffe_id, "workload identity issued");
            ids.push(spiffe_id.to_owned());
        }
    }

    /// Node `agent_id` failed attestation: each identity issued on it is forgotten and
    /// the eviction command runs for it, in the background. This is where an integrity
    /// event (`identity.evicted`) is to be emitted once the event sinks exist.
    pub(crate) fn failed(&self, agent_id: &str) {
        let ids = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(agent_id)
            .unwrap_or_default();
        for spiffe_id in ids {
            warn!(
                agent_id,
                spiffe_id, "attestation failed: evicting the node's workload identity"
            );
            if self.evict_command.is_empty() {
                continue;
            }
            let argv: Vec<String> = self
                .evict_command
                .iter()
                .map(|a| {
                    a.replace("{spiffe_id}", &spiffe_id)
                        .replace("{uuid}", agent_id)
                })
                .collect();
            let agent_id = agent_id.to_owned();
            tokio::spawn(async move { run_evict(&agent_id, &argv).await });
        }
    }
}

/// Runs the eviction command `argv` for `agent_id`, logging how it ended.
async fn run_evict(agent_id: &str, argv: &[String]) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(EVICT_TIMEOUT, child).await {
        Ok(Ok(out)) if out.status.success() => {
            info!(agent_id, command = %program, "eviction command succeeded");
        }
        Ok(Ok(out)) => warn!(
            agent_id,
            command = %program,
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "eviction command failed"
        ),
        Ok(Err(e)) => warn!(agent_id, command = %program, "eviction command cannot run: {e}"),
        Err(_) => {
            warn!(agent_id, command = %program, "eviction command timed out after {EVICT_TIMEOUT:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_used_once_within_the_memory() {
        let mut log = NonceLog::default();
        let t = UnixTime::from_secs(1_000);
        assert!(log.first_use("A1B2C3D4E5F6G7H8", t));
        assert!(!log.first_use("A1B2C3D4E5F6G7H8", t.saturating_add(Duration::from_secs(5))));
        assert!(log.first_use("Z1B2C3D4E5F6G7H8", t));
        // Forgotten once older than the memory.
        let later = t.saturating_add(NONCE_MEMORY + Duration::from_secs(1));
        assert!(log.first_use("A1B2C3D4E5F6G7H8", later));
    }
}
