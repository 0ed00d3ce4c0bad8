//! # vigil-store
//!
//! Vigil's persistence, and the only crate that knows SQL. The registrar and the
//! verifier see typed repositories, one trait per aggregate:
//!
//! - [`RegistrarAgents`]: registrar records, with Keylime's TPM-identity rules.
//! - [`VerifierAgents`]: verifier enrolments and attestation state, one round's result
//!   written atomically.
//! - [`Policies`]: named runtime and measured-boot policies.
//! - [`Leases`]: which verifier replica attests which agent.
//! - [`Notices`]: revocation notice deliveries not yet made.
//! - [`HardwareClasses`]: hardware classes and their golden PCR values (the trust gate).
//! - [`Outbox`]: integrity events not yet delivered to every sink.
//! - [`ResponseActions`] and [`KnownGoodSets`]: the response engine's actions, and the
//!   known-good measurements nodes may be relearnt to.
//!
//! [`keylime`] reads a Keylime database and imports it through these repositories
//! (`vigil store import-keylime`).
//!
//! The SQL behind them all is written once (`sql/`), generic over a small `Dialect`
//! trait; each backend file holds only its connection setup and dialect constants:
//! SQLite (the embedded default: one file, WAL, foreign keys on) and PostgreSQL (shared
//! by registrar and verifier replicas). [`Store::open`] picks one from the URL and
//! applies the schema migrations.
//! Queries are plain runtime SQL (no compile-time checking), so building needs no
//! database. See `docs/store.md` for the schema and the lease model.
//!
//! The store never reads a clock: every time (lease expiry, round timestamps) comes in
//! as an argument in epoch seconds.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod classes;
mod error;
mod identities;
pub mod keylime;
mod leases;
mod migrations;
mod notices;
mod outbox;
mod policies;
mod postgres;
mod registrar;
mod response;
mod sql;
mod sqlite;
mod verifier;

use std::sync::Arc;

pub use classes::{HardwareClass, HardwareClasses};
pub use error::{Entity, StoreError};
pub use identities::{Identities, NonceUse};
pub use leases::{Fence, Fleet, Lease, Leases};
pub use notices::{NewNotice, NoticeLease, Notices, PendingNotice};
pub use outbox::{NewEvent, Outbox, OutboxRow};
pub use policies::{checksum, MbPolicy, NewMbPolicy, NewRuntimePolicy, Policies, RuntimePolicy};
pub use registrar::{
    IdentityField, RegisterOutcome, RegistrarAgent, RegistrarAgents, Registration,
};
pub use response::{ActionRecord, KnownGood, KnownGoodSets, PolicyVersion, ResponseActions};
pub use verifier::{
    AgentState, AgentStatusRecord, EnrolledAgent, Enrolment, FailureRecord, ImaProgress, PolicyRef,
    QuoteAlgs, RoundOutcome, RoundUpdate, RoundWrite, VerifierAgent, VerifierAgents,
};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: a local file (`sqlite://path?mode=rwc`).
    Sqlite,
    /// PostgreSQL (`postgres://user@host:port/db`).
    Postgres,
}

/// An open store: a connection pool to one backend, handing out the repositories.
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Sqlite(Arc<sql::SqlStore<sqlx::Sqlite>>),
    Postgres(Arc<sql::SqlStore<sqlx::Postgres>>),
}

impl std::fmt::Debug for Store {
    // The URL is not kept, so nothing secret can leak through Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish()
    }
}

impl Store {
    /// Connects to the database at `url` and brings its schema up to date.
    ///
    /// `sqlite://PATH?mode=rwc` (or `sqlite:PATH`) opens or creates a SQLite file in WAL
    /// mode with foreign keys on and a busy timeout; `postgres://…` / `postgresql://…`
    /// connects to PostgreSQL (any libpq-style URL parameters sqlx accepts, e.g.
    /// `?options=-c%20search_path%3Dvigil` to use a schema).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map_or(url, |(s, _)| s);
        let inner = match scheme {
            "sqlite" => Inner::Sqlite(Arc::new(sqlite::open(url).await?)),
            "postgres" | "postgresql" => Inner::Postgres(Arc::new(postgres::open(url).await?)),
            other => {
                return Err(StoreError::UnsupportedUrl {
                    scheme: other.to_owned(),
                })
            }
        };
        Ok(Self { inner })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Registrar records.
    pub fn registrar_agents(&self) -> &dyn RegistrarAgents {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Verifier enrolments and attestation state.
    pub fn verifier_agents(&self) -> &dyn VerifierAgents {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Named runtime and measured-boot policies.
    pub fn policies(&self) -> &dyn Policies {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Verifier replicas' leases on agents.
    pub fn leases(&self) -> &dyn Leases {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Workload identity: issued nonces and identities.
    pub fn identities(&self) -> &dyn Identities {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Revocation notice deliveries not yet made.
    pub fn notices(&self) -> &dyn Notices {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Integrity events not yet delivered.
    pub fn outbox(&self) -> &dyn Outbox {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Response actions taken on nodes.
    pub fn response_actions(&self) -> &dyn ResponseActions {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Known-good measurement sets and relearnt policies.
    pub fn known_good(&self) -> &dyn KnownGoodSets {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Hardware classes (the provisioning trust gate).
    pub fn hardware_classes(&self) -> &dyn HardwareClasses {
        match &self.inner {
            Inner::Sqlite(s) => s.as_ref(),
            Inner::Postgres(s) => s.as_ref(),
        }
    }

    /// Whether the database answers: one trivial query (`SELECT 1`) on a pooled
    /// connection, for readiness checks. Fails once the store is closed.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Sqlite(s) => s.ping().await,
            Inner::Postgres(s) => s.ping().await,
        }
    }

    /// Closes every pooled connection (waits for those in use to be returned).
    pub async fn close(&self) {
        match &self.inner {
            Inner::Sqlite(s) => s.pool.close().await,
            Inner::Postgres(s) => {
                s.pool.close().await;
                s.lease_pool.close().await;
            }
        }
    }
}
