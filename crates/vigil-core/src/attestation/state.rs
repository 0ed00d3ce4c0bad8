//! Keylime's operational states (`keylime/common/states.py`, compat §6.1) and the
//! `attestation_status` summary derived from them (API 2.5+).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node's operational state, with Keylime's numbers (they appear in the REST API and
/// in the database, so they must not change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperationalState {
    /// 0: registered with the registrar, not yet added to the verifier (the verifier
    /// never uses it).
    Registered,
    /// 1: just added (or reactivated); the first quote is about to be requested.
    Start,
    /// 2: legacy "added, waiting"; unused in pull mode, kept for the numbering.
    Saved,
    /// 3: periodic attestation.
    GetQuote,
    /// 4: periodic attestation, retrying after a communication failure.
    GetQuoteRetry,
    /// 5: delivering the V key half.
    ProvideV,
    /// 6: retrying V delivery after a communication failure.
    ProvideVRetry,
    /// 7: communication or internal failure (not reachable, unexpected answer).
    Failed,
    /// 8: deletion requested; final.
    Terminated,
    /// 9: attestation failed (quote or policy).
    InvalidQuote,
    /// 10: `PUT …/stop` was called; polling stopped.
    TenantFailed,
}

/// A number that is not an operational state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("operational state {0} is not one of Keylime's states 0-10")]
pub struct InvalidState(pub u64);

impl OperationalState {
    /// Every state, in numeric order.
    pub const ALL: [Self; 11] = [
        Self::Registered,
        Self::Start,
        Self::Saved,
        Self::GetQuote,
        Self::GetQuoteRetry,
        Self::ProvideV,
        Self::ProvideVRetry,
        Self::Failed,
        Self::Terminated,
        Self::InvalidQuote,
        Self::TenantFailed,
    ];

    /// Keylime's number for the state.
    pub const fn code(self) -> u8 {
        match self {
            Self::Registered => 0,
            Self::Start => 1,
            Self::Saved => 2,
            Self::GetQuote => 3,
            Self::GetQuoteRetry => 4,
            Self::ProvideV => 5,
            Self::ProvideVRetry => 6,
            Self::Failed => 7,
            Self::Terminated => 8,
            Self::InvalidQuote => 9,
            Self::TenantFailed => 10,
        }
    }

    /// The state with Keylime's number `code`.
    pub fn from_code(code: u64) -> Result<Self, InvalidState> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or(InvalidState(code))
    }

    /// Keylime's constant name (`GET_QUOTE_RETRY`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Registered => "REGISTERED",
            Self::Start => "START",
            Self::Saved => "SAVED",
            Self::GetQuote => "GET_QUOTE",
            Self::GetQuoteRetry => "GET_QUOTE_RETRY",
            Self::ProvideV => "PROVIDE_V",
            Self::ProvideVRetry => "PROVIDE_V_RETRY",
            Self::Failed => "FAILED",
            Self::Terminated => "TERMINATED",
            Self::InvalidQuote => "INVALID_QUOTE",
            Self::TenantFailed => "TENANT_FAILED",
        }
    }

    /// Keylime's display text (`state_to_str`), e.g. `Get Quote (retry)`.
    pub const fn description(self) -> &'static str {
        match self {
            Self::Registered => "Registered",
            Self::Start => "Start",
            Self::Saved => "Saved",
            Self::GetQuote => "Get Quote",
            Self::GetQuoteRetry => "Get Quote (retry)",
            Self::ProvideV => "Provide V",
            Self::ProvideVRetry => "Provide V (retry)",
            Self::Failed => "Failed",
            Self::Terminated => "Terminated",
            Self::InvalidQuote => "Invalid Quote",
            Self::TenantFailed => "Tenant Quote Failed",
        }
    }

    /// Keylime's `APPROVED_REACTIVATE_STATES`: the states in which a verifier restart
    /// resumes polling.
    pub const fn resumes_on_restart(self) -> bool {
        matches!(
            self,
            Self::Start
                | Self::GetQuote
                | Self::GetQuoteRetry
                | Self::ProvideV
                | Self::ProvideVRetry
        )
    }

    /// The states `DELETE` removes at once (200) in Keylime's pull mode; in any other
    /// state the deletion waits for in-flight work (202).
    pub const fn deletes_immediately(self) -> bool {
        matches!(
            self,
            Self::Saved | Self::Failed | Self::TenantFailed | Self::InvalidQuote
        )
    }

    /// The pull-mode `attestation_status`: `PASS` while attesting (3–6), `FAIL` after a
    /// failure or stop (7, 9, 10), `PENDING` otherwise.
    pub const fn attestation_status(self) -> AttestationStatus {
        match self {
            Self::GetQuote | Self::GetQuoteRetry | Self::ProvideV | Self::ProvideVRetry => {
                AttestationStatus::Pass
            }
            Self::Failed | Self::InvalidQuote | Self::TenantFailed => AttestationStatus::Fail,
            Self::Registered | Self::Start | Self::Saved | Self::Terminated => {
                AttestationStatus::Pending
            }
        }
    }
}

impl std::fmt::Display for OperationalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

// The API and the database carry the number, so serde does too.
impl Serialize for OperationalState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for OperationalState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        Self::from_code(n).map_err(serde::de::Error::custom)
    }
}

/// The `attestation_status` field of the status object (API 2.5+).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AttestationStatus {
    /// Attesting normally.
    Pass,
    /// Failed or stopped.
    Fail,
    /// Not attested yet.
    Pending,
    /// Push mode only: no attestation within the allowed interval.
    Timeout,
}
