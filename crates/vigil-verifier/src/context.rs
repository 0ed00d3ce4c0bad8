//! What a node's rounds are judged against, built once per node from its enrolment:
//! the parsed policies (shared through [`PolicyCache`], one parse per distinct policy
//! text in the process), the AK's quote verifier, the pinned TLS configuration.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::Value;
use vigil_core::attestation::BootLogMemo;
use vigil_core::ima::keyring::{ImaKeyring, ImaKeyrings};
use vigil_core::policy::golden::GoldenPcrs;
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::TpmPolicy;
use vigil_core::revocation::RevocationKey;
use vigil_core::tpm::quote::{AkPublicKey, QuoteVerifier};
use vigil_store::{Store, VerifierAgent};
use vigil_tls::CertPin;

use crate::node_tls;

/// Why a node's enrolment cannot be turned into a context; each names the field.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContextError {
    #[error("reading the node's policies: {0}")]
    Store(#[from] vigil_store::StoreError),
    #[error("tpm_policy: {0}")]
    TpmPolicy(#[from] vigil_core::policy::tpm::TpmPolicyError),
    #[error("runtime policy {name}: {source}")]
    RuntimePolicy {
        name: String,
        #[source]
        source: vigil_core::policy::runtime::PolicyError,
    },
    #[error("mb policy {name}: {source}")]
    MbPolicy {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("ak_tpm: {0}")]
    AkTpm(#[from] vigil_core::tpm::codec::CodecError),
    #[error("mtls_cert: {0}")]
    MtlsCert(String),
    #[error("revocation_key: {0}")]
    RevocationKey(String),
    #[error("ima_sign_verification_keys: {0}")]
    ImaKeys(#[source] vigil_core::ima::keyring::KeyError),
    #[error("learned_ima_keyrings: {0}")]
    LearnedKeyrings(#[source] vigil_core::ima::keyring::KeyError),
    #[error("v: {0}")]
    V(#[from] base64::DecodeError),
    #[error("hardware class {0:?} does not exist")]
    NoClass(String),
    #[error("hardware class {class:?} names the {kind} policy {name:?}, which does not exist")]
    ClassPolicy {
        class: String,
        kind: &'static str,
        name: String,
    },
    #[error("hardware class {name:?}: {source}")]
    Golden {
        name: String,
        #[source]
        source: vigil_core::policy::golden::GoldenPcrsError,
    },
}

/// Parsed policies keyed by the store's checksum of their text: every node using the
/// same policy shares one `Arc`, and a policy is parsed once per process, not per
/// round or per node. A generation counter tells node tasks that a named policy
/// changed (`PUT allowlists/{name}`), so they rebuild their context before the next
/// round.
#[derive(Debug, Default)]
pub(crate) struct PolicyCache {
    runtime: Mutex<HashMap<String, Arc<RuntimePolicy>>>,
    mb: Mutex<HashMap<String, Arc<Value>>>,
    generation: AtomicU64,
}

impl PolicyCache {
    /// The parsed runtime policy of this text, parsed now if no node uses it yet.
    pub(crate) fn runtime(
        &self,
        checksum: &str,
        text: &str,
    ) -> Result<Arc<RuntimePolicy>, vigil_core::policy::runtime::PolicyError> {
        let mut map = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(checksum) {
            return Ok(p.clone());
        }
        let parsed = Arc::new(RuntimePolicy::from_json(text.as_bytes())?);
        // Drop the policies no node holds any more before adding one.
        map.retain(|_, p| Arc::strong_count(p) > 1);
        map.insert(checksum.to_owned(), parsed.clone());
        Ok(parsed)
    }

    /// The parsed runtime policy of this checksum, if a node holds it already.
    pub(crate) fn cached_runtime(&self, checksum: &str) -> Option<Arc<RuntimePolicy>> {
        let map = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        map.get(checksum).cloned()
    }

    /// The parsed measured-boot reference state of this checksum, if held already.
    pub(crate) fn cached_mb(&self, checksum: &str) -> Option<Arc<Value>> {
        let map = self.mb.lock().unwrap_or_else(|e| e.into_inner());
        map.get(checksum).cloned()
    }

    /// The parsed measured-boot reference state of this text.
    pub(crate) fn mb(&self, checksum: &str, text: &str) -> Result<Arc<Value>, serde_json::Error> {
        let mut map = self.mb.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(checksum) {
            return Ok(p.clone());
        }
        let parsed: Value = serde_json::from_str(text)?;
        let parsed = Arc::new(parsed);
        map.retain(|_, p| Arc::strong_count(p) > 1);
        map.insert(checksum.to_owned(), parsed.clone());
        Ok(parsed)
    }

    /// How many distinct parsed runtime policies are held.
    pub(crate) fn runtime_len(&self) -> usize {
        self.runtime.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// A named policy changed: nodes rebuild their context.
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Everything a node's rounds need from its enrolment.
pub(crate) struct NodeContext {
    pub(crate) agent_id: String,
    pub(crate) ip: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) v: Option<Vec<u8>>,
    pub(crate) tpm_policy_text: String,
    pub(crate) meta_data: String,
    pub(crate) tpm_policy: TpmPolicy,
    /// The PCR mask of the quote requests (see [`quote_mask`]).
    pub(crate) mask: u32,
    pub(crate) runtime_policy: Option<Arc<RuntimePolicy>>,
    /// The runtime policy's name, if the node has one (what a relearn rewrites).
    pub(crate) runtime_policy_name: Option<String>,
    pub(crate) mb_refstate: Option<Arc<Value>>,
    pub(crate) accept_hash_algs: Vec<String>,
    pub(crate) accept_enc_algs: Vec<String>,
    pub(crate) accept_sign_algs: Vec<String>,
    pub(crate) supported_version: String,
    pub(crate) verifier: QuoteVerifier,
    /// The node's enrolled `mtls_cert`, pinned (none without mTLS).
    pub(crate) pin: Option<CertPin>,
    pub(crate) revocation_key: Option<Arc<RevocationKey>>,
    pub(crate) keyrings: ImaKeyrings,
    pub(crate) generation: u64,
    /// The golden PCR values of the node's hardware class, if it has one.
    pub(crate) golden: Option<Arc<GoldenPcrs>>,
    /// What the node's last UEFI event log replayed to: the same log is not parsed
    /// again every round.
    pub(crate) boot_memo: BootLogMemo,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl NodeContext {
    /// The node's address, if it is a pull-mode node with a usable one.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.ip.as_deref()?.parse().ok()?;
        Some(SocketAddr::new(ip, self.port?))
    }
}

/// The PCRs to quote: the tenant's `mask` (Keylime quotes exactly what the tenant's
/// `tpm_policy.mask` says), every PCR the policy constrains, and PCR 10 whenever a
/// runtime policy is enrolled — Vigil adds the last two so a mask that forgot them
/// cannot silently turn a policy off.
pub(crate) fn quote_mask(text: &str, policy: &TpmPolicy, runtime_policy: bool) -> u32 {
    let given = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("mask").and_then(Value::as_str).map(str::to_owned))
        .and_then(|m| u32::from_str_radix(m.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let ima = if runtime_policy {
        1 << vigil_core::policy::tpm::IMA_PCR
    } else {
        0
    };
    (given | policy.mask() | ima) & 0x00ff_ffff
}

/// Reads a PEM RSA private key (PKCS#8 or PKCS#1), as Keylime's `revocation_key`.
pub(crate) fn revocation_key(pem: &str) -> Result<RevocationKey, String> {
    RevocationKey::from_pem(pem).map_err(|e| e.to_string())
}

/// The store's checksum of a policy text (the same function the store uses).
pub(crate) fn checksum(text: &str) -> String {
    vigil_store::checksum(Some(text))
}

/// Builds the context of `agent` (policies from the store, through the cache).
pub(crate) async fn build(
    agent: &VerifierAgent,
    store: &Store,
    cache: &PolicyCache,
) -> Result<NodeContext, ContextError> {
    let generation = cache.generation();
    let e = &agent.enrolment;
    let tpm_policy = TpmPolicy::from_json(&e.tpm_policy)?;
    // The class: its golden values, and the policies its nodes use when their
    // enrolment names none.
    let class = match &e.hardware_class {
        Some(name) => Some(
            store
                .hardware_classes()
                .get(name)
                .await?
                .ok_or_else(|| ContextError::NoClass(name.clone()))?,
        ),
        None => None,
    };
    let golden = match &class {
        Some(c) => Some(Arc::new(GoldenPcrs::from_json(&c.golden).map_err(
            |source| ContextError::Golden {
                name: c.name.clone(),
                source,
            },
        )?)),
        None => None,
    };
    let runtime_name = e
        .runtime_policy
        .clone()
        .or_else(|| class.as_ref().and_then(|c| c.runtime_policy.clone()));
    let mb_name = e
        .mb_policy
        .clone()
        .or_else(|| class.as_ref().and_then(|c| c.mb_policy.clone()));
    // A class names its policies without a foreign key: one deleted since is an error
    // here, not a node silently judged without it.
    if let Some(c) = &class {
        let missing = |kind, name: &String| ContextError::ClassPolicy {
            class: c.name.clone(),
            kind,
            name: name.clone(),
        };
        if let Some(name) = c
            .runtime_policy
            .as_ref()
            .filter(|_| e.runtime_policy.is_none())
        {
            if store.policies().get_runtime(name).await?.is_none() {
                return Err(missing("runtime", name));
            }
        }
        if let Some(name) = c.mb_policy.as_ref().filter(|_| e.mb_policy.is_none()) {
            if store.policies().get_mb(name).await?.is_none() {
                return Err(missing("measured-boot", name));
            }
        }
    }
    // The checksum first: a policy another node holds parsed is not fetched (a
    // shared runtime policy is ~100 KB; a replica taking over a thousand nodes would
    // read it a thousand times).
    let cached_runtime = match &runtime_name {
        Some(name) => store
            .policies()
            .runtime_checksum(name)
            .await?
            .and_then(|c| cache.cached_runtime(&c)),
        None => None,
    };
    let runtime_policy = match (&runtime_name, cached_runtime) {
        (_, Some(policy)) => Some(policy),
        (Some(name), None) => {
            let stored = store.policies().get_runtime(name).await?;
            match stored {
                Some(p) if p.ima_policy.as_deref().is_some_and(|t| !t.is_empty()) => {
                    let text = p.ima_policy.unwrap_or_default();
                    Some(cache.runtime(&p.checksum, &text).map_err(|source| {
                        ContextError::RuntimePolicy {
                            name: name.clone(),
                            source,
                        }
                    })?)
                }
                _ => None,
            }
        }
        (None, None) => None,
    };
    let cached_mb = match &mb_name {
        Some(name) => store
            .policies()
            .mb_checksum(name)
            .await?
            .and_then(|c| cache.cached_mb(&c)),
        None => None,
    };
    let mb_refstate =
        match (&mb_name, cached_mb) {
            (_, Some(refstate)) => Some(refstate),
            (Some(name), None) => {
                let stored = store.policies().get_mb(name).await?;
                match stored {
                    Some(p) if p.mb_policy.as_deref().is_some_and(|t| !t.is_empty()) => {
                        let text = p.mb_policy.unwrap_or_default();
                        Some(cache.mb(&p.checksum, &text).map_err(|source| {
                            ContextError::MbPolicy {
                                name: name.clone(),
                                source,
                            }
                        })?)
                    }
                    _ => None,
                }
            }
            (None, None) => None,
        };
    let ak = AkPublicKey::from_spki_or_tpm2b(&e.ak_tpm)?;
    let pin = match e.mtls_cert.as_deref() {
        Some(pem) if pem != "disabled" && !pem.is_empty() => Some(
            node_tls::pin(pem.as_bytes())
                .ok_or_else(|| ContextError::MtlsCert("not a PEM or DER certificate".into()))?,
        ),
        _ => None,
    };
    let revocation_key = match e.revocation_key.as_deref() {
        Some(pem) if !pem.trim().is_empty() => Some(Arc::new(
            revocation_key(pem).map_err(ContextError::RevocationKey)?,
        )),
        _ => None,
    };
    let mut keyrings = ImaKeyrings::new();
    let keys = e.ima_sign_verification_keys.trim();
    if !keys.is_empty() && keys != "[]" {
        let ring = ImaKeyring::from_keylime_json(keys).map_err(ContextError::ImaKeys)?;
        keyrings.set_tenant_keyring(ring);
    }
    // Keys learnt from the log before a restart; they belong with the stored IMA offset.
    if let Some(learned) = agent.state.learned_ima_keyrings.as_deref() {
        keyrings
            .set_learned_from_keylime_json(learned)
            .map_err(ContextError::LearnedKeyrings)?;
    }
    let v = match e.v.as_deref() {
        Some(v) if !v.is_empty() => Some(base64::engine::general_purpose::STANDARD.decode(v)?),
        _ => None,
    };
    // The class's PCRs are quoted too, so none of them can be left out.
    let golden_mask = golden
        .as_ref()
        .map_or(0, |g| g.allowed().keys().fold(0u32, |m, &pcr| m | 1 << pcr));
    let mask = quote_mask(&e.tpm_policy, &tpm_policy, runtime_policy.is_some()) | golden_mask;
    Ok(NodeContext {
        mask,
        agent_id: e.agent_id.clone(),
        ip: e.ip.clone(),
        port: e.port,
        v,
        tpm_policy_text: e.tpm_policy.clone(),
        meta_data: e.meta_data.clone(),
        tpm_policy,
        runtime_policy,
        runtime_policy_name: e.runtime_policy.clone(),
        mb_refstate,
        accept_hash_algs: e.accept_tpm_hash_algs.clone(),
        accept_enc_algs: e.accept_tpm_encryption_algs.clone(),
        accept_sign_algs: e.accept_tpm_signing_algs.clone(),
        supported_version: e.supported_version.clone(),
        verifier: QuoteVerifier::new(ak),
        pin,
        revocation_key,
        keyrings,
        generation,
        golden,
        boot_memo: BootLogMemo::default(),
    })
}
