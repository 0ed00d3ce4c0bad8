//! Assembling a runtime policy the way `keylime-policy create runtime` does, from inputs
//! already read into memory: a base policy, a flat allowlist, an IMA measurement list, an
//! exclude list, and `path → digest` pairs the caller computed from a root filesystem or
//! an initrd.
//!
//! The I/O (walking directories, unpacking initrds, hashing files, the clock) is the
//! caller's; this module holds the rules that decide what lands in the document, so that
//! Vigil and Keylime agree on it:
//! - the digest algorithm comes from `--algo`, else the base policy, else the allowlist,
//!   else the IMA log's `boot_aggregate` line, else SHA-256; sources that disagree abort;
//! - IMA log lines are split on single spaces as Keylime splits them, and only `ima-ng` and
//!   `ima-sig` entries add digests;
//! - `ima-buf` entries whose buffer is a DER X.509 certificate are keys (`keyrings`),
//!   every other buffer is critical data (`ima-buf`);
//! - every list is deduplicated and sorted, and `meta.generator` is 3.
//!
//! Two Keylime behaviours are deliberately not reproduced, because they are bugs that
//! silently lose data (docs/policy-create.md): a 64-hex-digit base policy or allowlist
//! (SHA-256 or SM3) makes Keylime hash nothing at all from `--rootfs`/`--ramdisk-dir`,
//! and it refuses `--algo sha256` together with such a base policy. Vigil takes SHA-256
//! (or SM3 when another source says so) in both cases.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::{ExcludeMatcher, PolicyError, RuntimePolicy};
use crate::hash::HashAlg;

/// Why a policy cannot be created from the given inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// An input's digests are not of any supported algorithm (judged by their length).
    #[error("the {source_name} has digests of no supported algorithm ('{sample}')")]
    UnknownAlgorithm {
        /// Which input: `base policy`, `allowlist` or `IMA measurement list`.
        source_name: &'static str,
        /// The digest (or `alg:digest`) the guess was made from.
        sample: String,
    },
    /// Two inputs use different digest algorithms.
    #[error(
        "the {source_name} uses {found} but the {previous_source} uses {previous}; \
             use inputs of one algorithm (or pass --algo to match them)"
    )]
    AlgorithmMismatch {
        /// The input that disagrees.
        source_name: &'static str,
        /// Its algorithm.
        found: String,
        /// The input that set the algorithm first.
        previous_source: &'static str,
        /// That input's algorithm.
        previous: String,
    },
    /// The base policy is not a JSON object.
    #[error("base policy: {0}")]
    BasePolicy(String),
    /// A line of the exclude list is not a valid regular expression.
    #[error("exclude list line {line}: '{pattern}' is not a valid regular expression: {reason}")]
    Exclude {
        /// 1-based line number.
        line: usize,
        /// The line.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// The assembled document does not pass the v1 schema (e.g. an allowlist digest that
    /// is not lowercase hex).
    #[error("the resulting policy is not a valid runtime policy: {0}")]
    Invalid(#[from] PolicyError),
}

/// What an input says about the digest algorithm, guessed as Keylime guesses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlgHint {
    /// The input names or implies exactly this algorithm.
    Exact(HashAlg),
    /// 64 hex digits without a name: SHA-256 or SM3-256.
    Sha256OrSm3,
    /// Digests of a length no algorithm has, or an unknown algorithm name.
    Invalid(
        /// The sample the guess was made from, for the error message.
        String,
    ),
}

impl AlgHint {
    /// Guesses from the length of a hex digest: 40 SHA-1, 64 SHA-256 or SM3, 96 SHA-384,
    /// 128 SHA-512.
    pub fn from_hex_len(hex: &str) -> Self {
        match hex.len() {
            40 => Self::Exact(HashAlg::Sha1),
            64 => Self::Sha256OrSm3,
            96 => Self::Exact(HashAlg::Sha384),
            128 => Self::Exact(HashAlg::Sha512),
            _ => Self::Invalid(hex.to_owned()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Exact(alg) => alg.name().to_owned(),
            Self::Sha256OrSm3 => "sha256 or sm3_256".to_owned(),
            Self::Invalid(s) => s.clone(),
        }
    }
}

/// Picks the file-digest algorithm from the hints of each input, in priority order
/// (`--algo`, base policy, allowlist, IMA measurement list). `None` entries are inputs
/// not given. No hint at all gives SHA-256.
pub fn resolve_algorithm(
    hints: &[(&'static str, Option<AlgHint>)],
) -> Result<HashAlg, CreateError> {
    let mut chosen: Option<(&'static str, AlgHint)> = None;
    for (source_name, hint) in hints {
        let Some(hint) = hint else { continue };
        if let AlgHint::Invalid(sample) = hint {
            return Err(CreateError::UnknownAlgorithm {
                source_name,
                sample: sample.clone(),
            });
        }
        let Some((previous_source, previous)) = &chosen else {
            chosen = Some((source_name, hint.clone()));
            continue;
        };
        let merged = match (previous, hint) {
            (a, b) if a == b => Some(a.clone()),
            (AlgHint::Sha256OrSm3, AlgHint::Exact(alg @ (HashAlg::Sha256 | HashAlg::Sm3_256)))
            | (AlgHint::Exact(alg @ (HashAlg::Sha256 | HashAlg::Sm3_256)), AlgHint::Sha256OrSm3) => {
                Some(AlgHint::Exact(*alg))
            }
            _ => None,
        };
        match merged {
            Some(m) => chosen = Some((previous_source, m)),
            None => {
                return Err(CreateError::AlgorithmMismatch {
                    source_name,
                    found: hint.describe(),
                    previous_source,
                    previous: previous.describe(),
                })
            }
        }
    }
    Ok(match chosen {
        Some((_, AlgHint::Exact(alg))) => alg,
        _ => HashAlg::Sha256,
    })
}

/// One `ima-ng`/`ima-sig`/`ima` line as Keylime's policy tool reads it: split on single
/// spaces, at least five fields. Returns `(algorithm hint, digest hex, path)`.
fn split_ima_line(line: &str) -> Option<(Vec<&str>, &str)> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let fields: Vec<&str> = line.split(' ').collect();
    (fields.len() >= 5).then_some((fields, line))
}

/// The algorithm hint of an IMA log: from its first line, which must be the
/// `boot_aggregate` entry (Keylime treats anything else as an unknown algorithm).
pub fn ima_log_alg_hint(log: &str) -> AlgHint {
    let first = log.split('\n').next().unwrap_or("");
    let invalid = || AlgHint::Invalid(first.chars().take(80).collect());
    let Some((fields, _)) = split_ima_line(first) else {
        return invalid();
    };
    if !matches!(fields[2], "ima-ng" | "ima-sig" | "ima") || fields[4] != "boot_aggregate" {
        return invalid();
    }
    match fields[3].split(':').collect::<Vec<_>>()[..] {
        [alg, hex] => match HashAlg::from_name(alg) {
            // Keylime only knows the lowercase names.
            Some(a) if a.name() == alg && hex.len() == 2 * a.digest_len() => AlgHint::Exact(a),
            _ => invalid(),
        },
        [hex] => match AlgHint::from_hex_len(hex) {
            // The old `ima` template: the first algorithm of that length (SHA-256 for 64).
            AlgHint::Sha256OrSm3 => AlgHint::Exact(HashAlg::Sha256),
            other => other,
        },
        _ => invalid(),
    }
}

/// `path → digest` pairs of the `ima-ng` and `ima-sig` entries of an IMA log
/// (`boot_aggregate` included), digests as written after the `alg:` prefix.
pub fn ima_log_digests(log: &str) -> Vec<(String, String)> {
    log.split_inclusive('\n')
        .filter_map(split_ima_line)
        .filter(|(f, _)| matches!(f[2], "ima-ng" | "ima-sig"))
        .filter_map(|(f, _)| {
            let (_, hex) = f[3].split_once(':')?;
            let hex = hex.split(':').next().unwrap_or(hex);
            Some((f[4].to_owned(), hex.to_owned()))
        })
        .collect()
}

/// One `ima-buf` entry: the buffer name, its digest, and whether the buffer is a key
/// (parses as a DER X.509 certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaBufEntry {
    /// The buffer name (a keyring such as `.ima` for keys).
    pub name: String,
    /// The digest hex, without the algorithm prefix.
    pub digest: String,
    /// True when the buffer holds a certificate.
    pub is_key: bool,
}

/// The `ima-buf` entries of an IMA log: lines of exactly six space-separated fields.
pub fn ima_log_buffers(log: &str) -> Vec<ImaBufEntry> {
    log.split_inclusive('\n')
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            // Keylime tests the template with `in ("ima-buf")`, a substring test on a
            // string, so `ima` and `buf` pass as well; reproduced for identical output.
            if f.len() != 6 || !"ima-buf".contains(f[2]) {
                return None;
            }
            let digest = f[3].split(':').nth(1)?.to_owned();
            let is_key = hex::decode(f[5].trim()).is_ok_and(|der| {
                !der.is_empty() && <x509_cert::Certificate as der::Decode>::from_der(&der).is_ok()
            });
            Some(ImaBufEntry {
                name: f[4].to_owned(),
                digest,
                is_key,
            })
        })
        .collect()
}

/// `path → digest` pairs of a flat allowlist (`<digest> <path>` lines, as `sha256sum`
/// prints them); spaces in paths become `_` as IMA writes them.
pub fn flat_allowlist(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (digest, path) = line.split_once(char::is_whitespace)?;
            let path = path.trim_start();
            (!path.is_empty()).then(|| (path.replace(' ', "_"), digest.to_owned()))
        })
        .collect()
}

/// The hint of a `path → digests` table: the length of its first digest.
pub fn table_alg_hint<'a>(mut first_digests: impl Iterator<Item = &'a str>) -> Option<AlgHint> {
    first_digests.next().map(AlgHint::from_hex_len)
}

/// The exclude list: one regular expression per line, blank lines skipped (`#` lines are
/// patterns too, as in `keylime-policy`). Each line must compile.
pub fn exclude_list(text: &str) -> Result<Vec<String>, CreateError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        ExcludeMatcher::new(&[line]).map_err(|e| CreateError::Exclude {
            line: i + 1,
            pattern: line.to_owned(),
            reason: e.reason,
        })?;
        out.push(line.to_owned());
    }
    Ok(out)
}

type Table = BTreeMap<String, BTreeSet<String>>;

/// A policy being assembled; [`PolicyDraft::finish`] validates and renders it.
#[derive(Debug, Clone)]
pub struct PolicyDraft {
    digests: Table,
    excludes: BTreeSet<String>,
    keyrings: Table,
    ima_buf: Table,
    ignored_keyrings: BTreeSet<String>,
    log_hash_alg: String,
    verification_keys: String,
    base_alg_hint: Option<AlgHint>,
}

impl Default for PolicyDraft {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyDraft {
    /// An empty draft (Keylime's empty policy: `log_hash_alg` SHA-1, nothing allowed).
    pub fn new() -> Self {
        Self {
            digests: Table::new(),
            excludes: BTreeSet::new(),
            keyrings: Table::new(),
            ima_buf: Table::new(),
            ignored_keyrings: BTreeSet::new(),
            log_hash_alg: "sha1".to_owned(),
            verification_keys: String::new(),
            base_alg_hint: None,
        }
    }

    /// A draft holding what Keylime takes from a base policy (`-p`): digests, excludes,
    /// keyrings, ima-buf, `ima.log_hash_alg`, `ima.ignored_keyrings` and
    /// `verification-keys`; anything else in it is ignored, and missing keys are empty.
    pub fn from_base_policy(text: &[u8]) -> Result<Self, CreateError> {
        let doc: Value =
            serde_json::from_slice(text).map_err(|e| CreateError::BasePolicy(e.to_string()))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| CreateError::BasePolicy("not a JSON object".into()))?;
        let mut draft = Self::new();
        let table = |key: &str, into: &mut Table| -> Result<(), CreateError> {
            let Some(v) = obj.get(key) else { return Ok(()) };
            let map = v
                .as_object()
                .ok_or_else(|| CreateError::BasePolicy(format!("'{key}' is not an object")))?;
            for (name, list) in map {
                let entry = into.entry(name.clone()).or_default();
                for d in string_list(list, key)? {
                    entry.insert(d);
                }
            }
            Ok(())
        };
        table("digests", &mut draft.digests)?;
        table("keyrings", &mut draft.keyrings)?;
        table("ima-buf", &mut draft.ima_buf)?;
        if let Some(v) = obj.get("excludes") {
            draft.excludes.extend(string_list(v, "excludes")?);
        }
        if let Some(ima) = obj.get("ima") {
            if let Some(alg) = ima.get("log_hash_alg") {
                draft.log_hash_alg = alg
                    .as_str()
                    .ok_or_else(|| {
                        CreateError::BasePolicy("'ima.log_hash_alg' is not a string".into())
                    })?
                    .to_owned();
            }
            if let Some(k) = ima.get("ignored_keyrings") {
                draft
                    .ignored_keyrings
                    .extend(string_list(k, "ima.ignored_keyrings")?);
            }
        }
        if let Some(v) = obj.get("verification-keys") {
            draft.verification_keys = v
                .as_str()
                .ok_or_else(|| {
                    CreateError::BasePolicy("'verification-keys' is not a string".into())
                })?
                .to_owned();
        }
        // Keylime guesses from the first digest of the first path, in document order.
        draft.base_alg_hint = obj
            .get("digests")
            .and_then(Value::as_object)
            .and_then(|m| m.values().next())
            .and_then(Value::as_array)
            .and_then(|l| l.first())
            .and_then(Value::as_str)
            .map(AlgHint::from_hex_len);
        // Keylime validates the merged base policy before going on.
        draft.render("")?;
        Ok(draft)
    }

    /// The algorithm hint of the base policy's digests, if it had any.
    pub fn base_alg_hint(&self) -> Option<AlgHint> {
        self.base_alg_hint.clone()
    }

    /// Adds allowed digests (`path → digest` pairs).
    pub fn add_digests<I, P, D>(&mut self, pairs: I)
    where
        I: IntoIterator<Item = (P, D)>,
        P: Into<String>,
        D: Into<String>,
    {
        for (path, digest) in pairs {
            self.digests
                .entry(path.into())
                .or_default()
                .insert(digest.into());
        }
    }

    /// Adds exclude patterns.
    pub fn add_excludes(&mut self, patterns: impl IntoIterator<Item = String>) {
        self.excludes.extend(patterns);
    }

    /// Adds keyrings to `ima.ignored_keyrings`.
    pub fn add_ignored_keyrings(&mut self, names: impl IntoIterator<Item = String>) {
        self.ignored_keyrings.extend(names);
    }

    /// Adds `ima-buf` entries of an IMA log: keys to `keyrings` (with `keyrings`, unless
    /// their keyring is listed in `ima.ignored_keyrings`), other buffers to `ima-buf`
    /// (with `ima_buf`).
    pub fn add_ima_buffers(&mut self, entries: &[ImaBufEntry], keyrings: bool, ima_buf: bool) {
        for e in entries {
            if e.is_key {
                // Keylime compares names exactly here; `*` does not match every keyring.
                if keyrings && !self.ignored_keyrings.contains(&e.name) {
                    self.keyrings
                        .entry(e.name.clone())
                        .or_default()
                        .insert(e.digest.clone());
                }
            } else if ima_buf {
                self.ima_buf
                    .entry(e.name.clone())
                    .or_default()
                    .insert(e.digest.clone());
            }
        }
    }

    /// Number of paths with digests so far.
    pub fn digest_paths(&self) -> usize {
        self.digests.len()
    }

    /// Validates the draft against the v1 schema and renders it, with `meta.generator`
    /// 3 (legacy allowlist, as `keylime-policy` writes) and the given timestamp.
    /// Object keys come out sorted, so equal inputs give byte-identical documents.
    pub fn finish(&self, timestamp: &str) -> Result<Value, CreateError> {
        self.render(timestamp)
    }

    fn render(&self, timestamp: &str) -> Result<Value, CreateError> {
        fn table(t: &Table) -> Value {
            Value::Object(
                t.iter()
                    .map(|(k, v)| (k.clone(), json!(v.iter().collect::<Vec<_>>())))
                    .collect::<Map<_, _>>(),
            )
        }
        let doc = json!({
            "meta": {"version": super::CURRENT_VERSION, "generator": 3, "timestamp": timestamp},
            "release": 0,
            "digests": table(&self.digests),
            "excludes": self.excludes.iter().collect::<Vec<_>>(),
            "keyrings": table(&self.keyrings),
            "ima": {
                "ignored_keyrings": self.ignored_keyrings.iter().collect::<Vec<_>>(),
                "log_hash_alg": self.log_hash_alg,
                "dm_policy": null,
            },
            "ima-buf": table(&self.ima_buf),
            "verification-keys": self.verification_keys,
        });
        let text = serde_json::to_vec(&doc).map_err(|e| CreateError::BasePolicy(e.to_string()))?;
        RuntimePolicy::from_json(&text)?;
        Ok(doc)
    }
}

fn string_list(v: &Value, key: &str) -> Result<Vec<String>, CreateError> {
    let bad = || CreateError::BasePolicy(format!("'{key}' holds something other than strings"));
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|s| s.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_priority_and_conflicts() {
        let s = |a| Some(AlgHint::Exact(a));
        assert_eq!(
            resolve_algorithm(&[("--algo option", None)]).unwrap(),
            HashAlg::Sha256
        );
        assert_eq!(
            resolve_algorithm(&[("--algo option", s(HashAlg::Sha384)), ("allowlist", None)])
                .unwrap(),
            HashAlg::Sha384
        );
        // 64 hex digits then an IMA log naming SM3: SM3.
        assert_eq!(
            resolve_algorithm(&[
                ("base policy", Some(AlgHint::Sha256OrSm3)),
                ("IMA measurement list", s(HashAlg::Sm3_256))
            ])
            .unwrap(),
            HashAlg::Sm3_256
        );
        // Ambiguous alone: SHA-256 (Keylime hashes nothing here; see the module docs).
        assert_eq!(
            resolve_algorithm(&[("allowlist", Some(AlgHint::Sha256OrSm3))]).unwrap(),
            HashAlg::Sha256
        );
        assert!(matches!(
            resolve_algorithm(&[
                ("--algo option", s(HashAlg::Sha1)),
                ("allowlist", Some(AlgHint::Sha256OrSm3))
            ]),
            Err(CreateError::AlgorithmMismatch {
                source_name: "allowlist",
                ..
            })
        ));
        assert!(matches!(
            resolve_algorithm(&[("allowlist", Some(AlgHint::from_hex_len("abcd")))]),
            Err(CreateError::UnknownAlgorithm {
                source_name: "allowlist",
                ..
            })
        ));
    }

    #[test]
    fn ima_log_lines() {
        let log = "10 aa ima-ng sha256:f4845392eca429a4c941a6a07fc32faf843a88c5c3dfa3b9329ab8f4171d9ce3 boot_aggregate\n\
                   10 bb ima-sig sha256:96d7 /usr/bin/a 0302\n\
                   10 cc ima 1234 /old\n\
                   short line\n";
        assert_eq!(ima_log_alg_hint(log), AlgHint::Exact(HashAlg::Sha256));
        assert_eq!(
            ima_log_digests(log),
            vec![
                (
                    "boot_aggregate".to_owned(),
                    "f4845392eca429a4c941a6a07fc32faf843a88c5c3dfa3b9329ab8f4171d9ce3".to_owned()
                ),
                ("/usr/bin/a".to_owned(), "96d7".to_owned()),
            ]
        );
        assert!(matches!(
            ima_log_alg_hint("10 aa ima-ng sha256:00 /x\n"),
            AlgHint::Invalid(_)
        ));
        assert!(matches!(
            ima_log_alg_hint("10 aa ima-ng unknown:00 boot_aggregate\n"),
            AlgHint::Invalid(_)
        ));
    }

    #[test]
    fn flat_allowlist_and_excludes() {
        let pairs = flat_allowlist("abc  /usr/bin/a b\n\n  def\t/x\nlonely\n");
        assert_eq!(
            pairs,
            vec![
                ("/usr/bin/a_b".to_owned(), "abc".to_owned()),
                ("/x".to_owned(), "def".to_owned())
            ]
        );
        assert_eq!(
            exclude_list("/tmp/.*\n\n# kept\n").unwrap(),
            vec!["/tmp/.*", "# kept"]
        );
        assert!(matches!(
            exclude_list("ok\n(unclosed\n"),
            Err(CreateError::Exclude { line: 2, .. })
        ));
    }

    #[test]
    fn draft_merges_sorts_and_validates() {
        let base = br#"{"digests": {"/b": ["bb00000000000000000000000000000000000000"]}, "ima": {"ignored_keyrings": ["x"]}}"#;
        let mut d = PolicyDraft::from_base_policy(base).unwrap();
        assert_eq!(d.base_alg_hint(), Some(AlgHint::Exact(HashAlg::Sha1)));
        d.add_digests([
            ("/a", "aa00000000000000000000000000000000000000"),
            ("/b", "0b00000000000000000000000000000000000000"),
        ]);
        d.add_ima_buffers(
            &[
                ImaBufEntry {
                    name: "x".into(),
                    digest: "cc00000000000000000000000000000000000000".into(),
                    is_key: true,
                },
                ImaBufEntry {
                    name: ".ima".into(),
                    digest: "dd00000000000000000000000000000000000000".into(),
                    is_key: true,
                },
                ImaBufEntry {
                    name: "kv".into(),
                    digest: "ee00000000000000000000000000000000000000".into(),
                    is_key: false,
                },
            ],
            true,
            false,
        );
        let doc = d.finish("t").unwrap();
        assert_eq!(
            doc["digests"]["/b"],
            json!([
                "0b00000000000000000000000000000000000000",
                "bb00000000000000000000000000000000000000"
            ])
        );
        assert_eq!(
            doc["keyrings"],
            json!({".ima": ["dd00000000000000000000000000000000000000"]})
        );
        assert_eq!(doc["ima-buf"], json!({}));
        assert_eq!(doc["meta"]["generator"], json!(3));
        d.add_digests([("/bad", "XYZ")]);
        assert!(matches!(d.finish("t"), Err(CreateError::Invalid(_))));
    }
}
