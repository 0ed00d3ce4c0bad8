//! Keylime's agent API as the verifier speaks it (compat §1.5): the integrity quote
//! request, V delivery, and API version negotiation on the agent's "API version not
//! supported" 400 (§1.2). Transport is `vigil_service::client`'s (TLS pinned to the
//! node's certificate, no session resumption, a limit on the answer's size): quote
//! requests go on the node's kept connection ([`KeptConnection`], owned by the node's
//! task) while the node keeps it open, since a TLS handshake per round was most of a
//! round's CPU; everything else on a connection of its own. This file knows paths,
//! query strings and answers, and maps every
//! outcome to the engine's [`CommFailure`] — an answer over `max_answer_size` is
//! [`CommFailure::TooLarge`], not an unreachable node.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Bytes;
use serde_json::Value;
use vigil_core::attestation::CommFailure;
use vigil_service::client::{Answer, Client, ClientError, KeptConnection, Limits};

use vigil_tls::CertPin;

use crate::node_tls::{self, NodeTls};
use crate::protocol::{negotiate, AGENT_VERSIONS};

/// Where a node is and how to reach it, copied from its context for one request.
#[derive(Debug, Clone)]
pub(crate) struct NodeTarget {
    /// The node's address, if it is a pull-mode node with a usable one.
    pub(crate) addr: Option<SocketAddr>,
    /// The node's certificate, pinned (none for a node without mTLS).
    pub(crate) pin: Option<CertPin>,
    /// The agent API version in use.
    pub(crate) version: String,
}

/// A request's result, and the API version negotiated on the way, if it changed.
#[derive(Debug)]
pub(crate) struct Exchange<T> {
    pub(crate) result: Result<T, CommFailure>,
    pub(crate) renegotiated: Option<String>,
}

/// The verifier's client of its nodes.
#[derive(Debug, Clone)]
pub(crate) struct AgentClient {
    tls: NodeTls,
    client: Client,
    keep_alive: bool,
}

impl AgentClient {
    /// Requests of at most `timeout` each (connecting included), reading answers of at
    /// most `max_answer` bytes; quote requests on kept connections if `keep_alive`.
    pub(crate) fn new(
        tls: NodeTls,
        timeout: Duration,
        max_answer: usize,
        keep_alive: bool,
    ) -> Self {
        let client = Client::new(Limits {
            connect_timeout: timeout,
            timeout,
            body_limit: max_answer,
        });
        Self {
            tls,
            client,
            keep_alive,
        }
    }

    /// `GET /v{ver}/quotes/integrity` on the node's kept connection `conn` (opened or
    /// replaced as needed): the answer's body, unparsed (parsing it is CPU work for the
    /// judging pool).
    pub(crate) async fn quote(
        &self,
        conn: &mut Option<KeptConnection>,
        node: &NodeTarget,
        nonce: &str,
        mask: u32,
        partial: bool,
        ima_ml_entry: u64,
    ) -> Exchange<Bytes> {
        let path = format!(
            "/v{}/quotes/integrity?nonce={nonce}&mask={mask:#x}&partial={}&ima_ml_entry={ima_ml_entry}",
            node.version,
            u8::from(partial),
        );
        self.exchange(Some(conn), node, hyper::Method::GET, &path, None)
            .await
    }

    /// `POST /v{ver}/keys/vkey` with the encrypted V (`{"encrypted_key": …}`).
    pub(crate) async fn deliver_v(&self, node: &NodeTarget, body: Vec<u8>) -> Exchange<()> {
        let path = format!("/v{}/keys/vkey", node.version);
        let Exchange {
            result,
            renegotiated,
        } = self
            .exchange(None, node, hyper::Method::POST, &path, Some(body))
            .await;
        Exchange {
            result: result.map(|_| ()),
            renegotiated,
        }
    }

    /// `POST /vigil/v1/actions` with a signed response action; the node's answer.
    pub(crate) async fn response_action(
        &self,
        node: &NodeTarget,
        body: Vec<u8>,
    ) -> Result<Bytes, CommFailure> {
        let addr = node
            .addr
            .ok_or_else(|| CommFailure::BadResponse("the node has no usable ip and port".into()))?;
        let answer = self
            .send(
                None,
                addr,
                node,
                hyper::Method::POST,
                "/vigil/v1/actions",
                Some(body),
            )
            .await?;
        if answer.status == 200 {
            Ok(answer.body)
        } else {
            Err(CommFailure::Status(answer.status))
        }
    }

    async fn exchange(
        &self,
        conn: Option<&mut Option<KeptConnection>>,
        node: &NodeTarget,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Exchange<Bytes> {
        let mut renegotiated = None;
        let result = async {
            let addr = node.addr.ok_or_else(|| {
                CommFailure::BadResponse("the node has no usable ip and port".into())
            })?;
            let answer = self.send(conn, addr, node, method, path, body).await?;
            if answer.status == 200 {
                return Ok(answer.body);
            }
            Err(self.refusal(addr, node, &answer, &mut renegotiated).await)
        }
        .await;
        Exchange {
            result,
            renegotiated,
        }
    }

    async fn send(
        &self,
        conn: Option<&mut Option<KeptConnection>>,
        addr: SocketAddr,
        node: &NodeTarget,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, CommFailure> {
        let endpoint = node_tls::endpoint(addr, &self.tls, node.pin);
        let answer = match conn.filter(|_| self.keep_alive) {
            Some(slot) => {
                self.client
                    .request_kept(slot, &endpoint, method, path, body)
                    .await
            }
            None => self.client.request(&endpoint, method, path, body).await,
        };
        answer.map_err(|e| match e {
            ClientError::TooLarge { limit, .. } => CommFailure::TooLarge {
                limit: u64::try_from(limit).unwrap_or(u64::MAX),
            },
            other => CommFailure::Unreachable(other.to_string()),
        })
    }

    /// Maps a non-200 answer to the engine's failure, negotiating the API version on
    /// Keylime's "API version not supported" 400.
    async fn refusal(
        &self,
        addr: SocketAddr,
        node: &NodeTarget,
        answer: &Answer,
        renegotiated: &mut Option<String>,
    ) -> CommFailure {
        let status = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        if answer.status != 400 || !status.contains("API version not supported") {
            return CommFailure::Status(answer.status);
        }
        let versions = match self
            .send(None, addr, node, hyper::Method::GET, "/version", None)
            .await
        {
            Ok(v) => v,
            Err(f) => return f,
        };
        match negotiate(&AGENT_VERSIONS, &supported_versions(&versions.body)) {
            Some(v) if v != node.version => {
                *renegotiated = Some(v);
                CommFailure::VersionRenegotiated
            }
            _ => CommFailure::VersionUnsupported,
        }
    }
}

/// The versions an agent's `/version` answer lists: `supported_versions` (API 2.5+)
/// or the single `supported_version` of older agents.
fn supported_versions(body: &[u8]) -> Vec<String> {
    let results = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("results").cloned());
    let Some(r) = results else {
        return Vec::new();
    };
    r.get("supported_versions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .or_else(|| {
            r.get("supported_version")
                .and_then(Value::as_str)
                .map(|s| vec![s.to_owned()])
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_old_and_new_agents() {
        let new = br#"{"results":{"supported_versions":["2.1","2.2"]}}"#;
        let old = br#"{"results":{"supported_version":"2.0"}}"#;
        assert_eq!(supported_versions(new), ["2.1", "2.2"]);
        assert_eq!(supported_versions(old), ["2.0"]);
        assert!(supported_versions(b"{}").is_empty());
    }
}
