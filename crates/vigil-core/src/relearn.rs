//! Relearn: adopting a node's changed measurements when an operator recorded them as
//! known-good for its hardware class (a planned kernel or package update), instead of
//! failing the node. Pure functions: the verifier fetches the sets and stores the
//! result.
//!
//! A failed round qualifies only when every failure is a changed measurement — a PCR
//! value outside the TPM policy (`pcr_validation.invalid_pcr_<n>`, not the IMA PCR 10
//! or the data PCR 16, whose checks are log replay and key binding) or a listed file
//! with a digest outside the runtime policy
//! (`ima.validation.ima-ng.runtime_policy_hash`). Any other failure — the quote's
//! signature or nonce, the IMA or boot-log replay, a file not in the policy at all —
//! refuses the relearn: those are not measurements an update changes. A qualifying
//! round is adopted only when every changed value is in some known-good set; otherwise
//! the values no set covers are named.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::Difference;
use crate::failure::Event;

/// The PCRs a relearn never touches: IMA's (checked by replaying the log) and the data
/// PCR (the node key's binding).
const NEVER: [u32; 2] = [10, 16];

/// A known-good measurement set, as stored (`measurements` JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownGoodSet {
    /// PCR index → good values (lowercase hex).
    #[serde(default)]
    pub pcrs: BTreeMap<u32, Vec<String>>,
    /// File path → good digests (lowercase hex); `boot_aggregate` for the boot
    /// aggregate.
    #[serde(default)]
    pub files: BTreeMap<String, Vec<String>>,
}

impl KnownGoodSet {
    /// Whether the set holds the measured value of `d`.
    pub fn covers(&self, d: &Difference) -> bool {
        match d {
            Difference::Pcr { pcr, measured, .. } => self
                .pcrs
                .get(pcr)
                .is_some_and(|v| v.iter().any(|x| x.eq_ignore_ascii_case(measured))),
            Difference::File { file, measured, .. } => self
                .files
                .get(file)
                .is_some_and(|v| v.iter().any(|x| x.eq_ignore_ascii_case(measured))),
        }
    }

    /// The set's size (values held), for limits.
    pub fn len(&self) -> usize {
        self.pcrs.values().map(Vec::len).sum::<usize>()
            + self.files.values().map(Vec::len).sum::<usize>()
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a relearn makes of a failed round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relearn {
    /// Some failure is no changed measurement (named): never relearnt.
    NotEligible(String),
    /// The changed values no known-good set covers.
    Uncovered(Vec<Difference>),
    /// Every changed value is covered: adopt `changes`, which `sets` (by name) cover.
    Covered {
        /// The sets that cover them.
        sets: Vec<String>,
        /// The changed values.
        changes: Vec<Difference>,
    },
}

/// The changed measurements of a failed round, or the first failure that is none.
pub fn changes(failures: &[Event]) -> Result<Vec<Difference>, String> {
    let mut out = Vec::with_capacity(failures.len());
    for f in failures {
        let relearnable = match f.event_id.as_str() {
            "ima.validation.ima-ng.runtime_policy_hash" => f.file.is_some(),
            id => id
                .strip_prefix("pcr_validation.invalid_pcr_")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| !NEVER.contains(&n)),
        };
        let d = relearnable
            .then(|| Difference::of(&f.event_id, &f.context, f.file.as_deref()))
            .flatten()
            .ok_or_else(|| f.event_id.clone())?;
        out.push(d);
    }
    Ok(out)
}

/// Judges a failed round's `failures` against the named known-good `sets`.
pub fn judge(failures: &[Event], sets: &[(String, KnownGoodSet)]) -> Relearn {
    let changes = match changes(failures) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return Relearn::NotEligible("the round did not fail".into()),
        Err(id) => return Relearn::NotEligible(id),
    };
    let mut used = Vec::new();
    let mut uncovered = Vec::new();
    for d in &changes {
        match sets.iter().find(|(_, s)| s.covers(d)) {
            Some((name, _)) => {
                if !used.contains(name) {
                    used.push(name.clone());
                }
            }
            None => uncovered.push(d.clone()),
        }
    }
    if uncovered.is_empty() {
        Relearn::Covered {
            sets: used,
            changes,
        }
    } else {
        Relearn::Uncovered(uncovered)
    }
}

/// Why a policy cannot take the changes.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The policy text is not a JSON object.
    #[error("{policy} is not a JSON object")]
    NotAnObject {
        /// Which policy.
        policy: &'static str,
    },
}

/// The TPM policy (Keylime's `{"mask": …, "<pcr>": [values]}`) with the changed PCR
/// values added to the allowed ones.
pub fn adopt_tpm_policy(text: &str, changes: &[Difference]) -> Result<String, AdoptError> {
    let mut v: Value = serde_json::from_str(text).map_err(|_| AdoptError::NotAnObject {
        policy: "tpm_policy",
    })?;
    let obj = v.as_object_mut().ok_or(AdoptError::NotAnObject {
        policy: "tpm_policy",
    })?;
    for d in changes {
        if let Difference::Pcr { pcr, measured, .. } = d {
            let entry = obj
                .entry(pcr.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::String(s) = entry {
                *entry = Value::Array(vec![Value::String(s.clone())]);
            }
            if let Value::Array(list) = entry {
                if !list.iter().any(|x| x.as_str() == Some(measured)) {
                    list.push(Value::String(measured.clone()));
                }
            }
        }
    }
    Ok(v.to_string())
}

/// The runtime policy (Keylime's `{"digests": {"<path>": [digests]}, …}`) with the
/// changed file digests added.
pub fn adopt_runtime_policy(text: &str, changes: &[Difference]) -> Result<String, AdoptError> {
    let mut v: Value = serde_json::from_str(text).map_err(|_| AdoptError::NotAnObject {
        policy: "runtime policy",
    })?;
    let obj = v.as_object_mut().ok_or(AdoptError::NotAnObject {
        policy: "runtime policy",
    })?;
    let digests = obj
        .entry("digests")
        .or_insert_with(|| Value::Object(Default::default()));
    let digests = digests.as_object_mut().ok_or(AdoptError::NotAnObject {
        policy: "runtime policy digests",
    })?;
    for d in changes {
        if let Difference::File { file, measured, .. } = d {
            let list = digests
                .entry(file.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                if !list.iter().any(|x| x.as_str() == Some(measured)) {
                    list.push(Value::String(measured.clone()));
                }
            }
        }
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::failure::Component;

    fn hash_mismatch(file: &str, got: &str) -> Event {
        Event::new(
            Component::Ima,
            &["validation", "ima-ng"],
            "runtime_policy_hash",
            json!({"message": "Hash not found in runtime policy", "got": got, "expected": ["00"]}),
            true,
        )
        .with_file(file)
    }

    fn set(files: &[(&str, &str)]) -> KnownGoodSet {
        KnownGoodSet {
            files: files
                .iter()
                .map(|(f, d)| ((*f).to_owned(), vec![(*d).to_owned()]))
                .collect(),
            ..KnownGoodSet::default()
        }
    }

    #[test]
    fn covered_changes_are_adopted_and_uncovered_ones_named() {
        let failures = [
            hash_mismatch("/usr/bin/a", "aa"),
            hash_mismatch("/usr/bin/b", "bb"),
        ];
        let sets = [
            ("k1".to_owned(), set(&[("/usr/bin/a", "aa")])),
            ("k2".to_owned(), set(&[("/usr/bin/b", "BB")])),
        ];
        match judge(&failures, &sets) {
            Relearn::Covered { sets, changes } => {
                assert_eq!(sets, ["k1", "k2"]);
                assert_eq!(changes.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        match judge(&failures, &sets[..1]) {
            Relearn::Uncovered(u) => {
                assert!(matches!(&u[..], [Difference::File { file, .. }] if file == "/usr/bin/b"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signature_replay_and_unlisted_files_are_never_relearnt() {
        let sets = [("k".to_owned(), set(&[("/usr/bin/a", "aa")]))];
        for other in [
            Event::new(
                Component::QuoteValidation,
                &[],
                "quote_validation",
                Value::Null,
                false,
            ),
            Event::new(
                Component::Ima,
                &["validation", "ima-ng"],
                "not_in_allowlist",
                Event::message("x"),
                true,
            )
            .with_file("/x"),
            Event::new(
                Component::PcrValidation,
                &[],
                "invalid_pcr_10",
                json!({"got": "aa", "expected": ["bb"]}),
                true,
            ),
            Event::new(
                Component::MeasuredBoot,
                &[],
                "invalid_pcr_0",
                json!({"got": "aa", "expected": "bb"}),
                true,
            ),
        ] {
            let id = other.event_id.clone();
            let failures = [hash_mismatch("/usr/bin/a", "aa"), other];
            assert_eq!(judge(&failures, &sets), Relearn::NotEligible(id));
        }
    }

    #[test]
    fn policies_take_the_changes() {
        let changes = [
            Difference::Pcr {
                pcr: 4,
                measured: "cc".into(),
                expected: vec![],
            },
            Difference::File {
                file: "/usr/bin/a".into(),
                measured: "aa".into(),
                expected: vec![],
            },
        ];
        let tpm = adopt_tpm_policy(r#"{"mask":"0x10","4":"bb"}"#, &changes).unwrap();
        assert_eq!(tpm, r#"{"mask":"0x10","4":["bb","cc"]}"#);
        let rt = adopt_runtime_policy(
            r#"{"digests":{"/usr/bin/a":["00"]},"excludes":[]}"#,
            &changes,
        )
        .unwrap();
        assert_eq!(
            rt,
            r#"{"digests":{"/usr/bin/a":["00","aa"]},"excludes":[]}"#
        );
        assert!(adopt_tpm_policy("[]", &changes).is_err());
    }
}
