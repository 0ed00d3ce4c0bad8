//! Bringing the fleet in: every node registered with the registrar (its software EK
//! opens the registrar's MakeCredential blob with ActivateCredential, as a TPM would)
//! and enrolled with the verifier in bulk, against one shared runtime policy and one
//! shared measured-boot policy uploaded once by name. Both speak Keylime's REST APIs,
//! so the same code enrols with Keylime's registrar and verifier.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};
use vigil_core::tpm::credential::{activate_credential, auth_tag, CredentialBlob};
use vigil_service::client::{Client, Endpoint, Limits};

use crate::serve::Fleet;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The runtime and measured-boot policies' name on the verifier.
pub(crate) const POLICY_NAME: &str = "vigil-sim";

/// Where the verifier's admin API is and how to authenticate to it.
pub struct VerifierApi {
    endpoint: Endpoint,
    /// The API version in paths (`2.2`, …).
    version: String,
}

impl VerifierApi {
    /// `url` (`https://ip:port`) with the `cv_ca` layout in `tls_dir` (`cacert.crt`,
    /// `client-cert.crt`, `client-private.pem`), checking the server certificate for
    /// `server_name` when given.
    pub fn new(
        url: &str,
        tls_dir: &std::path::Path,
        server_name: Option<&str>,
        version: &str,
    ) -> Result<Self> {
        let (endpoint, _) = Endpoint::url(url)?;
        let tls = vigil_tls_client(tls_dir)?;
        let mut endpoint = endpoint.with_tls(Arc::new(tls));
        if let Some(name) = server_name {
            endpoint = endpoint.with_server_name(
                rustls_pki_types::ServerName::try_from(name.to_owned())
                    .context("--verifier-server-name")?,
            );
        }
        Ok(Self {
            endpoint,
            version: version.to_owned(),
        })
    }
}

fn vigil_tls_client(dir: &std::path::Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("cacert.crt"))
        .with_context(|| format!("{}/cacert.crt", dir.display()))?
    {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_file_iter(dir.join("client-cert.crt"))
        .with_context(|| format!("{}/client-cert.crt", dir.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("client-private.pem"))
        .with_context(|| format!("{}/client-private.pem", dir.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?)
}

async fn call(
    client: &Client,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let answer = client
        .request(endpoint, method, path, Some(body.to_string().into_bytes()))
        .await?;
    Ok((answer.status, answer.json()))
}

/// Registers every node with the registrar at `url` (plain HTTP, Keylime's agent
/// side), `concurrency` at a time.
pub(crate) async fn register(fleet: &Arc<Fleet>, url: &str, concurrency: usize) -> Result<()> {
    let (endpoint, _) = Endpoint::url(url)?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (fleet, endpoint, next) = (fleet.clone(), endpoint.clone(), next.clone());
        tasks.spawn(async move {
            let client = Client::new(Limits::default());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(node) = fleet.nodes.get(i) else {
                    return anyhow::Ok(());
                };
                let path = format!("/v2.2/agents/{}", node.id);
                let body = json!({
                    "ek_tpm": B64.encode(node.ek.public.to_tpm2b()),
                    "aik_tpm": B64.encode(&node.ak_tpm),
                    "ip": node.addr.ip().to_string(),
                    "port": node.addr.port(),
                    "mtls_cert": node.cert_pem,
                });
                let (status, reply) = call(&client, &endpoint, Method::POST, &path, &body).await?;
                if status != 200 {
                    bail!("registering {}: HTTP {status} {reply}", node.id);
                }
                let blob = reply["results"]["blob"]
                    .as_str()
                    .context("the registrar's answer has no blob")?;
                let blob = CredentialBlob::parse_tpm2_tools(&B64.decode(blob)?)?;
                let ak_name = vigil_core::tpm::public::TpmPublic::parse_tpm2b(&node.ak_tpm)?.name();
                let secret = activate_credential(&node.ek.public, &node.ek.key, &ak_name, &blob)?;
                let tag = json!({"auth_tag": auth_tag(&secret, &node.id)});
                let (status, reply) = call(&client, &endpoint, Method::PUT, &path, &tag).await?;
                if status != 200 {
                    bail!("activating {}: HTTP {status} {reply}", node.id);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Uploads the shared policies (an existing one of the same name is kept: a second
/// simulator run reuses it).
pub(crate) async fn upload_policies(fleet: &Fleet, api: &VerifierApi) -> Result<()> {
    let client = Client::new(Limits::default());
    let v = &api.version;
    let runtime = json!({
        "runtime_policy": B64.encode(fleet.material.runtime_policy.to_string()),
        "runtime_policy_key": "",
        "runtime_policy_sig": "",
        "tpm_policy": "{}",
    });
    let mb = json!({"mb_policy": fleet.material.mb_refstate.to_string()});
    for (path, body) in [
        (format!("/v{v}/allowlists/{POLICY_NAME}"), runtime),
        (format!("/v{v}/mbpolicies/{POLICY_NAME}"), mb),
    ] {
        let (status, reply) = call(&client, &api.endpoint, Method::POST, &path, &body).await?;
        if status != 201 && status != 200 && status != 409 {
            bail!("POST {path}: HTTP {status} {reply}");
        }
    }
    Ok(())
}

/// Enrols every node with the verifier, `concurrency` at a time.
pub(crate) async fn enrol(
    fleet: &Arc<Fleet>,
    api: &Arc<VerifierApi>,
    concurrency: usize,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (fleet, api, next) = (fleet.clone(), api.clone(), next.clone());
        tasks.spawn(async move {
            let client = Client::new(Limits::default());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(node) = fleet.nodes.get(i) else {
                    return anyhow::Ok(());
                };
                let body = json!({
                    "v": B64.encode([7u8; 32]),
                    "cloudagent_ip": node.addr.ip().to_string(),
                    "cloudagent_port": node.addr.port(),
                    // What Keylime's tenant asks for with a measured-boot policy: the
                    // `example` policy's PCRs 0–9 and 14, and PCR 10 for IMA.
                    "tpm_policy": "{\"mask\": \"0x47ff\"}",
                    "runtime_policy": "",
                    "runtime_policy_name": POLICY_NAME,
                    "mb_policy": null,
                    "mb_policy_name": POLICY_NAME,
                    "ima_sign_verification_keys": "",
                    "metadata": "{}",
                    "revocation_key": "",
                    "accept_tpm_hash_algs": ["sha256"],
                    "accept_tpm_encryption_algs": ["rsa", "ecc"],
                    "accept_tpm_signing_algs": ["rsassa", "ecdsa", "ecschnorr"],
                    "ak_tpm": B64.encode(&node.ak_tpm),
                    "mtls_cert": node.cert_pem,
                    "supported_version": "2.2",
                });
                let path = format!("/v{}/agents/{}", api.version, node.id);
                let (status, reply) =
                    call(&client, &api.endpoint, Method::POST, &path, &body).await?;
                if status != 200 && status != 409 {
                    bail!("enrolling {}: HTTP {status} {reply}", node.id);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}
