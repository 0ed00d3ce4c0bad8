//! SPIRE's side of the plugin protocol, for tests and `vigil demo identity`: start a
//! plugin binary with the magic cookie, read its handshake line, connect over its unix
//! socket, `Init` and `Configure` it with HCL, and relay one node attestation between
//! an agent-side and a server-side NodeAttestor as SPIRE's agent and server do
//! (payload, challenges, challenge responses, the agent's attributes). This is a test
//! host: it has not been compared with a SPIRE server beyond the protocol's definition.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::plugin::{NODE_ATTESTOR, PROTOCOL_VERSIONS_ENV};
use crate::proto::agent::node_attestor_client::NodeAttestorClient as AgentClient;
use crate::proto::agent::payload_or_challenge_response::Data;
use crate::proto::agent::Challenge;
use crate::proto::config::config_client::ConfigClient;
use crate::proto::config::{ConfigureRequest, CoreConfiguration};
use crate::proto::controller::grpc_controller_client::GrpcControllerClient;
use crate::proto::controller::Empty;
use crate::proto::init::init_client::InitClient;
use crate::proto::init::InitRequest;
use crate::proto::server::attest_request::Request as ToServer;
use crate::proto::server::attest_response::Response as FromServer;
use crate::proto::server::node_attestor_client::NodeAttestorClient as ServerClient;
use crate::proto::server::{AgentAttributes, AttestRequest};

/// How long a plugin may take to print its handshake line.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// The most challenges relayed in one attestation.
const MAX_ROUNDS: usize = 8;

/// Why the host could not drive a plugin.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The binary cannot be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No handshake line, or one that is not go-plugin's over a unix socket.
    #[error("{binary}: bad handshake {line:?}")]
    Handshake {
        /// The binary.
        binary: PathBuf,
        /// What it printed (and on stderr, when it printed nothing).
        line: String,
    },
    /// The plugin's socket cannot be reached.
    #[error("{binary}: cannot connect: {source}")]
    Connect {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A call was refused.
    #[error("{binary}: {call}: {status}")]
    Call {
        /// The binary.
        binary: PathBuf,
        /// The call.
        call: &'static str,
        /// The plugin's status.
        status: Status,
    },
}

/// A plugin process started and connected to.
#[derive(Debug)]
pub struct PluginProcess {
    binary: PathBuf,
    child: Child,
    channel: Channel,
}

/// The handshake line's socket: `1|1|unix|<path>|grpc`.
pub fn parse_handshake(line: &str) -> Option<PathBuf> {
    let fields: Vec<&str> = line.trim_end().split('|').collect();
    match fields[..] {
        ["1", "1", "unix", path, "grpc", ..] if !path.is_empty() => Some(PathBuf::from(path)),
        _ => None,
    }
}

impl PluginProcess {
    /// Starts `binary` as SPIRE would and connects to it.
    pub async fn start(binary: &Path) -> Result<Self, HostError> {
        let mut child = Command::new(binary)
            .env(NODE_ATTESTOR, NODE_ATTESTOR)
            .env(PROTOCOL_VERSIONS_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HostError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        let bad = |line: String| HostError::Handshake {
            binary: binary.to_owned(),
            line,
        };
        let stdout = child.stdout.take().ok_or_else(|| bad(String::new()))?;
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read_line(&mut line)).await;
        let Some(socket) = parse_handshake(&line) else {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), stderr.read_to_string(&mut err))
                        .await;
            }
            return Err(bad(format!("{line}{err}")));
        };
        // The URI is unused: every connection goes to the plugin's socket.
        let channel = Endpoint::from_static("http://plugin")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| HostError::Connect {
                binary: binary.to_owned(),
                source,
            })?;
        Ok(Self {
            binary: binary.to_owned(),
            child,
            channel,
        })
    }

    fn call(&self, call: &'static str) -> impl FnOnce(Status) -> HostError + '_ {
        move |status| HostError::Call {
            binary: self.binary.clone(),
            call,
            status,
        }
    }

    /// `Init` (no host services offered) then `Configure` with `trust_domain` and `hcl`;
    /// returns the services the plugin names.
    pub async fn init_and_configure(
        &self,
        trust_domain: &str,
        hcl: &str,
    ) -> Result<Vec<String>, HostError> {
        let names = InitClient::new(self.channel.clone())
            .init(InitRequest {
                host_service_names: Vec::new(),
            })
            .await
            .map_err(self.call("Init"))?
            .into_inner()
            .plugin_service_names;
        ConfigClient::new(self.channel.clone())
            .configure(ConfigureRequest {
                core_configuration: Some(CoreConfiguration {
                    trust_domain: trust_domain.to_owned(),
                }),
                hcl_configuration: hcl.to_owned(),
            })
            .await
            .map_err(self.call("Configure"))?;
        Ok(names)
    }

    /// Asks the plugin to exit (go-plugin's controller) and waits for it.
    pub async fn shutdown(mut self) {
        let _ = GrpcControllerClient::new(self.channel.clone())
            .shutdown(Empty {})
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// One node attestation as SPIRE relays it: the agent side's payload to the server
/// side, each challenge back to the agent side and its response to the server side,
/// until the server side answers the agent's attributes or refuses (its status).
pub async fn attest(
    agent: &PluginProcess,
    server: &PluginProcess,
) -> Result<AgentAttributes, Status> {
    let (challenges, challenge_rx) = mpsc::channel::<Challenge>(MAX_ROUNDS);
    let mut from_agent = AgentClient::new(agent.channel.clone())
        .aid_attestation(ReceiverStream::new(challenge_rx))
        .await?
        .into_inner();
    let (to_server, request_rx) = mpsc::channel::<AttestRequest>(MAX_ROUNDS);
    let send = |r: ToServer| {
        let to_server = to_server.clone();
        async move {
            to_server
                .send(AttestRequest { request: Some(r) })
                .await
                .map_err(|_| Status::aborted("the server side's stream closed"))
        }
    };
    match from_agent.message().await?.and_then(|m| m.data) {
        Some(Data::Payload(p)) => send(ToServer::Payload(p)).await?,
        _ => return Err(Status::invalid_argument("the agent side sent no payload")),
    }
    let mut from_server = ServerClient::new(server.channel.clone())
        .attest(ReceiverStream::new(request_rx))
        .await?
        .into_inner();
    for _ in 0..MAX_ROUNDS {
        match from_server.message().await?.and_then(|m| m.response) {
            Some(FromServer::AgentAttributes(a)) => return Ok(a),
            Some(FromServer::Challenge(challenge)) => {
                challenges
                    .send(Challenge { challenge })
                    .await
                    .map_err(|_| Status::aborted("the agent side's stream closed"))?;
                match from_agent.message().await?.and_then(|m| m.data) {
                    Some(Data::ChallengeResponse(r)) => {
                        send(ToServer::ChallengeResponse(r)).await?
                    }
                    _ => {
                        return Err(Status::invalid_argument(
                            "the agent side did not answer the challenge",
                        ))
                    }
                }
            }
            None => return Err(Status::aborted("the server side ended without a verdict")),
        }
    }
    Err(Status::resource_exhausted("too many challenges"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_lines() {
        assert_eq!(
            parse_handshake("1|1|unix|/tmp/x/plugin.sock|grpc\n"),
            Some(PathBuf::from("/tmp/x/plugin.sock"))
        );
        assert_eq!(
            parse_handshake("1|1|unix|/tmp/p|grpc|\n"),
            Some(PathBuf::from("/tmp/p"))
        );
        assert_eq!(parse_handshake("1|1|tcp|127.0.0.1:1|grpc"), None);
        assert_eq!(parse_handshake("This binary is a plugin"), None);
    }
}
