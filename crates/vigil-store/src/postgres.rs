//! The PostgreSQL backend: pool, and the PostgreSQL spelling of the [`Dialect`]. The
//! repositories themselves are in `sql/`.
//!
//! Concurrency: read-modify-write calls lock the rows they read (`FOR UPDATE`, or
//! `FOR SHARE` for a policy an enrolment references), so two replicas serialise on
//! the same agent and never on different ones. Lease acquisition skips rows another
//! replica is claiming (`FOR UPDATE … SKIP LOCKED`) instead of waiting for them.

use sqlx::postgres::{PgPoolOptions, PgQueryResult};
use sqlx::Postgres;

use crate::sql::{Dialect, SqlStore};
use crate::{migrations, StoreError};

/// Pool size: the verifier's round tasks share it; PostgreSQL's default limit is 100
/// connections for every replica together.
const MAX_CONNECTIONS: u32 = 10;
/// Connections of the leases' own pool: the lease loop's, and node tasks releasing a
/// lease to hand their node over.
const LEASE_CONNECTIONS: u32 = 2;

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_SHARE: &'static str = " FOR SHARE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE OF a SKIP LOCKED";
    const FOR_UPDATE_OF_A: &'static str = " FOR UPDATE OF a";

    const BYTES: &'static str = "BYTEA";
    const ID_PRIMARY_KEY: &'static str = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY";

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Connects to the database at `url` and applies the migrations.
pub(crate) async fn open(url: &str) -> Result<SqlStore<Postgres>, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect(url)
        .await
        .map_err(StoreError::db("connect to PostgreSQL"))?;
    migrations::run(&pool).await?;
    let lease_pool = PgPoolOptions::new()
        .max_connections(LEASE_CONNECTIONS)
        .connect(url)
        .await
        .map_err(StoreError::db("connect to PostgreSQL"))?;
    Ok(SqlStore { pool, lease_pool })
}
