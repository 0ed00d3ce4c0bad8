//! Replay: the PCR values a log implies, and IMA's boot aggregate over them.

use std::collections::BTreeMap;

use crate::hash::{Digest, HashAlg};

use super::{EventLog, EV_EFI_HCRTM_EVENT, EV_NO_ACTION, STARTUP_LOCALITY_SIGNATURE};

/// Replayed PCR values per bank, only for the PCRs the log extends.
pub type PcrBanks = BTreeMap<HashAlg, BTreeMap<u32, Digest>>;

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
            if event.event_type == EV_EFI_HCRTM_EVENT && event.pcr == 0 {
                // An H-CRTM sequence (_TPM_Hash_Start) resets PCR 0 to locality 4
                // before its measurement is extended.
                locality = 4;
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

/// The value a PCR that no event extends starts from, given the log's StartupLocality.
pub(super) fn initial_pcr_for(log: &EventLog<'_>, alg: HashAlg, pcr: u32) -> Digest {
    let locality = log
        .events
        .iter()
        .filter(|e| e.event_type == EV_NO_ACTION && e.pcr == 0)
        .filter(|e| e.data.get(..16) == Some(STARTUP_LOCALITY_SIGNATURE))
        .find_map(|e| e.data.get(16).copied())
        .unwrap_or(0);
    initial_pcr(alg, pcr, locality)
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

/// IMA's `boot_aggregate` candidates per bank, as Keylime computes them from a replayed
/// log: `H(PCR0 ‖ … ‖ PCR7)` (the form every kernel uses) and `H(PCR0 ‖ … ‖ PCR9)` (the
/// form kernels since 5.8 use for banks other than SHA-1).
pub type BootAggregates = BTreeMap<HashAlg, Vec<Digest>>;

/// Boot aggregates over replayed PCRs, Keylime's way: for every bank, the 8-PCR form
/// and then the 10-PCR form, each only when the log extends every PCR it covers (the
/// TPM would read zeros for the others, but Keylime looks them up in the replayed
/// values and leaves a form out when one is missing, so Vigil does the same).
pub fn boot_aggregates(banks: &PcrBanks) -> BootAggregates {
    banks
        .iter()
        .map(|(&alg, pcrs)| {
            let forms = [8u32, 10]
                .into_iter()
                .filter_map(|count| {
                    let mut h = alg.hasher();
                    for i in 0..count {
                        h.update(pcrs.get(&i)?.as_bytes());
                    }
                    Some(h.finalize())
                })
                .collect();
            (alg, forms)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::{parse, EventLogError};

    #[test]
    fn empty_and_tiny_logs_are_errors() {
        assert_eq!(parse(&[]), Err(EventLogError::Empty));
        assert!(matches!(
            parse(&[1, 2, 3]),
            Err(EventLogError::Truncated { .. })
        ));
    }

    #[test]
    fn a_log_must_start_with_the_spec_id_event_or_a_measurement() {
        // Zero bytes would read as one empty event into PCR 0, then padding.
        let err = parse(&[0; 4096]).unwrap_err();
        assert_eq!(
            err,
            EventLogError::NotAnEventLog {
                pcr: 0,
                event_type: 0,
                size: 0
            }
        );
        assert!(err.to_string().contains("not a TCG event log"), "{err}");
        // A first event into a PCR no TPM has.
        let mut log = Vec::new();
        log.extend_from_slice(&24u32.to_le_bytes());
        log.extend_from_slice(&0x0000_0008u32.to_le_bytes());
        log.extend_from_slice(HashAlg::Sha1.hash(b"v").as_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.push(b'v');
        assert!(matches!(
            parse(&log),
            Err(EventLogError::NotAnEventLog { pcr: 24, .. })
        ));
        // The same event into PCR 0 starts a SHA-1 log.
        log[..4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse(&log).unwrap().events.len(), 1);
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
