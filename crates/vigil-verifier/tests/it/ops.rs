//! The operator's endpoints on a running verifier, asked without a client
//! certificate: health and readiness, and `/metrics` read back with a Prometheus
//! text-format parser while a swtpm node passes, fails, and stops answering.

use crate::support;

use std::net::SocketAddr;

use serde_json::Value;
use support::{wait_for, Client, Pki, TestAgent};
use vigil_testkit::scrape::Scrape;

const FILES: [(&str, &[u8]); 1] = [("/usr/bin/a", b"a v1")];

async fn scrape(c: &Client, a: SocketAddr) -> Scrape {
    let (code, text) = c.text(a, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    Scrape::parse(&text)
}

/// Waits until `check` holds of a scrape, and returns that scrape.
async fn scrape_until(
    c: &Client,
    a: SocketAddr,
    what: &str,
    check: impl Fn(&Scrape) -> bool,
) -> Scrape {
    wait_for(30, what, || async {
        let s = scrape(c, a).await;
        check(&s).then_some(s)
    })
    .await
}

fn rounds(s: &Scrape, outcome: &str) -> f64 {
    s.value("vigil_verifier_rounds_total", &[("outcome", outcome)])
        .unwrap_or(-1.0)
}

fn nodes(s: &Scrape, state: &str) -> f64 {
    s.value("vigil_verifier_nodes", &[("state", state)])
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_need_no_client_certificate() {
    let pki = Pki::new();
    let db = format!(
        "sqlite://{}?mode=rwc",
        pki.dir.path().join("cv.db").display()
    );
    let v = support::start(&pki.config(&db)).await;
    let (a, anyone) = (v.addr(), pki.client(false));
    for path in ["/healthz", "/vigil/v1/healthz/"] {
        let (code, r) = anyone.call(a, "GET", path, None).await;
        assert_eq!(
            (code, &r["results"]["healthy"]),
            (200, &Value::Bool(true)),
            "{path}: {r}"
        );
    }
    for path in ["/readyz", "/vigil/v1/readyz"] {
        let (code, r) = anyone.call(a, "GET", path, None).await;
        assert_eq!(code, 200, "{path}: {r}");
        assert_eq!(r["results"]["ready"], true, "{r}");
        let checks = &r["results"]["checks"];
        assert_eq!(
            (
                &checks["store"],
                &checks["rounds"],
                &checks["leases"],
                &checks["tls"]
            ),
            (&"ok".into(), &"ok".into(), &"off".into(), &"ok".into()),
            "{r}"
        );
    }
    // Keylime's API still answers as before beside them.
    assert_eq!(anyone.call(a, "GET", "/v2.6/agents/", None).await.0, 403);
    v.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_attestation() {
    let pki = Pki::new();
    let Some(mut agent) =
        TestAgent::new("verifier_ops_metrics", &pki.tls_dir().join("cacert.crt")).await
    else {
        return;
    };
    for (p, c) in FILES {
        agent.measure(p, c);
    }
    let db = format!(
        "sqlite://{}?mode=rwc",
        pki.dir.path().join("cv.db").display()
    );
    let v = support::start(&pki.config(&db)).await;
    let (a, admin, anyone) = (v.addr(), pki.client(true), pki.client(false));

    // Every fixed series exists from the start, at 0.
    let s = scrape(&anyone, a).await;
    assert_eq!(rounds(&s, "pass"), 0.0);
    assert_eq!(nodes(&s, "GET_QUOTE"), 0.0);
    assert_eq!(
        s.value(
            "vigil_verifier_quote_fetch_errors_total",
            &[("kind", "unreachable")]
        ),
        Some(0.0)
    );
    assert_eq!(
        s.value("vigil_verifier_revocation_notices_pending", &[]),
        Some(0.0)
    );
    assert_eq!(s.value("vigil_verifier_build_info", &[]), Some(1.0));
    let (_, text) = anyone.text(a, "/vigil/v1/metrics").await;
    assert!(
        text.contains("# TYPE vigil_verifier_round_duration_seconds histogram"),
        "{text}"
    );

    let body = agent.enrolment(&TestAgent::policy_b64(&FILES));
    assert_eq!(
        admin.call(a, "POST", "/v2.6/agents/n1", Some(body)).await.0,
        200
    );
    let s = scrape_until(&anyone, a, "two passing rounds", |s| {
        rounds(s, "pass") >= 2.0
    })
    .await;
    assert_eq!(
        s.total("vigil_verifier_nodes"),
        1.0,
        "one node, in one state"
    );
    assert_eq!(nodes(&s, "GET_QUOTE") + nodes(&s, "PROVIDE_V"), 1.0);
    assert!(s.observations("vigil_verifier_round_duration_seconds", &[]) >= Some(2.0));
    assert!(s.observations("vigil_verifier_poll_lag_seconds", &[]) >= Some(1.0));
    assert!(
        s.observations(
            "vigil_verifier_store_query_duration_seconds",
            &[("query", "record_round")]
        ) >= Some(2.0)
    );
    // Rounds keep increasing.
    let before = rounds(&s, "pass");
    scrape_until(&anyone, a, "more passing rounds", |s| {
        rounds(s, "pass") > before
    })
    .await;

    // A measured file changes: a failed round, counted by its event id, and a
    // revocation notice delivered to the node.
    agent.measure("/usr/bin/a", b"a tampered");
    let s = scrape_until(&anyone, a, "a notice delivered", |s| {
        s.value(
            "vigil_verifier_revocation_notices_total",
            &[("outcome", "delivered")],
        ) >= Some(1.0)
    })
    .await;
    assert!(rounds(&s, "fail") >= 1.0);
    assert!(
        s.value(
            "vigil_verifier_round_failures_total",
            &[("event_id", "ima.validation.ima-ng.runtime_policy_hash")]
        ) >= Some(1.0)
    );
    assert_eq!(nodes(&s, "INVALID_QUOTE"), 1.0);
    assert_eq!(s.total("vigil_verifier_nodes"), 1.0);
    assert_eq!(
        s.value("vigil_verifier_revocation_notices_pending", &[]),
        Some(0.0)
    );

    // The node stops answering: quote fetch errors by kind.
    agent.go_offline();
    assert_eq!(
        admin
            .call(a, "PUT", "/v2.6/agents/n1/reactivate", None)
            .await
            .0,
        200
    );
    let s = scrape_until(&anyone, a, "unreachable errors", |s| {
        s.value(
            "vigil_verifier_quote_fetch_errors_total",
            &[("kind", "unreachable")],
        ) >= Some(1.0)
    })
    .await;
    assert!(rounds(&s, "error") >= 1.0);
    v.shutdown().await;
}
