//! Integrity events not yet delivered to every sink (the verifier's outbox).
//!
//! A round's events are written with the round ([`crate::RoundUpdate::events`]), one row
//! per (event, sink), so an event exists exactly when its round is recorded. Delivery
//! loops [`Outbox::claim`] due rows under a lease (owner, expiry): a row stays with one
//! replica while it delivers, and goes to another once that lease expires (the replica
//! died mid-delivery). A row is deleted once its sink took the event; a failed attempt
//! releases the lease and sets the next attempt time. Delivery is therefore at least
//! once: a consumer de-duplicates by the event's uuid.

use async_trait::async_trait;

use crate::StoreError;

/// An event to deliver to each of `sinks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The event's uuid.
    pub uuid: String,
    /// The node it is about.
    pub agent_id: String,
    /// The event, JSON text, delivered byte for byte.
    pub event: String,
    /// The sinks to deliver it to (one row each).
    pub sinks: Vec<String>,
}

/// One delivery not yet made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The row's id.
    pub id: i64,
    /// The event's uuid.
    pub uuid: String,
    /// The node it is about.
    pub agent_id: String,
    /// The sink that delivers it.
    pub sink: String,
    /// The event, JSON text.
    pub event: String,
    /// When it was recorded (epoch seconds).
    pub created_at: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (epoch seconds).
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// Persistence of the event outbox.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Records `events` (all or none), due at `now`: events made outside a round
    /// (relearns, actions).
    async fn enqueue(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError>;

    /// Takes up to `limit` due rows (oldest first) whose lease is free, expired or
    /// `owner`'s, leasing them to `owner` until `now + lease_secs`.
    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_secs: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError>;

    /// Deletes row `id` (its sink took the event). Returns whether it existed.
    async fn delivered(&self, id: i64) -> Result<bool, StoreError>;

    /// Records a failed attempt at row `id`: one more attempt, the next due at
    /// `next_attempt_at`, the lease released.
    async fn failed(&self, id: i64, next_attempt_at: i64, error: &str) -> Result<(), StoreError>;

    /// How many deliveries are pending.
    async fn pending(&self) -> Result<u64, StoreError>;
}
