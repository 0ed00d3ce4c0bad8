//! The agent's Prometheus series (`vigil_agent_…`, listed in `docs/operations.md`):
//! the quotes it served.

use std::sync::Arc;

use vigil_service::metrics::prometheus_client::metrics::counter::Counter;
use vigil_service::metrics::prometheus_client::metrics::family::Family;
use vigil_service::metrics::Registry;

/// `kind` (identity, integrity) and `outcome` (ok: a quote was sent; refused: a bad
/// request; error: the TPM or the logs failed).
type QuoteLabels = [(&'static str, &'static str); 2];

/// Every series the agent exports, and the registry `GET /metrics` encodes.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Arc<Registry>,
    quotes: Family<QuoteLabels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::new("agent");
        let quotes = Family::<QuoteLabels, Counter>::default();
        for kind in ["identity", "integrity"] {
            for outcome in ["ok", "refused", "error"] {
                drop(quotes.get_or_create(&[("kind", kind), ("outcome", outcome)]));
            }
        }
        registry.series().register(
            "quotes",
            "Quote requests answered, by kind (identity, integrity) and outcome (ok, refused: a bad request, error)",
            quotes.clone(),
        );
        Self {
            registry: Arc::new(registry),
            quotes,
        }
    }

    /// A quote request of `kind` answered with `status`.
    pub(crate) fn quote(&self, kind: &'static str, status: axum::http::StatusCode) {
        let outcome = if status.is_success() {
            "ok"
        } else if status.is_client_error() {
            "refused"
        } else {
            "error"
        };
        self.quotes
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
    }
}
