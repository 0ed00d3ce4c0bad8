//! Faults under a running verifier, on real parts: its SQLite database locked by another
//! writer for longer than the busy timeout, its PostgreSQL connections terminated
//! mid-run, the node's `vigil-agent` stopped, and the node's TPM (swtpm) killed under a
//! running `vigil-agent`. Requests and rounds fail cleanly while the fault lasts (an
//! answer in bounded time, nothing half-stored), the verifier recovers on its own when
//! the fault is gone, and a node it cannot attest is never reported as trusted.
//! (A verifier killed mid-round: `crash.rs`; a replica killed and restarted and a full
//! SQLite disk: `attest.rs`.) Without swtpm or PostgreSQL the tests skip with a note,
//! except under `CI`.

use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection as _;
use support::{wait_for, Client, Pki, TestAgent};
use vigil_testkit::Swtpm;

const FILES: [(&str, &[u8]); 2] = [("/usr/bin/a", b"a v1"), ("/usr/bin/b", b"b v1")];

async fn status(c: &Client, a: SocketAddr, id: &str) -> Value {
    c.call(a, "GET", &format!("/v2.6/agents/{id}"), None)
        .await
        .1["results"]
        .clone()
}

async fn count(c: &Client, a: SocketAddr, id: &str) -> u64 {
    status(c, a, id).await["attestation_count"]
        .as_u64()
        .unwrap_or(0)
}

/// The status once the node has at least `at_least` successful rounds.
async fn wait_count(c: &Client, a: SocketAddr, id: &str, at_least: u64) -> Value {
    wait_for(60, &format!("{id} attested {at_least} times"), || async {
        let s = status(c, a, id).await;
        (s["attestation_count"].as_u64().unwrap_or(0) >= at_least).then_some(s)
    })
    .await
}

async fn test_node(test: &str, pki: &Pki) -> Option<TestAgent> {
    let agent = TestAgent::new(test, &pki.tls_dir().join("cacert.crt")).await?;
    for (p, c) in FILES {
        agent.measure(p, c);
    }
    Some(agent)
}

async fn readyz(c: &Client, a: SocketAddr) -> (u16, Value) {
    c.call(a, "GET", "/vigil/v1/readyz", None).await
}

/// Another writer holds SQLite's write lock for longer than the store's busy timeout
/// (10 s): an enrolment fails with a server error once the timeout is over (not a hang,
/// nothing stored), no round is recorded, `readyz` reports the database; once the lock
/// is released the verifier records rounds again and enrols, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_fails_cleanly_and_recovers() {
    let pki = Pki::new();
    let Some(n1) = test_node("verifier_sqlite_locked", &pki).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("cv.db").display());
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(true));
    let body = n1.enrolment(&TestAgent::policy_b64(&FILES));
    let (code, r) = c
        .call(a, "POST", "/v2.6/agents/n1", Some(body.clone()))
        .await;
    assert_eq!(code, 200, "{r}");
    wait_count(&c, a, "n1", 2).await;

    let mut locker = sqlx::SqliteConnection::connect(&db).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let locked_count = count(&c, a, "n1").await;

    let (code, r) = tokio::time::timeout(
        Duration::from_secs(60),
        c.call(a, "POST", "/v2.6/agents/n2", Some(body.clone())),
    )
    .await
    .expect("an enrolment under a locked database is answered");
    assert!((500..600).contains(&code), "{code} {r}");
    assert_eq!(r["code"], code, "{r}");
    let r = wait_for(40, "readyz reports the locked database", || async {
        let (code, r) = readyz(&c, a).await;
        (code == 503).then_some(r)
    })
    .await;
    assert!(
        r["results"]["reason"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{r}"
    );
    // Reads still work (WAL), and no round was recorded under the lock.
    let s = status(&c, a, "n1").await;
    assert_eq!(s["attestation_count"], locked_count, "{s}");

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(locker);
    wait_for(40, "ready again", || async {
        (readyz(&c, a).await.0 == 200).then_some(())
    })
    .await;
    let s = wait_count(&c, a, "n1", locked_count + 2).await;
    assert_eq!(
        (
            s["operational_state"].clone(),
            s["attestation_status"].clone()
        ),
        (json!(3), json!("PASS")),
        "{s}"
    );
    // The refused enrolment left nothing behind, and enrolling works again.
    assert_eq!(
        c.call(a, "GET", "/v2.6/agents/n2", None).await.0,
        404,
        "half-stored"
    );
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n2", Some(body)).await;
    assert_eq!(code, 200, "{r}");
    v.shutdown().await;
}

/// Terminates every PostgreSQL backend whose `application_name` is `name`; how many.
async fn terminate(admin_url: &str, name: &str) -> i64 {
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1",
    )
    .bind(name)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

/// The verifier's PostgreSQL connections are terminated (`pg_terminate_backend`)
/// three times while it attests a node: it reconnects, attesting continues, the counters
/// never go backwards, and the node, its IMA offset and a stored policy are all there.
async fn postgres_connections_dropped(url: String) {
    let pki = Pki::new();
    let Some(n1) = test_node("verifier_pg_dropped", &pki).await else {
        return;
    };
    // The verifier's connections carry a name of their own, so only they are
    // terminated (other tests share the server).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("vigil_fault_{}_{nanos}", std::process::id());
    let v = support::start(&pki.config(&format!("{url}&application_name={name}"))).await;
    let (a, c) = (v.addr(), pki.client(true));
    let policy = TestAgent::policy_b64(&FILES);
    let (code, r) = c
        .call(
            a,
            "POST",
            "/v2.6/allowlists/p1",
            Some(json!({ "runtime_policy": policy })),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let mut body = n1.enrolment("");
    body["runtime_policy_name"] = json!("p1");
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(body)).await;
    assert_eq!(code, 200, "{r}");
    let mut last = wait_count(&c, a, "n1", 2).await["attestation_count"]
        .as_u64()
        .unwrap();

    let mut terminated = 0;
    for _ in 0..3 {
        terminated += terminate(&url, &name).await;
        // Counters never go backwards while it reconnects.
        for _ in 0..5 {
            let (code, r) = c.call(a, "GET", "/v2.6/agents/n1", None).await;
            if code == 200 {
                let now = r["results"]["attestation_count"].as_u64().unwrap();
                assert!(now >= last, "count went from {last} to {now}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = wait_count(&c, a, "n1", last + 2).await;
        assert_eq!(
            (
                s["operational_state"].clone(),
                s["attestation_status"].clone()
            ),
            (json!(3), json!("PASS")),
            "{s}"
        );
        last = s["attestation_count"].as_u64().unwrap();
    }
    assert!(
        terminated > 0,
        "no connection of the verifier was terminated"
    );

    // Nothing lost.
    let s = status(&c, a, "n1").await;
    assert_eq!(s["vigil"]["ima_next_entry"], 2, "{s}");
    assert_eq!(s["has_runtime_policy"], 1, "{s}");
    let (_, r) = c.call(a, "GET", "/v2.6/agents/", None).await;
    assert_eq!(r["results"]["uuids"], json!([["n1"]]));
    let (code, r) = c.call(a, "GET", "/v2.6/allowlists/p1", None).await;
    assert_eq!(code, 200, "{r}");
    wait_for(20, "ready", || async {
        (readyz(&c, a).await.0 == 200).then_some(())
    })
    .await;
    v.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_dropped_and_reconnected() {
    vigil_testkit::db::with_postgres(postgres_connections_dropped).await;
}

/// A real node: `vigil-agent` in-process on a swtpm, registered at an in-process
/// registrar, enrolled at the verifier with what the registrar holds (as the tenant
/// does).
struct RealNode {
    tpm: Swtpm,
    agent: Option<vigil_agent::Agent>,
    registrar: vigil_registrar::Registrar,
    _dir: tempfile::TempDir,
}

const UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";

impl RealNode {
    async fn start(test: &str, pki: &Pki) -> Option<Self> {
        let tpm = Swtpm::manufactured(test, &[])?;
        let dir = tempfile::tempdir().unwrap();
        let registrar = vigil_registrar::Registrar::start(&vigil_registrar::Config {
            port: 0,
            tls_port: 0,
            state_dir: dir.path().join("registrar"),
            tls_dir: pki.tls_dir(),
            ..vigil_registrar::Config::default()
        })
        .await
        .expect("registrar starts");
        let files: PathBuf = dir.path().join("measured");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("tool"), b"#!/bin/sh\necho tool\n").unwrap();
        let agent = vigil_agent::Agent::start(&vigil_agent::Config {
            uuid: UUID.into(),
            port: 0,
            contact_port: 0,
            registrar_port: registrar.http_addr().port(),
            tpm_tcti: tpm.tcti(),
            state_dir: dir.path().join("agent"),
            trusted_client_ca: vec![pki.tls_dir().join("cacert.crt")],
            ima_emulate: vec![files],
            ima_emulate_interval: 0,
            measuredboot_ml_path: dir.path().join("no-uefi-log"),
            registration_retry_max: 1,
            ..vigil_agent::Config::default()
        })
        .await
        .expect("agent starts");
        let mut rx = agent.registration();
        tokio::time::timeout(Duration::from_secs(60), async {
            while !matches!(
                *rx.borrow_and_update(),
                vigil_agent::Registration::Active { .. }
            ) {
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("the agent registered within 60 s");
        Some(Self {
            tpm,
            agent: Some(agent),
            registrar,
            _dir: dir,
        })
    }

    /// The enrolment the tenant would send: the AK and the agent's certificate from
    /// the registrar, no runtime policy (the IMA log is still replayed against PCR 10).
    async fn enrolment(&self, pki: &Pki) -> Value {
        let port = self.agent.as_ref().expect("running").addr().port();
        support::real_agent_enrolment(
            pki,
            self.registrar.https_addr(),
            UUID,
            port,
            "{\"mask\": \"0x400\"}".to_owned(),
            String::new(),
            Value::Null,
        )
        .await
    }

    async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
        self.registrar.shutdown().await;
    }
}

/// After a fault on the node, waits for the verifier to give up on it and checks that it
/// stays given up: FAILED or INVALID_QUOTE, `attestation_status` FAIL, no further
/// successful round; the final status.
async fn given_up(c: &Client, a: SocketAddr, before: u64) -> Value {
    let s = wait_for(60, "the node failed", || async {
        let s = status(c, a, "n1").await;
        matches!(s["operational_state"].as_u64(), Some(7 | 9)).then_some(s)
    })
    .await;
    for _ in 0..10 {
        let s = status(c, a, "n1").await;
        assert_eq!(s["attestation_status"], "FAIL", "{s}");
        // One round may have been recorded between the last check and the fault.
        assert!(
            s["attestation_count"].as_u64().unwrap() <= before + 1,
            "a round passed after the fault: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    s
}

/// The node's agent stops while it is attested: the verifier retries, then fails it as
/// not reachable (FAILED, `internal.verifier.not_reachable`), never PASS.
async fn stopped_agent_is_not_reachable(db: String) {
    let pki = Pki::new();
    let Some(mut node) = RealNode::start("verifier_agent_stopped", &pki).await else {
        return;
    };
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(true));
    let body = node.enrolment(&pki).await;
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(body)).await;
    assert_eq!(code, 200, "{r}");
    let before = wait_count(&c, a, "n1", 2).await["attestation_count"]
        .as_u64()
        .unwrap();
    node.agent.take().expect("running").shutdown().await;
    let s = given_up(&c, a, count(&c, a, "n1").await.max(before)).await;
    assert_eq!(s["operational_state"], 7, "{s}");
    assert_eq!(s["last_event_id"], "internal.verifier.not_reachable", "{s}");
    assert_eq!(s["vigil"]["reachability"]["status"], "unreachable", "{s}");
    v.shutdown().await;
    node.stop().await;
}

/// The node's TPM dies under its running agent: the agent answers errors instead of
/// quotes, and the verifier fails the node (not a trusted node, whatever the error).
async fn killed_tpm_fails_the_node(db: String) {
    let pki = Pki::new();
    let Some(mut node) = RealNode::start("verifier_tpm_killed", &pki).await else {
        return;
    };
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(true));
    let body = node.enrolment(&pki).await;
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(body)).await;
    assert_eq!(code, 200, "{r}");
    wait_count(&c, a, "n1", 2).await;
    node.tpm.kill();
    let before = count(&c, a, "n1").await;
    let s = given_up(&c, a, before).await;
    // The agent answers, but with errors instead of quotes: after its retries the
    // verifier fails the node as it does an unreachable one.
    assert_eq!(s["operational_state"], 7, "{s}");
    assert_eq!(s["last_event_id"], "internal.verifier.not_reachable", "{s}");
    v.shutdown().await;
    node.stop().await;
}

on_both_backends!(stopped_agent_is_not_reachable, killed_tpm_fails_the_node);
