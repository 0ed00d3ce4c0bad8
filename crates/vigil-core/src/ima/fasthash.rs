//! The replay loop's hashing, on plain byte buffers.
//!
//! [`HashAlg::hash`] gives the same results; this path exists because at millions of
//! entries per second the moves of the `Hasher` enum (sized for SHA-512) and of
//! [`Digest`] values (a length byte in front of 64 bytes, so copies are unaligned and
//! stall store forwarding) cost as much as the parsing. Values stay in 8-aligned
//! buffers here and become [`Digest`]s only when they leave the loop.
//!
//! SHA-1 and SHA-256 — the template-hash and quote-bank algorithms of nearly every
//! deployment — go one step further: the message is padded here and handed to the
//! crates' block functions (`sha1::compress`, `sha2::compress256`, which use SHA-NI when
//! the CPU has it), skipping the streaming wrapper's buffering for these short,
//! one-shot messages. Tests pin both paths to the crates' regular API.

use sha2::digest::{Digest as _, FixedOutput};

use crate::hash::{Digest, HashAlg, MAX_DIGEST_LEN};

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

/// A 64-byte block in the form the block functions take. (generic-array 0.14 marks
/// itself deprecated in favour of 1.x; the hash crates still take it.)
#[allow(deprecated)]
type Block = sha2::digest::generic_array::GenericArray<u8, sha2::digest::consts::U64>;

/// Appends Merkle–Damgård padding to `buf` (`0x80`, zeros, the 64-bit big-endian bit
/// length of the first `msg_len` bytes) unless it is already there. SHA-1 and SHA-256
/// pad identically, so one padded buffer serves both.
#[inline]
fn ensure_padded(buf: &mut Vec<u8>, msg_len: usize) {
    if buf.len() != msg_len {
        return;
    }
    let total = (msg_len + 1 + 8).div_ceil(64) * 64;
    buf.push(0x80);
    buf.resize(total - 8, 0);
    buf.extend_from_slice(&(msg_len as u64).wrapping_mul(8).to_be_bytes());
}

/// Feeds each 64-byte block of a padded buffer to `compress`, without copying it.
#[inline(always)]
fn for_blocks(padded: &[u8], mut compress: impl FnMut(&[Block])) {
    for chunk in padded.chunks_exact(64) {
        #[allow(deprecated)] // generic-array 0.14, see `Block`
        let block = Block::from_slice(chunk);
        compress(std::slice::from_ref(block));
    }
}

const SHA1_IV: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

#[inline(always)]
fn store_be(words: &[u32], out: &mut Raw) {
    out.len = words.len() * 4;
    for (dst, w) in out.bytes.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_be_bytes());
    }
}

/// `out := alg(buf[..msg_len])`, where `buf` holds the message and possibly already its
/// padding (this may append the padding).
#[inline]
pub(super) fn hash_message(alg: HashAlg, buf: &mut Vec<u8>, msg_len: usize, out: &mut Raw) {
    match alg {
        HashAlg::Sha1 => {
            ensure_padded(buf, msg_len);
            let mut st = SHA1_IV;
            for_blocks(buf, |b| sha1::compress(&mut st, b));
            store_be(&st, out);
        }
        HashAlg::Sha256 => {
            ensure_padded(buf, msg_len);
            let mut st = SHA256_IV;
            for_blocks(buf, |b| sha2::compress256(&mut st, b));
            store_be(&st, out);
        }
        _ => {
            let data = buf.get(..msg_len).unwrap_or(buf);
            with_hasher!(alg, out, |h| {
                h.update(data);
            })
        }
    }
}

/// `out_a := a(buf[..msg_len])` and `out_b := b(buf[..msg_len])`, as two
/// [`hash_message`] calls would give.
///
/// For SHA-1 with SHA-256 — a SHA-1 template-hash column replayed into the SHA-256
/// bank, the common case — the two block chains are fed alternately, block by block.
/// Each chain waits on the latency of its own SHA-NI rounds; alternating them lets the
/// CPU run one while the other waits (measured on SHA-NI: 37 ns per block for one
/// chain, 21 ns per block for two alternating ones; docs/benchmarks.md).
#[inline]
pub(super) fn hash_message_twice(
    a: HashAlg,
    b: HashAlg,
    buf: &mut Vec<u8>,
    msg_len: usize,
    out_a: &mut Raw,
    out_b: &mut Raw,
) {
    let (sha1_out, sha256_out) = match (a, b) {
        (HashAlg::Sha1, HashAlg::Sha256) => (out_a, out_b),
        (HashAlg::Sha256, HashAlg::Sha1) => (out_b, out_a),
        _ => {
            hash_message(a, buf, msg_len, out_a);
            hash_message(b, buf, msg_len, out_b);
            return;
        }
    };
    ensure_padded(buf, msg_len);
    let (mut st1, mut st256) = (SHA1_IV, SHA256_IV);
    for_blocks(buf, |block| {
        sha1::compress(&mut st1, block);
        sha2::compress256(&mut st256, block);
    });
    store_be(&st1, sha1_out);
    store_be(&st256, sha256_out);
}

/// `pcr := alg(pcr ‖ measurement)`: a TPM extend.
#[inline]
pub(super) fn extend(alg: HashAlg, pcr: &mut Raw, measurement: &Raw) {
    let (p, m) = (pcr.as_slice(), measurement.as_slice());
    let n = p.len() + m.len();
    // Two digests, plus room for the padding of a 64-byte-block hash.
    let mut joined = [0u8; 2 * MAX_DIGEST_LEN + 64];
    if let Some((a, rest)) = joined.split_at_mut_checked(p.len()) {
        if let Some(b) = rest.get_mut(..m.len()) {
            a.copy_from_slice(p);
            b.copy_from_slice(m);
        }
    }
    match alg {
        HashAlg::Sha1 | HashAlg::Sha256 => {
            let total = (n + 1 + 8).div_ceil(64) * 64;
            if let Some(padded) = joined.get_mut(..total) {
                padded[n] = 0x80;
                padded[total - 8..].copy_from_slice(&(n as u64 * 8).to_be_bytes());
                if alg == HashAlg::Sha1 {
                    let mut st = SHA1_IV;
                    for_blocks(padded, |b| sha1::compress(&mut st, b));
                    store_be(&st, pcr);
                } else {
                    let mut st = SHA256_IV;
                    for_blocks(padded, |b| sha2::compress256(&mut st, b));
                    store_be(&st, pcr);
                }
            }
        }
        _ => {
            let data = joined.get(..n).unwrap_or(&joined);
            with_hasher!(alg, pcr, |h| {
                h.update(data);
            })
        }
    }
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
    fn paired_hashing_matches_the_crates_for_every_pair_and_length() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 13 + 1) as u8).collect();
        for n in 0..=data.len() {
            for a in HashAlg::ALL {
                for b in HashAlg::ALL {
                    let mut buf = data[..n].to_vec();
                    let (mut ha, mut hb) = (Raw::filled(a, 0), Raw::filled(b, 0));
                    hash_message_twice(a, b, &mut buf, n, &mut ha, &mut hb);
                    assert_eq!(ha.to_digest(), a.hash(&data[..n]), "{a}+{b} {n}");
                    assert_eq!(hb.to_digest(), b.hash(&data[..n]), "{a}+{b} {n}");
                    // The buffer may now hold the padding; a second pass reuses it.
                    hash_message_twice(b, a, &mut buf, n, &mut hb, &mut ha);
                    assert_eq!(ha.to_digest(), a.hash(&data[..n]), "{b}+{a} {n}");
                    assert_eq!(hb.to_digest(), b.hash(&data[..n]), "{b}+{a} {n}");
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
