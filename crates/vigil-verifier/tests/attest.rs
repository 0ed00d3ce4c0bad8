//! End to end: the verifier attesting test agents backed by real swtpm TPMs (quotes by
//! vigil-tpm, an IMA log extended into PCR 10), on SQLite and PostgreSQL.
//! Without swtpm the tests skip with a note, except under `CI`.

mod support;

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
    let nk = {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_der(&agent.nk_private_der).unwrap()
    };
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

on_both_backends!(
    attests_then_detects_a_changed_file,
    unreachable_node_fails_as_unreachable,
    restart_keeps_state_and_ima_offset,
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
