//! The read-only name → digests tables of a runtime policy (`digests`, `keyrings`,
//! `ima-buf`), laid out for the IMA check's hot path.
//!
//! A policy of 100k–1M paths is megabytes to tens of megabytes, far beyond the caches,
//! so every lookup of a measured path is a few cache (and TLB) misses; with a general
//! hash map of boxed strings and boxed digest lists that is up to four dependent misses
//! (control bytes, bucket, key, digests). Here a lookup touches two places:
//!
//! - `slots`: open addressing (linear probing, load factor at most 1/2) over 64-bit
//!   slots holding 32 bits of the name's hash as a tag and the record's position;
//! - `arena`: one buffer of records, each `[name length: u32][digest bytes: u32]
//!   [name][digests as (length byte, bytes)…]`, so the name to compare and the digests
//!   to check are adjacent (usually one or two cache lines).
//!
//! Tables are built once when the policy is parsed and never change afterwards. A name
//! given twice keeps its last list, as JSON object parsing does.

use std::fmt;
use std::hash::BuildHasher;

use crate::hash::{Digest, MAX_DIGEST_LEN};

/// Records start at multiples of this, so a 32-bit position covers 32 GiB of arena.
const ALIGN: usize = 8;
/// Bytes of a record before the name: name length and digest-list length, both u32.
const HEADER: usize = 8;

/// Per-process random seeds, as `std`'s maps use: the bucket a name lands in does not
/// depend on its text alone, so no log can be crafted to probe long.
type Seed = foldhash::fast::RandomState;

/// An immutable map from names to non-empty lists of digests.
#[derive(Clone)]
pub(crate) struct DigestTable {
    /// 0 = empty; otherwise `tag << 32 | record position / ALIGN` (position ≥ ALIGN).
    slots: Box<[u64]>,
    arena: Box<[u8]>,
    len: usize,
    seed: Seed,
}

/// Builds a [`DigestTable`] one name at a time.
pub(crate) struct TableBuilder {
    slots: Vec<u64>,
    arena: Vec<u8>,
    len: usize,
    seed: Seed,
}

/// A table too large to index (more than 4 GiB in one record or 32 GiB in all).
#[derive(Debug, thiserror::Error)]
#[error("runtime policy table is too large to index")]
pub(crate) struct TooLarge;

impl TableBuilder {
    /// A builder expecting about `names` names (only a hint).
    pub(crate) fn with_capacity(names: usize) -> Self {
        // The hint comes from the input; cap it so a lying size hint cannot reserve much.
        let names = names.min(1 << 16);
        let slots = (names * 2).next_power_of_two().max(8);
        let mut arena = Vec::with_capacity(ALIGN + names * 96);
        // Position 0 is never a record, so a zero slot means empty.
        arena.resize(ALIGN, 0);
        Self {
            slots: vec![0; slots],
            arena,
            len: 0,
            seed: Seed::default(),
        }
    }

    /// Adds `name` with `digests` (in this order), replacing an earlier list for it.
    pub(crate) fn insert(&mut self, name: &str, digests: &[Digest]) -> Result<(), TooLarge> {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow()?;
        }
        let start = self.arena.len();
        let unit = u32::try_from(start / ALIGN).map_err(|_| TooLarge)?;
        let name_len = u32::try_from(name.len()).map_err(|_| TooLarge)?;
        let list_len: usize = digests.iter().map(|d| 1 + d.len()).sum();
        let list_len = u32::try_from(list_len).map_err(|_| TooLarge)?;
        self.arena.extend_from_slice(&name_len.to_le_bytes());
        self.arena.extend_from_slice(&list_len.to_le_bytes());
        self.arena.extend_from_slice(name.as_bytes());
        for d in digests {
            // Digests are at most 64 bytes, so the length fits a byte.
            self.arena.push(d.len() as u8);
            self.arena.extend_from_slice(d.as_bytes());
        }
        let padded = self.arena.len().next_multiple_of(ALIGN);
        self.arena.resize(padded, 0);

        let hash = self.seed.hash_one(name);
        let slot = (hash & 0xffff_ffff_0000_0000) | u64::from(unit);
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let Some(s) = self.slots.get_mut(i) else {
                unreachable!("probe index is masked to the table size")
            };
            if *s == 0 {
                *s = slot;
                self.len += 1;
                return Ok(());
            }
            if *s >> 32 == hash >> 32 && record_name(&self.arena, *s) == Some(name.as_bytes()) {
                // A repeated name: the new record replaces the old (which stays unused).
                *s = slot;
                return Ok(());
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the slot array, re-placing every record by the hash of its name.
    fn grow(&mut self) -> Result<(), TooLarge> {
        let size = self.slots.len().checked_mul(2).ok_or(TooLarge)?;
        let mut slots = vec![0u64; size];
        let mask = size - 1;
        for &s in self.slots.iter().filter(|&&s| s != 0) {
            let name = record_name(&self.arena, s).unwrap_or_default();
            let hash = self
                .seed
                .hash_one(std::str::from_utf8(name).unwrap_or_default());
            let mut i = hash as usize & mask;
            while slots.get(i).is_some_and(|&t| t != 0) {
                i = (i + 1) & mask;
            }
            if let Some(t) = slots.get_mut(i) {
                *t = s;
            }
        }
        self.slots = slots;
        Ok(())
    }

    /// The finished table.
    pub(crate) fn build(self) -> DigestTable {
        DigestTable {
            slots: self.slots.into_boxed_slice(),
            arena: self.arena.into_boxed_slice(),
            len: self.len,
            seed: self.seed,
        }
    }
}

/// The name of the record a non-empty slot points at.
#[inline]
fn record_name(arena: &[u8], slot: u64) -> Option<&[u8]> {
    let (name, _) = record(arena, slot)?;
    Some(name)
}

/// The name and digest list of the record a non-empty slot points at.
#[inline(always)]
fn record(arena: &[u8], slot: u64) -> Option<(&[u8], &[u8])> {
    let start = (slot as u32 as usize) * ALIGN;
    let header: &[u8; HEADER] = arena.get(start..start + HEADER)?.try_into().ok()?;
    let name_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let list_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let name_at = start + HEADER;
    let list_at = name_at + name_len;
    Some((
        arena.get(name_at..list_at)?,
        arena.get(list_at..list_at + list_len)?,
    ))
}

impl DigestTable {
    /// An empty table.
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        TableBuilder::with_capacity(0).build()
    }

    /// The digests listed for `name`.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<PolicyDigests<'_>> {
        let hash = self.seed.hash_one(name);
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let s = *self.slots.get(i)?;
            if s == 0 {
                return None;
            }
            if s >> 32 == hash >> 32 {
                if let Some((n, list)) = record(&self.arena, s) {
                    if n == name.as_bytes() {
                        return Some(PolicyDigests { list });
                    }
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Number of names.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every name with its digests, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, PolicyDigests<'_>)> {
        self.slots.iter().filter(|&&s| s != 0).filter_map(|&s| {
            let (name, list) = record(&self.arena, s)?;
            // Names were `&str` when inserted.
            Some((std::str::from_utf8(name).ok()?, PolicyDigests { list }))
        })
    }

    /// Heap bytes held (slots and records), for memory measurements.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.len() * 8 + self.arena.len()
    }
}

impl fmt::Debug for DigestTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestTable")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The digests a runtime policy lists for one name, in the policy's order: a view into
/// the policy's table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PolicyDigests<'a> {
    /// `(length byte, bytes)` per digest.
    list: &'a [u8],
}

impl<'a> PolicyDigests<'a> {
    /// An empty list (the tables never return one; it stands in for "none listed").
    pub const EMPTY: PolicyDigests<'static> = PolicyDigests { list: &[] };

    /// True when `digest` (raw bytes) is one of them. Lengths must match too: a SHA-1
    /// value is not a prefix match of a SHA-256 one.
    #[inline]
    pub fn contains(&self, digest: &[u8]) -> bool {
        self.raw().any(|d| d == digest)
    }

    /// The digests' raw bytes, in the policy's order.
    #[inline]
    pub fn raw(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.list;
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (d, tail) = tail.split_at_checked(usize::from(len))?;
            rest = tail;
            Some(d)
        })
    }

    /// The digests, in the policy's order.
    pub fn iter(&self) -> impl Iterator<Item = Digest> + 'a {
        // Every stored digest came from a `Digest`, so it is at most 64 bytes.
        self.raw()
            .filter(|d| d.len() <= MAX_DIGEST_LEN)
            .filter_map(|d| Digest::from_slice(d).ok())
    }

    /// Number of digests.
    pub fn len(&self) -> usize {
        self.raw().count()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl fmt::Debug for PolicyDigests<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.raw().map(hex::encode)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlg;

    fn d(alg: HashAlg, n: u32) -> Digest {
        alg.hash(&n.to_le_bytes())
    }

    #[test]
    fn lookups_after_growth_and_replacement() {
        // Start tiny so the slot array grows several times.
        let mut b = TableBuilder::with_capacity(0);
        for i in 0..5000u32 {
            let list = [d(HashAlg::Sha256, i), d(HashAlg::Sha1, i)];
            b.insert(&format!("/usr/lib/f{i}"), &list[..1 + (i % 2) as usize])
                .unwrap();
        }
        b.insert("/usr/lib/f7", &[d(HashAlg::Sha384, 7)]).unwrap();
        b.insert("", &[d(HashAlg::Sha1, 1)]).unwrap();
        let t = b.build();
        assert_eq!(t.len(), 5001);
        for i in 0..5000u32 {
            let got = t.get(&format!("/usr/lib/f{i}")).unwrap();
            if i == 7 {
                assert_eq!(got.iter().collect::<Vec<_>>(), [d(HashAlg::Sha384, 7)]);
                continue;
            }
            assert_eq!(got.len(), 1 + (i % 2) as usize);
            assert!(got.contains(d(HashAlg::Sha256, i).as_bytes()));
            assert_eq!(got.iter().next(), Some(d(HashAlg::Sha256, i)));
            assert_eq!(got.contains(d(HashAlg::Sha1, i).as_bytes()), i % 2 == 1);
            assert!(!got.contains(d(HashAlg::Sha256, i + 1).as_bytes()));
            // A prefix of a listed digest is not listed.
            assert!(!got.contains(&d(HashAlg::Sha256, i).as_bytes()[..20]));
        }
        assert!(t.get("/usr/lib/f5000").is_none());
        assert!(t.get("/usr/lib/f").is_none());
        assert_eq!(t.get("").unwrap().len(), 1);
        assert_eq!(t.iter().count(), 5001);
        assert!(t.iter().all(|(name, list)| t.get(name) == Some(list)));
    }

    #[test]
    fn empty_table() {
        let t = DigestTable::empty();
        assert_eq!(t.len(), 0);
        assert!(t.get("boot_aggregate").is_none());
        assert_eq!(t.iter().count(), 0);
        assert!(PolicyDigests::EMPTY.is_empty());
        assert!(!PolicyDigests::EMPTY.contains(&[]));
    }
}
