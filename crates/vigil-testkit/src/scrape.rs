//! A service's `/metrics` answer read back with `prometheus-parse`, an independent
//! Prometheus text-format parser, so a test checks what a Prometheus server would read,
//! not what the exporter meant to write.

use prometheus_parse::{Sample, Value};

/// One parsed scrape.
#[derive(Debug)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses `text` (the Prometheus text format); panics on a line the parser refuses.
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus text scrape");
        Self {
            samples: scrape.samples,
        }
    }

    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        self.samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| &s.value)
    }

    /// The value of counter or gauge `name` (the full name, `…_total` for a counter)
    /// with at least `labels`, if the scrape has it.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.sample(name, labels)? {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram(_) | Value::Summary(_) => None,
        }
    }

    /// How many observations histogram `name` with at least `labels` holds (its
    /// `+Inf` bucket), if the scrape has it.
    pub fn observations(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.sample(name, labels)? {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than == f64::INFINITY)
                .map(|b| b.count),
            _ => None,
        }
    }

    /// The sum of counter or gauge `name` over every label set.
    pub fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) => Some(v),
                _ => None,
            })
            .sum()
    }

    /// Whether any sample is named `name` (a histogram by its base name).
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.metric == name)
    }
}
