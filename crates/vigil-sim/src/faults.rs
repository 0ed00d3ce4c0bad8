//! Faults injected on chosen nodes at chosen times: `KIND@NODES@SECONDS`, e.g.
//! `ima@0-9@30` (nodes 0 to 9 measure a file outside the policy 30 s after serving
//! starts). Kinds: `ima` (a file outside the policy), `pcr` (PCR 4 changed past the
//! UEFI log), `nonce` (quotes over another nonce), `replay` (the last answer again),
//! `down` (connections dropped), `up` (answering again), `slow:MS` (answers delayed),
//! `reboot` (new boot time, TPM reset, IMA log from its start).

use std::collections::HashSet;
use std::time::Duration;

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A file outside the policy is measured.
    Ima,
    /// PCR 4 is extended past the UEFI log.
    Pcr,
    /// Quotes are made over another nonce.
    Nonce,
    /// The last genuine answer is served again.
    Replay,
    /// Connections are dropped.
    Down,
    /// Connections are served again.
    Up,
    /// Answers are delayed this long.
    Slow(Duration),
    /// New boot time, TPM reset, IMA log from its start.
    Reboot,
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What it does.
    pub kind: Kind,
    /// First and last node index.
    pub nodes: (usize, usize),
    /// When (after enrolment, for the binary).
    pub at: Duration,
}

/// Why a fault specification is refused.
#[derive(Debug, thiserror::Error)]
#[error("fault {spec:?}: {reason} (KIND@FIRST[-LAST]@SECONDS, KIND one of ima, pcr, nonce, replay, down, up, slow:MS, reboot)")]
pub struct FaultError {
    spec: String,
    reason: &'static str,
}

impl std::str::FromStr for Fault {
    type Err = FaultError;

    fn from_str(spec: &str) -> Result<Self, FaultError> {
        let bad = |reason| FaultError {
            spec: spec.to_owned(),
            reason,
        };
        let mut parts = spec.split('@');
        let (Some(kind), Some(nodes), Some(at), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("three '@'-separated parts expected"));
        };
        let kind = match kind.split_once(':') {
            Some(("slow", ms)) => Kind::Slow(Duration::from_millis(
                ms.parse().map_err(|_| bad("slow:MS needs milliseconds"))?,
            )),
            None => match kind {
                "ima" => Kind::Ima,
                "pcr" => Kind::Pcr,
                "nonce" => Kind::Nonce,
                "replay" => Kind::Replay,
                "down" => Kind::Down,
                "up" => Kind::Up,
                "reboot" => Kind::Reboot,
                _ => return Err(bad("unknown kind")),
            },
            Some(_) => return Err(bad("unknown kind")),
        };
        let index = |s: &str| s.parse::<usize>().map_err(|_| bad("bad node index"));
        let nodes = match nodes.split_once('-') {
            Some((a, b)) => (index(a)?, index(b)?),
            None => (index(nodes)?, index(nodes)?),
        };
        if nodes.0 > nodes.1 {
            return Err(bad("the node range is reversed"));
        }
        let at: f64 = at.parse().map_err(|_| bad("bad time"))?;
        if !(0.0..=1e6).contains(&at) {
            return Err(bad("the time must be 0 to 1e6 seconds"));
        }
        Ok(Self {
            kind,
            nodes,
            at: Duration::from_secs_f64(at),
        })
    }
}

/// The nodes any of `faults` touches (left out of the scheduling figures).
pub fn touched(faults: &[Fault], nodes: usize) -> HashSet<usize> {
    faults
        .iter()
        .flat_map(|f| f.nodes.0..=f.nodes.1.min(nodes.saturating_sub(1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_name_the_problem() {
        let f: Fault = "slow:1500@3-5@12.5".parse().unwrap();
        assert_eq!(f.kind, Kind::Slow(Duration::from_millis(1500)));
        assert_eq!((f.nodes, f.at), ((3, 5), Duration::from_millis(12_500)));
        let f: Fault = "ima@7@0".parse().unwrap();
        assert_eq!((f.kind, f.nodes), (Kind::Ima, (7, 7)));
        for bad in [
            "ima@1",
            "what@1@1",
            "ima@5-2@1",
            "ima@x@1",
            "slow:x@1@1",
            "ima@1@-3",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }
}
