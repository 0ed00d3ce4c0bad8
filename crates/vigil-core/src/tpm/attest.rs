//! `TPMS_ATTEST`: what the TPM signs in a quote (`TPM2_Quote`) or a certification
//! (`TPM2_Certify`).

use super::codec::{CodecError, Reader, Writer};
use crate::hash::HashAlg;

/// `TPM_GENERATED_VALUE`: every TPM-made attestation starts with it.
pub const TPM_GENERATED: u32 = 0xFF54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ST_ATTEST_CERTIFY`.
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

impl ClockInfo {
    /// Keylime's clock check of a new quote against the clock of the node's last
    /// accepted quote (`previous`; all zero with `safe` set before the first one):
    /// neither counter may decrease, `safe` must be set, and unless both counters
    /// increased the clock must have advanced.
    ///
    /// The caller stores this clock for the next check whenever it passes. (Keylime
    /// keeps the old one when both counters increased, so after such a reboot it
    /// compares every later quote with a stale clock; Vigil starts from the new epoch.)
    pub fn check_after(&self, previous: &Self) -> Result<(), String> {
        if self.reset_count < previous.reset_count {
            return Err("resetCount value decreased on TPM between two consecutive quotes".into());
        }
        if self.restart_count < previous.restart_count {
            return Err(
                "restartCount value decreased on TPM between two consecutive quotes".into(),
            );
        }
        if !self.safe {
            return Err("clock safe flag is disabled".into());
        }
        let both_increased =
            self.reset_count > previous.reset_count && self.restart_count > previous.restart_count;
        if !both_increased && self.clock <= previous.clock {
            return Err(
                "clock timestamp did issued by TPM did not increase between two consecutive quotes"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The fields every `TPMS_ATTEST` starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestHeader<'a> {
    /// The signing key's qualified name.
    pub qualified_signer: &'a [u8],
    /// The caller's nonce (`qualifyingData`) the attestation was made with.
    pub extra_data: &'a [u8],
    /// The TPM's clock.
    pub clock_info: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
}

impl<'a> AttestHeader<'a> {
    /// Writes the header of an attestation of type `kind`.
    fn write(&self, w: &mut Writer, kind: u16) -> Result<(), CodecError> {
        w.u32(TPM_GENERATED).u16(kind);
        w.tpm2b(self.qualified_signer, "qualifiedSigner")?;
        w.tpm2b(self.extra_data, "extraData")?;
        let c = self.clock_info;
        w.u64(c.clock)
            .u32(c.reset_count)
            .u32(c.restart_count)
            .u8(u8::from(c.safe))
            .u64(self.firmware_version);
        Ok(())
    }

    /// Reads the header of an attestation that must be of type `kind`.
    fn read(r: &mut Reader<'a>, kind: u16, kind_name: &str) -> Result<Self, CodecError> {
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED {
            return Err(r.invalid(format!("magic 0x{magic:08x} is not TPM_GENERATED_VALUE")));
        }
        let found = r.u16("type")?;
        if found != kind {
            return Err(r.invalid(format!(
                "type 0x{found:04x} is not {kind_name} (0x{kind:04x})"
            )));
        }
        Ok(Self {
            qualified_signer: r.tpm2b("qualifiedSigner")?,
            extra_data: r.tpm2b("extraData")?,
            clock_info: ClockInfo {
                clock: r.u64("clockInfo.clock")?,
                reset_count: r.u32("clockInfo.resetCount")?,
                restart_count: r.u32("clockInfo.restartCount")?,
                safe: r.u8("clockInfo.safe")? == 1,
            },
            firmware_version: r.u64("firmwareVersion")?,
        })
    }
}

/// A parsed `TPMS_ATTEST` of type quote (`TPM2_Quote`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteAttest<'a> {
    /// Signer, nonce, clock and firmware.
    pub header: AttestHeader<'a>,
    /// The PCRs quoted, per bank.
    pub pcr_select: Vec<PcrSelection>,
    /// Digest of the selected PCR values, in the quote's hash algorithm.
    pub pcr_digest: &'a [u8],
}

/// A parsed `TPMS_ATTEST` of type certify (`TPM2_Certify`): the TPM vouches that the
/// object named `name` is loaded in it. Used to bind an AK to an IAK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifyAttest<'a> {
    /// Signer, nonce, clock and firmware.
    pub header: AttestHeader<'a>,
    /// The certified object's name (`nameAlg || H(TPMT_PUBLIC)`).
    pub name: &'a [u8],
    /// The certified object's qualified name.
    pub qualified_name: &'a [u8],
}

impl<'a> CertifyAttest<'a> {
    /// Parses a certify attestation; any other type, a wrong magic or trailing bytes
    /// are errors.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let header = AttestHeader::read(&mut r, ST_ATTEST_CERTIFY, "a certification")?;
        let name = r.tpm2b("attested.name")?;
        let qualified_name = r.tpm2b("attested.qualifiedName")?;
        r.finish()?;
        Ok(Self {
            header,
            name,
            qualified_name,
        })
    }

    /// The TPM's encoding (what it signs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let mut w = Writer::new("TPMS_ATTEST");
        self.header.write(&mut w, ST_ATTEST_CERTIFY)?;
        w.tpm2b(self.name, "attested.name")?;
        w.tpm2b(self.qualified_name, "attested.qualifiedName")?;
        Ok(w.finish())
    }
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

impl<'a> QuoteAttest<'a> {
    /// Parses a quote attestation; any other type, a wrong magic or trailing bytes are
    /// errors.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let header = AttestHeader::read(&mut r, ST_ATTEST_QUOTE, "a quote")?;
        let pcr_select = read_pcr_selection(&mut r)?;
        let pcr_digest = r.tpm2b("pcrDigest")?;
        r.finish()?;
        Ok(Self {
            header,
            pcr_select,
            pcr_digest,
        })
    }

    /// The TPM's encoding (what it signs). Selections are written with the shortest
    /// bitmap that holds their PCRs, at least 3 bytes (PCRs 0–23) as TPMs do.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let mut w = Writer::new("TPMS_ATTEST");
        self.header.write(&mut w, ST_ATTEST_QUOTE)?;
        w.u32(self.pcr_select.len() as u32);
        for sel in &self.pcr_select {
            let size = sel
                .pcrs
                .iter()
                .map(|&p| p as usize / 8 + 1)
                .max()
                .unwrap_or(0)
                .max(3);
            let mut bitmap = vec![0u8; size];
            for &pcr in &sel.pcrs {
                bitmap[pcr as usize / 8] |= 1 << (pcr % 8);
            }
            let size = u8::try_from(size).map_err(|_| CodecError::Invalid {
                structure: "TPMS_ATTEST",
                message: "PCR index too large for a selection".into(),
            })?;
            w.u16(sel.alg_id).u8(size).bytes(&bitmap);
        }
        w.tpm2b(self.pcr_digest, "pcrDigest")?;
        Ok(w.finish())
    }

    /// The selection of one bank.
    pub fn selection(&self, bank: HashAlg) -> Option<&PcrSelection> {
        self.pcr_select
            .iter()
            .find(|s| s.alg_id == bank.tpm_alg_id())
    }
}
