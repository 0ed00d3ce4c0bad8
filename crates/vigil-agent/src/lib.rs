//! # vigil-agent
//!
//! Vigil's node agent: the only service that talks to a TPM. A thin async shell (axum
//! on tokio, rustls) around `vigil-tpm` (EK, AK, quotes, ActivateCredential, PCR
//! extends) and `vigil-core` (every format and all the crypto), speaking Keylime's
//! agent REST API v2.1–2.6:
//!
//! - registration with a Keylime-compatible registrar, in the background with backoff
//!   ([`registration`]);
//! - identity and integrity quotes, the IMA measurement list from entry N and the UEFI
//!   log ([`ima`]);
//! - the U/V bootstrap key, payloads ([`payload`]) and signed revocation notices with
//!   their actions ([`revocation`]);
//! - an IMA emulation mode for machines without kernel IMA ([`ima::ImaEmulator`]);
//! - the node-local identity socket for workload identity ([`local`]).
//!
//! [`Agent::start`] sets everything up and serves until [`Agent::shutdown`]; tests
//! start it in-process on port 0. See `docs/agent.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
pub mod config;
pub mod ima;
pub mod kernel;
pub mod keys;
pub mod local;
mod metrics;
pub mod payload;
pub mod registration;
pub mod response;
pub mod revocation;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use vigil_core::HashAlg;
use vigil_tpm::{AkKey, AkOrigin, EkAlg, Tpm, TpmError};

pub use api::{API_VERSIONS, MAX_NONCE_SIZE};
pub use config::{Config, ConfigError, InvalidValue};
pub use registration::Registration;

use ima::{EmulateError, ImaEmulator, ImaLog};
use keys::{KeyError, NodeKey};
use payload::PayloadState;

/// Why the agent cannot start. Each variant names what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is unusable.
    #[error("configuration: {0}")]
    Config(#[from] InvalidValue),
    /// A directory cannot be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key or the AK blob cannot be loaded or made.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The TPM failed.
    #[error("TPM ({tcti}): {source}")]
    Tpm {
        /// The TCTI in use.
        tcti: String,
        /// Why.
        #[source]
        source: TpmError,
    },
    /// The TPM device cannot be opened (with what to check).
    #[error(transparent)]
    Kernel(#[from] kernel::Unavailable),
    /// IMA emulation cannot start.
    #[error("IMA emulation: {0}")]
    Ima(#[from] EmulateError),
    /// The TLS material cannot be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] vigil_tls::TlsError),
    /// The node-local identity socket cannot be set up.
    #[error(transparent)]
    Socket(#[from] local::SocketError),
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

/// What every request handler shares.
pub(crate) struct AgentState {
    pub(crate) uuid: String,
    pub(crate) tpm: Arc<Tpm>,
    pub(crate) bank: HashAlg,
    pub(crate) enc_alg_sized: String,
    pub(crate) sign_alg: String,
    pub(crate) ak_handle: u32,
    pub(crate) nk: NodeKey,
    pub(crate) ima: Arc<ImaLog>,
    pub(crate) mb_log: PathBuf,
    pub(crate) payload: Mutex<PayloadState>,
    pub(crate) payloads_allowed: bool,
    pub(crate) secure_dir: PathBuf,
    pub(crate) payload_script: String,
    pub(crate) payload_runs: watch::Sender<u64>,
    pub(crate) revocation_cert: PathBuf,
    pub(crate) actions: revocation::Actions,
    pub(crate) revocations: watch::Sender<Vec<Vec<String>>>,
    pub(crate) response: response::ResponseActions,
    pub(crate) metrics: metrics::Metrics,
    /// Serving over mTLS.
    pub(crate) mtls: bool,
    /// Serving `agent/info` and `quotes/identity` on the network API too.
    pub(crate) identity_on_network: bool,
}

/// A running agent.
pub struct Agent {
    addr: SocketAddr,
    ops_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    registration: watch::Receiver<Registration>,
    emulator: Option<Arc<Mutex<ImaEmulator>>>,
    state: Arc<AgentState>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn mkdir(path: &std::path::Path) -> Result<(), StartError> {
    payload::make_private_dir(path).map_err(|e| StartError::Dir {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}

impl Agent {
    /// Loads or makes the agent's keys, sets up EK, AK and the PCR 16 binding on the
    /// TPM, starts IMA emulation if configured, binds the API port, starts registering
    /// in the background and serves.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let bank = config.hash_alg()?;
        let ek_source = config.ek_source()?;
        let ak_alg = config.ak_alg()?;
        mkdir(&config.state_dir)?;
        let secure_dir = config.secure_dir();
        mkdir(&secure_dir)?;

        let nk_path = config.state_dir.join(keys::NK_FILE);
        let nk = tokio::task::spawn_blocking(move || NodeKey::load_or_create(&nk_path))
            .await
            .map_err(|e| KeyError::Generate(e.to_string()))??;

        // The TPM: EK, AK (reused when it fits), PCR 16 bound to the NK.
        let tcti = config.tpm_tcti.clone();
        let ak_path = config.state_dir.join(keys::AK_FILE);
        let nk_pem = nk.public_pem.clone();
        let tpm_err = |tcti: &str| {
            let tcti = tcti.to_owned();
            move |source| StartError::Tpm { tcti, source }
        };
        let setup = tokio::task::spawn_blocking(move || -> Result<_, StartError> {
            // The TPM stack reports a missing or closed device as an unknown response
            // code; opening it first gives an error that says what to check.
            if let Some(device) = kernel::tcti_device(&tcti) {
                kernel::check(kernel::Source::TpmDevice, device)?;
            }
            let tpm = Tpm::connect(&tcti).map_err(tpm_err(&tcti))?;
            let ek = tpm.setup_ek(ek_source).map_err(tpm_err(&tcti))?;
            let persisted = keys::load_ak(&ak_path)?;
            let (blob, _info, origin) = tpm
                .load_or_create_ak(persisted.as_ref(), ak_alg)
                .map_err(tpm_err(&tcti))?;
            if origin == AkOrigin::Created {
                keys::save_ak(&ak_path, &blob)?;
            }
            tpm.bind_data_pcr(bank, &nk_pem).map_err(tpm_err(&tcti))?;
            let ekcert = tpm.ek_certificate().map_err(tpm_err(&tcti))?;
            let chain = tpm.ek_ca_chain().map_err(tpm_err(&tcti))?;
            info!(ak = ?origin, ek_cert = ekcert.is_some(), "TPM ready");
            Ok((tpm, ek, blob, ekcert.map(|c| (c, chain))))
        })
        .await
        .map_err(|e| KeyError::Generate(e.to_string()))??;
        let (tpm, ek, ak_blob, ekcert) = setup;
        let tpm = Arc::new(tpm);

        // IMA: the emulator's log, or the kernel's.
        let (ima_path, emulator) = if config.ima_emulate.is_empty() {
            // Without the list the agent still serves quotes (and measured boot), so a
            // missing list is a warning that says what to check, not a refusal.
            if let Err(e) = kernel::check(kernel::Source::ImaList, &config.ima_ml_path) {
                warn!("{e}");
            }
            (config.ima_ml_path.clone(), None)
        } else {
            let log = config.state_file(&config.ima_emulate_log);
            let (t, l, targets) = (tpm.clone(), log.clone(), config.ima_emulate.clone());
            let emu = tokio::task::spawn_blocking(move || -> Result<_, EmulateError> {
                let mut emu = ImaEmulator::start(t, bank, l, targets)?;
                let n = emu.rescan()?;
                info!(entries = n, "IMA emulation: initial measurements");
                Ok(emu)
            })
            .await
            .map_err(|e| KeyError::Generate(e.to_string()))??;
            (log, Some(Arc::new(Mutex::new(emu))))
        };

        if let Err(e) = kernel::check(kernel::Source::EventLog, &config.measuredboot_ml_path) {
            warn!("{e}");
        }

        // TLS: the agent's own certificate, client certificates required.
        let tls = if config.enable_agent_mtls {
            let cert = config.state_file(&config.server_cert);
            let key = config.state_file(&config.server_key);
            if keys::ensure_server_cert(&config.uuid, &config.contact_ip.to_string(), &cert, &key)?
            {
                info!(cert = %cert.display(), "server certificate generated");
            }
            let cas: Vec<PathBuf> = config
                .trusted_client_ca
                .iter()
                .map(|p| config.state_file(p))
                .collect();
            let cas: Vec<&std::path::Path> = cas.iter().map(PathBuf::as_path).collect();
            let server =
                vigil_tls::server_config(&cert, &key, &cas, vigil_tls::ClientAuth::Required)?;
            let pem = std::fs::read_to_string(&cert).map_err(|source| KeyError::Io {
                path: cert.clone(),
                source,
            })?;
            Some((tokio_rustls::TlsAcceptor::from(Arc::new(server)), pem))
        } else {
            warn!("enable_agent_mtls is off: serving plain HTTP, payloads disabled");
            None
        };

        let bind_addr = SocketAddr::new(config.ip, config.port);
        let listener = TcpListener::bind(bind_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: bind_addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: bind_addr,
            source,
        })?;

        let payload_dir = secure_dir.join("unzipped");
        let state = Arc::new(AgentState {
            uuid: config.uuid.clone(),
            tpm: tpm.clone(),
            bank,
            enc_alg_sized: match ek.alg {
                Some(EkAlg::Rsa2048) | None => "rsa2048",
                Some(EkAlg::EccP256) => "ecc256",
                Some(EkAlg::EccP384) => "ecc384",
            }
            .into(),
            sign_alg: sign_alg(ak_alg.key).into(),
            // Vigil loads the AK per TPM context; there is no stable handle to report.
            ak_handle: 0,
            nk,
            ima: Arc::new(ImaLog::new(ima_path)),
            mb_log: config.measuredboot_ml_path.clone(),
            payload: Mutex::new(PayloadState::default()),
            payloads_allowed: tls.is_some() || config.enable_insecure_payload,
            secure_dir: secure_dir.clone(),
            payload_script: config.payload_script.clone(),
            payload_runs: watch::channel(0).0,
            revocation_cert: config.revocation_cert(),
            actions: revocation::Actions {
                names: config.revocation_actions.clone(),
                dir: config.revocation_actions_dir.clone(),
                payload_dir: config
                    .allow_payload_revocation_actions
                    .then_some(payload_dir),
                timeout: Duration::from_secs(config.revocation_action_timeout),
            },
            revocations: watch::channel(Vec::new()).0,
            response: response::ResponseActions {
                dry_run: config.response_dry_run,
                quarantine: config.quarantine_script.clone(),
                shutdown: config.shutdown_script.clone(),
                control_plane: config.control_plane.clone(),
                timeout: Duration::from_secs(config.revocation_action_timeout),
            },
            metrics: metrics::Metrics::new(),
            mtls: tls.is_some(),
            identity_on_network: config.identity_on_network,
        });

        let app = api::router(state.clone());
        let (stop, stopped) = watch::channel(false);
        let (acceptor, mtls_cert) = match tls {
            Some((a, pem)) => (Some(a), Some(pem)),
            None => (None, None),
        };
        let mut tasks = vec![tokio::spawn(vigil_service::server::serve(
            listener,
            acceptor,
            app,
            stopped.clone(),
        ))];
        if config.serve_identity_socket {
            let mode = config.identity_socket_mode()?;
            let listener =
                local::bind(&config.identity_socket, mode, &config.identity_socket_group)?;
            tasks.push(tokio::spawn(vigil_service::server::serve_unix(
                listener,
                api::local_router(state.clone()),
                stopped.clone(),
            )));
            info!(socket = %config.identity_socket.display(), mode = %format!("{mode:o}"),
                "identity routes on the node-local socket");
        }
        let ops_addr = match config.ops_port {
            Some(port) => {
                let bind_addr = SocketAddr::new(config.ip, port);
                let bind_err = |source| StartError::Bind {
                    addr: bind_addr,
                    source,
                };
                let listener = TcpListener::bind(bind_addr).await.map_err(bind_err)?;
                let ops_addr = listener.local_addr().map_err(bind_err)?;
                let ops: axum::Router = vigil_service::ops::routes(api::ops_of(&state));
                tasks.push(tokio::spawn(vigil_service::server::serve(
                    listener,
                    None,
                    ops,
                    stopped.clone(),
                )));
                info!(%ops_addr, "healthz, readyz and metrics on plain HTTP");
                Some(ops_addr)
            }
            None => None,
        };

        let identity = registration::Identity {
            uuid: config.uuid.clone(),
            ek_tpm: ek.public.clone(),
            ekcert,
            aik_tpm: ak_blob.public.clone(),
            mtls_cert,
            ip: config.contact_ip.to_string(),
            port: if config.contact_port == 0 {
                addr.port()
            } else {
                config.contact_port
            },
        };
        let (reg_tx, reg_rx) = watch::channel(Registration::Pending);
        let registrar = SocketAddr::new(config.registrar_ip, config.registrar_port);
        let max_backoff = Duration::from_secs(config.registration_retry_max);
        let mut stop_reg = stopped.clone();
        let t = tpm.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = registration::run(registrar, identity, t, max_backoff, reg_tx) => {}
                _ = stop_reg.changed() => {}
            }
        }));

        if let (Some(emu), interval) = (&emulator, config.ima_emulate_interval) {
            if interval > 0 {
                let emu = emu.clone();
                let mut stop_emu = stopped;
                tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(interval)) => {}
                            _ = stop_emu.changed() => return,
                        }
                        if let Err(e) = rescan(&emu).await {
                            warn!("IMA emulation rescan: {e}");
                        }
                    }
                }));
            }
        }
        info!(%addr, uuid = %config.uuid, mtls = config.enable_agent_mtls, "agent listening");
        Ok(Self {
            addr,
            ops_addr,
            stop,
            tasks,
            registration: reg_rx,
            emulator,
            state,
        })
    }

    /// The API address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The plain-HTTP address of `healthz`, `readyz` and `metrics`, when `ops_port`
    /// is set.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// Registration progress.
    pub fn registration(&self) -> watch::Receiver<Registration> {
        self.registration.clone()
    }

    /// The number of payload deliveries finished (successfully or not).
    pub fn payload_runs(&self) -> watch::Receiver<u64> {
        self.state.payload_runs.subscribe()
    }

    /// For each verified revocation notice handled, the actions that ran successfully.
    pub fn revocations(&self) -> watch::Receiver<Vec<Vec<String>>> {
        self.state.revocations.subscribe()
    }

    /// IMA emulation: measures new and changed files now (the admin trigger; SIGHUP in
    /// the binary). Returns the number of entries added; `Ok(0)` without emulation.
    pub async fn ima_rescan(&self) -> Result<usize, EmulateError> {
        match &self.emulator {
            Some(emu) => rescan(emu).await,
            None => Ok(0),
        }
    }

    /// Stops accepting connections, lets requests in flight finish (up to 10 s) and
    /// stops the background tasks. The TPM connection closes when the last handle is
    /// dropped.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        info!("agent stopped");
    }
}

async fn rescan(emu: &Arc<Mutex<ImaEmulator>>) -> Result<usize, EmulateError> {
    let emu = emu.clone();
    tokio::task::spawn_blocking(move || emu.lock().unwrap_or_else(|p| p.into_inner()).rescan())
        .await
        .unwrap_or_else(|e| {
            Err(EmulateError::Io {
                path: PathBuf::from("(rescan task)"),
                source: std::io::Error::other(e.to_string()),
            })
        })
}

/// The AK's signing scheme as Keylime writes `sign_alg` (the AK was checked or made
/// to have the configured key type).
fn sign_alg(key: AkKey) -> &'static str {
    match key {
        AkKey::Rsa2048 => "rsassa",
        AkKey::EccP256 | AkKey::EccP384 => "ecdsa",
    }
}
