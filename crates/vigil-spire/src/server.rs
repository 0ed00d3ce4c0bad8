//! The server-side NodeAttestor (`vigil-spire-server`): for each node SPIRE's server
//! attests, it reads the agent side's payload, sends a nonce the verifier issued
//! (`POST /vigil/v1/identity/nonce`, usable once), and has Vigil's verifier check the
//! identity quote that comes back (`POST /vigil/v1/identity/verify`
//! with a client certificate holding the identity role). Vigil refuses a replayed
//! nonce, a quote not from the node's enrolled AK, a node never attested and a failed
//! node; otherwise the plugin answers the SPIFFE ID
//! `spiffe://<trust domain>/spire/agent/vigil/<uuid>` with Vigil's selectors, and
//! `CanReattest` (a node re-attests with a new quote).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use vigil_service::client::{Client, Endpoint, Limits};

use crate::proto::config::config_server::{Config, ConfigServer};
use crate::proto::config::{
    ConfigureRequest, ConfigureResponse, CoreConfiguration, ValidateRequest, ValidateResponse,
};
use crate::proto::server::attest_request::Request as Inbound;
use crate::proto::server::attest_response::Response as Outbound;
use crate::proto::server::node_attestor_server::{NodeAttestor, NodeAttestorServer};
use crate::proto::server::{AgentAttributes, AttestRequest, AttestResponse};
use crate::{hcl, ChallengeAnswer, ChallengeBody, Payload, MAX_MESSAGE};

/// The gRPC names of the services this plugin serves (for `Init`).
pub const SERVICE_NAMES: [&str; 2] = [
    "spire.plugin.server.nodeattestor.v1.NodeAttestor",
    "spire.service.common.config.v1.Config",
];
/// The settings the plugin reads.
const SETTINGS: [&str; 4] = ["verifier_address", "ca_cert", "client_cert", "client_key"];
/// The selector prefix Vigil answers; SPIRE adds the plugin's name as the type.
const SELECTOR_PREFIX: &str = "vigil:";

/// What the plugin was configured with.
#[derive(Debug)]
struct Settings {
    trust_domain: String,
    verifier: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

/// The server-side plugin.
#[derive(Debug, Default)]
pub struct ServerPlugin {
    settings: RwLock<Option<Arc<Settings>>>,
}

impl ServerPlugin {
    /// The plugin's services, to hand to [`crate::plugin::serve`].
    pub fn routes() -> tonic::service::Routes {
        let plugin = Arc::new(Self::default());
        tonic::service::Routes::new(NodeAttestorServer::from_arc(plugin.clone()))
            .add_service(ConfigServer::from_arc(plugin))
    }

    fn settings(&self) -> Result<Arc<Settings>, Status> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Status::failed_precondition("not configured"))
    }
}

/// The settings of a `Configure` or `Validate` request.
fn settings_of(core: Option<&CoreConfiguration>, hcl_text: &str) -> Result<Settings, Status> {
    let invalid = |m: String| Status::invalid_argument(m);
    let trust_domain = core
        .map(|c| c.trust_domain.clone())
        .filter(|t| !t.is_empty() && !t.contains('/') && !t.contains(':'))
        .ok_or_else(|| invalid("a trust domain is required".into()))?;
    let s = hcl::parse(hcl_text, &SETTINGS).map_err(|e| invalid(e.to_string()))?;
    let get = |k: &'static str| {
        s.get(k)
            .map(String::as_str)
            .ok_or_else(|| invalid(hcl::HclError::Missing(k).to_string()))
    };
    let verifier = get("verifier_address")?
        .parse()
        .map_err(|e| invalid(format!("verifier_address: {e} (an ip:port)")))?;
    let (ca, cert, key) = (
        PathBuf::from(get("ca_cert")?),
        PathBuf::from(get("client_cert")?),
        PathBuf::from(get("client_key")?),
    );
    let tls =
        vigil_tls::client_config(&ca, Some((&cert, &key))).map_err(|e| invalid(e.to_string()))?;
    Ok(Settings {
        trust_domain,
        verifier,
        tls: Arc::new(tls),
    })
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Status::invalid_argument(format!("{what} too large")));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("{what} is not Vigil's: {e}")))
}

/// Reads the next request of `inbound`, which must be `want`.
async fn next(inbound: &mut Streaming<AttestRequest>, want: &str) -> Result<Vec<u8>, Status> {
    match inbound.message().await?.and_then(|r| r.request) {
        Some(Inbound::Payload(p)) if want == "payload" => Ok(p),
        Some(Inbound::ChallengeResponse(c)) if want == "challenge response" => Ok(c),
        Some(_) => Err(Status::invalid_argument(format!("expected the {want}"))),
        None => Err(Status::invalid_argument(format!(
            "the stream ended before the {want}"
        ))),
    }
}

/// `POST path` with `body` to the verifier: its `results`, or why it refused (its
/// `status` text, as gRPC `PERMISSION_DENIED` naming `what`).
async fn call_verifier(
    settings: &Settings,
    path: &str,
    body: Option<Value>,
    what: &str,
) -> Result<Value, Status> {
    let endpoint = Endpoint::addr(settings.verifier).with_tls(settings.tls.clone());
    let limits = Limits {
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
        body_limit: 1 << 20,
    };
    let answer = Client::new(limits)
        .request(
            &endpoint,
            hyper::Method::POST,
            path,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .map_err(|e| Status::unavailable(format!("Vigil's verifier: {e}")))?;
    let mut json = answer.json();
    if answer.status != 200 {
        return Err(Status::permission_denied(format!(
            "Vigil refused {what}: {}",
            json["status"].as_str().unwrap_or("(no reason)")
        )));
    }
    Ok(json["results"].take())
}

/// A nonce from the verifier (usable once, for a few minutes).
async fn verifier_nonce(settings: &Settings) -> Result<String, Status> {
    let results = call_verifier(settings, "/vigil/v1/identity/nonce", None, "a nonce").await?;
    results["nonce"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Status::internal("the verifier's answer has no nonce"))
}

/// The verifier's judgement of `quote` for `payload`'s node over `nonce`: the
/// agent's attributes, or why Vigil refused.
async fn verify(
    settings: &Settings,
    payload: &Payload,
    nonce: &str,
    quote: &str,
) -> Result<AgentAttributes, Status> {
    let spiffe_id = format!(
        "spiffe://{}/spire/agent/vigil/{}",
        settings.trust_domain, payload.agent_uuid
    );
    let body = serde_json::json!({
        "agent_uuid": payload.agent_uuid,
        "hash_alg": payload.hash_alg,
        "nonce": nonce,
        "quote": quote,
        "spiffe_id": spiffe_id,
    });
    let what = format!("node {}", payload.agent_uuid);
    let results = call_verifier(settings, "/vigil/v1/identity/verify", Some(body), &what).await?;
    let selector_values = results["selectors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str())
        .filter_map(|s| s.strip_prefix(SELECTOR_PREFIX))
        .map(str::to_owned)
        .collect();
    Ok(AgentAttributes {
        spiffe_id,
        selector_values,
        can_reattest: true,
    })
}

/// One attestation: payload, challenge, answer, verdict; what to send back.
async fn attest(
    settings: &Settings,
    inbound: &mut Streaming<AttestRequest>,
    tx: &mpsc::Sender<Result<AttestResponse, Status>>,
) -> Result<AgentAttributes, Status> {
    let payload: Payload = parse(&next(inbound, "payload").await?, "payload")?;
    let nonce = verifier_nonce(settings).await?;
    let challenge = serde_json::to_vec(&ChallengeBody {
        nonce: nonce.clone(),
    })
    .map_err(|e| Status::internal(e.to_string()))?;
    tx.send(Ok(AttestResponse {
        response: Some(Outbound::Challenge(challenge)),
    }))
    .await
    .map_err(|_| Status::cancelled("the host went away"))?;
    let answer: ChallengeAnswer = parse(
        &next(inbound, "challenge response").await?,
        "challenge response",
    )?;
    verify(settings, &payload, &nonce, &answer.quote).await
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<AttestResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAttestor for ServerPlugin {
    type AttestStream = ResponseStream;

    async fn attest(
        &self,
        request: Request<Streaming<AttestRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let settings = self.settings()?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let last = attest(&settings, &mut inbound, &tx)
                .await
                .map(|a| AttestResponse {
                    response: Some(Outbound::AgentAttributes(a)),
                });
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Config for ServerPlugin {
    async fn configure(
        &self,
        request: Request<ConfigureRequest>,
    ) -> Result<Response<ConfigureResponse>, Status> {
        let r = request.get_ref();
        let settings = settings_of(r.core_configuration.as_ref(), &r.hcl_configuration)?;
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(settings));
        Ok(Response::new(ConfigureResponse {}))
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let r = request.get_ref();
        let (valid, notes) = match settings_of(r.core_configuration.as_ref(), &r.hcl_configuration)
        {
            Ok(_) => (true, Vec::new()),
            Err(e) => (false, vec![e.message().to_owned()]),
        };
        Ok(Response::new(ValidateResponse { valid, notes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_needs_a_trust_domain_and_the_verifier() {
        let e = settings_of(None, "").unwrap_err();
        assert!(e.message().contains("trust domain"), "{e}");
        let core = CoreConfiguration {
            trust_domain: "example.org".into(),
        };
        let e = settings_of(Some(&core), "").unwrap_err();
        assert!(e.message().contains("verifier_address"), "{e}");
    }
}
