//! `TPMS_ATTEST`: what the TPM signs in a quote.

use super::codec::{CodecError, Reader};
use crate::hash::HashAlg;

/// `TPM_GENERATED_VALUE`: every TPM-made attestation starts with it.
pub const TPM_GENERATED: u32 = 0xFF54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered.
    pub clock: u64,
    /// TPM resets (`TPM_Init` without `Shutdown(STATE)`).
    pub reset_count: u32,
    /// TPM restarts.
    pub restart_count: u32,
    /// Whether `clock` never went backwards.
    pub safe: bool,
}

/// One bank of a `TPML_PCR_SELECTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's `TPM_ALG_ID`.
    pub alg_id: u16,
    /// The selected PCR indices, ascending.
    pub pcrs: Vec<u32>,
}

/// A parsed `TPMS_ATTEST` of type quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest<'a> {
    /// The signing key's qualified name.
    pub qualified_signer: &'a [u8],
    /// The nonce (`qualifyingData`) the quote was made with.
    pub extra_data: &'a [u8],
    /// The TPM's clock.
    pub clock_info: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
    /// The PCRs quoted, per bank.
    pub pcr_select: Vec<PcrSelection>,
    /// Digest of the selected PCR values, in the quote's hash algorithm.
    pub pcr_digest: &'a [u8],
}

/// Parses a `TPML_PCR_SELECTION` (big-endian, as in TPM structures).
pub(crate) fn read_pcr_selection(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, CodecError> {
    let count = r.u32("pcrSelections.count")?;
    if count > 16 {
        return Err(r.invalid(format!("{count} PCR banks selected")));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let alg_id = r.u16("pcrSelections.hash")?;
        let size = r.u8("pcrSelections.sizeofSelect")?;
        let bitmap = r.bytes(usize::from(size), "pcrSelections.pcrSelect")?;
        out.push(PcrSelection {
            alg_id,
            pcrs: bits(bitmap),
        });
    }
    Ok(out)
}

/// PCR indices of the set bits of a selection bitmap (bit i of byte j is PCR 8j+i).
pub(crate) fn bits(bitmap: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    for (byte, &b) in bitmap.iter().enumerate() {
        for bit in 0..8 {
            if b & (1 << bit) != 0 {
                out.push(byte as u32 * 8 + bit);
            }
        }
    }
    out
}

impl<'a> Attest<'a> {
    /// Parses a quote attestation; any other type, a wrong magic or trailing bytes are
    /// errors.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED {
            return Err(r.invalid(format!("magic 0x{magic:08x} is not TPM_GENERATED_VALUE")));
        }
        let kind = r.u16("type")?;
        if kind != ST_ATTEST_QUOTE {
            return Err(r.invalid(format!("type 0x{kind:04x} is not a quote (0x8018)")));
        }
        let qualified_signer = r.tpm2b("qualifiedSigner")?;
        let extra_data = r.tpm2b("extraData")?;
        let clock_info = ClockInfo {
            clock: r.u64("clockInfo.clock")?,
            reset_count: r.u32("clockInfo.resetCount")?,
            restart_count: r.u32("clockInfo.restartCount")?,
            safe: r.u8("clockInfo.safe")? == 1,
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let pcr_select = read_pcr_selection(&mut r)?;
        let pcr_digest = r.tpm2b("pcrDigest")?;
        r.finish()?;
        Ok(Self {
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            pcr_select,
            pcr_digest,
        })
    }

    /// The selection of one bank.
    pub fn selection(&self, bank: HashAlg) -> Option<&PcrSelection> {
        self.pcr_select
            .iter()
            .find(|s| s.alg_id == bank.tpm_alg_id())
    }
}
