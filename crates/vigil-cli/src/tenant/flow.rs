//! The tenant's conversations with the registrar, the verifier and the node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use rand_core::OsRng;
use serde_json::{json, Value};
use vigil_core::payload::{encrypt_share, BootstrapKey};
use vigil_core::tpm::ek_cert::EkCertStore;

use super::body::{self, Enrolment};
use super::http::{Client, Response, TlsFiles};
use super::identity::{self, AcceptLists, EkVerdict, IdentityQuote, RegistrarRecord};
use super::policy::Policies;
use super::version;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// Keylime's `max_payload_size` (1 MiB of encoded payload).
pub(crate) const MAX_PAYLOAD: usize = 1 << 20;

/// A server said no (or a node failed a check): exit status 1, not 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) String);

fn refused(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refused(msg.into()))
}

/// Retry policy (Keylime's `max_retries`, `retry_interval`, `exponential_backoff`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// Attempts.
    pub(crate) max: u32,
    /// Base interval.
    pub(crate) interval: Duration,
    /// Double the wait each time.
    pub(crate) exponential: bool,
}

impl Retry {
    fn wait(&self, attempt: u32) -> Duration {
        if self.exponential {
            self.interval * 2u32.saturating_pow(attempt.saturating_sub(1)).min(64)
        } else {
            self.interval
        }
    }
}

/// Where the services are and how to reach them.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    /// The verifier.
    pub(crate) verifier: Client,
    /// The registrar.
    pub(crate) registrar: Client,
    /// The verifier address as given (sent in enrolments).
    pub(crate) verifier_ip: String,
    /// The verifier port as given.
    pub(crate) verifier_port: u16,
    /// The tenant's TLS files (also the identity presented to nodes).
    pub(crate) tls: Option<TlsFiles>,
    /// Request timeout.
    pub(crate) timeout: Duration,
    /// Retries.
    pub(crate) retry: Retry,
    /// A verifier id to list by (`?verifier=`).
    pub(crate) verifier_id: Option<String>,
}

fn unexpected(what: &str, server: &str, r: &Response) -> anyhow::Error {
    refused(format!(
        "{what}: {server} answered {} {}",
        r.status,
        r.status_text()
    ))
}

impl Tenant {
    async fn negotiate(&self, client: &Client, name: &str) -> String {
        // Keylime falls back to its current version when /version is unreachable or
        // gone (410: push mode).
        match client.get("/version").await {
            Ok(r) if r.status == 200 => {
                let listed = version::listed(r.results());
                version::negotiate(&listed).map_or_else(
                    || {
                        crate::tenant::warn(&format!(
                            "the {name} supports none of the tenant's API versions ({listed:?}); trying {}",
                            version::CURRENT
                        ));
                        version::CURRENT.to_owned()
                    },
                    str::to_owned,
                )
            }
            _ => version::CURRENT.to_owned(),
        }
    }

    /// The verifier's API path prefix (`/v2.6`).
    pub(crate) async fn verifier_prefix(&self) -> String {
        format!("/v{}", self.negotiate(&self.verifier, "verifier").await)
    }

    /// The registrar's API path prefix.
    pub(crate) async fn registrar_prefix(&self) -> String {
        format!("/v{}", self.negotiate(&self.registrar, "registrar").await)
    }

    fn verifier_name(&self) -> String {
        format!("the verifier at {}", self.verifier.addr())
    }

    fn registrar_name(&self) -> String {
        format!("the registrar at {}", self.registrar.addr())
    }

    /// Registrar `GET /agents/{id}`: the record, or `None` when unknown (or not yet
    /// activated).
    pub(crate) async fn reg_status(&self, id: &str) -> Result<Option<Value>> {
        let p = self.registrar_prefix().await;
        let r = self.registrar.get(&format!("{p}/agents/{id}")).await?;
        match r.status {
            200 => Ok(Some(r.results().clone())),
            404 => Ok(None),
            _ => Err(unexpected("registrar status", &self.registrar_name(), &r)),
        }
    }

    /// Registrar `GET /agents/`: the ids.
    pub(crate) async fn reg_list(&self) -> Result<Vec<String>> {
        let p = self.registrar_prefix().await;
        let r = self.registrar.get(&format!("{p}/agents/")).await?;
        if r.status != 200 {
            return Err(unexpected("registrar list", &self.registrar_name(), &r));
        }
        Ok(r.results()["uuids"]
            .as_array()
            .map(|a| flatten_ids(a))
            .unwrap_or_default())
    }

    /// Registrar `DELETE /agents/{id}`; `false` when it did not exist.
    pub(crate) async fn reg_delete(&self, id: &str) -> Result<bool> {
        let p = self.registrar_prefix().await;
        let r = self
            .registrar
            .request("DELETE", &format!("{p}/agents/{id}"), None)
            .await?;
        match r.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(unexpected("registrar delete", &self.registrar_name(), &r)),
        }
    }

    /// Verifier `GET /agents/{id}`: the status object, or `None` when not enrolled.
    pub(crate) async fn cv_status(&self, id: &str) -> Result<Option<Value>> {
        let p = self.verifier_prefix().await;
        let r = self.verifier.get(&format!("{p}/agents/{id}")).await?;
        match r.status {
            200 => Ok(Some(r.results().clone())),
            404 => Ok(None),
            _ => Err(unexpected("status", &self.verifier_name(), &r)),
        }
    }

    /// Verifier `GET /agents/`: ids, or with `bulk` every status object by id.
    pub(crate) async fn cv_list(&self, bulk: bool) -> Result<Value> {
        let p = self.verifier_prefix().await;
        let vid = self.verifier_id.as_deref().unwrap_or("");
        let path = if bulk {
            format!("{p}/agents/?bulk=True&verifier={vid}")
        } else {
            format!("{p}/agents/?verifier={vid}")
        };
        let r = self.verifier.get(&path).await?;
        match r.status {
            200 => Ok(r.results().clone()),
            // Keylime's verifier answers 404 when it has no agents at all (older
            // versions); that is an empty list.
            404 if !bulk => Ok(json!({"uuids": []})),
            _ => Err(unexpected("list", &self.verifier_name(), &r)),
        }
    }

    /// Verifier `DELETE /agents/{id}`, waiting for a 202 (deletion after the current
    /// poll) to complete. `false` when the node was not enrolled.
    pub(crate) async fn cv_delete(&self, id: &str) -> Result<bool> {
        let p = self.verifier_prefix().await;
        let r = self
            .verifier
            .request("DELETE", &format!("{p}/agents/{id}"), None)
            .await?;
        match r.status {
            200 => Ok(true),
            404 => Ok(false),
            202 => {
                for attempt in 1..=self.retry.max {
                    if self.cv_status(id).await?.is_none() {
                        return Ok(true);
                    }
                    tokio::time::sleep(self.retry.wait(attempt)).await;
                }
                Err(refused(format!(
                    "{id} was not deleted from {} after {} tries; check its state with \
                     `vigil tenant status -u {id}`",
                    self.verifier_name(),
                    self.retry.max
                )))
            }
            _ => Err(unexpected("delete", &self.verifier_name(), &r)),
        }
    }

    /// A Vigil-only verifier route (`/vigil/v1/…`): `results` of a 200, `None` for a
    /// 404 (a Keylime verifier has none of these routes), else an error naming the
    /// verifier's words.
    pub(crate) async fn vigil(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>> {
        let r = self
            .verifier
            .request(
                method,
                &format!("/vigil/v1/{path}"),
                body.map(|b| b.to_string()),
            )
            .await?;
        match r.status {
            200 => Ok(Some(r.results().clone())),
            404 => Ok(None),
            400 | 409 => Err(refused(format!(
                "{}: {}",
                self.verifier_name(),
                r.status_text()
            ))),
            _ => Err(unexpected(path, &self.verifier_name(), &r)),
        }
    }

    /// Verifier `PUT /agents/{id}/reactivate` or `/stop`.
    pub(crate) async fn cv_put(&self, id: &str, action: &str) -> Result<()> {
        let p = self.verifier_prefix().await;
        let r = self
            .verifier
            // No body and no content type, as Keylime's tenant sends: Keylime's verifier
            // refuses an empty body declared as JSON.
            .request("PUT", &format!("{p}/agents/{id}/{action}"), None)
            .await?;
        match r.status {
            200 => Ok(()),
            404 => Err(refused(format!(
                "{id} is not enrolled at {}",
                self.verifier_name()
            ))),
            _ => Err(unexpected(action, &self.verifier_name(), &r)),
        }
    }

    /// `POST` (or with `update`, `PUT`) a named policy: `kind` is `allowlists` or
    /// `mbpolicies`.
    pub(crate) async fn policy_push(
        &self,
        kind: &str,
        name: &str,
        body: &Value,
        update: bool,
    ) -> Result<()> {
        let p = self.verifier_prefix().await;
        let method = if update { "PUT" } else { "POST" };
        let r = self
            .verifier
            .request(
                method,
                &format!("{p}/{kind}/{name}"),
                Some(body.to_string()),
            )
            .await?;
        match r.status {
            200 | 201 => Ok(()),
            409 => Err(refused(format!(
                "a policy named '{name}' already exists at {} ({}); use --update to replace it",
                self.verifier_name(),
                r.status_text()
            ))),
            404 if update => Err(refused(format!(
                "no policy named '{name}' at {} to update; push it without --update",
                self.verifier_name()
            ))),
            _ => Err(unexpected("policy push", &self.verifier_name(), &r)),
        }
    }

    /// `GET /{kind}/` or `/{kind}/{name}`; `None` when the name is unknown.
    pub(crate) async fn policy_get(&self, kind: &str, name: Option<&str>) -> Result<Option<Value>> {
        let p = self.verifier_prefix().await;
        let r = self
            .verifier
            .get(&format!("{p}/{kind}/{}", name.unwrap_or("")))
            .await?;
        match r.status {
            200 => Ok(Some(r.results().clone())),
            404 => Ok(None),
            _ => Err(unexpected("policy", &self.verifier_name(), &r)),
        }
    }

    /// `DELETE /{kind}/{name}`.
    pub(crate) async fn policy_delete(&self, kind: &str, name: &str) -> Result<()> {
        let p = self.verifier_prefix().await;
        let r = self
            .verifier
            .request("DELETE", &format!("{p}/{kind}/{name}"), None)
            .await?;
        match r.status {
            200 | 204 => Ok(()),
            404 => Err(refused(format!(
                "no policy named '{name}' at {}",
                self.verifier_name()
            ))),
            409 => Err(refused(format!(
                "{} ({}); delete or update those nodes first",
                r.status_text(),
                self.verifier_name()
            ))),
            _ => Err(unexpected("policy delete", &self.verifier_name(), &r)),
        }
    }
}

/// Keylime's verifier lists ids as single-element lists (`[["a"], ["b"]]`); the
/// registrar as strings.
pub(crate) fn flatten_ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// What goes to the node besides its identity check.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    /// Nothing: no U, no V.
    None,
    /// A file's bytes as the payload.
    File(PathBuf),
    /// A certificate package from the CA in this directory, plus `--include` files.
    Cert {
        /// The CA directory.
        dir: PathBuf,
        /// Extra files for the zip.
        include: Option<PathBuf>,
    },
}

/// The secrets of a delivery: K, its shares and the encrypted payload.
#[derive(Debug, Clone)]
pub(crate) struct Secrets {
    /// The bootstrap key.
    pub(crate) k: BootstrapKey,
    /// U.
    pub(crate) u: Vec<u8>,
    /// V.
    pub(crate) v: Vec<u8>,
    /// base64 of the encrypted payload.
    pub(crate) payload: String,
    /// `metadata` JSON text.
    pub(crate) metadata: String,
    /// The revocation key (PEM) or `""`.
    pub(crate) revocation_key: String,
}

/// Prepares the delivery (Keylime's `init_add` payload part).
pub(crate) fn prepare_delivery(
    delivery: &Delivery,
    agent_id: &str,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<Option<Secrets>> {
    let (plaintext, metadata, revocation_key) = match delivery {
        Delivery::None => return Ok(None),
        Delivery::File(path) => (
            std::fs::read(path)
                .with_context(|| format!("cannot read the payload {}", path.display()))?,
            "{}".to_owned(),
            String::new(),
        ),
        Delivery::Cert { dir, include } => {
            let pkg = super::certpkg::build(dir, agent_id, include.as_deref())?;
            (pkg.zip, pkg.metadata, pkg.revocation_key)
        }
    };
    let k = BootstrapKey::generate(rng);
    let (u, v) = k.split(rng);
    let payload = k.encrypt_payload(&plaintext, rng);
    if payload.len() > MAX_PAYLOAD {
        bail!(
            "the encrypted payload is {} bytes, more than the {MAX_PAYLOAD} a node accepts",
            payload.len()
        );
    }
    Ok(Some(Secrets {
        k,
        u,
        v,
        payload,
        metadata,
        revocation_key,
    }))
}

/// The options of `add` and `update`.
#[derive(Debug, Clone)]
pub(crate) struct AddPlan {
    /// The node id.
    pub(crate) id: String,
    /// `--targethost`.
    pub(crate) host: Option<String>,
    /// `--port`.
    pub(crate) port: Option<u16>,
    /// `--cv-targethost`: the address the verifier should use.
    pub(crate) cv_host: Option<String>,
    /// Policies.
    pub(crate) policies: Policies,
    /// What to deliver.
    pub(crate) delivery: Delivery,
    /// Wait for the node to derive K.
    pub(crate) verify: bool,
    /// The EK vendor CA store, or `None` to skip the EK check.
    pub(crate) ek_store: Option<EkCertStore>,
    /// Accepted algorithms.
    pub(crate) accept: AcceptLists,
    /// Force the node API version.
    pub(crate) agent_api_version: Option<String>,
    /// Vigil's hardware class for the node.
    pub(crate) class: Option<String>,
    /// Vigil's node labels.
    pub(crate) labels: std::collections::BTreeMap<String, String>,
}

/// What `add` did, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct AddReport {
    /// The node id.
    pub(crate) agent_id: String,
    /// Where the node was reached.
    pub(crate) node: String,
    /// Node API version used.
    pub(crate) api_version: String,
    /// The identity quote's bank.
    pub(crate) hash_alg: String,
    /// The EK certificate chain, or `None` when not checked.
    pub(crate) ek_chain: Option<Vec<String>>,
    /// Whether U and a payload went to the node.
    pub(crate) payload_delivered: bool,
    /// Whether the node proved it derived K.
    pub(crate) key_verified: bool,
    /// The verifier's status after enrolment.
    pub(crate) status: Value,
}

impl Tenant {
    fn node_client(&self, host: &str, port: u16, reg: &RegistrarRecord) -> Result<Client> {
        let tls = match (&reg.mtls_cert, &self.tls) {
            (Some(pem), Some(files)) => {
                use rustls::pki_types::pem::PemObject;
                let cert = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|e| {
                        anyhow!("the registrar's mtls_cert for the node is not PEM: {e}")
                    })?;
                let config = vigil_tls::pinned_client_config(cert, Some(files.identity()?))
                    .context("cannot build the TLS configuration for the node")?;
                Some(Arc::new(config))
            }
            _ => {
                crate::tenant::warn(&format!(
                    "connecting to the node at {host}:{port} without mTLS{}",
                    if reg.mtls_cert.is_none() {
                        " (it registered no mtls_cert)"
                    } else {
                        " (no tenant TLS files)"
                    }
                ));
                None
            }
        };
        let peer = super::http::Peer {
            name: "the node",
            hint: "is vigil-agent (or keylime_agent) running there? check -t/--targethost and \
                   --port"
                .to_owned(),
        };
        Ok(Client::new(peer, host, port, tls, self.timeout))
    }

    /// A GET to the node, retried while it cannot be reached.
    async fn node_get(&self, node: &Client, path: &str) -> Result<Response> {
        let mut attempt = 0;
        loop {
            match node.get(path).await {
                Ok(r) if r.status != 503 && r.status != 504 => return Ok(r),
                Ok(r) if attempt + 1 >= self.retry.max => {
                    return Err(unexpected("node", &node.addr(), &r));
                }
                Err(e) if attempt + 1 >= self.retry.max => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "no answer from {}://{}{path} after {} tries",
                        node.scheme(),
                        node.addr(),
                        self.retry.max
                    )));
                }
                _ => {}
            }
            attempt += 1;
            tokio::time::sleep(self.retry.wait(attempt)).await;
        }
    }

    /// Keylime's `add` sequence (§7.4): registrar lookup, node version, identity quote
    /// and EK checks, U to the node, enrolment with V, status poll, optional
    /// `keys/verify`.
    pub(crate) async fn add(&self, plan: &AddPlan) -> Result<AddReport> {
        let id = &plan.id;
        let mut rng = OsRng;
        // 1. The registrar's record.
        let reg_value = self.reg_status(id).await?.ok_or_else(|| {
            refused(format!(
                "{id} is not registered (or not activated) at {}; check the node's log and \
                 `vigil tenant reglist`",
                self.registrar_name()
            ))
        })?;
        let reg = RegistrarRecord::from_results(&reg_value).map_err(|e| refused(e.to_string()))?;
        let host = plan
            .host
            .clone()
            .or_else(|| reg.ip.clone())
            .ok_or_else(|| anyhow!("the registrar has no address for {id}: pass --targethost"))?;
        let port = plan.port.or(reg.port).unwrap_or(9002);
        let node = self.node_client(&host, port, &reg)?;

        // 2. The node's API version.
        let api_version = match &plan.agent_api_version {
            Some(v) => v.clone(),
            None => match node.get("/version").await {
                Ok(r) if r.status == 200 => {
                    let listed = version::listed(r.results());
                    version::negotiate(&listed)
                        .ok_or_else(|| {
                            refused(format!(
                                "the node at {} supports API versions {listed:?}, none of the \
                                 tenant's ({:?})",
                                node.addr(),
                                version::TENANT_VERSIONS
                            ))
                        })?
                        .to_owned()
                }
                _ => version::CURRENT.to_owned(),
            },
        };

        // 3. Payload, K and auth tag.
        let secrets = prepare_delivery(&plan.delivery, id, &mut rng)?;

        // 4. Identity quote, EK, then U.
        let nonce = body::random_password(&mut rng, 20);
        let r = self
            .node_get(
                &node,
                &format!("/v{api_version}/quotes/identity?nonce={nonce}"),
            )
            .await?;
        if r.status != 200 {
            return Err(unexpected(
                "identity quote",
                &format!("the node at {}", node.addr()),
                &r,
            ));
        }
        let quote = IdentityQuote::from_results(r.results()).map_err(|e| refused(e.to_string()))?;
        let verified = identity::check_identity_quote(&reg, &quote, &nonce, &plan.accept)
            .map_err(|e| refused(e.to_string()))?;
        let ek =
            identity::check_ek(&reg, plan.ek_store.as_ref()).map_err(|e| refused(e.to_string()))?;
        if ek == EkVerdict::Skipped {
            crate::tenant::warn(
                "EK certificate checking is disabled (--no-require-ek-cert): the TPM's vendor is not verified",
            );
        }
        if let Some(s) = &secrets {
            let encrypted_u = encrypt_share(&verified.nk, &s.u, &mut rng)
                .context("cannot encrypt U to the node key")?;
            let body = body::ukey_body(&encrypted_u, &s.k.auth_tag(id), Some(&s.payload));
            let r = node
                .request(
                    "POST",
                    &format!("/v{api_version}/keys/ukey"),
                    Some(body.to_string()),
                )
                .await?;
            if r.status != 200 {
                return Err(unexpected(
                    "posting U",
                    &format!("the node at {}", node.addr()),
                    &r,
                ));
            }
        }

        // 5. Enrolment with V.
        let enrol = Enrolment {
            v: secrets.as_ref().map(|s| B64.encode(&s.v)),
            cloudagent_ip: Some(plan.cv_host.clone().unwrap_or_else(|| host.clone())),
            cloudagent_port: match plan.port {
                Some(p) => json!(p.to_string()),
                None => json!(port),
            },
            verifier_ip: self.verifier_ip.clone(),
            verifier_port: self.verifier_port.to_string(),
            policies: &plan.policies,
            metadata: secrets
                .as_ref()
                .map_or_else(|| "{}".to_owned(), |s| s.metadata.clone()),
            revocation_key: secrets
                .as_ref()
                .map(|s| s.revocation_key.clone())
                .unwrap_or_default(),
            accept: &plan.accept,
            ak_tpm: reg.aik_tpm.clone(),
            mtls_cert: reg.mtls_cert.clone(),
            supported_version: api_version.clone(),
            hardware_class: plan.class.as_deref(),
            labels: &plan.labels,
        };
        let p = self.verifier_prefix().await;
        let r = self
            .verifier
            .request(
                "POST",
                &format!("{p}/agents/{id}"),
                Some(enrol.body().to_string()),
            )
            .await?;
        match r.status {
            200 => {}
            409 => {
                return Err(refused(format!(
                "{id} is already enrolled at {} ({}); run `vigil tenant update` or `delete` first",
                self.verifier_name(),
                r.status_text()
            )))
            }
            _ => return Err(unexpected("enrolment", &self.verifier_name(), &r)),
        }
        let mut status = Value::Null;
        for attempt in 1..=self.retry.max.max(1) {
            if let Some(s) = self.cv_status(id).await? {
                status = s;
                break;
            }
            if attempt == self.retry.max {
                return Err(refused(format!(
                    "{id} still not enrolled at {} after {attempt} tries",
                    self.verifier_name()
                )));
            }
            tokio::time::sleep(self.retry.wait(attempt)).await;
        }

        // 6. keys/verify.
        let mut key_verified = false;
        if plan.verify {
            let Some(s) = &secrets else {
                bail!("--verify needs something delivered to the node: --payload or --cert");
            };
            if let Err(e) = self.verify_key(&node, &api_version, id, &s.k).await {
                // Keylime stops a node that could not prove it derived the key.
                let stopped = self.cv_put(id, "stop").await;
                return Err(e.context(match stopped {
                    Ok(()) => format!("the node was stopped at {}", self.verifier_name()),
                    Err(s) => format!("stopping the node at the verifier failed too: {s:#}"),
                }));
            }
            key_verified = true;
        }
        Ok(AddReport {
            agent_id: id.clone(),
            node: format!("{}://{}", node.scheme(), node.addr()),
            api_version,
            hash_alg: verified.bank.to_string(),
            ek_chain: match ek {
                EkVerdict::Trusted(chain) => Some(chain),
                EkVerdict::Skipped => None,
            },
            payload_delivered: secrets.is_some(),
            key_verified,
            status,
        })
    }

    /// Keylime's `do_verify`: the node must answer a random challenge with
    /// HMAC-SHA384(K, challenge) once it combined U and V.
    async fn verify_key(
        &self,
        node: &Client,
        api_version: &str,
        id: &str,
        k: &BootstrapKey,
    ) -> Result<()> {
        let challenge = body::random_password(&mut OsRng, 20);
        let expected = k.answer_challenge(&challenge);
        let mut last = String::new();
        for attempt in 1..=self.retry.max.max(1) {
            let r = self
                .node_get(
                    node,
                    &format!("/v{api_version}/keys/verify?challenge={challenge}"),
                )
                .await?;
            let mac = r
                .results()
                .get("hmac")
                .and_then(Value::as_str)
                .unwrap_or("");
            if r.status == 200 && mac.eq_ignore_ascii_case(&expected) {
                return Ok(());
            }
            last = if r.status == 200 {
                "a wrong HMAC".to_owned()
            } else {
                format!("{} {}", r.status, r.status_text())
            };
            if attempt < self.retry.max {
                tokio::time::sleep(self.retry.wait(attempt)).await;
            }
        }
        Err(refused(format!(
            "{id} did not derive the bootstrap key after {} tries (last answer: {last}); \
             the verifier sends V only after a good integrity quote: check \
             `vigil tenant status -u {id}`",
            self.retry.max
        )))
    }
}
