//! Keylime's `tpm_policy` (allowed values per PCR) and the PCR checks a verifier runs on
//! every verified quote (Keylime's `check_pcrs`), in Keylime's order and with its event
//! ids:
//!
//! 1. the data PCR 16 must be `H(0…0 || H(node public key text))`
//!    (`pcr_validation.invalid_pcr_16` / `missing_pcr_16`);
//! 2. PCR 10 is IMA's: the caller replays the IMA list against it and hands the result
//!    in (`pcr_validation.unused_pcr_10` when no list came);
//! 3. measured-boot PCRs are compared with the replayed UEFI event log
//!    (`measured_boot.invalid_pcr_<n>`);
//! 4. every other quoted PCR listed in the policy must hold an allowed value
//!    (`pcr_validation.invalid_pcr_<n>`), and every listed PCR must be quoted
//!    (`pcr_validation.missing_pcrs`).
//!
//! All these events are recoverable, as in Keylime.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::failure::{Component, Event, Failure};
use crate::hash::{Digest, HashAlg};

/// The PCR Keylime binds the node's public key into.
pub const DATA_PCR: u32 = 16;
/// The PCR IMA extends.
pub const IMA_PCR: u32 = 10;
/// The PCRs Keylime collects for measured boot (`MEASUREDBOOT_PCRS`): 0–9 and 11–15.
pub const MEASURED_BOOT_PCRS: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];
/// The highest PCR a `tpm_policy` may name, and the highest a quote mask may select: a
/// mask has 24 bits, one per PCR of a PC Client TPM. (Keylime's tenant lets PCR 24
/// through, and its agent then refuses the resulting mask on every quote.)
const MAX_POLICY_PCR: u32 = 23;

/// A `tpm_policy` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmPolicyError {
    /// Not a JSON object.
    #[error("tpm_policy is not a JSON object: {0}")]
    NotAnObject(String),
    /// A key other than `mask` or a PCR number 0–23.
    #[error("tpm_policy key {0:?} is not a PCR number from 0 to 23")]
    BadPcr(String),
    /// PCR 10 or 16, which Keylime reserves.
    #[error("tpm_policy names PCR {0}, which is reserved ({1})")]
    Reserved(u32, &'static str),
    /// `mask` is not a hex string (`"0x408000"`).
    #[error("tpm_policy mask {0} is not a hex string like \"0x400\"")]
    MaskNotHex(String),
    /// `mask` selects PCRs above 23: it is longer than 24 bits.
    #[error("tpm_policy mask {0:?} selects PCRs above 23 (a mask has at most 24 bits)")]
    MaskTooWide(String),
    /// A value that is not a hex digest (or a list of them).
    #[error("tpm_policy PCR {pcr}: {reason}")]
    BadValue {
        /// The PCR whose value is wrong.
        pcr: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// A hex value whose length is not the digest size of any bank Vigil knows.
    #[error(
        "tpm_policy PCR {pcr}: a {len}-byte value is no bank's digest \
         (sha1 20, sha256 and sm3_256 32, sha384 48, sha512 64 bytes)"
    )]
    DigestLength {
        /// The PCR whose value is wrong.
        pcr: u32,
        /// The value's length in bytes.
        len: usize,
    },
    /// A value whose length does not fit the bank the node quotes in.
    #[error("tpm_policy PCR {pcr}: a {len}-byte value can never match a {bank} PCR ({} bytes)", bank.digest_len())]
    WrongBank {
        /// The PCR whose value is wrong.
        pcr: u32,
        /// The value's length in bytes.
        len: usize,
        /// The bank.
        bank: HashAlg,
    },
}

/// Allowed values per PCR, as Keylime's tenant sends them (`{"22": ["ff…"], "mask":
/// "0x400000"}`; a single value may be a string instead of a list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TpmPolicy {
    allowed: BTreeMap<u32, Vec<String>>,
}

impl TpmPolicy {
    /// An empty policy: no PCR is constrained.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses Keylime's JSON form. `mask` must be a hex PCR mask of at most 24 bits
    /// (`0x` optional) but is otherwise ignored (it is derived from the keys); values are
    /// lowercased as Keylime does, and must be hex digests of a bank Vigil knows.
    pub fn from_json(text: &str) -> Result<Self, TpmPolicyError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| TpmPolicyError::NotAnObject(e.to_string()))?;
        Self::from_value(&value)
    }

    /// [`from_json`](Self::from_json) on an already parsed value.
    pub fn from_value(value: &Value) -> Result<Self, TpmPolicyError> {
        let map = value
            .as_object()
            .ok_or_else(|| TpmPolicyError::NotAnObject(format!("found {value}")))?;
        let mut allowed = BTreeMap::new();
        for (key, values) in map {
            if key == "mask" {
                check_mask(values)?;
                continue;
            }
            let pcr = key
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= MAX_POLICY_PCR && key.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| TpmPolicyError::BadPcr(key.clone()))?;
            match pcr {
                DATA_PCR => return Err(TpmPolicyError::Reserved(pcr, "Keylime binds data to it")),
                IMA_PCR => return Err(TpmPolicyError::Reserved(pcr, "it is used for IMA")),
                _ => {}
            }
            allowed.insert(pcr, parse_values(pcr, values)?);
        }
        Ok(Self { allowed })
    }

    /// Keylime's JSON form, with the `mask` it derives from the keys.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        for (pcr, values) in &self.allowed {
            map.insert(pcr.to_string(), json!(values));
        }
        map.insert("mask".into(), json!(format!("{:#x}", self.mask())));
        Value::Object(map)
    }

    /// Bit `n` set for every PCR the policy names.
    pub fn mask(&self) -> u32 {
        self.allowed.keys().fold(0, |m, &pcr| m | (1 << pcr))
    }

    /// The allowed values (lowercase hex) per PCR.
    pub fn allowed(&self) -> &BTreeMap<u32, Vec<String>> {
        &self.allowed
    }

    /// Checks that every value can hold a PCR of `bank`: parsing accepts the digest
    /// size of any bank, but a node quotes in one, and a value of another size fails
    /// every round. For the bank a node was enrolled or negotiated with.
    pub fn check_bank(&self, bank: HashAlg) -> Result<(), TpmPolicyError> {
        for (&pcr, values) in &self.allowed {
            if let Some(v) = values.iter().find(|v| v.len() != 2 * bank.digest_len()) {
                return Err(TpmPolicyError::WrongBank {
                    pcr,
                    len: v.len() / 2,
                    bank,
                });
            }
        }
        Ok(())
    }

    /// Checks `pcr` against the policy; `None` when it is not listed.
    fn check(&self, pcr: u32, value: &Digest, failure: &mut Failure) -> Option<()> {
        let allowed = self.allowed.get(&pcr)?;
        let got = value.to_hex();
        if !allowed.contains(&got) {
            failure.push(Event::new(
                Component::PcrValidation,
                &[],
                &format!("invalid_pcr_{pcr}"),
                json!({
                    "context": "PCR value is not in allowlist",
                    "got": got,
                    "expected": allowed,
                }),
                true,
            ));
        }
        Some(())
    }
}

/// Checks a `mask`: hex with or without `0x` (Keylime writes `hex(mask)`; its agent
/// strips `0x` and reads hex), selecting PCRs 0–23 only.
fn check_mask(mask: &Value) -> Result<(), TpmPolicyError> {
    let text = mask
        .as_str()
        .ok_or_else(|| TpmPolicyError::MaskNotHex(mask.to_string()))?;
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TpmPolicyError::MaskNotHex(format!("{text:?}")));
    }
    // Leading zeros select nothing; after them, PCRs 0–23 (24 bits) take six digits.
    if digits.trim_start_matches('0').len() > 6 {
        return Err(TpmPolicyError::MaskTooWide(text.to_owned()));
    }
    Ok(())
}

fn parse_values(pcr: u32, values: &Value) -> Result<Vec<String>, TpmPolicyError> {
    let bad = |reason: String| TpmPolicyError::BadValue { pcr, reason };
    let list: Vec<&Value> = match values {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    list.into_iter()
        .map(|v| {
            let text = v
                .as_str()
                .ok_or_else(|| bad(format!("{v} is not a hex string")))?
                .to_ascii_lowercase();
            let hex = !text.is_empty()
                && text.len() % 2 == 0
                && text.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(bad(format!("{text:?} is not a hex digest")));
            }
            let len = text.len() / 2;
            if !HashAlg::ALL.iter().any(|h| h.digest_len() == len) {
                return Err(TpmPolicyError::DigestLength { pcr, len });
            }
            Ok(text)
        })
        .collect()
}

/// What the IMA check made of PCR 10, when the quote covers it.
#[derive(Debug, Clone, PartialEq)]
pub enum ImaPcr {
    /// The node sent no measurement list (`unused_pcr_10`).
    NoList,
    /// The caller replayed the list against the quoted PCR 10 and validated it.
    Checked(Failure),
}

/// Measured-boot PCR input: which PCRs to compare and the values the event log replays
/// to. Given only when the log parsed and the measured-boot policy is valid and
/// non-empty, as in Keylime.
#[derive(Debug, Clone, Copy)]
pub struct MeasuredBootPcrs<'a> {
    /// The PCRs the policy relies on (∩ [`MEASURED_BOOT_PCRS`]).
    pub relevant: &'a BTreeSet<u32>,
    /// The replayed values, or `None` when the node sent no event log.
    pub replayed: Option<&'a BTreeMap<u32, Digest>>,
}

/// Everything [`check_pcrs`] needs besides the quoted values.
#[derive(Debug, Clone, Copy)]
pub struct PcrCheck<'a> {
    /// Allowed values for the other PCRs.
    pub tpm_policy: &'a TpmPolicy,
    /// The node public key text bound into PCR 16, or `None` to skip that check.
    pub data: Option<&'a str>,
    /// The IMA result, used when PCR 10 is quoted.
    pub ima: &'a ImaPcr,
    /// Measured boot, when a valid non-empty policy applies.
    pub measured_boot: Option<MeasuredBootPcrs<'a>>,
}

/// The expected data PCR after binding `data`: `H(0…0 || H(data))` in `bank`.
pub fn data_pcr_value(bank: HashAlg, data: &str) -> Digest {
    bank.extend(&bank.zero(), &bank.hash(data.as_bytes()))
}

/// The outcome of [`check_pcrs`].
#[derive(Debug, Clone, PartialEq)]
pub struct PcrVerdict {
    /// Every event, in Keylime's order; empty when all PCRs passed.
    pub failure: Failure,
    /// The PCRs some check used (Keylime's `pcrs_in_quote`); the measured-boot policy
    /// evaluation is told which of them it may rely on.
    pub checked: BTreeSet<u32>,
}

/// Runs Keylime's PCR checks on the values of a verified quote, in `bank`.
pub fn check_pcrs(bank: HashAlg, pcrs: &BTreeMap<u32, Digest>, check: &PcrCheck<'_>) -> PcrVerdict {
    let mut failure = Failure::new();
    let mut checked = BTreeSet::new();

    if let Some(data) = check.data {
        match pcrs.get(&DATA_PCR) {
            Some(value) => {
                let expected = data_pcr_value(bank, data);
                if *value != expected {
                    failure.push(Event::new(
                        Component::PcrValidation,
                        &[],
                        "invalid_pcr_16",
                        json!({ "got": value.to_hex(), "expected": expected.to_hex() }),
                        true,
                    ));
                }
                checked.insert(DATA_PCR);
            }
            None => failure.push(Event::new(
                Component::PcrValidation,
                &[],
                "missing_pcr_16",
                Event::message("Data PCR 16 is missing in quote, but is required"),
                true,
            )),
        }
    }

    if pcrs.contains_key(&IMA_PCR) {
        match check.ima {
            ImaPcr::NoList => failure.push(Event::new(
                Component::PcrValidation,
                &[],
                "unused_pcr_10",
                Event::message("IMA PCR in policy, but no measurement list provided"),
                true,
            )),
            ImaPcr::Checked(ima) => failure.merge(ima.clone()),
        }
        checked.insert(IMA_PCR);
    }

    if let Some(mb) = check.measured_boot {
        let mut mb_failure = Failure::new();
        for &pcr in mb.relevant {
            let Some(value) = pcrs.get(&pcr) else {
                continue;
            };
            let Some(replayed) = mb.replayed else {
                failure.push(Event::new(
                    Component::PcrValidation,
                    &[],
                    &format!("unused_pcr_{pcr}"),
                    Event::message(format!(
                        "Measured Boot PCR {pcr} in policy, but no measurement list provided"
                    )),
                    true,
                ));
                continue;
            };
            // A PCR the log never extends replays to zero.
            let expected = replayed.get(&pcr).copied().unwrap_or_else(|| bank.zero());
            if *value != expected {
                mb_failure.push(Event::new(
                    Component::MeasuredBoot,
                    &[],
                    &format!("invalid_pcr_{pcr}"),
                    json!({
                        "context": format!(
                            "{} boot event log PCR value does not match",
                            bank.name().to_ascii_uppercase()
                        ),
                        "got": value.to_hex(),
                        "expected": expected.to_hex(),
                    }),
                    true,
                ));
            }
            check.tpm_policy.check(pcr, value, &mut failure);
            checked.insert(pcr);
        }
        failure.merge(mb_failure);
    }

    for (&pcr, value) in pcrs {
        if !checked.contains(&pcr) && check.tpm_policy.check(pcr, value, &mut failure).is_some() {
            checked.insert(pcr);
        }
    }

    let missing: Vec<u32> = check
        .tpm_policy
        .allowed
        .keys()
        .filter(|pcr| !checked.contains(pcr))
        .copied()
        .collect();
    if !missing.is_empty() {
        failure.push(Event::new(
            Component::PcrValidation,
            &[],
            "missing_pcrs",
            json!({ "context": "PCRs are missing in quote", "data": missing }),
            true,
        ));
    }
    PcrVerdict { failure, checked }
}

#[cfg(test)]
mod tests;
