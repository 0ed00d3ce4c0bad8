//! The operator's endpoints through a router, as every service merges them: each path
//! with and without its trailing slash, readiness following its checks, the metrics
//! in the Prometheus text format; and the JSON log format writing one JSON object per
//! line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use vigil_service::metrics::prometheus_client::metrics::counter::Counter;
use vigil_service::metrics::Registry;
use vigil_service::ops::{self, Check, Ops, Readiness, ReadinessCheck, ReadinessFuture};
use vigil_service::LogFormat;

/// A store that can go away.
struct Flag(AtomicBool);

impl ReadinessCheck for Flag {
    fn readiness(&self) -> ReadinessFuture<'_> {
        Box::pin(async {
            let store = match self.0.load(Ordering::SeqCst) {
                true => Check::Ok,
                false => Check::Failing("unreachable"),
            };
            Readiness::default()
                .with("store", store)
                .with("leases", Check::Off)
        })
    }
}

async fn get(app: &Router, path: &str) -> (StatusCode, String, String) {
    let req = Request::get(path).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let kind = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn health_readiness_and_metrics_on_every_path() {
    let mut registry = Registry::new("demo");
    let served = Counter::<u64>::default();
    registry
        .series()
        .register("things_served", "Things served", served.clone());
    let store = Arc::new(Flag(AtomicBool::new(true)));
    let app: Router = ops::routes(Ops::new(Arc::new(registry), store.clone()));

    for prefix in ["", "/vigil/v1"] {
        for slash in ["", "/"] {
            let (code, _, body) = get(&app, &format!("{prefix}/healthz{slash}")).await;
            assert_eq!(code, StatusCode::OK, "{prefix}/healthz{slash}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["results"]["healthy"], true);

            let (code, _, body) = get(&app, &format!("{prefix}/readyz{slash}")).await;
            assert_eq!(code, StatusCode::OK);
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["results"]["ready"], true, "{body}");
            assert_eq!(body["results"]["checks"]["store"], "ok", "{body}");
            assert_eq!(body["results"]["checks"]["leases"], "off", "{body}");
        }
    }

    store.0.store(false, Ordering::SeqCst);
    let (code, _, body) = get(&app, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], 503, "{body}");
    assert_eq!(body["results"]["ready"], false, "{body}");
    assert_eq!(body["results"]["reason"], "store: unreachable", "{body}");
    assert_eq!(body["results"]["checks"]["store"], "unreachable", "{body}");
    // Health is the process, not its dependencies.
    assert_eq!(get(&app, "/vigil/v1/healthz").await.0, StatusCode::OK);

    served.inc();
    served.inc();
    for path in ["/metrics", "/vigil/v1/metrics/"] {
        let (code, kind, text) = get(&app, path).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let served = scrape
            .samples
            .iter()
            .find(|s| s.metric == "vigil_demo_things_served_total")
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            served.value,
            prometheus_parse::Value::Counter(2.0),
            "{text}"
        );
    }
}

/// Log lines written to a shared buffer.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_spans() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = vigil_service::subscriber("info", LogFormat::Json, move || writer.clone());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("round", agent_id = "n1", round = 3);
        let _entered = span.enter();
        tracing::info!(
            event_id = "ima.validation.ima-ng.not_in_allowlist",
            "attestation failed"
        );
        tracing::debug!("below the filter");
        tracing::warn!("a message with \"quotes\"\nand a newline");
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    let first = &events[0];
    assert_eq!(first["level"], "INFO", "{first}");
    assert_eq!(first["fields"]["message"], "attestation failed", "{first}");
    assert_eq!(
        first["fields"]["event_id"], "ima.validation.ima-ng.not_in_allowlist",
        "{first}"
    );
    assert_eq!(first["span"]["agent_id"], "n1", "{first}");
    assert_eq!(first["span"]["round"], 3, "{first}");
    assert!(first["timestamp"].is_string(), "{first}");
    assert_eq!(
        events[1]["fields"]["message"], "a message with \"quotes\"\nand a newline",
        "{}",
        events[1]
    );

    // The text format stays one line per event, as before.
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = vigil_service::subscriber("info", LogFormat::Text, move || writer.clone());
    tracing::subscriber::with_default(subscriber, || tracing::info!(agent_id = "n1", "hello"));
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("INFO") && text.contains("hello agent_id=\"n1\""),
        "{text}"
    );
    assert!(
        serde_json::from_str::<Value>(text.trim()).is_err(),
        "{text}"
    );
}
