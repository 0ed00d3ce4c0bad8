//! Workload identity (docs/spire.md): the verifier's side of the `/vigil/v1/identity/…`
//! routes that is not HTTP — the nonces it issues (each used once, until it expires;
//! kept in the store, so every replica and a restart see them spent) and the eviction
//! hook run for the identities issued on a node that fails attestation (also kept in
//! the store).

use std::collections::BTreeMap;
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use tracing::{info, warn};
use vigil_store::Store;

/// How long an issued nonce may be used: an identity quote carries no time the verifier
/// checks, so its nonce's age is what bounds it.
pub(crate) const NONCE_TTL: Duration = Duration::from_secs(300);
/// The shortest nonce accepted by `/vigil/v1/identity/verify`.
pub(crate) const MIN_NONCE_LEN: usize = 16;
/// Characters of the nonces issued: base32's, as Keylime's SPIRE plugin uses.
const NONCE_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// The length of the nonces issued.
const NONCE_LEN: usize = 32;
/// How long the eviction command may run.
const EVICT_TIMEOUT: Duration = Duration::from_secs(30);

/// The class and labels of a node, as selectors need them: the hardware class and
/// labels of its enrolment (docs/trust-gate.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeLabels {
    pub(crate) class: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
}

impl NodeLabels {
    /// The class and labels of node `agent`.
    pub(crate) fn of(agent: &vigil_store::VerifierAgent) -> Self {
        Self {
            class: agent.enrolment.hardware_class.clone(),
            labels: agent.enrolment.labels.clone(),
        }
    }
}

/// A fresh nonce: [`NONCE_LEN`] characters of base32 from the OS's randomness.
pub(crate) fn new_nonce() -> String {
    let mut bytes = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(NONCE_ALPHABET[usize::from(b & 31)]))
        .collect()
}

/// The eviction hook, shared by the node tasks.
#[derive(Debug)]
pub(crate) struct IdentityBook {
    evict_command: Vec<String>,
}

impl IdentityBook {
    pub(crate) fn new(evict_command: Vec<String>) -> Self {
        Self { evict_command }
    }

    /// Node `agent_id` failed attestation: in the background, each identity issued on
    /// it is taken from `store` and the eviction command runs for it. This is where an
    /// integrity event (`identity.evicted`) is to be emitted once the event sinks exist.
    pub(crate) fn failed(&self, store: &Store, agent_id: &str) {
        let (store, agent_id, command) = (
            store.clone(),
            agent_id.to_owned(),
            self.evict_command.clone(),
        );
        tokio::spawn(async move {
            let ids = match store.identities().take_issued(&agent_id).await {
                Ok(ids) => ids,
                Err(e) => {
                    warn!(
                        agent_id,
                        "cannot read the identities issued on the failed node: {e}"
                    );
                    return;
                }
            };
            for spiffe_id in ids {
                warn!(
                    agent_id,
                    spiffe_id, "attestation failed: evicting the node's workload identity"
                );
                if command.is_empty() {
                    continue;
                }
                let argv: Vec<String> = command
                    .iter()
                    .map(|a| {
                        a.replace("{spiffe_id}", &spiffe_id)
                            .replace("{uuid}", &agent_id)
                    })
                    .collect();
                run_evict(&agent_id, &argv).await;
            }
        });
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
    fn nonces_are_base32_and_fresh() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_eq!(a.len(), NONCE_LEN);
        assert!(a.bytes().all(|c| NONCE_ALPHABET.contains(&c)));
        assert_ne!(a, b);
    }
}
