//! SHA-1 and SHA-256 fed one 64-byte block at a time, so that callers can interleave
//! several independent hashes.
//!
//! With SHA-NI, one hash runs at the latency of its rounds: each block waits for the
//! one before it. Two or three independent hashes fed alternately, one block of each in
//! turn, let the CPU run one while the others wait. Measured here: SHA-256 takes
//! 37 ns per block as one chain and 24 ns per block as two alternating chains
//! (docs/benchmarks.md). The IMA replay interleaves the hashes of one entry with the
//! extend of the one before; `vigil policy create` hashes two files at once per thread.
//!
//! The block functions are the hash crates' own (`sha1::compress`,
//! `sha2::compress256`, SHA-NI when the CPU has it); the padding is done here, and tests
//! pin every result to the crates' regular API.

use super::{Digest, HashAlg};

/// The 64-byte block type the crates' block functions take. (generic-array 0.14 marks
/// itself deprecated in favour of 1.x; the hash crates still take it.)
#[allow(deprecated)]
type CrateBlock = sha2::digest::generic_array::GenericArray<u8, sha2::digest::consts::U64>;

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

/// One SHA-1 or SHA-256 computation fed whole 64-byte blocks.
#[derive(Clone, Copy)]
pub struct BlockHasher {
    state: State,
    /// Blocks fed so far, for the length in the padding.
    blocks: u64,
}

#[derive(Clone, Copy)]
enum State {
    Sha1([u32; 5]),
    Sha256([u32; 8]),
}

impl BlockHasher {
    /// A hash of `alg`, or `None` for the algorithms without a 64-byte block function
    /// here (SHA-384, SHA-512, SM3).
    pub fn new(alg: HashAlg) -> Option<Self> {
        let state = match alg {
            HashAlg::Sha1 => State::Sha1(SHA1_IV),
            HashAlg::Sha256 => State::Sha256(SHA256_IV),
            _ => return None,
        };
        Some(Self { state, blocks: 0 })
    }

    /// Feeds one block.
    #[inline(always)]
    pub fn block(&mut self, block: &[u8; 64]) {
        #[allow(deprecated)] // generic-array 0.14, see `CrateBlock`
        let block = std::slice::from_ref(CrateBlock::from_slice(block));
        match &mut self.state {
            State::Sha1(st) => sha1::compress(st, block),
            State::Sha256(st) => sha2::compress256(st, block),
        }
        self.blocks += 1;
    }

    /// Feeds the whole blocks at the start of `data`; returns the bytes after them
    /// (fewer than 64).
    #[inline]
    pub fn blocks<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let whole = data.len() / 64 * 64;
        let (head, rest) = data.split_at(whole);
        for block in blocks_of(head) {
            self.block(block);
        }
        rest
    }

    /// Feeds `tail` (any length), pads, and returns the digest.
    pub fn finish(mut self, tail: &[u8]) -> Digest {
        let tail = self.blocks(tail);
        let bits = (self.blocks * 64 + tail.len() as u64).wrapping_mul(8);
        let mut last = [0u8; 128];
        if let Some(slot) = last.get_mut(..tail.len()) {
            slot.copy_from_slice(tail);
        }
        let total = pad_message(&mut last, tail.len(), bits).unwrap_or(0);
        self.blocks(last.get(..total).unwrap_or_default());
        self.digest()
    }

    /// The digest of a message whose padding has been fed already.
    fn digest(&self) -> Digest {
        let mut out = [0u8; 32];
        let n = self.write_state(&mut out);
        // 20 or 32 bytes, within any digest's maximum.
        Digest::from_slice(out.get(..n).unwrap_or_default())
            .unwrap_or_else(|_| HashAlg::Sha1.zero())
    }

    /// The state words as big-endian bytes into `out` (at least 32 bytes); returns the
    /// digest length. For callers that pad the message themselves.
    #[inline]
    pub fn write_state(&self, out: &mut [u8]) -> usize {
        let words: &[u32] = match &self.state {
            State::Sha1(st) => st,
            State::Sha256(st) => st,
        };
        for (dst, w) in out.chunks_exact_mut(4).zip(words) {
            dst.copy_from_slice(&w.to_be_bytes());
        }
        words.len() * 4
    }
}

/// The length of a `len`-byte message with its SHA-1/SHA-256 padding: a multiple of 64.
#[inline]
pub fn padded_len(len: usize) -> usize {
    (len + 1 + 8).div_ceil(64) * 64
}

/// Writes the SHA-1/SHA-256 padding after the `len` message bytes at the start of `buf`:
/// `0x80`, zeros, then `bits` (the whole message's length in bits) as a 64-bit
/// big-endian number, up to [`padded_len`]`(len)`. Returns that length, or `None` when
/// `buf` is shorter.
#[inline]
pub fn pad_message(buf: &mut [u8], len: usize, bits: u64) -> Option<usize> {
    let total = padded_len(len);
    let (padding, length) = buf.get_mut(len..total)?.split_at_mut(total - len - 8);
    padding.fill(0);
    padding[0] = 0x80;
    length.copy_from_slice(&bits.to_be_bytes());
    Some(total)
}

/// The whole 64-byte blocks of `data`.
#[inline(always)]
pub fn blocks_of(data: &[u8]) -> impl Iterator<Item = &[u8; 64]> {
    data.chunks_exact(64)
        .filter_map(|c| <&[u8; 64]>::try_from(c).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crates_at_every_length_and_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for alg in [HashAlg::Sha1, HashAlg::Sha256] {
            for n in 0..=data.len() {
                let msg = &data[..n];
                let h = BlockHasher::new(alg).unwrap();
                assert_eq!(h.finish(msg), alg.hash(msg), "{alg} {n}");
                // Whole blocks first, the rest at the end.
                let mut h = BlockHasher::new(alg).unwrap();
                let rest = h.blocks(msg);
                assert!(rest.len() < 64);
                assert_eq!(h.finish(rest), alg.hash(msg), "{alg} {n} split");
            }
        }
        for alg in [HashAlg::Sha384, HashAlg::Sha512, HashAlg::Sm3_256] {
            assert!(BlockHasher::new(alg).is_none());
        }
    }
}
