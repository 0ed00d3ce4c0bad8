//! The TCG PC Client (UEFI) event log — `/sys/kernel/security/tpm0/binary_bios_measurements`:
//! parsing and replay to per-bank PCR values.
//!
//! A log starts with one event in the SHA-1 format (`TCG_PCClientPCREvent`). In a
//! crypto-agile log that event is an `EV_NO_ACTION` carrying the `Spec ID Event03`
//! structure, which lists the banks and their digest sizes; every later event is a
//! `TCG_PCR_EVENT2` with one digest per bank. Without it the whole log is SHA-1 events
//! (legacy firmware). Firmware may leave zero padding after the last event; like
//! `tpm2_eventlog` (through which Keylime reads logs), Vigil also ignores a trailing
//! fragment shorter than an event header.
//!
//! Replay extends every digest of every event into its bank, except `EV_NO_ACTION`
//! events, which are informational. PCRs start at zero, except that a `StartupLocality`
//! `EV_NO_ACTION` event sets the last byte of PCR 0's initial value to the locality the
//! TPM was started from (as the TPM does, and as `tpm2_eventlog` replays it).
//!
//! Everything is read through a bounds-checked cursor: a truncated or absurd log is a
//! typed error naming the event and byte offset, never a panic, and nothing is allocated
//! from a length field (events borrow the log's bytes).

use std::collections::BTreeMap;

use crate::hash::{Digest, HashAlg};

/// `EV_NO_ACTION`: informational events, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// PCR index, event type and digest count (or the start of a SHA-1 digest).
const MIN_EVENT_HEADER: usize = 12;
/// More banks than any TPM has: a Spec ID event claiming more is corrupt.
const MAX_ALGORITHMS: u32 = 16;

/// Why a log could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The log is empty.
    #[error("the event log is empty")]
    Empty,
    /// An event runs past the end of the log.
    #[error(
        "event {event} is truncated: {what} needs {need} bytes at offset {offset}, {left} left"
    )]
    Truncated {
        /// Index of the event (0 is the first).
        event: usize,
        /// The field being read.
        what: &'static str,
        /// Its size.
        need: usize,
        /// Where it starts.
        offset: usize,
        /// Bytes left in the log.
        left: usize,
    },
    /// A malformed Spec ID event.
    #[error("invalid Spec ID event: {0}")]
    SpecId(String),
    /// An event names a bank the Spec ID event did not declare, or too many digests.
    #[error("event {event} at offset {offset}: {message}")]
    BadEvent {
        /// Index of the event.
        event: usize,
        /// Where it starts.
        offset: usize,
        /// What is wrong.
        message: String,
    },
}

/// The `Spec ID Event03` header of a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    /// Platform class (0 client, 1 server).
    pub platform_class: u32,
    /// Spec version minor, major, errata.
    pub version: (u8, u8, u8),
    /// Size of UINTN on the platform (1 = 32-bit, 2 = 64-bit).
    pub uintn_size: u8,
    /// The banks in the log: TPM algorithm id and digest size.
    pub algorithms: Vec<(u16, u16)>,
    /// Vendor data.
    pub vendor_info: Vec<u8>,
}

/// One event, borrowing its digests and data from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Position in the log (0 is the first event).
    pub number: usize,
    /// The PCR it extends.
    pub pcr: u32,
    /// The event type (`EV_*`).
    pub event_type: u32,
    /// One digest per bank: TPM algorithm id and digest bytes.
    pub digests: Vec<(u16, &'a [u8])>,
    /// The event data.
    pub data: &'a [u8],
}

impl Event<'_> {
    /// The event type's name as `tpm2_eventlog` prints it, when it is a known type.
    pub fn type_name(&self) -> Option<&'static str> {
        event_type_name(self.event_type)
    }
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog<'a> {
    /// The Spec ID header; `None` for a legacy SHA-1 log.
    pub spec_id: Option<SpecId>,
    /// Every event, the first (header) event included.
    pub events: Vec<Event<'a>>,
}

/// Replayed PCR values per bank, only for the PCRs the log extends.
pub type PcrBanks = BTreeMap<HashAlg, BTreeMap<u32, Digest>>;

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    event: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let left = self.bytes.len() - self.pos;
        let out = self.bytes.get(self.pos..self.pos.saturating_add(n)).ok_or(
            EventLogError::Truncated {
                event: self.event,
                what,
                need: n,
                offset: self.pos,
                left,
            },
        )?;
        self.pos += n;
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        Ok(self.take(1, what)?[0])
    }

    fn rest_is_padding(&self) -> bool {
        self.bytes[self.pos..].iter().all(|&b| b == 0)
    }
}

/// Parses a binary event log.
pub fn parse(bytes: &[u8]) -> Result<EventLog<'_>, EventLogError> {
    if bytes.is_empty() {
        return Err(EventLogError::Empty);
    }
    let mut c = Cursor {
        bytes,
        pos: 0,
        event: 0,
    };
    let first = parse_sha1_event(&mut c, 0)?;
    let spec_id = match (first.event_type, first.data.get(..16)) {
        (EV_NO_ACTION, Some(sig)) if sig == SPEC_ID_SIGNATURE => Some(parse_spec_id(first.data)?),
        _ => None,
    };
    let mut events = vec![first];
    // Like tpm2_eventlog, stop at zero padding or at a fragment shorter than an event
    // header; such bytes extend nothing.
    while !c.rest_is_padding() && c.bytes.len() - c.pos >= MIN_EVENT_HEADER {
        let number = events.len();
        c.event = number;
        let event = match &spec_id {
            Some(spec) => parse_agile_event(&mut c, number, spec)?,
            None => parse_sha1_event(&mut c, number)?,
        };
        events.push(event);
    }
    Ok(EventLog { spec_id, events })
}

fn parse_sha1_event<'a>(c: &mut Cursor<'a>, number: usize) -> Result<Event<'a>, EventLogError> {
    let pcr = c.u32("pcr index")?;
    let event_type = c.u32("event type")?;
    let digest = c.take(20, "sha1 digest")?;
    let size = c.u32("event size")? as usize;
    let data = c.take(size, "event data")?;
    Ok(Event {
        number,
        pcr,
        event_type,
        digests: vec![(HashAlg::Sha1.tpm_alg_id(), digest)],
        data,
    })
}

fn parse_agile_event<'a>(
    c: &mut Cursor<'a>,
    number: usize,
    spec: &SpecId,
) -> Result<Event<'a>, EventLogError> {
    let offset = c.pos;
    let bad = |message: String| EventLogError::BadEvent {
        event: number,
        offset,
        message,
    };
    let pcr = c.u32("pcr index")?;
    let event_type = c.u32("event type")?;
    let count = c.u32("digest count")?;
    if count as usize > spec.algorithms.len() {
        return Err(bad(format!(
            "{count} digests, but the log declares {} banks",
            spec.algorithms.len()
        )));
    }
    let mut digests = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let alg = c.u16("digest algorithm")?;
        let size = spec
            .algorithms
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                bad(format!(
                    "digest of algorithm 0x{alg:04x}, which the Spec ID event does not declare"
                ))
            })?;
        digests.push((alg, c.take(usize::from(size), "digest")?));
    }
    let size = c.u32("event size")? as usize;
    let data = c.take(size, "event data")?;
    Ok(Event {
        number,
        pcr,
        event_type,
        digests,
        data,
    })
}

fn parse_spec_id(data: &[u8]) -> Result<SpecId, EventLogError> {
    let mut c = Cursor {
        bytes: data,
        pos: 16,
        event: 0,
    };
    let err = |e: EventLogError| EventLogError::SpecId(e.to_string());
    let platform_class = c.u32("platform class").map_err(err)?;
    let minor = c.u8("spec version minor").map_err(err)?;
    let major = c.u8("spec version major").map_err(err)?;
    let errata = c.u8("spec errata").map_err(err)?;
    let uintn_size = c.u8("uintn size").map_err(err)?;
    let n = c.u32("number of algorithms").map_err(err)?;
    if n == 0 || n > MAX_ALGORITHMS {
        return Err(EventLogError::SpecId(format!("{n} algorithms declared")));
    }
    let mut algorithms = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let alg = c.u16("algorithm id").map_err(err)?;
        let size = c.u16("digest size").map_err(err)?;
        if let Some(known) = HashAlg::from_tpm_alg_id(alg) {
            if usize::from(size) != known.digest_len() {
                return Err(EventLogError::SpecId(format!(
                    "{known} declared with a {size}-byte digest"
                )));
            }
        }
        algorithms.push((alg, size));
    }
    let vendor_size = usize::from(c.u8("vendor info size").map_err(err)?);
    // tpm2_eventlog accepts vendor data cut short by the event's size; so does Vigil.
    let vendor_info = data
        .get(c.pos..)
        .map(|rest| rest[..vendor_size.min(rest.len())].to_vec())
        .unwrap_or_default();
    Ok(SpecId {
        platform_class,
        version: (minor, major, errata),
        uintn_size,
        algorithms,
        vendor_info,
    })
}

impl EventLog<'_> {
    /// Replays the log: every bank Vigil knows, every PCR some event extends.
    pub fn replay(&self) -> PcrBanks {
        let mut locality = 0u8;
        let mut banks = PcrBanks::new();
        for event in &self.events {
            if event.event_type == EV_NO_ACTION {
                if event.pcr == 0 && event.data.get(..16) == Some(STARTUP_LOCALITY_SIGNATURE) {
                    locality = event.data.get(16).copied().unwrap_or(0);
                }
                continue;
            }
            for &(alg_id, digest) in &event.digests {
                let Some(alg) = HashAlg::from_tpm_alg_id(alg_id) else {
                    continue; // a bank Vigil has no hash for
                };
                let Ok(measurement) = Digest::from_slice(digest) else {
                    continue;
                };
                let pcr = banks
                    .entry(alg)
                    .or_default()
                    .entry(event.pcr)
                    .or_insert_with(|| initial_pcr(alg, event.pcr, locality));
                *pcr = alg.extend(pcr, &measurement);
            }
        }
        banks
    }
}

fn initial_pcr(alg: HashAlg, pcr: u32, locality: u8) -> Digest {
    if (17..=22).contains(&pcr) {
        return alg.ones();
    }
    let mut bytes = alg.zero().as_bytes().to_vec();
    if pcr == 0 {
        if let Some(last) = bytes.last_mut() {
            *last = locality;
        }
    }
    Digest::from_slice(&bytes).unwrap_or_else(|_| alg.zero())
}

/// The name `tpm2_eventlog` prints for an event type.
pub fn event_type_name(event_type: u32) -> Option<&'static str> {
    Some(match event_type {
        0x0000_0000 => "EV_PREBOOT_CERT",
        0x0000_0001 => "EV_POST_CODE",
        0x0000_0002 => "EV_UNUSED",
        0x0000_0003 => "EV_NO_ACTION",
        0x0000_0004 => "EV_SEPARATOR",
        0x0000_0005 => "EV_ACTION",
        0x0000_0006 => "EV_EVENT_TAG",
        0x0000_0007 => "EV_S_CRTM_CONTENTS",
        0x0000_0008 => "EV_S_CRTM_VERSION",
        0x0000_0009 => "EV_CPU_MICROCODE",
        0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
        0x0000_000B => "EV_TABLE_OF_DEVICES",
        0x0000_000C => "EV_COMPACT_HASH",
        0x0000_000D => "EV_IPL",
        0x0000_000E => "EV_IPL_PARTITION_DATA",
        0x0000_000F => "EV_NONHOST_CODE",
        0x0000_0010 => "EV_NONHOST_CONFIG",
        0x0000_0011 => "EV_NONHOST_INFO",
        0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_tiny_logs_are_errors() {
        assert_eq!(parse(&[]), Err(EventLogError::Empty));
        assert!(matches!(
            parse(&[1, 2, 3]),
            Err(EventLogError::Truncated { .. })
        ));
    }

    #[test]
    fn legacy_sha1_log_replays() {
        let mut log = Vec::new();
        for (pcr, data) in [(0u32, b"first".as_slice()), (0, b"second"), (7, b"third")] {
            log.extend_from_slice(&pcr.to_le_bytes());
            log.extend_from_slice(&0x0000_000Du32.to_le_bytes());
            log.extend_from_slice(HashAlg::Sha1.hash(data).as_bytes());
            log.extend_from_slice(&(data.len() as u32).to_le_bytes());
            log.extend_from_slice(data);
        }
        log.extend_from_slice(&[0; 40]); // firmware padding
        let parsed = parse(&log).unwrap();
        assert!(parsed.spec_id.is_none());
        assert_eq!(parsed.events.len(), 3);
        let banks = parsed.replay();
        let sha1 = &banks[&HashAlg::Sha1];
        let z = HashAlg::Sha1.zero();
        let p0 = HashAlg::Sha1.extend(
            &HashAlg::Sha1.extend(&z, &HashAlg::Sha1.hash(b"first")),
            &HashAlg::Sha1.hash(b"second"),
        );
        assert_eq!(sha1[&0], p0);
        assert_eq!(sha1.len(), 2);
        // Every truncation is a typed error, never a panic.
        for cut in 1..log.len() - 40 {
            let _ = parse(&log[..cut]);
        }
    }
}
