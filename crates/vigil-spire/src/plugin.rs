//! The plugin side of hashicorp go-plugin's protocol as SPIRE uses it: refuse to run
//! unless started by a host (the magic cookie), listen on a fresh unix socket, print
//! the handshake line `1|1|unix|<path>|grpc` on stdout, and serve the plugin's services
//! with the SDK's `Init`, gRPC health (`plugin`: SERVING) and go-plugin's controller
//! (`Shutdown` ends the process).

use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::proto::controller::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::proto::controller::Empty;
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::health_server::{Health, HealthServer};
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::proto::init::init_server::{Init, InitServer};
use crate::proto::init::{DeinitRequest, DeinitResponse, InitRequest, InitResponse};

/// go-plugin's core protocol version.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The application protocol version SPIRE's SDK uses.
pub const APP_PROTOCOL_VERSION: u32 = 1;
/// The plugin type, which SPIRE's SDK uses as both the magic cookie's name and value.
pub const NODE_ATTESTOR: &str = "NodeAttestor";
/// The environment variable listing the app protocol versions the host speaks.
pub const PROTOCOL_VERSIONS_ENV: &str = "PLUGIN_PROTOCOL_VERSIONS";

/// Why the plugin cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Started by hand rather than by a SPIRE host.
    #[error(
        "this is a SPIRE plugin: SPIRE starts it (the {NODE_ATTESTOR} magic cookie is not set)"
    )]
    NotLaunchedByHost,
    /// The host speaks no protocol version this plugin does.
    #[error(
        "the host speaks plugin protocol versions {0:?}, this plugin speaks {APP_PROTOCOL_VERSION}"
    )]
    Version(String),
    /// The socket or the handshake line cannot be set up.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The handshake line for a plugin listening on `socket`.
pub fn handshake_line(socket: &Path) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{}|grpc\n",
        socket.display()
    )
}

/// Checks that a host started this process: the magic cookie and, when the host lists
/// them, its protocol versions (from `env`, pass `std::env::var`).
pub fn check_host(env: impl Fn(&str) -> Option<String>) -> Result<(), PluginError> {
    if env(NODE_ATTESTOR).as_deref() != Some(NODE_ATTESTOR) {
        return Err(PluginError::NotLaunchedByHost);
    }
    if let Some(versions) = env(PROTOCOL_VERSIONS_ENV) {
        let ours = APP_PROTOCOL_VERSION.to_string();
        if !versions.split(',').any(|v| v.trim() == ours) {
            return Err(PluginError::Version(versions));
        }
    }
    Ok(())
}

/// Serves `routes` (the plugin's own services, whose gRPC names are `service_names`)
/// as a go-plugin plugin until the host asks it to shut down.
pub async fn serve(
    routes: tonic::service::Routes,
    service_names: Vec<String>,
) -> Result<(), PluginError> {
    check_host(|k| std::env::var(k).ok())?;
    let dir = std::env::temp_dir().join(format!(
        "vigil-spire-{}-{:08x}",
        std::process::id(),
        OsRng.next_u32()
    ));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PluginError::Io { path, source }
    };
    std::fs::create_dir(&dir).map_err(io(&dir))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    }
    let socket = dir.join("plugin.sock");
    let listener = UnixListener::bind(&socket).map_err(io(&socket))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let result = async {
        {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(handshake_line(&socket).as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(io(Path::new("(stdout)")))?;
        }
        tonic::transport::Server::builder()
            .add_routes(routes)
            .add_service(InitServer::new(InitService { service_names }))
            .add_service(HealthServer::new(HealthService))
            .add_service(GrpcControllerServer::new(Controller { stop: stop_tx }))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
            .map_err(PluginError::from)
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

struct InitService {
    service_names: Vec<String>,
}

#[tonic::async_trait]
impl Init for InitService {
    /// No host service is used; the plugin's services are named.
    async fn init(&self, _: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        Ok(Response::new(InitResponse {
            plugin_service_names: self.service_names.clone(),
        }))
    }

    async fn deinit(&self, _: Request<DeinitRequest>) -> Result<Response<DeinitResponse>, Status> {
        Ok(Response::new(DeinitResponse {}))
    }
}

struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving.into(),
        }))
    }
}

struct Controller {
    stop: watch::Sender<bool>,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        let _ = self.stop.send(true);
        Ok(Response::new(Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_must_set_the_cookie_and_a_shared_version() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(matches!(
            check_host(env(&[])),
            Err(PluginError::NotLaunchedByHost)
        ));
        assert!(check_host(env(&[(NODE_ATTESTOR, NODE_ATTESTOR)])).is_ok());
        assert!(check_host(env(&[
            (NODE_ATTESTOR, NODE_ATTESTOR),
            (PROTOCOL_VERSIONS_ENV, "1,2")
        ]))
        .is_ok());
        assert!(matches!(
            check_host(env(&[
                (NODE_ATTESTOR, NODE_ATTESTOR),
                (PROTOCOL_VERSIONS_ENV, "2")
            ])),
            Err(PluginError::Version(_))
        ));
        assert_eq!(
            handshake_line(Path::new("/tmp/p.sock")),
            "1|1|unix|/tmp/p.sock|grpc\n"
        );
    }
}
