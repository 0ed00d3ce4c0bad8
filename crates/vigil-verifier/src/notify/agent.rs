//! The `agent` channel: the notice goes to every node enrolled with this verifier's
//! `uuid` (the failing one included), one delivery per node, `POST
//! /v{ver}/notifications/revocation` over the same pinned mTLS as the quotes.

use std::time::Duration;

use tracing::info;
use vigil_store::Store;

use super::{ChannelFuture, Notifier, Origin};
use vigil_service::client::{Client, Endpoint, Limits};

use crate::node_tls::{self, ClientIdentity};

pub(super) struct AgentChannel {
    store: Store,
    verifier_id: String,
    identity: Option<ClientIdentity>,
    timeout: Duration,
}

impl AgentChannel {
    pub(super) fn new(
        store: Store,
        verifier_id: String,
        identity: Option<ClientIdentity>,
        timeout: Duration,
    ) -> Self {
        Self {
            store,
            verifier_id,
            identity,
            timeout,
        }
    }

    async fn deliver(&self, body: &str, id: &str) -> Result<(), String> {
        let agent = self
            .store
            .verifier_agents()
            .get(id)
            .await
            .map_err(|e| e.to_string())?;
        let e = match agent {
            Some(agent) => agent.enrolment,
            // A node deleted since has nobody left to tell: done.
            None => {
                info!(agent_id = %id, "revocation notice target no longer enrolled; skipped");
                return Ok(());
            }
        };
        let (Some(ip), Some(port)) = (e.ip.as_deref().and_then(|i| i.parse().ok()), e.port) else {
            info!(agent_id = %id, "revocation notice target has no address; skipped");
            return Ok(());
        };
        let addr = std::net::SocketAddr::new(ip, port);
        let tls = match e.mtls_cert.as_deref() {
            Some(pem) if pem != "disabled" && !pem.is_empty() => node_tls::cert_der(pem.as_bytes())
                .and_then(|der| node_tls::pinned_config(der, self.identity.as_ref()).ok()),
            _ => None,
        };
        let path = format!("/v{}/notifications/revocation", e.supported_version);
        let client = Client::new(Limits {
            connect_timeout: self.timeout,
            timeout: self.timeout,
            // An agent answers a notice with a short envelope.
            body_limit: 1 << 20,
        });
        let endpoint = Endpoint::addr(addr).with_optional_tls(tls);
        let sent = client
            .request(
                &endpoint,
                hyper::Method::POST,
                &path,
                Some(body.as_bytes().to_vec()),
            )
            .await;
        match sent {
            Ok(a) if a.status == 200 => Ok(()),
            Ok(a) => Err(format!("HTTP {}", a.status)),
            Err(err) => Err(err.to_string()),
        }
    }
}

impl Notifier for AgentChannel {
    fn name(&self) -> &'static str {
        "agent"
    }

    fn targets<'a>(&'a self, _origin: &'a Origin) -> ChannelFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.store
                .verifier_agents()
                .list(Some(&self.verifier_id))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn send<'a>(&'a self, notice: &'a str, target: &'a str) -> ChannelFuture<'a, ()> {
        Box::pin(self.deliver(notice, target))
    }
}
