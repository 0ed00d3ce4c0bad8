//! The replay loop's hashing, on plain byte buffers.
//!
//! [`HashAlg::hash`] gives the same results; this path exists because at millions of
//! entries per second the moves of the `Hasher` enum (sized for SHA-512) and of
//! [`Digest`] values (a length byte in front of 64 bytes, so copies are unaligned and
//! stall store forwarding) cost as much as the parsing. Values stay in 8-aligned
//! buffers here and become [`Digest`]s only when they leave the loop.
//!
//! SHA-1 and SHA-256 — the template-hash and quote-bank algorithms of nearly every
//! deployment — go one step further: the message is padded here and fed block by block
//! to a [`BlockHasher`], skipping the streaming wrapper's buffering for these short,
//! one-shot messages, and letting independent hashes interleave. Tests pin both paths
//! to the crates' regular API.

use sha2::digest::{Digest as _, FixedOutput};

use crate::hash::{
    blocks_of, pad_message, padded_len, BlockHasher, Digest, HashAlg, MAX_DIGEST_LEN,
};

/// A hash value in an aligned fixed buffer.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(super) struct Raw {
    bytes: [u8; MAX_DIGEST_LEN],
    len: usize,
}

impl Raw {
    /// `alg`'s value filled with `byte` (zeros: PCR reset; ones: violation extend).
    pub(super) fn filled(alg: HashAlg, byte: u8) -> Self {
        let mut r = Self {
            bytes: [0; MAX_DIGEST_LEN],
            len: alg.digest_len(),
        };
        r.bytes[..r.len].fill(byte);
        r
    }

    /// A copy of `d`.
    pub(super) fn from_digest(d: &Digest) -> Self {
        let mut r = Self {
            bytes: [0; MAX_DIGEST_LEN],
            len: d.len(),
        };
        r.bytes[..r.len].copy_from_slice(d.as_bytes());
        r
    }

    /// The value's bytes.
    #[inline]
    pub(super) fn as_slice(&self) -> &[u8] {
        // `len` never exceeds the buffer: every constructor sets it from a digest length.
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }

    /// As the shared [`Digest`] type.
    pub(super) fn to_digest(self) -> Digest {
        // At most 64 bytes by construction.
        Digest::from_slice(self.as_slice()).unwrap_or_else(|_| HashAlg::Sha1.zero())
    }
}

/// Runs `$body` with `$h` bound to a fresh hasher of `$alg`'s concrete type and writes
/// its output into `$out`.
macro_rules! with_hasher {
    ($alg:expr, $out:expr, |$h:ident| $body:block) => {{
        let out: &mut Raw = $out;
        match $alg {
            HashAlg::Sha1 => finish(sha1::Sha1::new(), out, |$h| $body),
            HashAlg::Sha256 => finish(sha2::Sha256::new(), out, |$h| $body),
            HashAlg::Sha384 => finish(sha2::Sha384::new(), out, |$h| $body),
            HashAlg::Sha512 => finish(sha2::Sha512::new(), out, |$h| $body),
            HashAlg::Sm3_256 => finish(sm3::Sm3::new(), out, |$h| $body),
        }
    }};
}

#[inline(always)]
fn finish<H: sha2::digest::Digest + FixedOutput>(
    mut h: H,
    out: &mut Raw,
    feed: impl FnOnce(&mut H),
) {
    feed(&mut h);
    let n = <H as sha2::digest::OutputSizeUser>::output_size();
    out.len = n;
    let digest = h.finalize_fixed();
    if let Some(slot) = out.bytes.get_mut(..n) {
        slot.copy_from_slice(&digest);
    }
}

/// Appends Merkle–Damgård padding to `buf` (`0x80`, zeros, the 64-bit big-endian bit
/// length of the first `msg_len` bytes) unless it is already there. SHA-1 and SHA-256
/// pad identically, so one padded buffer serves both.
#[inline]
fn ensure_padded(buf: &mut Vec<u8>, msg_len: usize) {
    if buf.len() != msg_len {
        return;
    }
    buf.resize(padded_len(msg_len), 0);
    pad_message(buf, msg_len, (msg_len as u64).wrapping_mul(8));
}

/// `out := alg(buf[..msg_len])`, where `buf` holds the message and possibly already its
/// padding (this may append the padding).
#[inline]
pub(super) fn hash_message(alg: HashAlg, buf: &mut Vec<u8>, msg_len: usize, out: &mut Raw) {
    match BlockHasher::new(alg) {
        Some(mut chain) => {
            ensure_padded(buf, msg_len);
            chain.blocks(buf);
            store(&chain, out);
        }
        None => {
            let data = buf.get(..msg_len).unwrap_or(buf);
            with_hasher!(alg, out, |h| {
                h.update(data);
            })
        }
    }
}

/// `pcr := alg(pcr ‖ measurement)`: a TPM extend.
#[inline]
pub(super) fn extend(alg: HashAlg, pcr: &mut Raw, measurement: &Raw) {
    // Two digests, plus room for the padding of a 64-byte-block hash.
    let mut joined = [0u8; 2 * MAX_DIGEST_LEN + 64];
    match BlockHasher::new(alg) {
        Some(mut chain) => {
            let len = pad_extend_message(pcr, measurement, &mut joined);
            chain.blocks(joined.get(..len).unwrap_or_default());
            store(&chain, pcr);
        }
        None => {
            let n = join(pcr, measurement, &mut joined);
            let data = joined.get(..n).unwrap_or(&joined);
            with_hasher!(alg, pcr, |h| {
                h.update(data);
            })
        }
    }
}

/// The previous entry's extend, `pcr := alg(pcr ‖ measurement)`, not yet applied.
pub(super) struct PendingExtend<'a> {
    pub(super) alg: HashAlg,
    pub(super) pcr: &'a mut Raw,
    pub(super) measurement: &'a Raw,
}

/// `out := alg(buf[..msg_len])`, also `second.1 := second.0(buf[..msg_len])` and the
/// `pending` extend when given: what [`hash_message`] and [`extend`] calls would give.
/// `buf` holds the message and possibly already its padding (this may append it).
///
/// When every algorithm involved is SHA-1 or SHA-256 — a SHA-1 template-hash column
/// replayed into the SHA-256 bank is the common case — the independent block chains are
/// fed alternately, one block of each in turn. A chain waits on the latency of its own
/// SHA-NI rounds; alternating lets the CPU run one while another waits (SHA-256 on
/// SHA-NI here: 37 ns per block for one chain, 24 ns per block for two alternating
/// ones; docs/benchmarks.md). The extend is the previous entry's, so the replay's one
/// serial chain overlaps the hashing of the next entry.
pub(super) fn hash_interleaved(
    alg: HashAlg,
    out: &mut Raw,
    second: Option<(HashAlg, &mut Raw)>,
    pending: Option<PendingExtend<'_>>,
    buf: &mut Vec<u8>,
    msg_len: usize,
) {
    // `Some(None)`: no such chain; `None`: an algorithm without a block-level path.
    let optional = |alg: Option<HashAlg>| alg.map_or(Some(None), |a| BlockHasher::new(a).map(Some));
    let (Some(mut first_chain), Some(mut second_chain), Some(mut extend_chain)) = (
        BlockHasher::new(alg),
        optional(second.as_ref().map(|(b, _)| *b)),
        optional(pending.as_ref().map(|p| p.alg)),
    ) else {
        // An algorithm without a block-level path: one after the other.
        if let Some(p) = pending {
            extend(p.alg, p.pcr, p.measurement);
        }
        hash_message(alg, buf, msg_len, out);
        if let Some((b, out_b)) = second {
            hash_message(b, buf, msg_len, out_b);
        }
        return;
    };
    ensure_padded(buf, msg_len);
    let mut joined = [0u8; 2 * MAX_DIGEST_LEN + 64];
    let joined_len = pending
        .as_ref()
        .map_or(0, |p| pad_extend_message(p.pcr, p.measurement, &mut joined));
    let mut data = blocks_of(buf);
    let mut ext = blocks_of(joined.get(..joined_len).unwrap_or_default());
    loop {
        let (d, e) = (data.next(), ext.next());
        if d.is_none() && e.is_none() {
            break;
        }
        if let Some(d) = d {
            first_chain.block(d);
            if let Some(c) = &mut second_chain {
                c.block(d);
            }
        }
        if let (Some(e), Some(c)) = (e, &mut extend_chain) {
            c.block(e);
        }
    }
    store(&first_chain, out);
    if let (Some((_, out_b)), Some(c)) = (second, &second_chain) {
        store(c, out_b);
    }
    if let (Some(p), Some(c)) = (pending, &extend_chain) {
        store(c, p.pcr);
    }
}

/// `out :=` the value of a fully padded SHA-1/SHA-256 computation.
#[inline(always)]
fn store(chain: &BlockHasher, out: &mut Raw) {
    out.len = chain.write_state(&mut out.bytes);
}

/// Writes `pcr ‖ measurement` at the start of `joined`; returns its length (0 if it
/// would not fit, which no digest length reaches).
fn join(pcr: &Raw, measurement: &Raw, joined: &mut [u8]) -> usize {
    let (p, m) = (pcr.as_slice(), measurement.as_slice());
    let Some((a, rest)) = joined.split_at_mut_checked(p.len()) else {
        return 0;
    };
    let Some(b) = rest.get_mut(..m.len()) else {
        return 0;
    };
    a.copy_from_slice(p);
    b.copy_from_slice(m);
    p.len() + m.len()
}

/// [`join`], followed by the SHA-1/SHA-256 padding; returns the padded length (0 if it
/// would not fit).
fn pad_extend_message(pcr: &Raw, measurement: &Raw, joined: &mut [u8]) -> usize {
    let n = join(pcr, measurement, joined);
    pad_message(joined, n, (n as u64).wrapping_mul(8)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_level_paths_match_the_crates_at_every_length() {
        // Lengths around both padding boundaries (55/56/64) and several blocks.
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..=data.len() {
            let mut buf = data[..n].to_vec();
            // Both algorithms share one padded buffer, in either order.
            for alg in [
                HashAlg::Sha256,
                HashAlg::Sha1,
                HashAlg::Sha384,
                HashAlg::Sm3_256,
            ] {
                let mut h = Raw::filled(alg, 0);
                hash_message(alg, &mut buf, n, &mut h);
                assert_eq!(h.to_digest(), alg.hash(&data[..n]), "{alg} {n}");
            }
        }
    }

    #[test]
    fn interleaved_hashing_matches_separate_calls_for_every_combination() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 13 + 1) as u8).collect();
        let algs = || HashAlg::ALL.into_iter();
        for n in (0..=data.len())
            .step_by(3)
            .chain([55, 56, 63, 64, 119, 120])
        {
            let msg = &data[..n];
            for a in algs() {
                for b in algs().map(Some).chain([None]) {
                    for bank in algs().map(Some).chain([None]) {
                        let mut buf = msg.to_vec();
                        let (mut ha, mut hb) = (Raw::filled(a, 0), Raw::filled(HashAlg::Sha1, 0));
                        let start = bank.map(|bank| Raw::from_digest(&bank.hash(b"pcr")));
                        let measured = bank.map(|bank| Raw::from_digest(&bank.hash(b"m")));
                        let mut pcr = start;
                        hash_interleaved(
                            a,
                            &mut ha,
                            b.map(|b| (b, &mut hb)),
                            bank.zip(pcr.as_mut()).zip(measured.as_ref()).map(
                                |((alg, pcr), measurement)| PendingExtend {
                                    alg,
                                    pcr,
                                    measurement,
                                },
                            ),
                            &mut buf,
                            n,
                        );
                        let case = format!("{a} {b:?} {bank:?} {n}");
                        assert_eq!(ha.to_digest(), a.hash(msg), "{case}");
                        if let Some(b) = b {
                            assert_eq!(hb.to_digest(), b.hash(msg), "{case}");
                        }
                        if let Some(bank) = bank {
                            let want = bank.extend(&bank.hash(b"pcr"), &bank.hash(b"m"));
                            assert_eq!(pcr.map(Raw::to_digest), Some(want), "{case}");
                        }
                        // The buffer may now hold the padding; hashing it again reuses it.
                        hash_message(a, &mut buf, n, &mut ha);
                        assert_eq!(ha.to_digest(), a.hash(msg), "{case} again");
                    }
                }
            }
        }
    }

    #[test]
    fn agrees_with_the_shared_hash_api() {
        for alg in HashAlg::ALL {
            let mut h = Raw::filled(alg, 0);
            hash_message(alg, &mut b"abc".to_vec(), 3, &mut h);
            assert_eq!(h.to_digest(), alg.hash(b"abc"));
            let mut pcr = Raw::filled(alg, 0);
            extend(alg, &mut pcr, &h);
            assert_eq!(pcr.to_digest(), alg.extend(&alg.zero(), &alg.hash(b"abc")));
            assert_eq!(Raw::filled(alg, 0xff).to_digest(), alg.ones());
            assert_eq!(
                Raw::from_digest(&alg.ones()).as_slice(),
                alg.ones().as_bytes()
            );
        }
    }
}
