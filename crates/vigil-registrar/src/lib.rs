//! # vigil-registrar
//!
//! Vigil's registrar: who is this TPM. A thin async service (axum on tokio, rustls)
//! around `vigil-core` (TPM2B_PUBLIC, MakeCredential, EK certificates) and
//! `vigil-store` (the records), speaking Keylime's registrar REST API:
//!
//! - a plain-HTTP port (8890) for `GET /version`, registration and activation;
//! - an HTTPS port (8891) that serves the same routes plus the admin routes (list,
//!   show, delete), which need a client certificate chaining to `trusted_client_ca`.
//!
//! [`Registrar::start`] binds both ports and serves until [`Registrar::shutdown`];
//! tests start it in-process on port 0. See `docs/registrar.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
pub mod config;
mod metrics;
mod register;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::info;
use vigil_core::tpm::ek_cert::EkCertStore;
use vigil_store::Store;

pub use api::{CURRENT_VERSION, IDENTITY_CHANGED, INVALID_DATA, SUPPORTED_VERSIONS};
pub use config::{Config, ConfigError, MalformedCertAction};

use api::AppState;
use register::Checks;
use vigil_service::server::serve;

/// Why the registrar cannot start. Each variant names the file, address or URL part.
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
    /// The database cannot be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] vigil_store::StoreError),
    /// The TLS material cannot be loaded.
    #[error("TLS (tls_dir {tls_dir}): {source}{}", source.setup_hint(tls_dir))]
    Tls {
        /// The TLS directory in use.
        tls_dir: PathBuf,
        /// Why.
        #[source]
        source: vigil_tls::TlsError,
    },
    /// The EK vendor CA directory cannot be read (`require_ek_cert`).
    #[error("tpm_cert_store {path}: {message}")]
    EkStore {
        /// The directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A port cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running registrar.
pub struct Registrar {
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: Store,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("http_addr", &self.http_addr)
            .field("https_addr", &self.https_addr)
            .finish_non_exhaustive()
    }
}

/// Reads a vendor CA directory (Keylime's `tpm_cert_store`).
fn load_ek_store(path: &Path) -> Result<EkCertStore, StartError> {
    vigil_tls::load_cert_store(path).map_err(|e| StartError::EkStore {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Registrar {
    /// Opens the database (migrating it), loads the TLS material and the EK trust
    /// store, binds both ports and starts serving.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        if config.database_url.is_empty() {
            std::fs::create_dir_all(&config.state_dir).map_err(|source| StartError::StateDir {
                path: config.state_dir.clone(),
                source,
            })?;
        }
        let tls_dir = config.tls_dir();
        let cas: Vec<PathBuf> = config
            .trusted_client_ca
            .iter()
            .map(|p| config.tls_file(p))
            .collect();
        let cas: Vec<&Path> = cas.iter().map(PathBuf::as_path).collect();
        // Client certificates are optional at the handshake (Keylime's CERT_OPTIONAL):
        // /version and registration work over HTTPS without one; admin routes refuse
        // requests without a verified one. An invalid certificate fails the handshake.
        let tls = vigil_tls::server_config(
            &config.tls_file(&config.server_cert),
            &config.tls_file(&config.server_key),
            &cas,
            vigil_tls::ClientAuth::Optional,
        )
        .map_err(|source| StartError::Tls {
            tls_dir: tls_dir.clone(),
            source,
        })?;
        // The vendor CAs: required under require_ek_cert; otherwise loaded when the
        // directory exists, for IAK/IDevID certificates (refused without it).
        let store_dir = config.tpm_cert_store();
        let trust_store = if config.require_ek_cert {
            Some(Arc::new(load_ek_store(&store_dir)?))
        } else if store_dir.exists() {
            load_ek_store(&store_dir)
                .map_err(|e| tracing::warn!("{e}; IAK/IDevID registrations will be refused"))
                .ok()
                .map(Arc::new)
        } else {
            None
        };
        let store = Store::open(&config.database_url()).await?;
        let state = Arc::new(AppState {
            store: store.clone(),
            checks: Checks {
                malformed_cert_action: config.malformed_cert_action,
                trust_store,
                require_ek_cert: config.require_ek_cert,
                check_ak_attributes: config.check_ak_attributes,
            },
            max_upload_size: config.max_upload_size,
            metrics: metrics::Metrics::new(),
        });
        let app = api::router(state);

        let http = bind(SocketAddr::new(config.ip, config.port)).await?;
        let https = bind(SocketAddr::new(config.ip, config.tls_port)).await?;
        let local = |l: &TcpListener, addr| {
            l.local_addr()
                .map_err(|source| StartError::Bind { addr, source })
        };
        let http_addr = local(&http, SocketAddr::new(config.ip, config.port))?;
        let https_addr = local(&https, SocketAddr::new(config.ip, config.tls_port))?;
        let (stop, stopped) = watch::channel(false);
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let tasks = vec![
            tokio::spawn(serve(http, None, app.clone(), stopped.clone())),
            tokio::spawn(serve(https, Some(acceptor), app, stopped)),
        ];
        info!(%http_addr, %https_addr, backend = ?store.backend(), "registrar listening");
        Ok(Self {
            http_addr,
            https_addr,
            stop,
            tasks,
            store,
        })
    }

    /// The plain-HTTP address (registration, activation, version).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTPS address (everything; admin routes with a client certificate).
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// Stops accepting connections, lets requests in flight finish (up to 10 s) and
    /// closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.close().await;
        info!("registrar stopped");
    }
}
