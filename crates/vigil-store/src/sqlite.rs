//! The SQLite backend: connection options, pool, and the SQLite spelling of the
//! [`Dialect`]. The repositories themselves are in `sql/`.
//!
//! The file is opened in WAL mode (readers never block the writer), with foreign keys
//! on (SQLite leaves them off by default) and a busy timeout, so a writer waits for
//! another instead of failing at once. SQLite has one writer at a time: every write
//! transaction starts with `BEGIN IMMEDIATE`, taking the write lock before its first
//! read, so a read-modify-write can never fail halfway with a stale snapshot
//! (`SQLITE_BUSY_SNAPSHOT`) and needs no row locks.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite};

use crate::sql::{Dialect, SqlStore};
use crate::{migrations, StoreError};

/// Pool size: readers run in parallel under WAL; writers queue on the busy timeout.
const MAX_CONNECTIONS: u32 = 4;

/// How long a writer waits for the write lock before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Dialect for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // A deferred transaction in WAL mode reads one snapshot from its first read on.
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";
    // The write lock taken by BEGIN IMMEDIATE covers every row; SQLite has no row locks.
    const FOR_UPDATE: &'static str = "";
    const FOR_SHARE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const FOR_UPDATE_OF_A: &'static str = "";

    const BYTES: &'static str = "BLOB";
    // AUTOINCREMENT: an id is never reused, even after the highest row is deleted.
    const ID_PRIMARY_KEY: &'static str = "INTEGER PRIMARY KEY AUTOINCREMENT";

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Opens (with `mode=rwc`, creates) the database at `url` and applies the migrations.
pub(crate) async fn open(url: &str) -> Result<SqlStore<Sqlite>, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(StoreError::db("parse the SQLite URL"))?
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable across application crashes in WAL mode; only a power
        // loss may drop the last transactions.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    // An in-memory database lives only as long as a connection to it: keep exactly
    // one, for ever (tests and experiments; deployments use a file).
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let pool = if in_memory {
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS)
    };
    // A COMMIT that fails (SQLITE_FULL on a full disk, an I/O error) may leave SQLite
    // rolled back while sqlx still counts the transaction open, and the rollback sqlx
    // then sends fails too: such a connection could never begin a transaction again.
    // A connection still in a transaction when it is handed out is closed instead (a
    // new one is opened), so the store recovers once the cause is gone.
    let pool =
        pool.before_acquire(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }));
    let pool = pool
        .connect_with(options)
        .await
        .map_err(StoreError::db("open the SQLite database"))?;
    migrations::run(&pool).await?;
    Ok(SqlStore {
        lease_pool: pool.clone(),
        pool,
    })
}
