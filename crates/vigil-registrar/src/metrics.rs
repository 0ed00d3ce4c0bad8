//! The registrar's Prometheus series (`vigil_registrar_…`, listed in
//! `docs/operations.md`): registrations and activations by outcome, and how long the
//! store takes to record a registration.

use std::sync::Arc;

use vigil_service::metrics::prometheus_client::metrics::counter::Counter;
use vigil_service::metrics::prometheus_client::metrics::family::Family;
use vigil_service::metrics::{Label, Registry, StoreLatency};

/// Every series the registrar exports, and the registry `GET /metrics` encodes.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Arc<Registry>,
    registrations: Family<Label, Counter>,
    activations: Family<Label, Counter>,
    pub(crate) store: StoreLatency,
}

/// How a registration ended: `registered` (created or updated), `refused` (invalid
/// data), `identity_changed` (a different TPM under a known id), `error` (the store
/// or the registrar failed).
pub(crate) const REGISTRATION_OUTCOMES: [&str; 4] =
    ["registered", "refused", "identity_changed", "error"];

/// How an activation ended: `activated`, `refused` (the auth tag did not match; the
/// record is deleted), `error`.
pub(crate) const ACTIVATION_OUTCOMES: [&str; 3] = ["activated", "refused", "error"];

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::new("registrar");
        let registrations = Family::<Label, Counter>::default();
        let activations = Family::<Label, Counter>::default();
        for outcome in REGISTRATION_OUTCOMES {
            drop(registrations.get_or_create(&[("outcome", outcome)]));
        }
        for outcome in ACTIVATION_OUTCOMES {
            drop(activations.get_or_create(&[("outcome", outcome)]));
        }
        registry.series().register(
            "registrations",
            "Agent registrations by outcome: registered, refused, identity_changed, error",
            registrations.clone(),
        );
        registry.series().register(
            "activations",
            "Agent activations by outcome: activated, refused (auth tag mismatch), error",
            activations.clone(),
        );
        let store = StoreLatency::register(&mut registry);
        Self {
            registry: Arc::new(registry),
            registrations,
            activations,
            store,
        }
    }

    /// A registration ended with `outcome`, one of [`REGISTRATION_OUTCOMES`].
    pub(crate) fn registration(&self, outcome: &'static str) {
        self.registrations
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// An activation ended with `outcome`, one of [`ACTIVATION_OUTCOMES`].
    pub(crate) fn activation(&self, outcome: &'static str) {
        self.activations
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }
}
