//! The PCR values tpm2-tools writes with `tpm2_quote -o` and Keylime sends as the third
//! part of a quote: a little-endian memory dump of a `TPML_PCR_SELECTION` (16 fixed
//! slots) followed by N `TPML_DIGEST` (8 fixed slots of 2 + 64 bytes each), 136 + 532·N
//! bytes in all.

use super::attest::{bits, PcrSelection};
use super::codec::CodecError;

const SELECTION_SLOTS: usize = 16;
const DIGEST_SLOTS: usize = 8;
const HEADER: usize = 4 + SELECTION_SLOTS * 8 + 4;
const DIGEST_LIST: usize = 4 + DIGEST_SLOTS * (2 + 64);
/// More digest lists than 24 PCRs × 5 banks could fill.
const MAX_LISTS: usize = 16;

/// The selection and values of a PCR blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBlob {
    /// The banks and PCRs the blob says it holds.
    pub selection: Vec<PcrSelection>,
    /// The values, in selection order (bank by bank, ascending PCR).
    pub values: Vec<Vec<u8>>,
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn invalid(message: String) -> CodecError {
    CodecError::Invalid {
        structure: "PCR blob",
        message,
    }
}

impl PcrBlob {
    /// Parses a blob; its length must be exactly 136 + 532·N.
    pub fn parse(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() < HEADER || (bytes.len() - HEADER) % DIGEST_LIST != 0 {
            return Err(invalid(format!("{} bytes is not 136 + 532·N", bytes.len())));
        }
        let count = le32(&bytes[0..4]) as usize;
        if count > SELECTION_SLOTS {
            return Err(invalid(format!("{count} banks selected")));
        }
        let mut selection = Vec::with_capacity(count);
        for slot in 0..count {
            let s = &bytes[4 + slot * 8..4 + slot * 8 + 8];
            let size = usize::from(s[2]);
            if size > 4 {
                return Err(invalid(format!("sizeofSelect {size} in slot {slot}")));
            }
            selection.push(PcrSelection {
                alg_id: le16(&s[0..2]),
                pcrs: bits(&s[3..3 + size]),
            });
        }
        let lists = le32(&bytes[HEADER - 4..HEADER]) as usize;
        if lists > MAX_LISTS || HEADER + lists * DIGEST_LIST != bytes.len() {
            return Err(invalid(format!(
                "{lists} digest lists do not fill {} bytes",
                bytes.len()
            )));
        }
        let mut values = Vec::new();
        for l in 0..lists {
            let list = &bytes[HEADER + l * DIGEST_LIST..HEADER + (l + 1) * DIGEST_LIST];
            let n = le32(&list[0..4]) as usize;
            if n > DIGEST_SLOTS {
                return Err(invalid(format!("digest list {l} claims {n} digests")));
            }
            for d in 0..n {
                let slot = &list[4 + d * 66..4 + (d + 1) * 66];
                let size = usize::from(le16(&slot[0..2]));
                if size == 0 || size > 64 {
                    return Err(invalid(format!("digest {d} of list {l} has size {size}")));
                }
                values.push(slot[2..2 + size].to_vec());
            }
        }
        Ok(Self { selection, values })
    }
}
