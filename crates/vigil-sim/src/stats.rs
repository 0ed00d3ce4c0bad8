//! What the simulator saw: every quote request's time per node, so the poll lag
//! (time between two requests to a node minus the interval), failover gaps and double
//! attestations (two requests to a node much closer than the interval: two pollers)
//! come from the nodes' side, the same for any verifier.
//!
//! A request carrying the same nonce as the node's previous one is the same round sent
//! again (the verifier's client retries once on a fresh connection when a kept one was
//! closed under the request): it is counted as a retry, not as a poll.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

/// One quote request: when (ms since the simulator started), which node, the gap
/// since that node's previous request (ms; `None` for its first), and whether it
/// repeated that request's nonce.
#[derive(Clone, Copy)]
struct Request {
    at: u64,
    node: u32,
    gap: Option<u64>,
    retry: bool,
}

struct Inner {
    /// Per node: its last request's time and nonce.
    last: Vec<Option<(u64, String)>>,
    requests: Vec<Request>,
}

/// Quote requests seen, per node.
pub(crate) struct Stats {
    inner: Mutex<Inner>,
}

/// The `p`-quantile of sorted `v` (0 when empty).
fn quantile(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((v.len() as f64) * p).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

impl Stats {
    pub(crate) fn new(nodes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                last: vec![None; nodes],
                requests: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a quote request to node `index` now, with `nonce`.
    pub(crate) fn request(&self, index: usize, started: Instant, nonce: &str) {
        let at = started.elapsed().as_millis() as u64;
        let mut s = self.lock();
        let (gap, retry) = match &s.last[index] {
            Some((prev, last_nonce)) => (Some(at.saturating_sub(*prev)), last_nonce == nonce),
            None => (None, false),
        };
        s.last[index] = Some((at, nonce.to_owned()));
        s.requests.push(Request {
            at,
            node: index as u32,
            gap,
            retry,
        });
    }

    /// The figures over requests made in `[from_ms, to_ms)`, nodes in `faulty` left out
    /// (their retries and failures are not scheduling): requests per second, lag
    /// quantiles, gaps, double attestations, and how many nodes were attested at all.
    pub(crate) fn report(
        &self,
        interval_ms: u64,
        from_ms: u64,
        to_ms: u64,
        faulty: &HashSet<usize>,
    ) -> Value {
        let s = self.lock();
        let mut gaps = Vec::new();
        let mut count = 0u64;
        let mut doubles = 0u64;
        let mut retries = 0u64;
        let mut seen = HashSet::new();
        for r in &s.requests {
            if r.at < from_ms || r.at >= to_ms || faulty.contains(&(r.node as usize)) {
                continue;
            }
            if r.retry {
                retries += 1;
                continue;
            }
            count += 1;
            seen.insert(r.node);
            if let Some(g) = r.gap {
                if g < interval_ms / 2 {
                    doubles += 1;
                }
                gaps.push(g);
            }
        }
        gaps.sort_unstable();
        let mut lags: Vec<u64> = gaps.iter().map(|g| g.saturating_sub(interval_ms)).collect();
        lags.sort_unstable();
        let window = (to_ms.saturating_sub(from_ms)) as f64 / 1000.0;
        json!({
            "window_s": window,
            "quotes": count,
            "quotes_per_s": if window > 0.0 { count as f64 / window } else { 0.0 },
            "nodes_attested": seen.len(),
            "lag_ms": {"p50": quantile(&lags, 0.5), "p99": quantile(&lags, 0.99), "max": quantile(&lags, 1.0)},
            "gap_ms": {"p50": quantile(&gaps, 0.5), "p99": quantile(&gaps, 0.99), "max": quantile(&gaps, 1.0)},
            "doubles": doubles,
            "retries": retries,
        })
    }

    /// The nodes with a quote request at or after `since_ms`.
    pub(crate) fn attested_since(&self, since_ms: u64) -> HashSet<usize> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.at >= since_ms)
            .map(|r| r.node as usize)
            .collect()
    }

    /// Writes `at_ms,node,gap_ms,retry` for every request (gap empty for a node's
    /// first; retry 1 when it repeated the previous request's nonce).
    pub(crate) fn write_csv(&self, path: &std::path::Path) -> std::io::Result<()> {
        let s = self.lock();
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "at_ms,node,gap_ms,retry")?;
        for r in &s.requests {
            let gap = r.gap.map(|g| g.to_string()).unwrap_or_default();
            writeln!(out, "{},{},{gap},{}", r.at, r.node, u8::from(r.retry))?;
        }
        out.flush()
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports in USER_HZ, 100 on every architecture it runs on.
    (ticks(11) + ticks(12)) / 100.0
}
