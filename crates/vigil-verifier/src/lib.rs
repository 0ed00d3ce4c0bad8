//! # vigil-verifier
//!
//! Vigil's verifier: is each enrolled node still in a known-good state. A thin async
//! service (axum on tokio, rustls) that schedules, fetches and records; every check is
//! `vigil-core`'s ([`vigil_core::attestation`]: the per-node state machine and
//! `evaluate_round`), every record `vigil-store`'s.
//!
//! Layers, dependencies pointing one way:
//!
//! ```text
//! http (axum routes, Keylime's answers)
//!   → service (enrol, status, list, delete, stop, reactivate, policies, verify)
//!     → engine (task registry, leases, per-node driver, persist)
//!       → agent_client, context, notify, events (sinks, outbox, response rules)
//!         → protocol, clock, config, error → vigil-core, vigil-store
//! ```
//!
//! - The HTTPS port (8881) serves Keylime's verifier REST API v2.0–2.6: enrolment,
//!   status, list/bulk, delete, reactivate, stop, named runtime and measured-boot
//!   policies (admin routes, which need a client certificate chaining to
//!   `trusted_client_ca`), and the public `version`, `verify/identity` and
//!   `verify/evidence`.
//! - The engine attests every node it owns in its own tokio task (see [`engine`]),
//!   over mTLS pinned to the node's enrolled certificate, and records each round in one
//!   transaction. Replicas share nodes through the store's leases.
//!
//! [`Verifier::start`] binds the port and starts the engine; tests start it in-process
//! on port 0. See `docs/verifier.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent_client;
pub mod clock;
pub mod config;
mod context;
mod engine;
mod enrol;
mod error;
mod events;
mod gate;
mod http;
mod identity;
mod metrics;
mod node_tls;
mod notify;
mod protocol;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};
use vigil_store::Store;

pub use clock::{Clock, NonceSource, OsNonces, SystemClock};
pub use config::{Config, ConfigError, MbEvaluate};
pub use protocol::{CURRENT_VERSION, SUPPORTED_VERSIONS};

/// Why the verifier cannot start. Each variant names the file, address or key.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory cannot be created.
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The database cannot be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] vigil_store::StoreError),
    /// The TLS material cannot be loaded.
    #[error("TLS (tls_dir {tls_dir}): {message}")]
    Tls {
        /// The TLS directory in use.
        tls_dir: PathBuf,
        /// Why.
        message: String,
    },
    /// The port cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running verifier.
pub struct Verifier {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    engine: Arc<engine::Engine>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn load_identity(config: &Config) -> Result<node_tls::ClientIdentity, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = config.tls_file(&config.client_cert);
    let key = config.tls_file(&config.client_key);
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("client_cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| format!("client_key {}: {e}", key.display()))?;
    node_tls::ClientIdentity::new(chain, key).map_err(|e| {
        format!(
            "client_key {}: {e}",
            config.tls_file(&config.client_key).display()
        )
    })
}

impl Verifier {
    /// Opens the database (migrating it), loads the TLS material, binds the port,
    /// starts the engine and starts serving, on the system clock and OS nonces.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with(config, Arc::new(SystemClock), Arc::new(OsNonces)).await
    }

    /// [`start`](Self::start) with the given sources of time and nonces.
    pub async fn start_with(
        config: &Config,
        clock: Arc<dyn Clock>,
        nonces: Arc<dyn NonceSource>,
    ) -> Result<Self, StartError> {
        if config.database_url.is_empty() {
            std::fs::create_dir_all(&config.state_dir).map_err(|source| StartError::StateDir {
                path: config.state_dir.clone(),
                source,
            })?;
        }
        let attestation = config.attestation().map_err(StartError::Config)?;
        let tls_err = |message: String| StartError::Tls {
            tls_dir: config.tls_dir(),
            message,
        };
        let cas: Vec<PathBuf> = config
            .trusted_client_ca
            .iter()
            .map(|p| config.tls_file(p))
            .collect();
        let cas: Vec<&std::path::Path> = cas.iter().map(PathBuf::as_path).collect();
        // Optional at the handshake: version and verify/* are public; admin routes
        // refuse requests without a verified certificate.
        let tls = vigil_tls::server_config(
            &config.tls_file(&config.server_cert),
            &config.tls_file(&config.server_key),
            &cas,
            vigil_tls::ClientAuth::Optional,
        )
        .map_err(|e| tls_err(format!("{e}{}", e.setup_hint(&config.tls_dir()))))?;
        let identity = load_identity(config).map_err(tls_err)?;
        let node_tls =
            node_tls::NodeTls::new(Some(&identity)).map_err(|e| tls_err(e.to_string()))?;
        let results_key = gate::load_or_create_key(&config.attestation_results_key())
            .map_err(|e| StartError::Config(e.to_string()))?;
        let store = Store::open(&config.database_url()).await?;
        let (stop, stopped) = watch::channel(false);
        let config = Arc::new(config.clone());
        let metrics = Arc::new(metrics::Metrics::new());
        let notifiers = notify::Notifiers::new(
            &config,
            store.clone(),
            metrics.clone(),
            node_tls.clone(),
            attestation.clone(),
            clock.clone(),
            stopped.clone(),
        );
        let rules = events::response::Rules::new(
            (!config.response_rules.as_os_str().is_empty())
                .then(|| config.state_dir.join(&config.response_rules)),
            config.severity_labels.clone(),
            config.event_sinks.clone(),
        )
        .map_err(|e| StartError::Config(e.to_string()))?;
        let engine = engine::Engine::new(engine::EngineParts {
            store: store.clone(),
            agents: agent_client::AgentClient::new(
                node_tls,
                config.request_timeout(),
                config.max_answer_size,
                config.agent_keep_alive,
            ),
            config: config.clone(),
            attestation,
            notifiers,
            metrics,
            clock,
            nonces,
            rules: Arc::new(rules),
            stop: stopped.clone(),
            results_key,
        });
        let addr = SocketAddr::new(config.ip, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let app = http::router(service::Service::new(engine.clone()));
        let server = tokio::spawn(vigil_service::server::serve(
            listener,
            Some(TlsAcceptor::from(Arc::new(tls))),
            app,
            stopped,
        ));
        engine.start().await?;
        info!(%addr, backend = ?store.backend(), holder = %engine.holder, "verifier listening");
        Ok(Self {
            addr,
            stop,
            server,
            engine,
        })
    }

    /// The HTTPS address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many nodes this verifier attests now.
    pub fn attested_nodes(&self) -> usize {
        self.engine.local_count()
    }

    /// How many distinct runtime policies are parsed and shared between nodes now.
    pub fn parsed_runtime_policies(&self) -> usize {
        self.engine.cache.runtime_len()
    }

    /// This replica's lease holder name.
    pub fn replica_id(&self) -> &str {
        &self.engine.holder
    }

    /// Stops serving and attesting (releasing leases), and closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.engine.shutdown().await;
        let _ = self.server.await;
        self.engine.store.close().await;
        info!("verifier stopped");
    }

    /// Stops at once, as a crash would: no lease is released and nothing more is
    /// written (tests use it to simulate a replica that dies).
    pub fn abort(self) {
        self.server.abort();
        let _ = self.stop.send(true);
    }
}
