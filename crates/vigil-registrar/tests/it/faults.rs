//! Faults under a running registrar: its SQLite database write-locked by another
//! connection past the store's busy timeout, and its PostgreSQL connections terminated
//! (`pg_terminate_backend`). A registration under the lock fails with a server error
//! once the timeout is over (not a hang, nothing stored) while reads still work; once the
//! lock is released, or after the connections were dropped, registrations are stored
//! again without a restart.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection as _;
use support::{b64, keylime_file, Env};

/// A registration with Keylime's test EK and AK.
fn registration() -> Option<Vec<u8>> {
    let body = json!({
        "ek_tpm": b64(&keylime_file("ek.pub")),
        "aik_tpm": b64(&keylime_file("ak.pub")),
        "ip": "127.0.0.1",
        "port": 9002,
    });
    Some(serde_json::to_vec(&body).expect("JSON"))
}

async fn register(env: &Env, id: &str) -> (u16, Value) {
    tokio::time::timeout(
        Duration::from_secs(60),
        env.http("POST", &format!("/v2.6/agents/{id}"), registration()),
    )
    .await
    .unwrap_or_else(|_| panic!("registering {id} hung"))
}

/// The registered ids, sorted.
async fn ids(env: &Env) -> Value {
    let (code, v) = env.admin("GET", "/v2.6/agents/").await;
    assert_eq!(code, 200, "{v}");
    let mut ids: Vec<String> =
        serde_json::from_value(v["results"]["uuids"].clone()).expect("a list of ids");
    ids.sort();
    json!(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_fails_cleanly_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("reg.db").display());
    let env = Env::start(&db, |_| {}).await;
    assert_eq!(register(&env, "a1").await.0, 200);

    let mut locker = sqlx::SqliteConnection::connect(&db).await.expect("open");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .expect("take the write lock");
    let (code, v) = register(&env, "a2").await;
    assert_eq!((code, &v["code"]), (500, &json!(500)), "{v}");
    assert_eq!(ids(&env).await, json!(["a1"]), "reads work under the lock");

    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("release");
    drop(locker);
    let (code, v) = register(&env, "a2").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&env).await, json!(["a1", "a2"]));
    env.stop().await;
}

async fn postgres_connections_dropped(url: String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    // The registrar's connections carry a name of their own, so only they are
    // terminated (other tests share the server).
    let name = format!("vigil_reg_fault_{}_{nanos}", std::process::id());
    let env = Env::start(&format!("{url}&application_name={name}"), |_| {}).await;
    let mut terminated = 0i64;
    for id in ["a1", "a2", "a3"] {
        let (code, v) = register(&env, id).await;
        assert_eq!(code, 200, "{id}: {v}");
        let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
        terminated += sqlx::query_scalar::<_, i64>(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .expect("terminate");
    }
    assert!(
        terminated > 0,
        "no connection of the registrar was terminated"
    );
    assert_eq!(ids(&env).await, json!(["a1", "a2", "a3"]));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_dropped_and_reconnected() {
    vigil_testkit::db::with_postgres(postgres_connections_dropped).await;
}
