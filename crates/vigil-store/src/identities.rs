//! Workload identity (docs/spire.md): the nonces the verifier issues for identity
//! quotes and the identities issued on each node.
//!
//! A nonce is usable once, and only until it expires: an identity quote carries no
//! time the verifier checks, so a quote captured once must not be accepted again, now
//! or after a restart, on any replica. An identity issued on a node is recorded so that
//! the node's failure evicts it, also after a restart. Time is the caller's (epoch
//! seconds).

use async_trait::async_trait;

use crate::StoreError;

/// What [`Identities::use_nonce`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceUse {
    /// Issued, unexpired and unused: now used.
    Fresh,
    /// Issued and already used.
    Used,
    /// Never issued, or expired (and forgotten).
    Unknown,
}

/// Persistence of workload-identity nonces and issued identities.
#[async_trait]
pub trait Identities: Send + Sync {
    /// Records `nonce` as issued at `now`, and forgets nonces issued before
    /// `forget_before` (used or not).
    async fn issue_nonce(
        &self,
        nonce: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<(), StoreError>;

    /// Uses `nonce` at `now` if it was issued at or after `issued_after` and is unused.
    /// Concurrent callers: one gets [`NonceUse::Fresh`].
    async fn use_nonce(
        &self,
        nonce: &str,
        now: i64,
        issued_after: i64,
    ) -> Result<NonceUse, StoreError>;

    /// Records that `spiffe_id` was issued on `agent_id` at `now` (once per pair).
    async fn record_issued(
        &self,
        agent_id: &str,
        spiffe_id: &str,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Removes and returns the identities issued on `agent_id`, oldest first.
    async fn take_issued(&self, agent_id: &str) -> Result<Vec<String>, StoreError>;
}
