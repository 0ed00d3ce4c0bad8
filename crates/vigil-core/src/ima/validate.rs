//! Runtime-policy validation of IMA entries: the [`EntryValidator`] that applies a
//! Keylime runtime policy with Keylime's per-template rules and event ids.
//!
//! | template | rule |
//! |---|---|
//! | `ima`, `ima-ng` | excluded → accept; else the path must be in `digests` with this digest |
//! | `ima-sig` | with a signature: excluded → accept, a signature that verifies with a known key → accept; otherwise the `ima-ng` rule |
//! | `ima-buf` holding a key | ignored keyring → accept (key not learnt); else the `ima-ng` rule against `keyrings[name]`, and on success the key joins the learnt keyring `name` |
//! | `ima-buf`, anything else | the `ima-ng` rule against `ima-buf[name]` |
//!
//! The digest rule fails with `ima.validation.ima-ng.not_in_allowlist` (path unknown)
//! or `ima.validation.ima-ng.runtime_policy_hash` (digest not allowed), whatever the
//! template, because Keylime falls back to it everywhere. For file entries, both events
//! also carry the path in Vigil's [`Event::file`], outside Keylime's context. A buffer that parses as a key
//! of an unsupported type is `ima.invalid_key`.
//!
//! Device-mapper (`ima.dm_policy`) validation is not implemented: Keylime's policy schema
//! forces `dm_policy` to be null, so no policy can enable it.

use serde_json::json;

use super::entry::{ImaEntry, Template};
use super::keyring::{parse_ima_key, ImaKeyrings};
use super::replay::{EntryValidator, EntryVerdict};
use crate::failure::{Component, Event, Failure};
use crate::hash::{Digest, MAX_DIGEST_LEN};
use crate::policy::runtime::{PolicyDigests, RuntimePolicy};

/// Which digest table of the policy an entry is checked against.
#[derive(Clone, Copy)]
enum Table {
    Digests,
    Keyrings,
    ImaBuf,
}

/// Validates entries against a shared, pre-parsed [`RuntimePolicy`].
///
/// Holds only borrows, so one policy (`Arc<RuntimePolicy>` in the verifier) serves
/// every node; the per-node part is the learnt [`ImaKeyrings`].
pub struct PolicyValidator<'a> {
    policy: &'a RuntimePolicy,
    boot_aggregates: &'a [Digest],
    keyrings: &'a mut ImaKeyrings,
}

impl<'a> PolicyValidator<'a> {
    /// A validator for `policy`.
    ///
    /// - `boot_aggregates`: boot aggregates computed from the node's UEFI event log; like
    ///   Keylime, they are accepted for `boot_aggregate` in addition to the policy's own.
    /// - `keyrings`: the node's keyrings (tenant keyring from the policy's
    ///   `verification-keys`, plus keys learnt from `ima-buf` entries, which this
    ///   validator adds to).
    pub fn new(
        policy: &'a RuntimePolicy,
        boot_aggregates: &'a [Digest],
        keyrings: &'a mut ImaKeyrings,
    ) -> Self {
        Self {
            policy,
            boot_aggregates,
            keyrings,
        }
    }

    /// Keylime's digest rule (`_validate_ima_ng`).
    fn check_digest(
        &self,
        table: Table,
        name: &str,
        digest: &[u8],
        failure: &mut Failure,
    ) -> EntryVerdict {
        if self.policy.is_excluded(name) {
            return EntryVerdict::Excluded;
        }
        let listed = match table {
            Table::Digests => self.policy.digests_for(name),
            Table::Keyrings => self.policy.keyring_digests(name),
            Table::ImaBuf => self.policy.ima_buf_digests(name),
        };
        let extra: &[Digest] = match table {
            Table::Digests if name == "boot_aggregate" => self.boot_aggregates,
            _ => &[],
        };
        if listed.is_none() && extra.is_empty() {
            let event = ima_ng_event(
                "not_in_allowlist",
                Event::message(format!("File not found in allowlist: {name}")),
            );
            failure.push(annotate(table, event, name));
            return EntryVerdict::NotFound;
        }
        let listed = listed.unwrap_or(PolicyDigests::EMPTY);
        if listed.contains(digest) || extra.iter().any(|d| d.as_bytes() == digest) {
            return EntryVerdict::Good;
        }
        // Keylime prints the policy's list, then the boot aggregates it appended.
        let mut expected: Vec<String> = listed.raw().map(hex::encode).collect();
        for d in extra {
            let hex = d.to_hex();
            if !expected.contains(&hex) {
                expected.push(hex);
            }
        }
        let event = ima_ng_event(
            "runtime_policy_hash",
            json!({
                "message": "Hash not found in runtime policy",
                "got": hex::encode(digest),
                "expected": expected,
            }),
        );
        failure.push(annotate(table, event, name));
        EntryVerdict::HashMismatch
    }

    fn check_signed(&self, entry: &ImaEntry<'_>, failure: &mut Failure) -> EntryVerdict {
        let digest = entry.digest.to_digest();
        if let Some(sig) = &entry.signature {
            if self.policy.is_excluded(entry.name) {
                return EntryVerdict::Excluded;
            }
            let sig = sig.to_vec();
            if self
                .keyrings
                .verify(entry.digest.alg, digest.as_bytes(), &sig)
                .is_ok()
            {
                return EntryVerdict::Good;
            }
        }
        self.check_digest(Table::Digests, entry.name, digest.as_bytes(), failure)
    }

    fn check_buffer(&mut self, entry: &ImaEntry<'_>, failure: &mut Failure) -> EntryVerdict {
        let digest = entry.digest.to_digest();
        let buffer = entry.buffer.map(|b| b.to_vec()).unwrap_or_default();
        match parse_ima_key(&buffer) {
            Err(err) => {
                failure.push(Event::new(
                    Component::Ima,
                    &[],
                    "invalid_key",
                    Event::message(format!(
                        "key from {} does not have a supported key: {err}",
                        entry.name
                    )),
                    true,
                ));
                EntryVerdict::Failed
            }
            Ok(Some((key, keyid))) => {
                if self.policy.ignores_keyring(entry.name) {
                    // Accepted unchecked, and the key is not learnt.
                    return EntryVerdict::Excluded;
                }
                let verdict =
                    self.check_digest(Table::Keyrings, entry.name, digest.as_bytes(), failure);
                if verdict == EntryVerdict::Good {
                    // Only a key the policy vouches for may later verify file signatures.
                    self.keyrings.add_key(entry.name, key, keyid);
                }
                verdict
            }
            Ok(None) => self.check_digest(Table::ImaBuf, entry.name, digest.as_bytes(), failure),
        }
    }
}

impl EntryValidator for PolicyValidator<'_> {
    fn validate(&mut self, entry: &ImaEntry<'_>, _: usize, failure: &mut Failure) -> EntryVerdict {
        match entry.template {
            Template::Ima | Template::ImaNg => {
                // Decoded on the stack: no `Digest` is built for the common case.
                let mut buf = [0u8; MAX_DIGEST_LEN];
                let digest = entry.digest.value.decode_to(&mut buf).unwrap_or_default();
                self.check_digest(Table::Digests, entry.name, digest, failure)
            }
            Template::ImaSig => self.check_signed(entry, failure),
            Template::ImaBuf => self.check_buffer(entry, failure),
        }
    }

    #[inline]
    fn validate_decoded(
        &mut self,
        entry: &ImaEntry<'_>,
        digest: &[u8],
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict {
        match entry.template {
            Template::Ima | Template::ImaNg => {
                self.check_digest(Table::Digests, entry.name, digest, failure)
            }
            _ => self.validate(entry, line_no, failure),
        }
    }
}

/// Names the file a failing file entry is about ([`Event::file`]), which Keylime's
/// `runtime_policy_hash` context does not. Only on the failure path, so the loop over
/// good entries allocates nothing. `ima-buf` names (keyrings, buffers) are not files.
fn annotate(table: Table, event: Event, name: &str) -> Event {
    match table {
        Table::Digests => event.with_file(name),
        Table::Keyrings | Table::ImaBuf => event,
    }
}

fn ima_ng_event(event: &str, context: serde_json::Value) -> Event {
    Event::new(
        Component::Ima,
        &["validation", "ima-ng"],
        event,
        context,
        true,
    )
}
