//! What the verifier's response engine keeps: the actions it took on nodes
//! ([`ResponseActions`]) and the known-good measurement sets nodes may be relearnt to
//! ([`KnownGoodSets`]), with the earlier policy versions a relearn replaced.

use async_trait::async_trait;

use crate::StoreError;

/// One response action taken on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    /// The node.
    pub agent_id: String,
    /// The event that triggered it.
    pub event_uuid: String,
    /// The rule that asked for it.
    pub rule: String,
    /// The action (`notify`, `revoke`, `quarantine`, `shutdown`, `exec`, `relearn`).
    pub action: String,
    /// `done`, `failed` or `dry_run`.
    pub outcome: String,
    /// What happened (the error when it failed, what would have run in dry-run).
    pub detail: String,
    /// When (epoch seconds).
    pub at: i64,
}

/// A known-good measurement set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownGood {
    /// Its name (primary key).
    pub name: String,
    /// The hardware class it applies to.
    pub class: String,
    /// The measurements, JSON text (`{"pcrs": {...}, "files": {...}}`).
    pub measurements: String,
    /// Who recorded it.
    pub recorded_by: String,
    /// When (epoch seconds).
    pub recorded_at: i64,
}

/// A node's policies replaced by a relearn, kept for audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// The node.
    pub agent_id: String,
    /// Its TPM policy before the relearn, JSON text.
    pub tpm_policy: String,
    /// Its runtime policy before the relearn, JSON text, if it had one.
    pub runtime_policy: Option<String>,
    /// Why it was replaced (the set adopted).
    pub reason: String,
    /// When (epoch seconds).
    pub at: i64,
}

/// Persistence of response actions.
#[async_trait]
pub trait ResponseActions: Send + Sync {
    /// Records one action.
    async fn record(&self, action: &ActionRecord) -> Result<(), StoreError>;

    /// The node's last `limit` actions, newest first.
    async fn recent(&self, agent_id: &str, limit: u32) -> Result<Vec<ActionRecord>, StoreError>;
}

/// Persistence of known-good sets and relearnt policies.
#[async_trait]
pub trait KnownGoodSets: Send + Sync {
    /// Records a set; [`StoreError::AlreadyExists`] if the name is taken.
    async fn add(&self, set: &KnownGood) -> Result<(), StoreError>;

    /// The set named `name`, or `None`.
    async fn get(&self, name: &str) -> Result<Option<KnownGood>, StoreError>;

    /// Every set, by name; only those of `class` if given.
    async fn list(&self, class: Option<&str>) -> Result<Vec<KnownGood>, StoreError>;

    /// Deletes a set; [`StoreError::NotFound`] if there is none.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// Replaces the node's TPM policy and (when given) the text of its runtime policy,
    /// keeping the old ones as a [`PolicyVersion`], in one transaction.
    /// [`StoreError::NotFound`] if the node is gone.
    async fn adopt(
        &self,
        agent_id: &str,
        tpm_policy: &str,
        runtime_policy: Option<&str>,
        reason: &str,
        at: i64,
    ) -> Result<(), StoreError>;

    /// The node's earlier policy versions, oldest first.
    async fn versions(&self, agent_id: &str) -> Result<Vec<PolicyVersion>, StoreError>;
}
