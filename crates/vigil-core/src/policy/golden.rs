//! Golden PCR values per hardware class: the bare-metal provisioning gate.
//!
//! A [`GoldenPcrs`] is a named set of allowed values per PCR in one bank, shared by
//! every node of a hardware class (same board, firmware and boot chain). Several values
//! may be allowed per PCR (firmware A/B, two signed shim builds during a roll-out). A
//! set can be learnt from a known-good node's verified quote and widened with another.
//!
//! JSON form:
//! `{"name": "r650-fw2.1", "bank": "sha256", "pcrs": {"0": ["<hex>", ...], ...}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::failure::{Component, Event, Failure};
use crate::hash::{Digest, HashAlg};

/// The highest PCR index of a PC Client TPM.
const MAX_PCR: u32 = 23;

/// A golden set that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoldenPcrsError {
    /// Not the expected JSON shape; the message names the field.
    #[error("golden PCR set: {0}")]
    Json(String),
    /// An unknown bank name.
    #[error("golden PCR set {name:?}: unknown bank {bank:?}")]
    Bank {
        /// The set.
        name: String,
        /// The bank as written.
        bank: String,
    },
    /// A PCR key that is not 0–23.
    #[error("golden PCR set {name:?}: {pcr:?} is not a PCR number from 0 to 23")]
    Pcr {
        /// The set.
        name: String,
        /// The key as written.
        pcr: String,
    },
    /// A value that is not a digest of the bank's size.
    #[error("golden PCR set {name:?}, PCR {pcr}: {reason}")]
    Value {
        /// The set.
        name: String,
        /// The PCR.
        pcr: u32,
        /// What is wrong.
        reason: String,
    },
    /// Merging two sets of different banks.
    #[error("golden PCR sets {0:?} and {1:?} are for different banks")]
    BankMismatch(String, String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoldenJson {
    name: String,
    bank: String,
    pcrs: BTreeMap<String, Vec<String>>,
}

/// Allowed PCR values for one hardware class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenPcrs {
    name: String,
    bank: HashAlg,
    allowed: BTreeMap<u32, Vec<Digest>>,
}

impl GoldenPcrs {
    /// Parses the JSON form; errors name the set, PCR and value at fault.
    pub fn from_json(text: &str) -> Result<Self, GoldenPcrsError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw: GoldenJson = serde_path_to_error::deserialize(de)
            .map_err(|e| GoldenPcrsError::Json(format!("at {}: {}", e.path(), e.inner())))?;
        let name = raw.name;
        let bank = HashAlg::from_name(&raw.bank).ok_or_else(|| GoldenPcrsError::Bank {
            name: name.clone(),
            bank: raw.bank.clone(),
        })?;
        let mut allowed = BTreeMap::new();
        for (key, values) in raw.pcrs {
            let pcr = key
                .parse::<u32>()
                .ok()
                .filter(|&p| p <= MAX_PCR && key.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| GoldenPcrsError::Pcr {
                    name: name.clone(),
                    pcr: key.clone(),
                })?;
            let digests = values
                .iter()
                .map(|v| {
                    Digest::from_hex_for(bank, v).map_err(|e| GoldenPcrsError::Value {
                        name: name.clone(),
                        pcr,
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if digests.is_empty() {
                return Err(GoldenPcrsError::Value {
                    name,
                    pcr,
                    reason: "no allowed value".into(),
                });
            }
            allowed.insert(pcr, digests);
        }
        Ok(Self {
            name,
            bank,
            allowed,
        })
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        let raw = GoldenJson {
            name: self.name.clone(),
            bank: self.bank.name().into(),
            pcrs: self
                .allowed
                .iter()
                .map(|(pcr, values)| (pcr.to_string(), values.iter().map(Digest::to_hex).collect()))
                .collect(),
        };
        serde_json::to_string_pretty(&raw).unwrap_or_default()
    }

    /// Learns a set from a known-good node: the values of `pcrs` (from a verified
    /// quote in `bank`) become the only allowed ones.
    pub fn learn<'a>(
        name: impl Into<String>,
        bank: HashAlg,
        pcrs: impl IntoIterator<Item = (u32, &'a Digest)>,
    ) -> Self {
        Self {
            name: name.into(),
            bank,
            allowed: pcrs.into_iter().map(|(p, d)| (p, vec![*d])).collect(),
        }
    }

    /// Also allows every value `other` allows (another known-good node of the class).
    pub fn widen(&mut self, other: &Self) -> Result<(), GoldenPcrsError> {
        if other.bank != self.bank {
            return Err(GoldenPcrsError::BankMismatch(
                self.name.clone(),
                other.name.clone(),
            ));
        }
        for (pcr, values) in &other.allowed {
            let mine = self.allowed.entry(*pcr).or_default();
            for v in values {
                if !mine.contains(v) {
                    mine.push(*v);
                }
            }
        }
        Ok(())
    }

    /// The hardware class name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bank the values are in.
    pub fn bank(&self) -> HashAlg {
        self.bank
    }

    /// Allowed values per PCR.
    pub fn allowed(&self) -> &BTreeMap<u32, Vec<Digest>> {
        &self.allowed
    }

    /// Checks quoted values (verified, in `bank`). Each PCR that differs gives
    /// `pcr_validation.invalid_pcr_<n>` naming the class, the value found and the
    /// allowed ones; PCRs the set lists but the quote lacks give `missing_pcrs`; a
    /// quote in another bank gives `pcr_validation.invalid_bank`.
    pub fn check(&self, bank: HashAlg, pcrs: &BTreeMap<u32, Digest>) -> Failure {
        let mut failure = Failure::new();
        if bank != self.bank {
            failure.push(Event::new(
                Component::PcrValidation,
                &[],
                "invalid_bank",
                json!({
                    "context": "the quote is not in the golden set's bank",
                    "class": self.name,
                    "got": bank.name(),
                    "expected": self.bank.name(),
                }),
                true,
            ));
            return failure;
        }
        let mut missing = Vec::new();
        for (&pcr, allowed) in &self.allowed {
            match pcrs.get(&pcr) {
                None => missing.push(pcr),
                Some(value) if !allowed.contains(value) => failure.push(Event::new(
                    Component::PcrValidation,
                    &[],
                    &format!("invalid_pcr_{pcr}"),
                    json!({
                        "context": "PCR value is not in the golden set",
                        "class": self.name,
                        "got": value.to_hex(),
                        "expected": allowed.iter().map(Digest::to_hex).collect::<Vec<_>>(),
                    }),
                    true,
                )),
                Some(_) => {}
            }
        }
        if !missing.is_empty() {
            failure.push(Event::new(
                Component::PcrValidation,
                &[],
                "missing_pcrs",
                json!({
                    "context": "PCRs are missing in quote",
                    "class": self.name,
                    "data": missing,
                }),
                true,
            ));
        }
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(byte: u8) -> Digest {
        Digest::from_slice(&[byte; 32]).unwrap()
    }

    fn set() -> GoldenPcrs {
        GoldenPcrs::from_json(&format!(
            r#"{{"name": "r650", "bank": "sha256",
                "pcrs": {{"0": ["{}"], "7": ["{}", "{}"]}}}}"#,
            "00".repeat(32),
            "07".repeat(32),
            "17".repeat(32)
        ))
        .unwrap()
    }

    #[test]
    fn json_round_trips() {
        let g = set();
        assert_eq!(g.name(), "r650");
        assert_eq!(g.allowed()[&7], [d(7), d(0x17)]);
        assert_eq!(GoldenPcrs::from_json(&g.to_json()).unwrap(), g);
    }

    #[test]
    fn any_allowed_value_passes_and_each_difference_is_named() {
        let g = set();
        let good = BTreeMap::from([(0, d(0)), (7, d(0x17)), (9, d(9))]);
        assert!(g.check(HashAlg::Sha256, &good).is_empty());
        let bad = BTreeMap::from([(0, d(1)), (9, d(9))]);
        let f = g.check(HashAlg::Sha256, &bad);
        let ids: Vec<_> = f.events().iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "pcr_validation.invalid_pcr_0",
                "pcr_validation.missing_pcrs"
            ]
        );
        let e = &f.events()[0].context;
        assert_eq!(e["class"], "r650");
        assert_eq!(e["got"], "01".repeat(32));
        assert_eq!(e["expected"], json!(["00".repeat(32)]));
        assert_eq!(f.events()[1].context["data"], json!([7]));
        let f = g.check(HashAlg::Sha1, &good);
        assert_eq!(f.events()[0].event_id, "pcr_validation.invalid_bank");
    }

    #[test]
    fn learn_and_widen() {
        let node_a = BTreeMap::from([(0, d(0)), (7, d(7))]);
        let node_b = BTreeMap::from([(0, d(0)), (7, d(0x77))]);
        let mut g = GoldenPcrs::learn("x", HashAlg::Sha256, node_a.iter().map(|(p, v)| (*p, v)));
        assert!(!g.check(HashAlg::Sha256, &node_b).is_empty());
        g.widen(&GoldenPcrs::learn(
            "x",
            HashAlg::Sha256,
            node_b.iter().map(|(p, v)| (*p, v)),
        ))
        .unwrap();
        assert!(g.check(HashAlg::Sha256, &node_a).is_empty());
        assert!(g.check(HashAlg::Sha256, &node_b).is_empty());
        assert_eq!(g.allowed()[&0].len(), 1);
        let sha1 = GoldenPcrs::learn("y", HashAlg::Sha1, []);
        assert!(g.widen(&sha1).is_err());
    }

    #[test]
    fn bad_sets_name_the_fault() {
        for (text, needle) in [
            (
                r#"{"name": "a", "bank": "md5", "pcrs": {}}"#,
                "unknown bank",
            ),
            (
                r#"{"name": "a", "bank": "sha256", "pcrs": {"24": ["00"]}}"#,
                "\"24\"",
            ),
            (
                r#"{"name": "a", "bank": "sha256", "pcrs": {"1": ["00"]}}"#,
                "PCR 1",
            ),
            (
                r#"{"name": "a", "bank": "sha256", "pcrs": {"1": []}}"#,
                "no allowed value",
            ),
            (
                r#"{"name": "a", "bank": "sha256", "pcrs": {}, "x": 1}"#,
                "x",
            ),
            (r#"{"bank": "sha256", "pcrs": {}}"#, "name"),
        ] {
            let err = GoldenPcrs::from_json(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
