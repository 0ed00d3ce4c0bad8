//! Hardware classes (Vigil's provisioning trust gate): a kind of machine and the PCR
//! values its firmware and boot chain may show. Every node of a class is judged against
//! those values on every round, besides its own policies; a node names its class in
//! its enrolment ([`Enrolment::hardware_class`](crate::Enrolment::hardware_class)).
//!
//! The store keeps the golden set as text (`vigil_core::policy::golden`'s JSON form);
//! the verifier parses it before storing and when it judges.

use async_trait::async_trait;

use crate::StoreError;

/// A stored hardware class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareClass {
    /// Its unique name.
    pub name: String,
    /// What it is, for operators.
    pub description: String,
    /// The golden PCR set, JSON text (several allowed values per PCR, one bank).
    pub golden: String,
    /// The measured-boot policy its nodes are meant to use, by name.
    pub mb_policy: Option<String>,
    /// The runtime policy its nodes are meant to use, by name.
    pub runtime_policy: Option<String>,
    /// When its values last changed (epoch seconds): evidence judged before then does
    /// not answer the trust gate.
    pub changed_at: i64,
}

/// Persistence of hardware classes. Deleting a class a node uses is refused with
/// [`StoreError::PolicyInUse`] (entity [`Entity::HardwareClass`](crate::Entity)).
#[async_trait]
pub trait HardwareClasses: Send + Sync {
    /// Creates a class; [`StoreError::AlreadyExists`] if the name is taken.
    async fn create(&self, class: HardwareClass) -> Result<(), StoreError>;
    /// Replaces a class's description, golden set and policy names;
    /// [`StoreError::NotFound`] if absent.
    async fn update(&self, class: HardwareClass) -> Result<(), StoreError>;
    /// The class of that name.
    async fn get(&self, name: &str) -> Result<Option<HardwareClass>, StoreError>;
    /// Every class, sorted by name.
    async fn list(&self) -> Result<Vec<HardwareClass>, StoreError>;
    /// How many nodes use the class.
    async fn users(&self, name: &str) -> Result<u64, StoreError>;
    /// Deletes a class; [`StoreError::PolicyInUse`] while nodes use it,
    /// [`StoreError::NotFound`] if absent.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;
}
