//! The registrar's records: one row per agent, as Keylime's `registrarmain` (compat §2.4).
//!
//! The identity rules of Keylime's registrar (§2.3) live here, as a pure function the
//! backends call inside their transaction, so both backends apply them identically and
//! a concurrent re-registration cannot slip between the check and the write.

use async_trait::async_trait;

use crate::StoreError;

/// A registrar record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarAgent {
    /// The agent id (primary key).
    pub agent_id: String,
    /// The EK public area (TPM2B_PUBLIC bytes), if the agent sent one.
    pub ek_tpm: Option<Vec<u8>>,
    /// The EK certificate (DER, original bytes), if any.
    pub ekcert: Option<Vec<u8>>,
    /// The AK public area (TPM2B_PUBLIC bytes).
    pub aik_tpm: Vec<u8>,
    /// The IAK public area, if any.
    pub iak_tpm: Option<Vec<u8>>,
    /// The IAK certificate (DER), if any.
    pub iak_cert: Option<Vec<u8>>,
    /// The IDevID public area, if any.
    pub idevid_tpm: Option<Vec<u8>>,
    /// The IDevID certificate (DER), if any.
    pub idevid_cert: Option<Vec<u8>>,
    /// The expected activation secret (Keylime's `key`, base64), if a challenge is open.
    pub key: Option<String>,
    /// Whether credential activation succeeded for the current identity.
    pub active: bool,
    /// The agent's contact address.
    pub ip: Option<String>,
    /// The agent's contact port.
    pub port: Option<u16>,
    /// The agent's mTLS server certificate (PEM).
    pub mtls_cert: Option<String>,
    /// How many times the TPM identity fields changed validly (1 after the first
    /// registration; the tenant warns above 1).
    pub regcount: u32,
}

/// What an agent sends when it registers (or re-registers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    /// The agent id.
    pub agent_id: String,
    /// The EK public area.
    pub ek_tpm: Option<Vec<u8>>,
    /// The EK certificate (DER).
    pub ekcert: Option<Vec<u8>>,
    /// The AK public area (required by the service).
    pub aik_tpm: Vec<u8>,
    /// The IAK public area.
    pub iak_tpm: Option<Vec<u8>>,
    /// The IAK certificate.
    pub iak_cert: Option<Vec<u8>>,
    /// The IDevID public area.
    pub idevid_tpm: Option<Vec<u8>>,
    /// The IDevID certificate.
    pub idevid_cert: Option<Vec<u8>>,
    /// The activation secret the service expects back.
    pub key: Option<String>,
    /// The agent's contact address.
    pub ip: Option<String>,
    /// The agent's contact port.
    pub port: Option<u16>,
    /// The agent's mTLS server certificate (PEM).
    pub mtls_cert: Option<String>,
}

/// A TPM identity field that may never change once set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    /// `ek_tpm`.
    EkTpm,
    /// `ekcert`.
    EkCert,
    /// `aik_tpm`.
    AikTpm,
}

impl std::fmt::Display for IdentityField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EkTpm => "ek_tpm",
            Self::EkCert => "ekcert",
            Self::AikTpm => "aik_tpm",
        })
    }
}

/// The result of [`RegistrarAgents::register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A new record was inserted.
    Created(RegistrarAgent),
    /// The existing record was updated (possibly with no identity change: same regcount).
    Updated(RegistrarAgent),
    /// Refused: the registration would change a TPM identity field that is already set
    /// (Keylime answers 403). Nothing was written.
    IdentityChanged {
        /// The first field that differs.
        field: IdentityField,
    },
}

/// Persistence of registrar records.
#[async_trait]
pub trait RegistrarAgents: Send + Sync {
    /// The record of `agent_id`, active or not.
    async fn get(&self, agent_id: &str) -> Result<Option<RegistrarAgent>, StoreError>;

    /// Every agent id, sorted.
    async fn list(&self) -> Result<Vec<String>, StoreError>;

    /// Inserts a record, or updates it under Keylime's identity rules: `ek_tpm`,
    /// `ekcert` and `aik_tpm` may go from unset to set but never change; `active` is
    /// cleared when `ek_tpm` or `aik_tpm` changes; `regcount` counts identity changes.
    /// Atomic: two concurrent registrations of one id behave as if one ran after the
    /// other.
    async fn register(&self, registration: Registration) -> Result<RegisterOutcome, StoreError>;

    /// Marks the agent active (credential activation succeeded).
    /// [`StoreError::NotFound`] if there is no such agent.
    async fn activate(&self, agent_id: &str) -> Result<(), StoreError>;

    /// Deletes the record. [`StoreError::NotFound`] if there is no such agent.
    async fn delete(&self, agent_id: &str) -> Result<(), StoreError>;

    /// Writes a record exactly as given, bypassing the identity rules (an import from
    /// another registrar, `vigil store import-keylime`): inserts it, or with `replace`
    /// overwrites the record of that id. [`StoreError::AlreadyExists`] if the id exists
    /// and `replace` is false.
    async fn put(&self, agent: &RegistrarAgent, replace: bool) -> Result<(), StoreError>;
}

/// Applies a registration to the existing record (if any), or says which identity
/// field it would change. Pure: the backends call it between their locked read and
/// their write.
pub(crate) fn merge(
    existing: Option<RegistrarAgent>,
    reg: Registration,
) -> Result<RegistrarAgent, IdentityField> {
    let Some(old) = existing else {
        return Ok(RegistrarAgent {
            agent_id: reg.agent_id,
            ek_tpm: reg.ek_tpm,
            ekcert: reg.ekcert,
            aik_tpm: reg.aik_tpm,
            iak_tpm: reg.iak_tpm,
            iak_cert: reg.iak_cert,
            idevid_tpm: reg.idevid_tpm,
            idevid_cert: reg.idevid_cert,
            key: reg.key,
            active: false,
            ip: reg.ip,
            port: reg.port,
            mtls_cert: reg.mtls_cert,
            regcount: 1,
        });
    };
    // Unset → set is allowed; set → different (including set → unset) is not.
    fn immutable<T: PartialEq>(
        old: Option<&T>,
        new: Option<&T>,
        f: IdentityField,
    ) -> Result<(), IdentityField> {
        match old {
            Some(o) if Some(o) != new => Err(f),
            _ => Ok(()),
        }
    }
    immutable(
        old.ek_tpm.as_ref(),
        reg.ek_tpm.as_ref(),
        IdentityField::EkTpm,
    )?;
    immutable(
        old.ekcert.as_ref(),
        reg.ekcert.as_ref(),
        IdentityField::EkCert,
    )?;
    immutable(
        Some(&old.aik_tpm),
        Some(&reg.aik_tpm),
        IdentityField::AikTpm,
    )?;

    let key_changed = old.ek_tpm != reg.ek_tpm || old.aik_tpm != reg.aik_tpm;
    let identity_changed = key_changed
        || old.ekcert != reg.ekcert
        || old.iak_tpm != reg.iak_tpm
        || old.iak_cert != reg.iak_cert
        || old.idevid_tpm != reg.idevid_tpm
        || old.idevid_cert != reg.idevid_cert;
    Ok(RegistrarAgent {
        agent_id: old.agent_id,
        ek_tpm: reg.ek_tpm,
        ekcert: reg.ekcert,
        aik_tpm: reg.aik_tpm,
        iak_tpm: reg.iak_tpm,
        iak_cert: reg.iak_cert,
        idevid_tpm: reg.idevid_tpm,
        idevid_cert: reg.idevid_cert,
        key: reg.key,
        active: old.active && !key_changed,
        ip: reg.ip,
        port: reg.port,
        mtls_cert: reg.mtls_cert,
        regcount: old.regcount.saturating_add(u32::from(identity_changed)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registration {
        Registration {
            agent_id: "a".into(),
            aik_tpm: vec![1],
            ..Registration::default()
        }
    }

    #[test]
    fn first_registration_counts_one_and_is_inactive() {
        let r = merge(None, reg()).unwrap();
        assert_eq!((r.regcount, r.active), (1, false));
    }

    #[test]
    fn unset_ek_may_be_set_once_and_resets_active() {
        let mut old = merge(None, reg()).unwrap();
        old.active = true;
        let new = Registration {
            ek_tpm: Some(vec![9]),
            ..reg()
        };
        let r = merge(Some(old.clone()), new.clone()).unwrap();
        assert_eq!((r.regcount, r.active), (2, false));
        // Now set, it may not change or be dropped.
        let changed = Registration {
            ek_tpm: Some(vec![8]),
            ..reg()
        };
        assert_eq!(merge(Some(r.clone()), changed), Err(IdentityField::EkTpm));
        assert_eq!(merge(Some(r), reg()), Err(IdentityField::EkTpm));
    }

    #[test]
    fn aik_and_ekcert_are_immutable_iak_is_not() {
        let old = merge(
            None,
            Registration {
                ekcert: Some(vec![3]),
                ..reg()
            },
        )
        .unwrap();
        let aik = Registration {
            aik_tpm: vec![2],
            ekcert: Some(vec![3]),
            ..reg()
        };
        assert_eq!(merge(Some(old.clone()), aik), Err(IdentityField::AikTpm));
        let cert = Registration {
            ekcert: Some(vec![4]),
            ..reg()
        };
        assert_eq!(merge(Some(old.clone()), cert), Err(IdentityField::EkCert));
        let mut active = old.clone();
        active.active = true;
        let iak = Registration {
            ekcert: Some(vec![3]),
            iak_tpm: Some(vec![7]),
            ..reg()
        };
        let r = merge(Some(active.clone()), iak).unwrap();
        // An IAK change counts but does not deactivate.
        assert_eq!((r.regcount, r.active), (2, true));
        // The same registration again changes nothing.
        let same = Registration {
            ekcert: Some(vec![3]),
            ..reg()
        };
        let r = merge(Some(active), same).unwrap();
        assert_eq!((r.regcount, r.active), (1, true));
    }
}
