//! The `agent` channel: the notice goes to every node enrolled with this verifier's
//! `uuid` (the failing one included), `POST /v{ver}/notifications/revocation` over the
//! same pinned mTLS as the quotes. Keylime waits up to 60 s in total; so does this.

use std::sync::Arc;
use std::time::Duration;

use vigil_core::revocation::RevocationNotice;
use vigil_store::Store;

use super::{Notifier, Origin};
use crate::client::{self, ClientIdentity};

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

    async fn deliver(&self, notice: &RevocationNotice) -> Result<(), String> {
        let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
        let ids = self
            .store
            .verifier_agents()
            .list(Some(&self.verifier_id))
            .await
            .map_err(|e| e.to_string())?;
        let mut failed = Vec::new();
        for id in ids {
            let Ok(Some(agent)) = self.store.verifier_agents().get(&id).await else {
                continue;
            };
            let e = agent.enrolment;
            let (Some(ip), Some(port)) = (e.ip.as_deref().and_then(|i| i.parse().ok()), e.port)
            else {
                continue;
            };
            let addr = std::net::SocketAddr::new(ip, port);
            let tls = match e.mtls_cert.as_deref() {
                Some(pem) if pem != "disabled" && !pem.is_empty() => {
                    client::cert_der(pem.as_bytes())
                        .and_then(|der| client::pinned_config(der, self.identity.as_ref()).ok())
                }
                _ => None,
            };
            let path = format!("/v{}/notifications/revocation", e.supported_version);
            match client::request(
                addr,
                &addr.to_string(),
                tls,
                hyper::Method::POST,
                &path,
                Some(body.clone()),
                self.timeout,
            )
            .await
            {
                Ok(a) if a.status == 200 => {}
                Ok(a) => failed.push(format!("{id}: HTTP {}", a.status)),
                Err(err) => failed.push(format!("{id}: {err}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

impl Notifier for AgentChannel {
    fn name(&self) -> &'static str {
        "agent"
    }

    fn send(
        &self,
        notice: Arc<RevocationNotice>,
        _origin: Origin,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            tokio::time::timeout(Duration::from_secs(60), self.deliver(&notice))
                .await
                .map_err(|_| "not every node answered within 60 s".to_owned())?
        })
    }
}
