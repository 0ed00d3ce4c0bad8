//! A database per test: [`with_sqlite`] gives a SQLite URL in a temporary directory,
//! [`with_postgres`] a PostgreSQL URL whose `search_path` is a schema created for this
//! test alone (`vigil_test_<pid>_<n>_<nanos>`) and dropped afterwards, even when the
//! body panics — the approach of `vigil-store`'s conformance suite.
//!
//! The PostgreSQL server is `VIGIL_TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`, else the same as user `root`. Without
//! one, [`with_postgres`] returns without running the body, after [`crate::skip`]ping
//! the calling test file's PostgreSQL half, except under `CI`, where it panics.

use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// Runs `body` with the URL of a fresh SQLite database file (`?mode=rwc`).
pub async fn with_sqlite<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("vigil.db").display()
    );
    body(url).await;
}

/// An admin connection to the test PostgreSQL and the URL it used, or `None` when there
/// is none (after [`crate::skip`]ping the file at `caller`; a panic under `CI`).
async fn connect_admin(caller: &'static Location<'static>) -> Option<(sqlx::PgConnection, String)> {
    let candidates = match std::env::var("VIGIL_TEST_DATABASE_URL") {
        Ok(url) => vec![url],
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/test".to_owned(),
            "postgres://root@127.0.0.1:5432/test".to_owned(),
        ],
    };
    let mut errors = Vec::new();
    for url in candidates {
        match sqlx::PgConnection::connect(&url).await {
            Ok(conn) => return Some((conn, url)),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    crate::skip_at(
        caller,
        "PostgreSQL",
        &format!(
            "no PostgreSQL server ({}); set VIGIL_TEST_DATABASE_URL",
            errors.join("; ")
        ),
    );
    None
}

/// Runs `body` with the URL of a PostgreSQL schema of its own; the schema is dropped
/// afterwards and a panic in `body` is re-raised after the cleanup. Not an `async fn`,
/// which could not be `#[track_caller]`: a skip names the caller's file.
#[track_caller]
pub fn with_postgres<F, Fut>(body: F) -> impl Future<Output = ()>
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    in_schema(Location::caller(), body)
}

async fn in_schema<F, Fut>(caller: &'static Location<'static>, body: F)
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let Some((mut admin, base)) = connect_admin(caller).await else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let schema = format!(
        "vigil_test_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create test schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");
    // The body runs as its own task so a failed assertion still reaches the cleanup.
    let result = tokio::spawn(body(url)).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .expect("drop test schema");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
