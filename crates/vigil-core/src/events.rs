//! Integrity events: what the verifier tells the outside world about a node, built here
//! from a round's facts with no I/O, clock or randomness of its own (the caller passes
//! the time and the 16 random bytes of each event's uuid).
//!
//! A round produces an event when it changes the node's verdict (pass ↔ fail, or the
//! first verdict) or when the node booted again (its IMA boot time or its TPM reset
//! count changed). The event's [`EventKind`] names the stage its failures belong to:
//! the earliest failing stage when several failed, `early_boot` for a new boot that
//! passed, `runtime` for any other passing round. Relearn and response actions make
//! their own events ([`IntegrityEvent::relearned`], [`IntegrityEvent::action`]).
//! The schema is documented in `docs/events.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attestation::{RatedEvent, UnixTime};

/// How many failures and differences one event lists; the rest are only counted
/// ([`IntegrityEvent::omitted`]), so a log of a million failing files makes a bounded
/// event.
pub const MAX_LISTED: usize = 256;

/// The node an event is about, as the verifier knows it.
///
/// `class` and `labels` are the node's hardware class and labels (the trust-gate
/// feature): empty until the store carries them. The verifier fills this from one place,
/// `vigil_verifier::events::event_node`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventNode {
    /// The agent id.
    pub node_id: String,
    /// The node's hardware class, if it has one.
    #[serde(default)]
    pub class: Option<String>,
    /// The node's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Which part of the node's state an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Measured boot: firmware, boot loader, PCRs 0–7 and the UEFI log (and the quote
    /// itself: a quote that does not verify proves nothing about any later stage).
    EarlyBoot,
    /// Kernel, initrd and command line: the boot aggregate, PCRs 8–9.
    LateBoot,
    /// IMA after boot: every measured file.
    Runtime,
    /// The verifier adopted new measurements covered by a known-good set.
    Relearned,
    /// A response action was taken (or tried, or only logged in dry-run).
    Action,
}

impl EventKind {
    /// The stage a failure event id (with the file it names) belongs to.
    pub fn of_failure(event_id: &str, file: Option<&str>) -> Self {
        let mut parts = event_id.split('.');
        let component = parts.next().unwrap_or_default();
        let last = event_id.rsplit('.').next().unwrap_or_default();
        let pcr = last
            .strip_prefix("invalid_pcr_")
            .and_then(|n| n.parse::<u32>().ok());
        match component {
            "measured_boot" | "qoute_validation" => Self::EarlyBoot,
            "pcr_validation" => match pcr {
                Some(0..=7) => Self::EarlyBoot,
                Some(8 | 9) => Self::LateBoot,
                _ => Self::Runtime,
            },
            "ima" if file == Some("boot_aggregate") => Self::LateBoot,
            _ => Self::Runtime,
        }
    }
}

/// One failure as an event lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFailure {
    /// Keylime's event id, e.g. `ima.validation.ima-ng.runtime_policy_hash`.
    pub id: String,
    /// The severity label the policy gave it.
    pub severity: String,
    /// The file it is about, for IMA events that name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A value measured on the node that differs from what its policy expects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Difference {
    /// A PCR.
    Pcr {
        /// The PCR index.
        pcr: u32,
        /// The quoted value (hex).
        measured: String,
        /// The values the policy allows (hex).
        expected: Vec<String>,
    },
    /// A measured file (the boot aggregate is the file `boot_aggregate`).
    File {
        /// The file's path.
        file: String,
        /// The measured digest (hex).
        measured: String,
        /// The digests the policy allows (hex); empty when the file is not listed.
        expected: Vec<String>,
    },
}

impl Difference {
    /// The difference a failure event describes, when its context carries both the
    /// measured and the expected values.
    pub fn of_failure(event: &RatedEvent) -> Option<Self> {
        Self::of(&event.event_id, &event.context, event.file.as_deref())
    }

    /// [`of_failure`](Self::of_failure) from an event's parts.
    pub fn of(event_id: &str, ctx: &Value, file: Option<&str>) -> Option<Self> {
        let measured = ctx.get("got")?.as_str()?.to_owned();
        let expected = match ctx.get("expected")? {
            Value::String(s) => vec![s.clone()],
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => return None,
        };
        let last = event_id.rsplit('.').next().unwrap_or_default();
        if let Some(pcr) = last
            .strip_prefix("invalid_pcr_")
            .and_then(|n| n.parse().ok())
        {
            return Some(Self::Pcr {
                pcr,
                measured,
                expected,
            });
        }
        file.map(|file| Self::File {
            file: file.to_owned(),
            measured,
            expected,
        })
    }
}

/// Why a round made an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The node's verdict changed (or this is its first).
    VerdictChanged,
    /// The node booted again.
    NewBoot,
    /// Neither: a relearn or an action.
    Response,
}

/// One integrity event, as every sink receives it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrityEvent {
    /// A random (version 4) uuid: consumers de-duplicate deliveries by it.
    pub uuid: String,
    /// When the event was made, RFC 3339 UTC.
    pub time: String,
    /// The same time in milliseconds since the epoch.
    pub time_ms: u64,
    /// The node.
    #[serde(flatten)]
    pub node: EventNode,
    /// The stage it is about, or `relearned` / `action`.
    pub kind: EventKind,
    /// Why the event was made.
    pub trigger: Trigger,
    /// Whether the node's evidence passed its policies.
    pub policy_evaluation_passed: bool,
    /// The round's failures (at most [`MAX_LISTED`]).
    #[serde(default)]
    pub failures: Vec<EventFailure>,
    /// The measured values that differ from the expected ones (at most [`MAX_LISTED`]).
    #[serde(default)]
    pub differences: Vec<Difference>,
    /// Failures and differences not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
    /// For `relearned` and `action` events: what was done (the set adopted, the
    /// action, its outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a boot is recognised by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootMark {
    /// The IMA boot time the node reports (0 when unknown).
    pub boottime: u64,
    /// The TPM's reset count from its last quote, if one was verified.
    pub reset_count: Option<u32>,
}

impl BootMark {
    /// Whether `self` is a later boot than `before` (an unknown side is no evidence).
    fn is_new_since(self, before: Self) -> bool {
        let boottime =
            before.boottime != 0 && self.boottime != 0 && self.boottime != before.boottime;
        let reset = matches!((before.reset_count, self.reset_count), (Some(a), Some(b)) if a != b);
        boottime || reset
    }
}

/// A round's facts, as the verifier knows them after recording it.
#[derive(Debug, Clone, Copy)]
pub struct RoundFacts<'a> {
    /// The node's verdict before the round (`None`: it had none yet).
    pub previous_verdict: Option<bool>,
    /// The round's verdict (`None`: no quote was judged).
    pub verdict: Option<bool>,
    /// The boot before the round.
    pub previous_boot: BootMark,
    /// The boot after the round.
    pub boot: BootMark,
    /// The round's failures (empty when it passed).
    pub failures: &'a [RatedEvent],
}

/// The events a round produces: none, or one (verdict change and new boot in one round
/// make one event).
pub fn round_events(
    node: &EventNode,
    facts: &RoundFacts<'_>,
    now: UnixTime,
    uuid_bytes: [u8; 16],
) -> Option<IntegrityEvent> {
    let new_boot = facts.boot.is_new_since(facts.previous_boot);
    let verdict = facts.verdict.or(facts.previous_verdict);
    let changed = facts.verdict.is_some() && facts.verdict != facts.previous_verdict;
    let trigger = match (changed, new_boot) {
        (true, _) => Trigger::VerdictChanged,
        (false, true) => Trigger::NewBoot,
        (false, false) => return None,
    };
    let passed = verdict.unwrap_or(true);
    let failures = if passed { &[][..] } else { facts.failures };
    let kind = failures
        .iter()
        .map(|f| EventKind::of_failure(&f.event_id, f.file.as_deref()))
        .min()
        .unwrap_or(if new_boot {
            EventKind::EarlyBoot
        } else {
            EventKind::Runtime
        });
    let mut event = IntegrityEvent::new(node, kind, trigger, passed, now, uuid_bytes);
    event.list_failures(failures);
    Some(event)
}

impl IntegrityEvent {
    /// An event with no failures, differences or detail yet.
    pub fn new(
        node: &EventNode,
        kind: EventKind,
        trigger: Trigger,
        passed: bool,
        now: UnixTime,
        uuid_bytes: [u8; 16],
    ) -> Self {
        Self {
            uuid: uuid_v4(uuid_bytes),
            time: rfc3339(now),
            time_ms: now.as_millis(),
            node: node.clone(),
            kind,
            trigger,
            policy_evaluation_passed: passed,
            failures: Vec::new(),
            differences: Vec::new(),
            omitted: 0,
            detail: None,
        }
    }

    /// A `relearned` event: the node's new measurements were adopted from a known-good
    /// set (`detail` names it and the new policy version).
    pub fn relearned(
        node: &EventNode,
        adopted: &[Difference],
        detail: Value,
        now: UnixTime,
        uuid_bytes: [u8; 16],
    ) -> Self {
        let mut event = Self::new(
            node,
            EventKind::Relearned,
            Trigger::Response,
            true,
            now,
            uuid_bytes,
        );
        event.differences = adopted.iter().take(MAX_LISTED).cloned().collect();
        event.detail = Some(detail);
        event
    }

    /// An `action` event: a response action and its outcome (`detail`).
    pub fn action(node: &EventNode, detail: Value, now: UnixTime, uuid_bytes: [u8; 16]) -> Self {
        let mut event = Self::new(
            node,
            EventKind::Action,
            Trigger::Response,
            false,
            now,
            uuid_bytes,
        );
        event.detail = Some(detail);
        event
    }

    /// Lists `failures` and the differences they carry, up to [`MAX_LISTED`] each.
    pub fn list_failures(&mut self, failures: &[RatedEvent]) {
        let mut omitted = 0u64;
        for f in failures {
            if self.failures.len() < MAX_LISTED {
                self.failures.push(EventFailure {
                    id: f.event_id.clone(),
                    severity: f.severity_label.clone(),
                    file: f.file.clone(),
                });
            } else {
                omitted += 1;
            }
            if let Some(d) = Difference::of_failure(f) {
                if self.differences.len() < MAX_LISTED {
                    self.differences.push(d);
                } else {
                    omitted += 1;
                }
            }
        }
        self.omitted += omitted;
    }
}

/// A version 4 uuid from 16 random bytes.
pub fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-05T23:39:00.123Z`).
pub fn rfc3339(t: UnixTime) -> String {
    let ms = t.as_millis();
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rated(id: &str, file: Option<&str>, context: Value) -> RatedEvent {
        RatedEvent {
            event_id: id.into(),
            context,
            recoverable: true,
            severity_level: 0,
            severity_label: "emergency".into(),
            file: file.map(Into::into),
        }
    }

    fn node() -> EventNode {
        EventNode {
            node_id: "n1".into(),
            ..EventNode::default()
        }
    }

    fn facts(prev: Option<bool>, now: Option<bool>, failures: &[RatedEvent]) -> RoundFacts<'_> {
        RoundFacts {
            previous_verdict: prev,
            verdict: now,
            previous_boot: BootMark::default(),
            boot: BootMark::default(),
            failures,
        }
    }

    #[test]
    fn only_a_verdict_change_or_a_new_boot_makes_an_event() {
        let t = UnixTime::from_millis(1_765_000_000_123);
        assert!(round_events(&node(), &facts(Some(true), Some(true), &[]), t, [0; 16]).is_none());
        assert!(round_events(&node(), &facts(Some(false), None, &[]), t, [0; 16]).is_none());
        let first = round_events(&node(), &facts(None, Some(true), &[]), t, [0; 16]).unwrap();
        assert_eq!(
            (first.kind, first.trigger),
            (EventKind::Runtime, Trigger::VerdictChanged)
        );
        let mut f = facts(Some(true), Some(true), &[]);
        f.previous_boot.reset_count = Some(1);
        f.boot.reset_count = Some(2);
        let boot = round_events(&node(), &f, t, [0; 16]).unwrap();
        assert_eq!(
            (boot.kind, boot.trigger),
            (EventKind::EarlyBoot, Trigger::NewBoot)
        );
        assert_eq!(boot.time, "2025-12-06T05:46:40.123Z");
    }

    #[test]
    fn a_failure_lists_ids_files_and_differences_under_the_earliest_stage() {
        let failures = [
            rated(
                "ima.validation.ima-ng.runtime_policy_hash",
                Some("/usr/bin/x"),
                json!({"got": "aa", "expected": ["bb"]}),
            ),
            rated(
                "pcr_validation.invalid_pcr_9",
                None,
                json!({"got": "cc", "expected": ["dd", "ee"]}),
            ),
            rated(
                "ima.validation.ima-ng.not_in_allowlist",
                Some("/tmp/y"),
                json!({"message": "m"}),
            ),
        ];
        let e = round_events(
            &node(),
            &facts(Some(true), Some(false), &failures),
            UnixTime::EPOCH,
            [7; 16],
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::LateBoot);
        assert!(!e.policy_evaluation_passed);
        assert_eq!(e.failures.len(), 3);
        assert_eq!(e.failures[0].file.as_deref(), Some("/usr/bin/x"));
        assert_eq!(
            e.differences,
            [
                Difference::File {
                    file: "/usr/bin/x".into(),
                    measured: "aa".into(),
                    expected: vec!["bb".into()]
                },
                Difference::Pcr {
                    pcr: 9,
                    measured: "cc".into(),
                    expected: vec!["dd".into(), "ee".into()]
                },
            ]
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["node_id"], "n1");
        assert_eq!(json["kind"], "late_boot");
        assert_eq!(json["differences"][1]["type"], "pcr");
        assert_eq!(e.uuid, "07070707-0707-4707-8707-070707070707");
        assert_eq!(e.time, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn stages_follow_the_event_id() {
        assert_eq!(
            EventKind::of_failure("measured_boot.invalid_pcr_0", None),
            EventKind::EarlyBoot
        );
        assert_eq!(
            EventKind::of_failure("pcr_validation.invalid_pcr_4", None),
            EventKind::EarlyBoot
        );
        assert_eq!(
            EventKind::of_failure("qoute_validation.quote_validation", None),
            EventKind::EarlyBoot
        );
        assert_eq!(
            EventKind::of_failure("pcr_validation.invalid_pcr_8", None),
            EventKind::LateBoot
        );
        assert_eq!(
            EventKind::of_failure(
                "ima.validation.ima-ng.runtime_policy_hash",
                Some("boot_aggregate")
            ),
            EventKind::LateBoot
        );
        assert_eq!(
            EventKind::of_failure("pcr_validation.invalid_pcr_16", None),
            EventKind::Runtime
        );
        assert_eq!(
            EventKind::of_failure("ima.validation.ima-ng.not_in_allowlist", Some("/x")),
            EventKind::Runtime
        );
    }
}
