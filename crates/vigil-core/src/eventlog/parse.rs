//! Parsing: the SHA-1 header event, the Spec ID event and crypto-agile events, all
//! borrowed from the log's bytes.

use crate::hash::HashAlg;

use super::{event_type_name, EV_NO_ACTION, SPEC_ID_SIGNATURE};

/// PCR index, event type and digest count (or the start of a SHA-1 digest).
const MIN_EVENT_HEADER: usize = 12;
/// More banks than any TPM has: a Spec ID event claiming more is corrupt.
const MAX_ALGORITHMS: u32 = 16;
/// The highest PCR of a PC Client TPM.
const MAX_PCR: u32 = 23;

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
    /// The first event is neither the Spec ID event that starts a crypto-agile log nor
    /// a measurement that can start a SHA-1 log (4 KiB of zeros, for one).
    #[error(
        "not a TCG event log: the first event (PCR {pcr}, type 0x{event_type:08x}, {size} \
         bytes of data) is neither the Spec ID event nor a SHA-1 log's first measurement"
    )]
    NotAnEventLog {
        /// The first event's PCR index.
        pcr: u32,
        /// Its event type.
        event_type: u32,
        /// Its data size.
        size: usize,
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
    let mut spec_id = match (first.event_type, first.data.get(..16)) {
        (EV_NO_ACTION, Some(sig)) if sig == SPEC_ID_SIGNATURE => Some(parse_spec_id(first.data)?),
        // A SHA-1 log starts with a measurement: into a PCR the TPM has, of something
        // (every event type the PC Client specifications define carries data). Zero
        // bytes read as an empty event into PCR 0; they are not a log.
        _ if first.pcr > MAX_PCR || first.data.is_empty() => {
            return Err(EventLogError::NotAnEventLog {
                pcr: first.pcr,
                event_type: first.event_type,
                size: first.data.len(),
            })
        }
        _ => None,
    };
    if let Some(spec) = &mut spec_id {
        // Vendor data that the event's size leaves out: tpm2_eventlog reads it from the
        // bytes after the event (and skips them), so Vigil does too, when they exist.
        let declared = 28 + 4 * spec.algorithms.len();
        let vendor_size = first.data.get(declared).map_or(0, |&n| usize::from(n));
        let missing = (declared + 1 + vendor_size).saturating_sub(first.data.len());
        if missing > 0 {
            if let Ok(extra) = c.take(missing, "spec id vendor info") {
                spec.vendor_info.extend_from_slice(extra);
            }
        }
    }
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

pub(super) fn parse_spec_id(data: &[u8]) -> Result<SpecId, EventLogError> {
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
