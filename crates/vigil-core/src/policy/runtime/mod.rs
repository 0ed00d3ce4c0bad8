//! Keylime runtime policies: the format-v1 JSON document (plain or inside a DSSE
//! envelope), the legacy allowlist/excludelist files, and the parsed, immutable index the
//! IMA validator queries on its hot path.
//!
//! A [`RuntimePolicy`] is parsed once and then shared (`Arc<RuntimePolicy>`) by every
//! node enrolled with it; nothing about a node is stored in it (Keylime appends each
//! node's boot aggregates to the policy in memory; Vigil passes them to the validator
//! instead). Lookups are one probe of a compact, read-only table (see `table.rs`) plus
//! one combined exclude automaton.
//!
//! Digests are stored as bytes. Keylime compares lowercase hex strings without the
//! algorithm prefix, and the schema only admits lowercase hex, so byte equality is the
//! same test.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::hash::{Digest, HashAlg};

pub mod create;
mod dsse;
mod exclude;
mod legacy;
mod table;

pub use dsse::{
    dsse_payload, sign_dsse, verify_dsse, DsseError, DsseSigningKey, KEYLIME_PAYLOAD_TYPE,
};
pub use exclude::{translate as translate_python_regex, ExcludeError, ExcludeMatcher};
pub use table::PolicyDigests;

use table::{DigestTable, TableBuilder};

/// The only runtime policy format version Keylime 7 writes and reads.
pub const CURRENT_VERSION: u64 = 1;

/// An error in a runtime policy, allowlist or exclude list, naming what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not JSON, or JSON that does not fit the v1 schema; `path` locates the field.
    #[error("runtime policy field {path}: {message}")]
    Schema {
        /// Where in the document, e.g. `digests./usr/bin/ls[0]`.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// A DSSE envelope whose payload cannot be decoded.
    #[error("runtime policy DSSE envelope: {0}")]
    Envelope(String),
    /// An exclude pattern that does not compile.
    #[error(transparent)]
    Exclude(#[from] ExcludeError),
    /// A line of a legacy allowlist or exclude list.
    #[error("{file} line {line}: {message}")]
    Legacy {
        /// `allowlist` or `excludelist`.
        file: &'static str,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The signature of a DSSE-signed policy.
    #[error(transparent)]
    Signature(#[from] DsseError),
}

/// A parsed, validated runtime policy, ready to be shared between nodes.
#[derive(Debug, Clone)]
pub struct RuntimePolicy {
    version: u64,
    generator: u8,
    timestamp: Option<String>,
    release: u64,
    digests: DigestTable,
    keyrings: DigestTable,
    ima_buf: DigestTable,
    excludes: Vec<String>,
    exclude: Option<ExcludeMatcher>,
    ignored_keyrings: Vec<String>,
    log_hash_alg: HashAlg,
    verification_keys: String,
    checksum: String,
}

impl RuntimePolicy {
    /// Keylime's `EMPTY_RUNTIME_POLICY`: it allows nothing (not even `boot_aggregate`).
    pub fn empty() -> Self {
        let text = br#"{"meta":{"version":1,"generator":1},"release":0,"digests":{},"excludes":[],"keyrings":{},"ima":{"ignored_keyrings":[],"log_hash_alg":"sha1","dm_policy":null},"ima-buf":{},"verification-keys":""}"#;
        Self::from_json(text).unwrap_or_else(|_| unreachable!("the built-in empty policy is valid"))
    }

    /// Parses a v1 policy, or a DSSE envelope holding one (unwrapped without checking its
    /// signature, as Keylime's verifier does when signatures are not required; see
    /// [`verify_dsse`]). `checksum()` is the SHA-256 of `bytes` as given.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        let checksum = HashAlg::Sha256.hash(bytes).to_hex();
        if let Some(payload) = dsse::envelope_payload(bytes)? {
            return Self::from_document(&payload, checksum);
        }
        Self::from_document(bytes, checksum)
    }

    fn from_document(bytes: &[u8], checksum: String) -> Result<Self, PolicyError> {
        // Tracking the path of every value costs about as much as the parse itself, so a
        // document is parsed plainly, and parsed again with paths only to explain an error.
        if let Ok(doc) = serde_json::from_slice::<Document>(bytes) {
            return Self::from_parts(doc, checksum);
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let doc: Document = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            PolicyError::Schema {
                path: if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            }
        })?;
        de.end().map_err(|e| PolicyError::Schema {
            path: "(document)".into(),
            message: e.to_string(),
        })?;
        Self::from_parts(doc, checksum)
    }

    fn from_parts(doc: Document, checksum: String) -> Result<Self, PolicyError> {
        let exclude = ExcludeMatcher::new(&doc.excludes)?;
        Ok(Self {
            version: doc.meta.version,
            generator: doc.meta.generator,
            timestamp: doc.meta.timestamp,
            release: doc.release,
            digests: doc.digests.0,
            keyrings: doc.keyrings.0,
            ima_buf: doc.ima_buf.0,
            excludes: doc.excludes,
            exclude,
            ignored_keyrings: doc.ima.ignored_keyrings,
            log_hash_alg: doc.ima.log_hash_alg,
            verification_keys: doc.verification_keys,
            checksum,
        })
    }

    /// The digests allowed for a file path (or `boot_aggregate`), in the policy's order.
    #[inline]
    pub fn digests_for(&self, path: &str) -> Option<PolicyDigests<'_>> {
        self.digests.get(path)
    }

    /// The digests allowed for keys measured into the keyring `name` (e.g. `.ima`).
    pub fn keyring_digests(&self, name: &str) -> Option<PolicyDigests<'_>> {
        self.keyrings.get(name)
    }

    /// The digests allowed for the `ima-buf` buffer `name`.
    pub fn ima_buf_digests(&self, name: &str) -> Option<PolicyDigests<'_>> {
        self.ima_buf.get(name)
    }

    /// True when `path` matches the exclude list (Python `re.match` semantics).
    #[inline]
    pub fn is_excluded(&self, path: &str) -> bool {
        self.exclude.as_ref().is_some_and(|m| m.is_match(path))
    }

    /// True when keys of keyring `name` are accepted without checks and not learnt
    /// (`ima.ignored_keyrings` lists it, or lists `*`).
    pub fn ignores_keyring(&self, name: &str) -> bool {
        self.ignored_keyrings.iter().any(|k| k == "*" || k == name)
    }

    /// `ima.log_hash_alg`: the algorithm of the template-hash column.
    pub fn log_hash_alg(&self) -> HashAlg {
        self.log_hash_alg
    }

    /// `verification-keys`: the tenant's IMA keyring as a JSON string ("" for none).
    pub fn verification_keys(&self) -> &str {
        &self.verification_keys
    }

    /// `meta.generator` (0 unknown, 1 empty, 2 compatible, 3 legacy allowlist);
    /// Keylime reports `has_runtime_policy` only for values above 1.
    pub fn generator(&self) -> u8 {
        self.generator
    }

    /// The exclude patterns as written.
    pub fn excludes(&self) -> &[String] {
        &self.excludes
    }

    /// Number of paths in `digests`.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// True when `digests` is empty.
    pub fn is_empty(&self) -> bool {
        self.digests.len() == 0
    }

    /// Heap bytes held by the three digest tables (the bulk of a large policy), for
    /// memory measurements.
    pub fn table_heap_bytes(&self) -> usize {
        self.digests.heap_bytes() + self.keyrings.heap_bytes() + self.ima_buf.heap_bytes()
    }

    /// Hex SHA-256 of the policy bytes as given (Keylime's stored `checksum`).
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// The policy as canonical v1 JSON, keys and lists sorted as `keylime-policy`
    /// writes them.
    pub fn to_json(&self) -> Value {
        fn table(t: &DigestTable) -> Value {
            let mut entries: Vec<(&str, PolicyDigests<'_>)> = t.iter().collect();
            entries.sort_unstable_by_key(|(name, _)| *name);
            let mut out = Map::new();
            for (name, list) in entries {
                let mut hexes: Vec<String> = list.raw().map(hex::encode).collect();
                hexes.sort();
                hexes.dedup();
                out.insert(name.to_owned(), json!(hexes));
            }
            Value::Object(out)
        }
        let mut meta = json!({"version": self.version, "generator": self.generator});
        if let Some(ts) = &self.timestamp {
            meta["timestamp"] = json!(ts);
        }
        json!({
            "meta": meta,
            "release": self.release,
            "digests": table(&self.digests),
            "excludes": self.excludes,
            "keyrings": table(&self.keyrings),
            "ima": {
                "ignored_keyrings": self.ignored_keyrings,
                "log_hash_alg": self.log_hash_alg,
                "dm_policy": null,
            },
            "ima-buf": table(&self.ima_buf),
            "verification-keys": self.verification_keys,
        })
    }

    /// Converts legacy inputs as Keylime's tenant and `keylime_convert_runtime_policy`
    /// do: a flat allowlist (`<digest> <path>` lines, `%keyring:<name>` paths) or a
    /// pre-6.6 JSON allowlist (`hashes`), plus an exclude list (one Python regex per
    /// line; blank lines and `#` comments skipped).
    pub fn from_legacy(
        allowlist: Option<&str>,
        excludelist: Option<&str>,
    ) -> Result<Self, PolicyError> {
        let doc = legacy::convert(allowlist, excludelist)?;
        let text = serde_json::to_vec(&doc).map_err(|e| PolicyError::Envelope(e.to_string()))?;
        Self::from_json(&text)
    }
}

/// The v1 document, deserialized with the schema's rules.
#[derive(Deserialize)]
struct Document {
    meta: Meta,
    release: u64,
    digests: TableDoc,
    excludes: Vec<String>,
    keyrings: TableDoc,
    ima: ImaSection,
    #[serde(rename = "ima-buf")]
    ima_buf: TableDoc,
    #[serde(rename = "verification-keys")]
    verification_keys: String,
}

#[derive(Deserialize)]
struct Meta {
    version: u64,
    #[serde(deserialize_with = "generator")]
    generator: u8,
    #[serde(default)]
    timestamp: Option<String>,
}

fn generator<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let g = u64::deserialize(d)?;
    u8::try_from(g)
        .ok()
        .filter(|g| *g <= 3)
        .ok_or_else(|| de::Error::custom(format!("generator {g} is not 0, 1, 2 or 3")))
}

#[derive(Deserialize)]
struct ImaSection {
    ignored_keyrings: Vec<String>,
    #[serde(deserialize_with = "log_hash_alg")]
    log_hash_alg: HashAlg,
    /// Present only to enforce the schema.
    #[serde(rename = "dm_policy")]
    _dm_policy: Null,
}

fn log_hash_alg<'de, D: Deserializer<'de>>(d: D) -> Result<HashAlg, D::Error> {
    let name = String::deserialize(d)?;
    match HashAlg::from_name(&name) {
        Some(alg) if alg != HashAlg::Sm3_256 => Ok(alg),
        _ => Err(de::Error::custom(format!(
            "'{name}' is not one of sha1, sha256, sha384, sha512"
        ))),
    }
}

/// A field that must be present and `null` (Keylime's schema pins `dm_policy` to null).
struct Null;

impl<'de> Deserialize<'de> for Null {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<de::IgnoredAny>::deserialize(d)? {
            None => Ok(Self),
            Some(_) => Err(de::Error::custom(
                "must be null (device-mapper policies are not supported)",
            )),
        }
    }
}

/// `{"<name>": ["<hex>", ...], ...}` with non-empty lists of 40–128 hex digits.
struct TableDoc(DigestTable);

impl<'de> Deserialize<'de> for TableDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TableVisitor;
        impl<'de> Visitor<'de> for TableVisitor {
            type Value = TableDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping names to lists of hex digests")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TableDoc, A::Error> {
                let mut out = TableBuilder::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let DigestList(list) = map.next_value()?;
                    out.insert(&name, &list).map_err(de::Error::custom)?;
                }
                Ok(TableDoc(out.build()))
            }
        }
        d.deserialize_map(TableVisitor)
    }
}

struct DigestList(Vec<Digest>);

impl<'de> Deserialize<'de> for DigestList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = DigestList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-empty list of hex digests")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DigestList, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(text) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    out.push(parse_policy_digest(&text).map_err(de::Error::custom)?);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("the list of digests is empty"));
                }
                Ok(DigestList(out))
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}

/// One digest string: `^[0-9a-f]{40,128}$` as Keylime's schema demands, optionally
/// behind a known `alg:` prefix (Keylime's own test policies carry `sha256:` on
/// `boot_aggregate`; its schema rejects them, Vigil reads the digest).
fn parse_policy_digest(text: &str) -> Result<Digest, String> {
    let hex = match text.split_once(':') {
        Some((alg, hex)) if HashAlg::from_name(alg).is_some() => hex,
        _ => text,
    };
    let ok = (40..=128).contains(&hex.len())
        && hex.len() % 2 == 0
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(format!(
            "'{}' is not a digest (an even number, 40 to 128, of lowercase hex digits)",
            crate::hash::truncate_for_error(text)
        ));
    }
    Digest::from_hex(hex).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
