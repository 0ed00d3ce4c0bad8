//! The store's one error type.
//!
//! Outcomes a service maps to a specific HTTP status have their own variant
//! (`NotFound` → 404, `AlreadyExists` and `PolicyInUse` → 409, `LeaseLost` → stop
//! attesting that agent); everything the database itself reports is `Database`, with
//! the operation named and the driver error as the source.

use std::fmt;

/// What kind of record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entity {
    /// A registrar record (`registrar_agents`).
    RegistrarAgent,
    /// A verifier enrolment (`verifier_agents`).
    VerifierAgent,
    /// A named runtime policy (`runtime_policies`, Keylime's allowlists).
    RuntimePolicy,
    /// A named measured-boot policy (`mb_policies`).
    MeasuredBootPolicy,
    /// A hardware class (Vigil's trust gate).
    HardwareClass,
    /// A known-good measurement set (`known_good`).
    KnownGood,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RegistrarAgent => "registrar agent",
            Self::VerifierAgent => "verifier agent",
            Self::RuntimePolicy => "runtime policy",
            Self::MeasuredBootPolicy => "measured-boot policy",
            Self::HardwareClass => "hardware class",
            Self::KnownGood => "known-good set",
        })
    }
}

/// An error from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL has a scheme the store does not speak.
    #[error("unsupported database url scheme {scheme:?}: expected sqlite: or postgres:")]
    UnsupportedUrl {
        /// The scheme found (the part before `:`), never the whole URL: it may hold a password.
        scheme: String,
    },
    /// The record does not exist.
    #[error("{entity} {id:?} not found")]
    NotFound {
        /// What was looked up.
        entity: Entity,
        /// Its id or name.
        id: String,
    },
    /// A record with this id or name exists already.
    #[error("{entity} {id:?} already exists")]
    AlreadyExists {
        /// What was inserted.
        entity: Entity,
        /// Its id or name.
        id: String,
    },
    /// The policy cannot be deleted: agents still reference it.
    #[error("{entity} {name:?} is in use by {agents} agent(s), {agent_id:?} first")]
    PolicyInUse {
        /// Runtime or measured-boot policy.
        entity: Entity,
        /// The policy's name.
        name: String,
        /// How many verifier agents reference it.
        agents: u64,
        /// The first of them by id (Keylime's 409 names one); empty in the unlikely
        /// case the database's foreign key refused the deletion instead of the check.
        agent_id: String,
    },
    /// The caller's lease on the agent was taken over or released: another replica may
    /// be attesting it, so this replica's write was refused.
    #[error("lease on agent {agent_id:?} is no longer held by {holder:?} with epoch {epoch}")]
    LeaseLost {
        /// The agent.
        agent_id: String,
        /// The holder that tried to write.
        holder: String,
        /// The epoch it held.
        epoch: u64,
    },
    /// A value cannot be stored or read back in its typed form (a negative counter, a
    /// port above 65535, a list column that is not a JSON array of strings).
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// The column or field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Applying the schema migrations failed.
    #[error("database migration failed")]
    Migrate(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database reported an error.
    #[error("database error while trying to {op}")]
    Database {
        /// What the store was doing, e.g. "insert verifier agent".
        op: &'static str,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps a driver error, naming the operation.
    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |e| Self::Database {
            op,
            source: Box::new(e),
        }
    }
}

/// Whether a driver error is a unique-key violation (a concurrent insert of the same key).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Whether a driver error is a foreign-key violation.
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Converts a count or timestamp read from a signed column to its unsigned model type.
pub(crate) fn unsigned<T: TryFrom<i64>>(field: &'static str, v: i64) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| StoreError::InvalidValue {
        field,
        reason: format!("{v} is out of range"),
    })
}

/// Converts an unsigned model value to the signed 64-bit column type both backends share.
pub(crate) fn signed<T: TryInto<i64> + Copy + fmt::Display>(
    field: &'static str,
    v: T,
) -> Result<i64, StoreError> {
    v.try_into().map_err(|_| StoreError::InvalidValue {
        field,
        reason: format!("{v} does not fit a 64-bit signed column"),
    })
}

/// `NotFound` when a keyed write touched no row.
pub(crate) fn found(rows: u64, entity: Entity, id: &str) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::NotFound {
            entity,
            id: id.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// `AlreadyExists` for a unique-key violation, else a database error.
pub(crate) fn exists_or_db(
    e: sqlx::Error,
    entity: Entity,
    id: &str,
    op: &'static str,
) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::AlreadyExists {
            entity,
            id: id.to_owned(),
        }
    } else {
        StoreError::db(op)(e)
    }
}
