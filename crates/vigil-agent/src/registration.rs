//! The registration client (compat §2.1): `GET /version`, `POST /v{ver}/agents/{uuid}`,
//! ActivateCredential on the TPM, `PUT /v{ver}/agents/{uuid}` with the auth tag. It
//! runs in the background, retrying with exponential backoff, so the API keeps serving
//! while the registrar is down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{error, info, warn};
use vigil_service::client::{Answer, Client, ClientError, Endpoint};
use vigil_tpm::Tpm;

/// The registrar API versions this client speaks, oldest first.
pub const REGISTRAR_VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];

/// Where registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Not yet done (the registrar is unreachable or has not answered yet).
    Pending,
    /// Registered and activated.
    Active {
        /// The registrar API version used.
        version: String,
    },
    /// The registrar refused for good (403: another TPM holds this UUID).
    Refused(String),
}

/// What is registered.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The agent UUID.
    pub uuid: String,
    /// `TPM2B_PUBLIC` of the EK.
    pub ek_tpm: Vec<u8>,
    /// The EK certificate and CA chain from NV, if any.
    pub ekcert: Option<(Vec<u8>, Vec<Vec<u8>>)>,
    /// `TPM2B_PUBLIC` of the AK.
    pub aik_tpm: Vec<u8>,
    /// The server certificate (PEM) when mTLS is on.
    pub mtls_cert: Option<String>,
    /// Contact address.
    pub ip: String,
    /// Contact port.
    pub port: u16,
}

/// Why one attempt failed; `permanent` stops the retries.
#[derive(Debug)]
struct Failure {
    message: String,
    permanent: bool,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        permanent: false,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn status_text(a: &Answer) -> String {
    a.json().get("status").and_then(Value::as_str).map_or_else(
        || String::from_utf8_lossy(&a.body).into_owned(),
        str::to_owned,
    )
}

/// Keylime's negotiation: the newest version both sides support; `None` when the
/// registrar has no `/version` (old registrars) or shares none.
fn negotiate(results: &Value) -> Option<String> {
    let theirs: Vec<String> = match results.get("supported_versions") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => results
            .get("current_version")
            .or_else(|| results.get("supported_version"))
            .and_then(Value::as_str)
            .map(|s| vec![s.to_owned()])
            .unwrap_or_default(),
    };
    REGISTRAR_VERSIONS
        .iter()
        .rev()
        .find(|v| theirs.iter().any(|t| t == *v))
        .map(|v| (*v).to_owned())
}

impl Identity {
    fn ekcert_field(&self) -> Option<String> {
        let (cert, chain) = self.ekcert.as_ref()?;
        if chain.is_empty() {
            return Some(b64(cert));
        }
        // With a CA chain, rust-keylime's form: one PEM bundle, the EK certificate first.
        let mut out = String::new();
        for der in std::iter::once(cert).chain(chain) {
            out.push_str(
                &der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
                    .unwrap_or_default(),
            );
        }
        Some(out)
    }

    fn body(&self) -> Value {
        let mut body = json!({
            "ek_tpm": b64(&self.ek_tpm),
            "aik_tpm": b64(&self.aik_tpm),
            "ip": self.ip,
            "port": self.port,
        });
        if let Some(c) = self.ekcert_field() {
            body["ekcert"] = Value::String(c);
        }
        if let Some(c) = &self.mtls_cert {
            body["mtls_cert"] = Value::String(c.clone());
        }
        body
    }
}

/// One request to the registrar (plain HTTP, as Keylime's agents register), with the
/// client's default limits.
async fn request(
    registrar: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    Client::default()
        .request(&Endpoint::addr(registrar), method, path, body)
        .await
}

async fn attempt(registrar: SocketAddr, id: &Identity, tpm: &Arc<Tpm>) -> Result<String, Failure> {
    let version = match request(registrar, Method::GET, "/version", None).await {
        Ok(a) if a.status == 200 => negotiate(&a.json()["results"]).ok_or_else(|| Failure {
            message: format!(
                "the registrar supports none of API versions {REGISTRAR_VERSIONS:?}: {}",
                a.json()["results"]
            ),
            permanent: false,
        })?,
        // No /version (registrars before API 2.3): try the newest we speak.
        Ok(_) => REGISTRAR_VERSIONS[REGISTRAR_VERSIONS.len() - 1].to_owned(),
        Err(e) => return Err(fail(format!("registrar unreachable: {e}"))),
    };
    let path = format!("/v{version}/agents/{}", id.uuid);
    let body = serde_json::to_vec(&id.body()).unwrap_or_default();
    let a = request(registrar, Method::POST, &path, Some(body))
        .await
        .map_err(|e| fail(format!("registration request failed: {e}")))?;
    match a.status {
        200 => {}
        403 => {
            return Err(Failure {
                message: format!(
                    "registrar refused the registration (403: {}): this UUID is registered \
                     with another TPM; delete it at the registrar to register this one",
                    status_text(&a)
                ),
                permanent: true,
            })
        }
        400 => {
            return Err(fail(format!(
                "registrar refused the registration data (400: {})",
                status_text(&a)
            )))
        }
        s => {
            return Err(fail(format!(
                "registration answered {s}: {}",
                status_text(&a)
            )))
        }
    }
    let blob = a.json()["results"]["blob"]
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| fail("registrar's answer has no base64 blob"))?;
    let t = tpm.clone();
    let secret = tokio::task::spawn_blocking(move || t.activate_credential(&blob))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("ActivateCredential failed: {e}")))?;
    let tag = vigil_core::tpm::credential::auth_tag(&secret, &id.uuid);
    let body = serde_json::to_vec(&json!({ "auth_tag": tag })).unwrap_or_default();
    let a = request(registrar, Method::PUT, &path, Some(body))
        .await
        .map_err(|e| fail(format!("activation request failed: {e}")))?;
    match a.status {
        200 => Ok(version),
        400 => Err(fail(format!(
            "registrar refused the auth tag (400: {}); registering again",
            status_text(&a)
        ))),
        s => Err(fail(format!(
            "activation answered {s}: {}",
            status_text(&a)
        ))),
    }
}

/// Registers until it succeeds or is refused for good, publishing progress on
/// `state`. Backoff doubles from 1 s up to `max_backoff`.
pub async fn run(
    registrar: SocketAddr,
    id: Identity,
    tpm: Arc<Tpm>,
    max_backoff: Duration,
    state: watch::Sender<Registration>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match attempt(registrar, &id, &tpm).await {
            Ok(version) => {
                info!(agent_id = %id.uuid, %registrar, api = %version, "registered and activated");
                let _ = state.send(Registration::Active { version });
                return;
            }
            Err(f) if f.permanent => {
                error!(agent_id = %id.uuid, "{}", f.message);
                let _ = state.send(Registration::Refused(f.message));
                return;
            }
            Err(f) => {
                warn!(agent_id = %id.uuid, "{}; retrying in {backoff:?}", f.message);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff.max(Duration::from_secs(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_newest_common_version() {
        let r =
            json!({"current_version": "2.6", "supported_versions": ["2.0", "2.3", "2.6", "3.0"]});
        assert_eq!(negotiate(&r).as_deref(), Some("2.6"));
        let r = json!({"supported_versions": ["2.0", "2.2"]});
        assert_eq!(negotiate(&r).as_deref(), Some("2.2"));
        let r = json!({"current_version": "2.4"});
        assert_eq!(negotiate(&r).as_deref(), Some("2.4"));
        assert_eq!(negotiate(&json!({"supported_versions": ["3.0"]})), None);
    }
}
