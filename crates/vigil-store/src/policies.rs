//! Named policies: runtime (IMA) policies (Keylime's `allowlists`) and measured-boot
//! policies (`mbpolicies`). The store computes each policy's checksum (SHA-256 of its
//! text, hex) so the service can compare it with the one a tenant sends and can
//! deduplicate parsed policies by content.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::StoreError;

/// A runtime policy to store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRuntimePolicy {
    /// Its unique name.
    pub name: String,
    /// Keylime's `generator` (how the policy was made; > 1 means a real runtime policy).
    pub generator: Option<i64>,
    /// A PCR policy stored with it, JSON text.
    pub tpm_policy: Option<String>,
    /// The runtime policy document, JSON text.
    pub ima_policy: Option<String>,
}

/// A stored runtime policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePolicy {
    /// Its unique name.
    pub name: String,
    /// SHA-256 (hex) of `ima_policy` (of the empty string when there is none).
    pub checksum: String,
    /// See [`NewRuntimePolicy::generator`].
    pub generator: Option<i64>,
    /// See [`NewRuntimePolicy::tpm_policy`].
    pub tpm_policy: Option<String>,
    /// See [`NewRuntimePolicy::ima_policy`].
    pub ima_policy: Option<String>,
}

/// A measured-boot policy to store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewMbPolicy {
    /// Its unique name.
    pub name: String,
    /// The measured-boot reference state, JSON text.
    pub mb_policy: Option<String>,
}

/// A stored measured-boot policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbPolicy {
    /// Its unique name.
    pub name: String,
    /// SHA-256 (hex) of `mb_policy` (of the empty string when there is none).
    pub checksum: String,
    /// See [`NewMbPolicy::mb_policy`].
    pub mb_policy: Option<String>,
}

/// Persistence of named policies. Deleting a policy an agent references is refused
/// with [`StoreError::PolicyInUse`] (Keylime's 409).
#[async_trait]
pub trait Policies: Send + Sync {
    /// Creates a runtime policy; [`StoreError::AlreadyExists`] if the name is taken.
    async fn create_runtime(&self, policy: NewRuntimePolicy) -> Result<RuntimePolicy, StoreError>;
    /// Replaces a runtime policy's content; [`StoreError::NotFound`] if absent.
    async fn update_runtime(&self, policy: NewRuntimePolicy) -> Result<RuntimePolicy, StoreError>;
    /// The runtime policy of that name.
    async fn get_runtime(&self, name: &str) -> Result<Option<RuntimePolicy>, StoreError>;
    /// Every runtime policy name, sorted.
    async fn list_runtime(&self) -> Result<Vec<String>, StoreError>;
    /// Deletes a runtime policy; [`StoreError::PolicyInUse`] while agents use it.
    async fn delete_runtime(&self, name: &str) -> Result<(), StoreError>;

    /// Creates a measured-boot policy; [`StoreError::AlreadyExists`] if the name is taken.
    async fn create_mb(&self, policy: NewMbPolicy) -> Result<MbPolicy, StoreError>;
    /// Replaces a measured-boot policy's content; [`StoreError::NotFound`] if absent.
    async fn update_mb(&self, policy: NewMbPolicy) -> Result<MbPolicy, StoreError>;
    /// The measured-boot policy of that name.
    async fn get_mb(&self, name: &str) -> Result<Option<MbPolicy>, StoreError>;
    /// Every measured-boot policy name, sorted.
    async fn list_mb(&self) -> Result<Vec<String>, StoreError>;
    /// Deletes a measured-boot policy; [`StoreError::PolicyInUse`] while agents use it.
    async fn delete_mb(&self, name: &str) -> Result<(), StoreError>;

    /// The checksum of the runtime policy of that name, without its text: a reader
    /// holding the policy parsed by checksum need not fetch it again.
    async fn runtime_checksum(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// The checksum of the measured-boot policy of that name, without its text.
    async fn mb_checksum(&self, name: &str) -> Result<Option<String>, StoreError>;
}

/// The checksum stored with a policy: SHA-256 of its text, lowercase hex.
pub fn checksum(text: Option<&str>) -> String {
    hex::encode(Sha256::digest(text.unwrap_or("").as_bytes()))
}

impl NewRuntimePolicy {
    pub(crate) fn into_stored(self) -> RuntimePolicy {
        RuntimePolicy {
            checksum: checksum(self.ima_policy.as_deref()),
            name: self.name,
            generator: self.generator,
            tpm_policy: self.tpm_policy,
            ima_policy: self.ima_policy,
        }
    }
}

impl NewMbPolicy {
    pub(crate) fn into_stored(self) -> MbPolicy {
        MbPolicy {
            checksum: checksum(self.mb_policy.as_deref()),
            name: self.name,
            mb_policy: self.mb_policy,
        }
    }
}
