//! End to end: the verifier attesting test agents backed by real swtpm TPMs (quotes by
//! vigil-tpm, an IMA log extended into PCR 10), on SQLite and PostgreSQL.
//! Without swtpm the tests skip with a note, except under `CI`.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use support::{wait_for, Pki, TestAgent, B64};

const FILES: [(&str, &[u8]); 2] = [("/usr/bin/a", b"a v1"), ("/usr/bin/b", b"b v1")];

async fn status(pki: &Pki, addr: std::net::SocketAddr, id: &str) -> Value {
    pki.client(true)
        .call(addr, "GET", &format!("/v2.6/agents/{id}"), None)
        .await
        .1["results"]
        .clone()
}

async fn node(test: &str, pki: &Pki) -> Option<TestAgent> {
    let agent = TestAgent::new(test, &pki.tls_dir().join("cacert.crt")).await?;
    for (p, c) in FILES {
        agent.measure(p, c);
    }
    Some(agent)
}

async fn wait_count(pki: &Pki, addr: std::net::SocketAddr, id: &str, at_least: u64) -> Value {
    wait_for(60, &format!("{id} attested {at_least} times"), || async {
        let s = status(pki, addr, id).await;
        (s["attestation_count"].as_u64().unwrap_or(0) >= at_least).then_some(s)
    })
    .await
}

async fn attests_then_detects_a_changed_file(db: String) {
    let pki = Pki::new();
    let Some(agent) = node("verifier_attest_detect", &pki).await else {
        return;
    };
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(true));
    let (code, r) = c
        .call(
            a,
            "POST",
            "/v2.6/agents/n1",
            Some(agent.enrolment(&TestAgent::policy_b64(&FILES))),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let s = wait_count(&pki, a, "n1", 3).await;
    assert_eq!(s["operational_state"], 3, "{s}");
    assert_eq!(s["attestation_status"], "PASS");
    assert_eq!(
        (s["hash_alg"].as_str(), s["sign_alg"].as_str()),
        (Some("sha256"), Some("rsassa"))
    );
    assert_eq!(s["vigil"]["ima_next_entry"], 2);
    assert_eq!(v.parsed_runtime_policies(), 1);
    // V was delivered encrypted to the node key.
    let vkey = agent.vkey().expect("V delivered");
    let nk = vigil_core::payload::NodePrivateKey::from_pkcs8_der(&agent.nk_private_der).unwrap();
    assert_eq!(
        vigil_core::payload::decrypt_share(&nk, &vkey).unwrap(),
        [7u8; 32]
    );
    // Partial quotes from the stored offset: only new entries are fetched.
    let reqs = agent.requests();
    assert_eq!(reqs[0], 0);
    assert!(reqs[2..].iter().all(|&e| e == 2), "{reqs:?}");

    // A measured file changes: INVALID_QUOTE with Keylime's event id, and a notice.
    agent.measure("/usr/bin/a", b"a tampered");
    let s = wait_for(30, "INVALID_QUOTE", || async {
        let s = status(&pki, a, "n1").await;
        (s["operational_state"] == 9).then_some(s)
    })
    .await;
    assert_eq!(
        s["last_event_id"], "ima.validation.ima-ng.runtime_policy_hash",
        "{s}"
    );
    assert_eq!(s["attestation_status"], "FAIL");
    assert_eq!(s["severity_level"], 6);
    let failures = s["vigil"]["last_failures"].as_array().unwrap();
    let got = vigil_core::HashAlg::Sha256.hash(b"a tampered").to_hex();
    assert!(
        failures.iter().any(|f| f["context"]["got"] == got.as_str()),
        "{s}"
    );
    let notice = wait_for(10, "revocation notice", || async {
        agent.revocations().first().cloned()
    })
    .await;
    let msg: Value = serde_json::from_str(notice["msg"].as_str().unwrap()).unwrap();
    assert_eq!(msg["type"], "revocation");
    assert_eq!(msg["agent_id"], "n1");
    assert_eq!(msg["event_id"], "ima.validation.ima-ng.runtime_policy_hash");
    v.shutdown().await;
}

async fn unreachable_node_fails_as_unreachable(db: String) {
    let pki = Pki::new();
    let Some(mut agent) = node("verifier_attest_unreachable", &pki).await else {
        return;
    };
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(true));
    let body = agent.enrolment(&TestAgent::policy_b64(&FILES));
    assert_eq!(
        c.call(a, "POST", "/v2.6/agents/n1", Some(body)).await.0,
        200
    );
    wait_count(&pki, a, "n1", 2).await;
    agent.go_offline();
    let s = wait_for(30, "FAILED", || async {
        let s = status(&pki, a, "n1").await;
        (s["operational_state"] == 7).then_some(s)
    })
    .await;
    assert_eq!(s["last_event_id"], "internal.verifier.not_reachable", "{s}");
    assert_eq!(s["vigil"]["reachability"]["status"], "unreachable", "{s}");
    assert_eq!(s["vigil"]["reachability"]["attempts"], 3, "{s}");
    // The node had attested before: a comm_error notice goes out (nobody hears it
    // here, the only node is down); reactivate after the node is back → Get Quote.
    agent
        .serve(&pki.tls_dir().join("cacert.crt"), agent.addr.port())
        .await;
    assert_eq!(
        c.call(a, "PUT", "/v2.6/agents/n1/reactivate", None).await.0,
        200
    );
    let before = s["attestation_count"].as_u64().unwrap();
    let s = wait_count(&pki, a, "n1", before + 2).await;
    assert_eq!(s["operational_state"], 3, "{s}");
    v.shutdown().await;
}

async fn restart_keeps_state_and_ima_offset(db: String) {
    let pki = Pki::new();
    let Some(agent) = node("verifier_attest_restart", &pki).await else {
        return;
    };
    let config = pki.config(&db);
    let v = support::start(&config).await;
    let a = v.addr();
    let body = agent.enrolment(&TestAgent::policy_b64(&[
        FILES[0],
        FILES[1],
        ("/usr/bin/c", b"c"),
    ]));
    assert_eq!(
        pki.client(true)
            .call(a, "POST", "/v2.6/agents/n1", Some(body))
            .await
            .0,
        200
    );
    let before = wait_count(&pki, a, "n1", 3).await;
    v.shutdown().await;
    let seen = agent.requests().len();
    agent.measure("/usr/bin/c", b"c");

    let v = support::start(&config).await;
    let a = v.addr();
    let count = before["attestation_count"].as_u64().unwrap();
    let s = wait_count(&pki, a, "n1", count + 2).await;
    assert_eq!(s["operational_state"], 3, "{s}");
    assert_eq!(s["vigil"]["ima_next_entry"], 3, "{s}");
    // The first request after the restart continued from the stored offset.
    let after = &agent.requests()[seen..];
    assert_eq!(after[0], 2, "no full re-fetch after a restart: {after:?}");
    assert!(after.iter().all(|&e| e >= 2), "{after:?}");
    v.shutdown().await;
}

/// Keylime's `/usr/bin/dd` entry signed with `ima_keys/rsa2048.pem` (the vector of its
/// `test_ima_verification.py`), without PCR and template hash.
const SIGNED_DD: &str = "ima-sig sha256:d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef /usr/bin/dd 030204f3452d2301009dd340c852f37e35748363586939d4199b6684be27e7c1236ca1528f708372ed9cd52a0d991f66448790f5616ed5bd7f9bbd22193b1e3e54f6bf29a1497945a34d1b418b24f4cbeaef897bf3cebca27065ebb8761b46bc2662fe76f141245b9186a5ac8493c7f4976cf0d6dfc085c3e503e3f771bc3ccb121230db76fd8aba4f45f060ad64ab3afd99b4e52824b9eba12e93e46f9dcb2fa01d9cef89f298a0da02a82a4fb56924afd3e3c277a1302d99f770d488449df2d43eb5b174a0a528827e6877b965c2f0b7c89cf1aa26a7417a892df4c2294e2872d62748b72ea04ecb0689b5d792e615a9bf9d56f6e0f298560bf9441df0a22729c5f23389f028c25f";

/// A key the node measured into `.ima` before the verifier died still verifies the
/// signed entries that come after its restart: the learnt keyrings are stored with the
/// IMA offset, and the log is not re-read from entry 0 to learn them again.
async fn learned_keys_survive_a_crash(db: String) {
    use rustls::pki_types::pem::PemObject;
    let pki = Pki::new();
    let Some(agent) = node("verifier_learned_keys", &pki).await else {
        return;
    };
    let pem = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/keylime/test/data/ima_keys/rsa2048pub.pem"
    );
    let der = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_file(pem).unwrap();
    let key_digest = vigil_core::HashAlg::Sha256.hash(&der).to_hex();
    agent.record(&format!(
        "ima-buf sha256:{key_digest} .ima {}",
        hex::encode(&der)
    ));
    // /usr/bin/dd is not in the policy: only its signature, by the learnt key, passes it.
    let mut policy = TestAgent::policy(&FILES);
    policy["keyrings"] = serde_json::json!({ ".ima": [key_digest] });
    let config = pki.config(&db);
    let v = support::start(&config).await;
    let a = v.addr();
    let body = agent.enrolment(&B64.encode(policy.to_string()));
    assert_eq!(
        pki.client(true)
            .call(a, "POST", "/v2.6/agents/n1", Some(body))
            .await
            .0,
        200
    );
    let before = wait_count(&pki, a, "n1", 2).await;
    assert_eq!(before["vigil"]["ima_next_entry"], 3, "{before}");
    // Dies as a crash would: no clean shutdown.
    v.abort();
    let seen = agent.requests().len();
    agent.record(SIGNED_DD);

    let v = support::start(&config).await;
    let a = v.addr();
    let count = before["attestation_count"].as_u64().unwrap();
    let s = wait_for(30, "two rounds after the restart", || async {
        let s = status(&pki, a, "n1").await;
        (s["attestation_count"].as_u64().unwrap_or(0) >= count + 2 || s["operational_state"] != 3)
            .then_some(s)
    })
    .await;
    assert_eq!(s["operational_state"], 3, "{s}");
    assert_eq!(s["vigil"]["ima_next_entry"], 4, "{s}");
    let after = &agent.requests()[seen..];
    assert_eq!(after[0], 3, "no full re-fetch after a restart: {after:?}");
    v.shutdown().await;
}

/// A replica killed and started again at once with the same `replica_id` finds its
/// leases held under its own id by no task (the previous process's): it adopts them at
/// a new epoch and attests its node again, without waiting for them to expire.
async fn restarted_replica_adopts_its_leases(db: String) {
    let pki = Pki::new();
    let Some(n1) = node("verifier_replica_restart", &pki).await else {
        return;
    };
    let mut config = pki.config(&db);
    // Long enough that the lease cannot simply expire and be taken over in the test.
    config.lease_ttl = 60;
    config.replica_id = "r1".into();
    let r1 = support::start(&config).await;
    let body = n1.enrolment(&TestAgent::policy_b64(&FILES));
    assert_eq!(
        pki.client(true)
            .call(r1.addr(), "POST", "/v2.6/agents/n1", Some(body))
            .await
            .0,
        200
    );
    let before = wait_count(&pki, r1.addr(), "n1", 2).await["attestation_count"]
        .as_u64()
        .unwrap();
    // Dies as a crash would: the lease stays with "r1", unexpired.
    r1.abort();
    let r1 = support::start(&config).await;
    let s = wait_count(&pki, r1.addr(), "n1", before + 2).await;
    assert_eq!(s["operational_state"], 3, "{s}");
    assert_eq!(r1.attested_nodes(), 1);
    r1.shutdown().await;
}

/// A node whose rounds stall is not reported as passing: with the verifier's clock moved
/// past the staleness limit, the status says TIMEOUT until the next good round.
async fn a_stalled_node_is_not_reported_as_passing(db: String) {
    let pki = Pki::new();
    let Some(n1) = node("verifier_stale", &pki).await else {
        return;
    };
    let mut config = pki.config(&db);
    // Long enough that the next round cannot come between the move and the read.
    config.quote_interval = 5.0;
    config.stale_after_intervals = 10.0;
    let clock = Arc::new(support::OffsetClock::default());
    let v = support::start_with_clock(&config, clock.clone()).await;
    let body = n1.enrolment(&TestAgent::policy_b64(&FILES));
    assert_eq!(
        pki.client(true)
            .call(v.addr(), "POST", "/v2.6/agents/n1", Some(body))
            .await
            .0,
        200
    );
    let s = wait_count(&pki, v.addr(), "n1", 1).await;
    assert_eq!(s["attestation_status"], "PASS", "{s}");
    assert_eq!(s["vigil"]["stale"], false, "{s}");
    // 51 s later by the verifier's clock, before the node's next round: stale.
    clock.advance(51);
    let s = status(&pki, v.addr(), "n1").await;
    assert_eq!(s["attestation_status"], "TIMEOUT", "{s}");
    assert_eq!(s["vigil"]["stale"], true, "{s}");
    // The state itself still reads as healthy (GET_QUOTE, or PROVIDE_V for a node with
    // a V): only the status says it is not current.
    assert!(
        matches!(s["operational_state"].as_u64(), Some(3 | 5)),
        "{s}"
    );
    // The next good round makes it current again.
    let s = wait_count(&pki, v.addr(), "n1", 2).await;
    assert_eq!(s["attestation_status"], "PASS", "{s}");
    v.shutdown().await;
}

/// The verifier on SQLite on a filesystem that fills up: `readyz` says so while rounds
/// cannot be recorded, and once space is freed rounds are recorded again and it is
/// ready, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_disk_is_reported_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = vigil_testkit::Tmpfs::mount(dir.path(), "16m") else {
        return;
    };
    let pki = Pki::new();
    let Some(n1) = node("verifier_full_disk", &pki).await else {
        return;
    };
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("cv.db").display());
    let config = pki.config(&db);
    let v = support::start(&config).await;
    let (a, c) = (v.addr(), pki.client(true));
    let body = n1.enrolment(&TestAgent::policy_b64(&FILES));
    assert_eq!(
        c.call(a, "POST", "/v2.6/agents/n1", Some(body)).await.0,
        200
    );
    wait_count(&pki, a, "n1", 2).await;
    assert_eq!(c.call(a, "GET", "/vigil/v1/readyz", None).await.0, 200);

    let filler = fs.fill("filler");
    let r = wait_for(30, "not ready while the disk is full", || async {
        let (code, r) = c.call(a, "GET", "/vigil/v1/readyz", None).await;
        (code == 503).then_some(r)
    })
    .await;
    assert_eq!(r["results"]["ready"], false, "{r}");
    assert!(
        r["results"]["reason"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{r}"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_for(30, "ready again", || async {
        (c.call(a, "GET", "/vigil/v1/readyz", None).await.0 == 200).then_some(())
    })
    .await;
    let count = status(&pki, a, "n1").await["attestation_count"]
        .as_u64()
        .unwrap();
    let s = wait_count(&pki, a, "n1", count + 2).await;
    assert_eq!(s["operational_state"], 3, "{s}");
    v.shutdown().await;
}

/// Waits for INVALID_QUOTE (operational state 9) and returns the status.
async fn wait_invalid(pki: &Pki, addr: std::net::SocketAddr, id: &str) -> Value {
    wait_for(30, "INVALID_QUOTE", || async {
        let s = status(pki, addr, id).await;
        (s["operational_state"] == 9).then_some(s)
    })
    .await
}

/// An executable the runtime policy does not list: `not_in_allowlist`, naming its path.
async fn unknown_executable_is_not_in_allowlist(db: String) {
    let pki = Pki::new();
    let Some(agent) = node("verifier_attest_unknown", &pki).await else {
        return;
    };
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(true));
    let body = agent.enrolment(&TestAgent::policy_b64(&FILES));
    assert_eq!(
        c.call(a, "POST", "/v2.6/agents/n1", Some(body)).await.0,
        200
    );
    wait_count(&pki, a, "n1", 2).await;
    agent.measure("/usr/local/bin/intruder", b"unknown");
    let s = wait_invalid(&pki, a, "n1").await;
    assert_eq!(
        s["last_event_id"], "ima.validation.ima-ng.not_in_allowlist",
        "{s}"
    );
    assert_eq!(s["attestation_status"], "FAIL", "{s}");
    let failures = s["vigil"]["last_failures"].as_array().unwrap();
    assert!(
        failures.iter().any(
            |f| f["event_id"] == "ima.validation.ima-ng.not_in_allowlist"
                && f["context"]["message"]
                    == "File not found in allowlist: /usr/local/bin/intruder"
        ),
        "{s}"
    );
    v.shutdown().await;
}

/// A `tpm_policy` whose value for a quoted PCR is wrong: `pcr_validation.invalid_pcr_23`
/// (swtpm's PCR 23 is all zeros, the policy allows only all ones).
async fn wrong_pcr_policy_is_invalid_pcr(db: String) {
    let pki = Pki::new();
    let Some(agent) = node("verifier_attest_bad_pcr", &pki).await else {
        return;
    };
    let v = support::start(&pki.config(&db)).await;
    let (a, c) = (v.addr(), pki.client(true));
    let mut body = agent.enrolment(&TestAgent::policy_b64(&FILES));
    let wrong = "ff".repeat(32);
    body["tpm_policy"] =
        Value::String(format!("{{\"23\": [\"{wrong}\"], \"mask\": \"0x800400\"}}"));
    let (code, r) = c.call(a, "POST", "/v2.6/agents/n1", Some(body)).await;
    assert_eq!(code, 200, "{r}");
    let s = wait_invalid(&pki, a, "n1").await;
    assert_eq!(s["last_event_id"], "pcr_validation.invalid_pcr_23", "{s}");
    assert_eq!(s["attestation_status"], "FAIL", "{s}");
    let failures = s["vigil"]["last_failures"].as_array().unwrap();
    let f = failures
        .iter()
        .find(|f| f["event_id"] == "pcr_validation.invalid_pcr_23")
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(f["context"]["got"], "00".repeat(32), "{s}");
    assert_eq!(f["context"]["expected"], serde_json::json!([wrong]), "{s}");
    v.shutdown().await;
}

on_both_backends!(
    attests_then_detects_a_changed_file,
    unknown_executable_is_not_in_allowlist,
    wrong_pcr_policy_is_invalid_pcr,
    unreachable_node_fails_as_unreachable,
    restart_keeps_state_and_ima_offset,
    learned_keys_survive_a_crash,
    undelivered_notice_survives_a_restart,
    restarted_replica_adopts_its_leases,
    a_stalled_node_is_not_reported_as_passing,
);

/// Two replicas over one PostgreSQL split two nodes by leases; when one dies, the
/// other takes its node over after the lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_split_nodes_and_take_over() {
    vigil_testkit::db::with_postgres(|db| async move {
        let pki = Pki::new();
        let Some(n1) = node("verifier_replicas_1", &pki).await else {
            return;
        };
        let Some(n2) = node("verifier_replicas_2", &pki).await else {
            return;
        };
        let mut config = pki.config(&db);
        config.lease_ttl = 3;
        config.lease_batch = 1;
        config.replica_id = "r1".into();
        let r1 = support::start(&config).await;
        config.replica_id = "r2".into();
        let r2 = support::start(&config).await;
        let c = pki.client(true);
        let policy = TestAgent::policy_b64(&FILES);
        assert_eq!(
            c.call(
                r1.addr(),
                "POST",
                "/v2.6/agents/n1",
                Some(n1.enrolment(&policy))
            )
            .await
            .0,
            200
        );
        assert_eq!(
            c.call(
                r2.addr(),
                "POST",
                "/v2.6/agents/n2",
                Some(n2.enrolment(&policy))
            )
            .await
            .0,
            200
        );
        wait_for(30, "both replicas attesting one node each", || async {
            (r1.attested_nodes() == 1 && r2.attested_nodes() == 1).then_some(())
        })
        .await;
        wait_count(&pki, r1.addr(), "n1", 2).await;
        wait_count(&pki, r1.addr(), "n2", 2).await;
        // r1 dies without releasing its lease: r2 takes its node over after expiry.
        let r2_addr = r2.addr();
        r1.abort();
        wait_for(30, "takeover", || async {
            (r2.attested_nodes() == 2).then_some(())
        })
        .await;
        for id in ["n1", "n2"] {
            let before = status(&pki, r2_addr, id).await["attestation_count"]
                .as_u64()
                .unwrap();
            let s = wait_count(&pki, r2_addr, id, before + 2).await;
            assert_eq!(s["operational_state"], 3, "{s}");
        }
        r2.shutdown().await;
        let _ = Duration::ZERO;
        let _ = B64.encode([0u8]);
    })
    .await;
}

/// Reads one HTTP request from `stream`, answers 200 and returns its body.
async fn read_webhook(mut stream: tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "webhook request cut short");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + len {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            return buf[end + 4..end + 4 + len].to_vec();
        }
    }
}

/// A notice whose webhook is down is kept in the store across a crash, and the
/// restarted verifier delivers exactly the recorded notice once the webhook is up.
async fn undelivered_notice_survives_a_restart(db: String) {
    let pki = Pki::new();
    let Some(agent) = node("verifier_notice_restart", &pki).await else {
        return;
    };
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = pki.config(&db);
    config.enabled_revocation_notifications = vec!["webhook".into()];
    config.webhook_url = format!("http://127.0.0.1:{port}/hook");
    // Enough attempts (0.2 s apart) to outlive the restart below.
    config.max_retries = 1000;
    let v = support::start(&config).await;
    let (a, c) = (v.addr(), pki.client(true));
    let body = agent.enrolment(&TestAgent::policy_b64(&FILES));
    assert_eq!(
        c.call(a, "POST", "/v2.6/agents/n1", Some(body)).await.0,
        200
    );
    wait_count(&pki, a, "n1", 2).await;
    agent.measure("/usr/local/bin/intruder", b"unknown");
    wait_invalid(&pki, a, "n1").await;
    let store = vigil_store::Store::open(&db).await.unwrap();
    let recorded = wait_for(30, "a failed notice attempt recorded", || async {
        let rows = store.notices().pending().await.unwrap();
        rows.first().filter(|r| r.attempts >= 2).cloned()
    })
    .await;
    assert_eq!(recorded.channel, "webhook");
    assert_eq!(recorded.target, config.webhook_url);
    assert_eq!(recorded.agent_id, "n1");
    assert!(recorded.last_error.is_some(), "{recorded:?}");
    // Dies as a crash would; the webhook comes up while it is down.
    v.abort();
    let hook = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();

    let v = support::start(&config).await;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), hook.accept())
        .await
        .expect("the restarted verifier delivers the notice")
        .unwrap();
    let got = read_webhook(stream).await;
    assert_eq!(
        String::from_utf8(got).unwrap(),
        recorded.notice,
        "exactly the recorded notice"
    );
    let notice: Value = serde_json::from_str(&recorded.notice).unwrap();
    let msg: Value = serde_json::from_str(notice["msg"].as_str().unwrap()).unwrap();
    assert_eq!(msg["agent_id"], "n1");
    assert_eq!(msg["event_id"], "ima.validation.ima-ng.not_in_allowlist");
    // Enrolled without a revocation key (as Keylime allows): the envelope's signature
    // is empty; signing itself is covered by vigil-core and the agent tests.
    assert_eq!(notice["signature"], "", "{notice}");
    wait_for(10, "the delivered row deleted", || async {
        store
            .notices()
            .pending()
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    store.close().await;
    v.shutdown().await;
}
