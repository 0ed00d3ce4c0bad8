//! The PCR values tpm2-tools writes with `tpm2_quote -o` and Keylime sends as the third
//! part of a quote: a little-endian memory dump of a `TPML_PCR_SELECTION` (16 fixed
//! slots) followed by N `TPML_DIGEST` (8 fixed slots of 2 + 64 bytes each), 136 + 532·N
//! bytes in all.
//!
//! [`PcrBlob::parse`] reads it (the verifier's side); [`PcrBlob::to_bytes`] writes it
//! (the agent's side), byte for byte as tpm2-tools does.

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

    /// Writes the blob as tpm2-tools does: each selection slot with `sizeofSelect` 3
    /// (PCRs 0–23), the values in lists of 8, every unused byte zero.
    ///
    /// The values must be exactly one per selected PCR, each 1 to 64 bytes, and at most
    /// 16 banks may be selected: anything else could not be read back by
    /// [`Self::parse`] (or by Keylime) as the same PCRs.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        if self.selection.len() > SELECTION_SLOTS {
            return Err(invalid(format!(
                "{} banks selected, at most {SELECTION_SLOTS} fit",
                self.selection.len()
            )));
        }
        let selected: usize = self.selection.iter().map(|s| s.pcrs.len()).sum();
        if selected != self.values.len() {
            return Err(invalid(format!(
                "{} PCRs selected but {} values given",
                selected,
                self.values.len()
            )));
        }
        let lists = self.values.len().div_ceil(DIGEST_SLOTS);
        if lists > MAX_LISTS {
            return Err(invalid(format!(
                "{} values need too many digest lists",
                self.values.len()
            )));
        }
        let mut out = vec![0u8; HEADER + lists * DIGEST_LIST];
        out[0..4].copy_from_slice(&(self.selection.len() as u32).to_le_bytes());
        for (slot, sel) in self.selection.iter().enumerate() {
            let s = &mut out[4 + slot * 8..4 + slot * 8 + 8];
            s[0..2].copy_from_slice(&sel.alg_id.to_le_bytes());
            s[2] = 3;
            for &pcr in &sel.pcrs {
                if pcr >= 24 {
                    return Err(invalid(format!(
                        "PCR {pcr} does not fit a 3-byte selection"
                    )));
                }
                s[3 + (pcr / 8) as usize] |= 1 << (pcr % 8);
            }
        }
        out[HEADER - 4..HEADER].copy_from_slice(&(lists as u32).to_le_bytes());
        for (l, chunk) in self.values.chunks(DIGEST_SLOTS).enumerate() {
            let list = &mut out[HEADER + l * DIGEST_LIST..HEADER + (l + 1) * DIGEST_LIST];
            list[0..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
            for (d, value) in chunk.iter().enumerate() {
                if value.is_empty() || value.len() > 64 {
                    return Err(invalid(format!(
                        "value {} has {} bytes",
                        l * DIGEST_SLOTS + d,
                        value.len()
                    )));
                }
                let slot = &mut list[4 + d * 66..4 + (d + 1) * 66];
                slot[0..2].copy_from_slice(&(value.len() as u16).to_le_bytes());
                slot[2..2 + value.len()].copy_from_slice(value);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keylime_blob_round_trips_byte_for_byte() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/keylime/test-data/files/quotepcr.out"
        );
        let bytes = std::fs::read(path).unwrap();
        let blob = PcrBlob::parse(&bytes).unwrap();
        assert_eq!(blob.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn seventeen_pcrs_take_three_lists_and_read_back() {
        let pcrs: Vec<u32> = (0..16).chain([23]).collect();
        let blob = PcrBlob {
            selection: vec![PcrSelection {
                alg_id: 0x000b,
                pcrs: pcrs.clone(),
            }],
            values: pcrs.iter().map(|&p| vec![p as u8; 32]).collect(),
        };
        let bytes = blob.to_bytes().unwrap();
        assert_eq!(bytes.len(), 136 + 3 * 532);
        assert_eq!(PcrBlob::parse(&bytes).unwrap(), blob);
    }

    #[test]
    fn unwritable_blobs_are_refused() {
        let sel = |pcrs: Vec<u32>| {
            vec![PcrSelection {
                alg_id: 0x000b,
                pcrs,
            }]
        };
        let cases = [
            (
                sel(vec![0, 1]),
                vec![vec![0; 32]],
                "2 PCRs selected but 1 values",
            ),
            (sel(vec![24]), vec![vec![0; 32]], "PCR 24 does not fit"),
            (sel(vec![0]), vec![vec![]], "value 0 has 0 bytes"),
            (sel(vec![0]), vec![vec![0; 65]], "value 0 has 65 bytes"),
        ];
        for (selection, values, want) in cases {
            let err = PcrBlob { selection, values }.to_bytes().unwrap_err();
            assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        }
    }
}
