//! Leases: which verifier replica attests which agent, and until when.
//!
//! Keylime pins an agent to one verifier for ever (compat §9.2): when that verifier
//! dies its agents silently stop being attested. Vigil's replicas instead hold a
//! time-limited lease per agent. A replica acquires free or expired leases, renews its
//! own before they expire, and releases them on shutdown; a dead replica's leases
//! expire and another replica takes them over.
//!
//! Every acquisition by a new holder bumps the lease's `epoch`. The pair
//! (holder, epoch) is a fencing token ([`Fence`]): a replica that stalled past expiry
//! and lost the agent to another replica can no longer write that agent's round
//! results ([`StoreError::LeaseLost`]).
//!
//! Time is the caller's (`now`, epoch seconds): the store never reads a clock, so lease
//! logic is testable and replicas only need roughly synchronised clocks (skew must stay
//! well under the lease duration).

use async_trait::async_trait;

use crate::StoreError;

/// A replica's lease on one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The agent.
    pub agent_id: String,
    /// The replica holding it.
    pub holder: String,
    /// When it expires (epoch seconds); free from then on.
    pub expires_at: i64,
    /// Bumped at every acquisition; with `holder` it fences writes.
    pub epoch: u64,
}

impl Lease {
    /// The fencing token of this lease, for [`crate::VerifierAgents::record_round`].
    pub fn fence(&self) -> Fence {
        Fence {
            holder: self.holder.clone(),
            epoch: self.epoch,
        }
    }
}

/// A fencing token: writes succeed only while this is still the agent's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease holder.
    pub holder: String,
    /// The lease epoch.
    pub epoch: u64,
}

/// The replicas sharing the nodes, as one replica sees them at its lease tick: what
/// its fair share of the nodes is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Every live replica (unexpired heartbeat) with the unexpired leases it holds,
    /// sorted by holder.
    pub replicas: Vec<(String, u64)>,
    /// The nodes enrolled: every one is to be leased by some replica.
    pub nodes: u64,
    /// The earliest expiry after `now` of a lease another replica holds: when the
    /// nodes of a replica that died become free.
    pub next_expiry: Option<i64>,
}

/// Persistence of leases on verifier agents.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Claims up to `limit` agents that have no lease or whose lease expired at or
    /// before `now`, for `ttl` seconds. Concurrent callers never get the same agent.
    /// Returns the new leases, sorted by agent id.
    async fn acquire(
        &self,
        holder: &str,
        now: i64,
        ttl: u32,
        limit: u32,
    ) -> Result<Vec<Lease>, StoreError>;

    /// Extends every unexpired lease of `holder` to `now + ttl`. Returns them, sorted;
    /// a lease missing from the result was lost (expired, or taken over).
    async fn renew(&self, holder: &str, now: i64, ttl: u32) -> Result<Vec<Lease>, StoreError>;

    /// Gives up `holder`'s lease on `agent_id`, if it holds it. Returns whether it did.
    async fn release(&self, holder: &str, agent_id: &str) -> Result<bool, StoreError>;

    /// Gives up every lease of `holder` and its heartbeat (clean shutdown). Returns
    /// how many leases.
    async fn release_all(&self, holder: &str) -> Result<u64, StoreError>;

    /// Notes `holder` alive until `now + ttl`, forgets replicas long gone, and returns
    /// the fleet as of `now`.
    async fn heartbeat(&self, holder: &str, now: i64, ttl: u32) -> Result<Fleet, StoreError>;

    /// The current lease row of `agent_id`, expired or not.
    async fn get(&self, agent_id: &str) -> Result<Option<Lease>, StoreError>;
}

/// Refuses a write unless the agent's lease row is still (holder, epoch).
pub(crate) fn check_fence(
    agent_id: &str,
    f: &Fence,
    current: Option<(String, i64)>,
) -> Result<(), StoreError> {
    let held = matches!(current, Some((h, e)) if h == f.holder && i64::try_from(f.epoch) == Ok(e));
    if held {
        Ok(())
    } else {
        Err(StoreError::LeaseLost {
            agent_id: agent_id.to_owned(),
            holder: f.holder.clone(),
            epoch: f.epoch,
        })
    }
}
