//! Revocation notice deliveries still to be made (compat §6.6).
//!
//! The verifier records one [`PendingNotice`] per (notice, channel, target) before its
//! first attempt, deletes it once delivered (or given up), and records each failed
//! attempt with the time of the next one, so a restarted verifier resumes delivery
//! instead of dropping the notice. The store keeps the notice as the opaque signed
//! JSON it is sent as: what is delivered after a restart is byte for byte what was
//! recorded.
//!
//! When replicas share the database each delivery is leased like an agent
//! ([`crate::Leases`]): recorded held by the replica that makes it ([`NoticeLease`]),
//! renewed while that replica lives ([`Notices::renew`]), and claimed by another once
//! the lease expired ([`Notices::claim`]), so a dead replica's deliveries are made.

use async_trait::async_trait;

use crate::StoreError;

/// A delivery to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotice {
    /// The node the notice is about.
    pub agent_id: String,
    /// The channel that delivers it (`agent`, `webhook`).
    pub channel: String,
    /// Where the channel delivers it (a peer agent's id, a URL).
    pub target: String,
    /// The signed notice, as sent (JSON text).
    pub notice: String,
}

/// A recorded delivery not yet made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNotice {
    /// The row's id.
    pub id: i64,
    /// The node the notice is about.
    pub agent_id: String,
    /// The channel that delivers it.
    pub channel: String,
    /// Where the channel delivers it.
    pub target: String,
    /// The signed notice, as sent (JSON text).
    pub notice: String,
    /// When it was recorded (epoch seconds).
    pub created_at: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (epoch seconds).
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// Who holds a delivery, until when (epoch seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeLease {
    /// The replica.
    pub holder: String,
    /// When the lease expires; the delivery is free from then on.
    pub until: i64,
}

/// Persistence of pending notice deliveries.
#[async_trait]
pub trait Notices: Send + Sync {
    /// Records `deliveries` (all or none), due at `now`, held under `lease` when
    /// replicas share the database (else free: any verifier resuming takes them).
    /// Returns them, in order.
    async fn record(
        &self,
        deliveries: &[NewNotice],
        now: i64,
        lease: Option<&NoticeLease>,
    ) -> Result<Vec<PendingNotice>, StoreError>;

    /// Claims for `lease` up to `limit` deliveries that are free or whose lease expired
    /// at or before `now` (a dead replica's). Concurrent callers never get the same
    /// row. Returns them, oldest first.
    async fn claim(
        &self,
        lease: &NoticeLease,
        now: i64,
        limit: u32,
    ) -> Result<Vec<PendingNotice>, StoreError>;

    /// Extends every unexpired delivery lease of `lease.holder` to `lease.until`.
    /// Returns how many.
    async fn renew(&self, lease: &NoticeLease, now: i64) -> Result<u64, StoreError>;

    /// Every pending delivery, oldest first.
    async fn pending(&self) -> Result<Vec<PendingNotice>, StoreError>;

    /// The pending deliveries due at or before `now`, earliest first.
    async fn due(&self, now: i64) -> Result<Vec<PendingNotice>, StoreError>;

    /// Forgets delivery `id` (delivered, or given up). Returns whether it existed.
    async fn delivered(&self, id: i64) -> Result<bool, StoreError>;

    /// Records a failed attempt at delivery `id`: one more attempt, the next due at
    /// `next_attempt_at`. Returns the row, `None` if it no longer exists.
    async fn failed(
        &self,
        id: i64,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<Option<PendingNotice>, StoreError>;
}
