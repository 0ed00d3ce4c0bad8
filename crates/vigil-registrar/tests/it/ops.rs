//! The operator's endpoints on a running registrar, on both ports and without a
//! client certificate: health, readiness, and `/metrics` read back with a Prometheus
//! text-format parser as registrations succeed and fail.

use crate::api::{body, registration, soft_ek};
use crate::support;

use serde_json::json;
use support::Env;
use vigil_testkit::scrape::Scrape;

async fn scrape(env: &Env) -> Scrape {
    let (code, text) = support::text(env.http_addr(), None, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    Scrape::parse(&text)
}

fn registrations(s: &Scrape, outcome: &str) -> Option<f64> {
    s.value(
        "vigil_registrar_registrations_total",
        &[("outcome", outcome)],
    )
}

async fn health_readiness_and_metrics(db: String) {
    let env = Env::start(&db, |_| {}).await;
    for path in ["/healthz", "/vigil/v1/healthz"] {
        let (code, v) = env.http("GET", path, None).await;
        assert_eq!((code, &v["results"]["healthy"]), (200, &json!(true)), "{v}");
        let (code, v) = env.https(None, "GET", path).await.unwrap();
        assert_eq!(code, 200, "over TLS without a client certificate: {v}");
    }
    for path in ["/readyz/", "/vigil/v1/readyz"] {
        let (code, v) = env.https(None, "GET", path).await.unwrap();
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            v["results"],
            json!({"ready": true, "checks": {"store": "ok", "tls": "ok"}})
        );
    }
    let tls = env.client_tls(None);
    let (code, text) = support::text(env.https_addr(), Some(tls), "/vigil/v1/metrics").await;
    assert_eq!(code, 200);
    let s = Scrape::parse(&text);
    assert_eq!(registrations(&s, "registered"), Some(0.0), "{text}");
    assert_eq!(registrations(&s, "refused"), Some(0.0), "{text}");

    let ek = soft_ek();
    let id = "d432fbb3-d2f1-4a97-9ef7-75bd81c00001";
    let (code, _) = env
        .http(
            "POST",
            &format!("/v2.6/agents/{id}"),
            body(&registration(&ek)),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = env
        .http(
            "POST",
            &format!("/v2.6/agents/{id}"),
            body(&json!({"ek_tpm": "x"})),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = env
        .http(
            "PUT",
            &format!("/v2.6/agents/{id}"),
            body(&json!({"auth_tag": "00"})),
        )
        .await;
    assert_eq!(code, 400, "a wrong auth tag");
    let s = scrape(&env).await;
    assert_eq!(registrations(&s, "registered"), Some(1.0));
    assert_eq!(registrations(&s, "refused"), Some(1.0));
    assert_eq!(
        s.value(
            "vigil_registrar_activations_total",
            &[("outcome", "refused")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.observations(
            "vigil_registrar_store_query_duration_seconds",
            &[("query", "register")]
        ),
        Some(1.0)
    );
    env.stop().await;
}

on_both_backends!(health_readiness_and_metrics);
