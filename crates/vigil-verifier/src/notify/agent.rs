//! The `agent` channel: the notice goes to every node enrolled with this verifier's
//! `uuid` (the failing one included), one delivery per node, `POST
//! /v{ver}/notifications/revocation` over the same pinned mTLS as the quotes.

use std::time::Duration;

use vigil_store::Store;

use super::{ChannelFuture, Notifier, Origin, Sent};
use vigil_service::client::{Client, Limits};

use crate::node_tls::{self, NodeTls};

pub(super) struct AgentChannel {
    store: Store,
    verifier_id: String,
    tls: NodeTls,
    timeout: Duration,
}

impl AgentChannel {
    pub(super) fn new(store: Store, verifier_id: String, tls: NodeTls, timeout: Duration) -> Self {
        Self {
            store,
            verifier_id,
            tls,
            timeout,
        }
    }

    async fn deliver(&self, body: &str, id: &str) -> Result<Sent, String> {
        let agent = self
            .store
            .verifier_agents()
            .get(id)
            .await
            .map_err(|e| e.to_string())?;
        let e = match agent {
            Some(agent) => agent.enrolment,
            // A node deleted since has nobody left to tell: done.
            None => return Ok(Sent::Declined("the node is no longer enrolled".into())),
        };
        let (Some(ip), Some(port)) = (e.ip.as_deref().and_then(|i| i.parse().ok()), e.port) else {
            return Ok(Sent::Declined("the node has no address".into()));
        };
        // Without a revocation key the node was enrolled without a --cert package, so
        // it has no RevocationNotifier certificate to verify notices with.
        let can_verify = e.revocation_key.as_deref().is_some_and(|k| !k.is_empty());
        let addr = std::net::SocketAddr::new(ip, port);
        let pin = match e.mtls_cert.as_deref() {
            Some(pem) if pem != "disabled" && !pem.is_empty() => node_tls::pin(pem.as_bytes()),
            _ => None,
        };
        let path = format!("/v{}/notifications/revocation", e.supported_version);
        let client = Client::new(Limits {
            connect_timeout: self.timeout,
            timeout: self.timeout,
            // An agent answers a notice with a short envelope.
            body_limit: 1 << 20,
        });
        let endpoint = node_tls::endpoint(addr, &self.tls, pin);
        let sent = client
            .request(
                &endpoint,
                hyper::Method::POST,
                &path,
                Some(body.as_bytes().to_vec()),
            )
            .await;
        match sent {
            Ok(a) if a.status == 200 => Ok(Sent::Delivered),
            // The refusal such a node answers (Keylime's agent too): expected, and no
            // retry changes it.
            Ok(a) if a.status == 400 && !can_verify => Ok(Sent::Declined(
                "the node refused it (HTTP 400), as expected: it was enrolled without \
                 --cert, so it has no certificate to verify notices with"
                    .into(),
            )),
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

    fn send<'a>(&'a self, notice: &'a str, target: &'a str) -> ChannelFuture<'a, Sent> {
        Box::pin(self.deliver(notice, target))
    }
}
