//! The agent-side NodeAttestor (`vigil-spire-agent`): SPIRE's agent asks it to aid an
//! attestation; it sends the node's UUID and bank (the payload) read from the Vigil
//! agent's node-local socket, then for each challenge an identity quote over the
//! challenge's nonce, from the same socket.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::RwLock;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::agent::node_attestor_server::{NodeAttestor, NodeAttestorServer};
use crate::proto::agent::payload_or_challenge_response::Data;
use crate::proto::agent::{Challenge, PayloadOrChallengeResponse};
use crate::proto::config::config_server::{Config, ConfigServer};
use crate::proto::config::{
    ConfigureRequest, ConfigureResponse, ValidateRequest, ValidateResponse,
};
use crate::{hcl, local, ChallengeAnswer, ChallengeBody, Payload, MAX_MESSAGE};

/// The Vigil agent's socket when `socket_path` is not configured.
pub const DEFAULT_SOCKET: &str = "/run/vigil/agent.sock";
/// The API version asked of the agent.
const API: &str = "v2.6";

/// The gRPC names of the services this plugin serves (for `Init`).
pub const SERVICE_NAMES: [&str; 2] = [
    "spire.plugin.agent.nodeattestor.v1.NodeAttestor",
    "spire.service.common.config.v1.Config",
];

/// The agent-side plugin.
#[derive(Debug, Default)]
pub struct AgentPlugin {
    socket: RwLock<Option<PathBuf>>,
}

impl AgentPlugin {
    /// The plugin's services, to hand to [`crate::plugin::serve`].
    pub fn routes() -> tonic::service::Routes {
        let plugin = std::sync::Arc::new(Self::default());
        tonic::service::Routes::new(NodeAttestorServer::from_arc(plugin.clone()))
            .add_service(ConfigServer::from_arc(plugin))
    }

    fn socket(&self) -> Result<PathBuf, Status> {
        self.socket
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Status::failed_precondition("not configured"))
    }
}

/// The socket named by `hcl_text`.
fn socket_of(hcl_text: &str) -> Result<PathBuf, Status> {
    let settings = hcl::parse(hcl_text, &["socket_path"])
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(PathBuf::from(
        settings
            .get("socket_path")
            .map_or(DEFAULT_SOCKET, String::as_str),
    ))
}

fn message(data: Data) -> PayloadOrChallengeResponse {
    PayloadOrChallengeResponse { data: Some(data) }
}

fn json(v: &impl serde::Serialize) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))
}

/// The identity quote over the nonce of `challenge`, as the answer to send.
async fn answer(socket: &std::path::Path, challenge: &[u8]) -> Result<Vec<u8>, Status> {
    if challenge.len() > MAX_MESSAGE {
        return Err(Status::invalid_argument("challenge too large"));
    }
    let body: ChallengeBody = serde_json::from_slice(challenge)
        .map_err(|e| Status::invalid_argument(format!("challenge is not Vigil's: {e}")))?;
    if body.nonce.is_empty() || !body.nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Status::invalid_argument(
            "the nonce must be letters and digits",
        ));
    }
    let results = local::get(
        socket,
        &format!("/{API}/quotes/identity?nonce={}", body.nonce),
    )
    .await
    .map_err(|e| Status::unavailable(e.to_string()))?;
    let quote = results["quote"]
        .as_str()
        .ok_or_else(|| Status::internal("the agent's answer has no quote"))?;
    json(&ChallengeAnswer {
        quote: quote.to_owned(),
    })
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<PayloadOrChallengeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAttestor for AgentPlugin {
    type AidAttestationStream = AnswerStream;

    async fn aid_attestation(
        &self,
        request: Request<Streaming<Challenge>>,
    ) -> Result<Response<AnswerStream>, Status> {
        let socket = self.socket()?;
        let info = local::get(&socket, &format!("/{API}/agent/info"))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let field = |k: &str| {
            info[k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Status::internal(format!("the agent's info has no {k}")))
        };
        let payload = json(&Payload {
            agent_uuid: field("agent_uuid")?,
            hash_alg: field("tpm_hash_alg")?,
        })?;
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(message(Data::Payload(payload))))
            .await
            .map_err(|_| Status::cancelled("the host went away"))?;
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            loop {
                let next = match inbound.message().await {
                    Ok(Some(c)) => answer(&socket, &c.challenge)
                        .await
                        .map(|a| message(Data::ChallengeResponse(a))),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let failed = next.is_err();
                if tx.send(next).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Config for AgentPlugin {
    async fn configure(
        &self,
        request: Request<ConfigureRequest>,
    ) -> Result<Response<ConfigureResponse>, Status> {
        let socket = socket_of(&request.get_ref().hcl_configuration)?;
        *self.socket.write().unwrap_or_else(|p| p.into_inner()) = Some(socket);
        Ok(Response::new(ConfigureResponse {}))
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let (valid, notes) = match socket_of(&request.get_ref().hcl_configuration) {
            Ok(_) => (true, Vec::new()),
            Err(e) => (false, vec![e.message().to_owned()]),
        };
        Ok(Response::new(ValidateResponse { valid, notes }))
    }
}
