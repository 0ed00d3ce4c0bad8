//! Prometheus metrics. Each service registers its series in its own [`Registry`], named
//! `vigil_<service>_…` after Prometheus's conventions (`_total` counters, `_seconds`
//! histograms, base units, labels with a small fixed set of values), and [`crate::ops`]
//! answers `GET /metrics` with it in the Prometheus text format (0.0.4), which every
//! Prometheus server and scraping agent reads.
//!
//! The series are `prometheus-client`'s (the Prometheus project's Rust client),
//! re-exported as [`prometheus_client`] so the services build against one version.

use std::future::Future;
use std::time::Instant;

pub use prometheus_client;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// The media type of the Prometheus text format [`Registry::encode`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label set of one label with a fixed value (`outcome="pass"`).
pub type Label = [(&'static str, &'static str); 1];

/// A label set of one label whose values come from the data (`event_id="…"`), still
/// from a bounded set.
pub type OwnedLabel = [(&'static str, String); 1];

/// Histograms by label, each over [`latency_buckets`].
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// One service's series: what `GET /metrics` answers.
#[derive(Debug)]
pub struct Registry {
    inner: prometheus_client::registry::Registry,
}

impl Registry {
    /// A registry whose series are named `vigil_<service>_…`, holding
    /// `vigil_<service>_build_info{version}`, always 1, so a dashboard can tell which
    /// release each process runs.
    pub fn new(service: &str) -> Self {
        let mut inner =
            prometheus_client::registry::Registry::with_prefix(format!("vigil_{service}"));
        let info = Family::<Label, Gauge>::default();
        info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        inner.register("build_info", "The running Vigil release (always 1)", info);
        Self { inner }
    }

    /// Where the service registers its series (names without the prefix, counters
    /// without `_total`, which the encoder adds).
    pub fn series(&mut self) -> &mut prometheus_client::registry::Registry {
        &mut self.inner
    }

    /// Every series, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would mean a malformed
        // name, which the tests would have caught, so the partial text is still served.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner)
        {
            tracing::error!("encoding the metrics: {e}");
        }
        out
    }
}

/// Latency buckets in seconds: 1 ms doubling up to about 65 s, wide enough for a store
/// query on a busy SQLite file and for a node request that waits out its timeout.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

/// A family of histograms over [`latency_buckets`], to register.
pub fn histograms<L>() -> Histograms<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(|| Histogram::new(latency_buckets()))
}

/// How long store queries take, by query: `vigil_<service>_store_query_duration_seconds
/// {query="record_round"}`. Cloning shares the series.
#[derive(Debug, Clone)]
pub struct StoreLatency(Histograms<Label>);

impl StoreLatency {
    /// Registers the series in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let family = histograms();
        registry.series().register(
            "store_query_duration_seconds",
            "How long store queries take, by query",
            family.clone(),
        );
        Self(family)
    }

    /// Runs `query` (a store call), observing how long it took under `name`, whether it
    /// succeeded or not.
    pub async fn time<T>(&self, name: &'static str, query: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = query.await;
        self.0
            .get_or_create(&[("query", name)])
            .observe(start.elapsed().as_secs_f64());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn series_are_prefixed_and_parse_as_prometheus_text() {
        let mut registry = Registry::new("demo");
        let rounds = Family::<Label, Counter>::default();
        registry
            .series()
            .register("rounds", "Rounds", rounds.clone());
        let store = StoreLatency::register(&mut registry);
        rounds.get_or_create(&[("outcome", "pass")]).inc();
        store.time("record_round", async {}).await;

        let text = registry.encode();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let value = |name: &str, label: (&str, &str)| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
                .map(|s| s.value.clone())
        };
        assert_eq!(
            value("vigil_demo_rounds_total", ("outcome", "pass")),
            Some(prometheus_parse::Value::Counter(1.0)),
            "{text}"
        );
        assert_eq!(
            value(
                "vigil_demo_build_info",
                ("version", env!("CARGO_PKG_VERSION"))
            ),
            Some(prometheus_parse::Value::Gauge(1.0)),
            "{text}"
        );
        let Some(prometheus_parse::Value::Histogram(buckets)) = value(
            "vigil_demo_store_query_duration_seconds",
            ("query", "record_round"),
        ) else {
            panic!("no store latency histogram: {text}");
        };
        assert_eq!(buckets.len(), 18, "17 bounds and +Inf: {text}");
        assert!(buckets.iter().all(|b| b.count == 1.0), "{text}");
    }
}
