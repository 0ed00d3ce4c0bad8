//! The repositories, written once for every backend.
//!
//! [`SqlStore<D>`] implements the five repository traits over a connection pool of any
//! sqlx database `D` that is a [`Dialect`]. The SQL is the same on SQLite and
//! PostgreSQL (numbered `$n` placeholders, `RETURNING`, `ON CONFLICT … DO UPDATE`,
//! `CAST`); the few things that differ are the dialect's constants: how a write
//! transaction begins, how a read-only snapshot begins, the row-lock clauses
//! PostgreSQL needs and SQLite (one writer at a time) has none of, and the spelling of
//! two column types in the migrations.
//!
//! The code is generic rather than written for sqlx's `Any` driver: `Any` rejects
//! SQLite's `BOOLEAN` columns and cannot carry SQLite's connection options (WAL, busy
//! timeout), and it converts every argument and row at run time. Being generic, each
//! backend gets its own monomorphised, natively typed copy.
//!
//! One file per aggregate (`registrar.rs`, `policies.rs`, `verifier.rs`, `leases.rs`, `notices.rs`,
//! `outbox.rs`, `response.rs`)
//! holds its SQL; the pure rules they apply inside their transactions stay in the
//! aggregate modules of the crate root.

mod classes;
mod identities;
mod leases;
mod notices;
mod outbox;
mod policies;
mod registrar;
mod response;
mod verifier;

use sqlx::{Database, Decode, Encode, Pool, Transaction, Type};

use crate::StoreError;

/// What differs between the SQL backends. Implemented by `sqlx::Sqlite`
/// (`src/sqlite.rs`) and `sqlx::Postgres` (`src/postgres.rs`).
pub(crate) trait Dialect: Database {
    /// Starts a transaction that reads and then writes: on SQLite it must take the write
    /// lock before its first read, on PostgreSQL a plain `BEGIN` (rows are locked with
    /// [`Self::FOR_UPDATE`]).
    const BEGIN_WRITE: &'static str;
    /// Starts a read-only transaction whose reads all see one snapshot.
    const BEGIN_SNAPSHOT: &'static str;
    /// Appended to a `SELECT` of rows the transaction will change or whose key it
    /// relies on: a row lock, or nothing where the write lock covers the database.
    const FOR_UPDATE: &'static str;
    /// Appended to a `SELECT` of a row that must not be deleted before the transaction
    /// ends (a policy an enrolment references).
    const FOR_SHARE: &'static str;
    /// Appended to the candidate query of a claim (over the claimed table aliased `a`:
    /// agent leases, notice and event deliveries): lock the candidates and skip those a
    /// concurrent claimer holds.
    const SKIP_LOCKED: &'static str;
    /// Appended to a `SELECT` over `verifier_agents a` outer-joined to other tables: lock
    /// the agent's row only.
    const FOR_UPDATE_OF_A: &'static str;
    /// The column type of byte strings (TPM structures, DER), `{bytes}` in the
    /// migrations.
    const BYTES: &'static str;
    /// The column definition of an auto-numbered `BIGINT` primary key, `{id}` in the
    /// migrations.
    const ID_PRIMARY_KEY: &'static str;

    /// How many rows a statement changed (sqlx has no trait method for it).
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// A Rust type the shared SQL binds and reads as a column value on backend `D`.
pub(crate) trait ColumnType<D: Database>:
    Type<D> + for<'r> Decode<'r, D> + for<'q> Encode<'q, D> + Send
{
}

impl<D: Database, T> ColumnType<D> for T where
    T: Type<D> + for<'r> Decode<'r, D> + for<'q> Encode<'q, D> + Send
{
}

/// Writes an `impl` of [`SqlStore<D>`] (inherent, or of a repository trait) for every
/// [`Dialect`], with the bounds the shared SQL needs of a driver. Rust does not let a
/// bound on `Dialect` imply bounds on other types (`String: Type<D>`; rust-lang/rust
/// #20671), so they are spelt here once instead of on every impl.
macro_rules! for_every_dialect {
    ($(#[$attr:meta])* impl SqlStore { $($body:tt)* }) => {
        for_every_dialect!(@bounded [$(#[$attr])*] [] { $($body)* });
    };
    ($(#[$attr:meta])* impl $trait:ident for SqlStore { $($body:tt)* }) => {
        for_every_dialect!(@bounded [$(#[$attr])*] [$trait for] { $($body)* });
    };
    (@bounded [$($attr:tt)*] [$($trait_for:tt)*] { $($body:tt)* }) => {
        $($attr)*
        impl<D> $($trait_for)* $crate::sql::SqlStore<D>
        where
            D: $crate::sql::Dialect,
            for<'c> &'c mut D::Connection: sqlx::Executor<'c, Database = D>,
            for<'q> D::Arguments<'q>: sqlx::IntoArguments<'q, D>,
            for<'r> &'r str: sqlx::ColumnIndex<D::Row>,
            usize: sqlx::ColumnIndex<D::Row>,
            for<'q> &'q str: sqlx::Encode<'q, D>,
            for<'q> Option<&'q str>: sqlx::Encode<'q, D>,
            str: sqlx::Type<D>,
            String: $crate::sql::ColumnType<D>,
            Option<String>: $crate::sql::ColumnType<D>,
            Vec<u8>: $crate::sql::ColumnType<D>,
            Option<Vec<u8>>: $crate::sql::ColumnType<D>,
            i64: $crate::sql::ColumnType<D>,
            Option<i64>: $crate::sql::ColumnType<D>,
            i32: $crate::sql::ColumnType<D>,
            bool: $crate::sql::ColumnType<D>,
        {
            $($body)*
        }
    };
}
use for_every_dialect;

/// Every repository over one connection pool of backend `D`, leases over their own.
pub(crate) struct SqlStore<D: Database> {
    pub(crate) pool: Pool<D>,
    /// Where [`Leases`](crate::Leases) run: on PostgreSQL a small pool of its own, so a
    /// replica's lease renewals do not queue behind thousands of node tasks' rounds
    /// (renewed late, the leases would expire under a busy replica and its nodes
    /// churn); on SQLite the same pool (one writer at a time anyway).
    pub(crate) lease_pool: Pool<D>,
}

impl<D: Dialect> SqlStore<D> {
    /// Starts a read-modify-write transaction ([`Dialect::BEGIN_WRITE`]).
    async fn begin(&self, op: &'static str) -> Result<Transaction<'static, D>, StoreError> {
        self.pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(StoreError::db(op))
    }

    /// Starts a read-only snapshot transaction ([`Dialect::BEGIN_SNAPSHOT`]).
    async fn begin_snapshot(
        &self,
        op: &'static str,
    ) -> Result<Transaction<'static, D>, StoreError> {
        self.pool
            .begin_with(D::BEGIN_SNAPSHOT)
            .await
            .map_err(StoreError::db(op))
    }
}

for_every_dialect! {
    impl SqlStore {
        /// One trivial query on a pooled connection: the database answers.
        pub(crate) async fn ping(&self) -> Result<(), StoreError> {
            let mut conn = self.pool.acquire().await.map_err(StoreError::db("ping"))?;
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .map_err(StoreError::db("ping"))?;
            Ok(())
        }
    }
}

async fn commit<D: Database>(
    tx: Transaction<'static, D>,
    op: &'static str,
) -> Result<(), StoreError> {
    tx.commit().await.map_err(StoreError::db(op))
}

/// Reads column `col` of `row` as `T`.
fn get<'r, T, R>(row: &'r R, col: &'static str) -> Result<T, StoreError>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(col).map_err(StoreError::db("decode a row"))
}

/// Reads a port column (a nullable `BIGINT`).
fn port(field: &'static str, v: Option<i64>) -> Result<Option<u16>, StoreError> {
    v.map(|p| crate::error::unsigned(field, p)).transpose()
}
