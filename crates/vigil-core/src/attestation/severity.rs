//! Severity labels and `severity_policy` (Keylime's `failure.py`, compat §6.4): each
//! failure event gets a label from an ordered list, chosen by the first policy rule
//! whose `event_id` regex matches the whole event id; irrecoverable events always get
//! the highest label. A round's verdict is rated by its highest-severity event (the
//! first one reaching that level), which is what `severity_level`, `last_event_id`
//! and revocation notices carry.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::failure::{Event, Failure};

/// Keylime's default labels, lowest to highest.
pub const DEFAULT_LABELS: [&str; 7] = [
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// One `severity_policy` rule as Keylime's configuration writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityRule {
    /// A regex that must match the whole event id (Python `re.fullmatch`).
    pub event_id: String,
    /// The label to give matching events; an unknown label means the highest one.
    pub severity_label: String,
}

/// A severity configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeverityConfigError {
    /// `severity_labels` is empty.
    #[error("severity_labels is empty")]
    NoLabels,
    /// `severity_policy` is empty.
    #[error("severity_policy is empty")]
    NoRules,
    /// More labels than a level can count.
    #[error("severity_labels has {0} labels; at most 256 are supported")]
    TooManyLabels(usize),
    /// The same label twice (levels would be ambiguous).
    #[error("severity label {0:?} appears more than once")]
    DuplicateLabel(String),
    /// A rule's `event_id` is not a valid regex.
    #[error("severity_policy event_id {pattern:?} is not a valid regex: {reason}")]
    BadRegex {
        /// The rule's pattern.
        pattern: String,
        /// What the regex compiler said.
        reason: String,
    },
}

#[derive(Clone, Debug)]
struct CompiledRule {
    regex: regex::Regex,
    /// `None` for a label not in the list: Keylime then uses the highest label.
    level: Option<u8>,
}

/// Labels plus the compiled policy.
#[derive(Clone, Debug)]
pub struct SeverityConfig {
    labels: Vec<String>,
    rules: Vec<CompiledRule>,
}

impl Default for SeverityConfig {
    /// Keylime's defaults: the seven syslog-like labels and one rule mapping every event
    /// to `emergency`, so any failure stops polling.
    fn default() -> Self {
        let labels: Vec<String> = DEFAULT_LABELS.iter().map(|s| s.to_string()).collect();
        let rule = SeverityRule {
            event_id: ".*".into(),
            severity_label: "emergency".into(),
        };
        Self::new(labels, &[rule]).unwrap_or_else(|_| Self {
            labels: vec!["emergency".into()],
            rules: Vec::new(),
        })
    }
}

impl SeverityConfig {
    /// Compiles `labels` (lowest first) and `rules` (first match wins).
    pub fn new(labels: Vec<String>, rules: &[SeverityRule]) -> Result<Self, SeverityConfigError> {
        if labels.is_empty() {
            return Err(SeverityConfigError::NoLabels);
        }
        if rules.is_empty() {
            return Err(SeverityConfigError::NoRules);
        }
        if labels.len() > 256 {
            return Err(SeverityConfigError::TooManyLabels(labels.len()));
        }
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                return Err(SeverityConfigError::DuplicateLabel(l.clone()));
            }
        }
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            // Anchoring both ends gives Python's `fullmatch`.
            let regex = regex::Regex::new(&format!("^(?:{})$", rule.event_id)).map_err(|e| {
                SeverityConfigError::BadRegex {
                    pattern: rule.event_id.clone(),
                    reason: e.to_string(),
                }
            })?;
            let level = labels
                .iter()
                .position(|l| *l == rule.severity_label)
                .and_then(|p| u8::try_from(p).ok());
            compiled.push(CompiledRule { regex, level });
        }
        Ok(Self {
            labels,
            rules: compiled,
        })
    }

    /// Parses Keylime's configuration values: `severity_labels` and `severity_policy`
    /// as JSON text (`["info", …]`, `[{"event_id": ".*", "severity_label": "emergency"}]`).
    pub fn from_keylime_json(labels: &str, policy: &str) -> Result<Self, SeverityJsonError> {
        let labels: Vec<String> =
            serde_json::from_str(labels).map_err(|e| SeverityJsonError::Labels(e.to_string()))?;
        let rules: Vec<SeverityRule> =
            serde_json::from_str(policy).map_err(|e| SeverityJsonError::Policy(e.to_string()))?;
        Ok(Self::new(labels, &rules)?)
    }

    /// The labels, lowest first.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The highest level (the last label's index).
    pub fn max_level(&self) -> u8 {
        u8::try_from(self.labels.len().saturating_sub(1)).unwrap_or(u8::MAX)
    }

    /// The name of `level`, or the highest label's for an out-of-range level.
    pub fn label(&self, level: u8) -> &str {
        self.labels
            .get(usize::from(level))
            .or_else(|| self.labels.last())
            .map_or("", String::as_str)
    }

    /// The level the policy gives `event_id`: the first matching rule's label, the
    /// highest level for an unknown label or when nothing matches (as Keylime).
    pub fn level_of(&self, event_id: &str) -> u8 {
        self.rules
            .iter()
            .find(|r| r.regex.is_match(event_id))
            .and_then(|r| r.level)
            .unwrap_or_else(|| self.max_level())
    }

    /// Rates every event of `failure`. Irrecoverable events are forced to the highest
    /// level (Keylime warns and does the same).
    pub fn rate(&self, failure: &Failure) -> RatedFailure {
        let events: Vec<RatedEvent> = failure
            .events()
            .iter()
            .map(|e| self.rate_event(e))
            .collect();
        RatedFailure {
            omitted: failure.omitted(),
            ..RatedFailure::from_events(events, self.max_level())
        }
    }

    /// Rates one event.
    pub fn rate_event(&self, event: &Event) -> RatedEvent {
        let level = if event.recoverable {
            self.level_of(&event.event_id)
        } else {
            self.max_level()
        };
        RatedEvent {
            event_id: event.event_id.clone(),
            context: event.context.clone(),
            recoverable: event.recoverable,
            severity_level: level,
            severity_label: self.label(level).to_string(),
            file: event.file.clone(),
        }
    }
}

/// Keylime's severity options could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeverityJsonError {
    /// `severity_labels` is not a JSON list of strings.
    #[error("severity_labels is not a JSON list of strings: {0}")]
    Labels(String),
    /// `severity_policy` is not a JSON list of `{event_id, severity_label}`.
    #[error("severity_policy is not a JSON list of {{event_id, severity_label}} objects: {0}")]
    Policy(String),
    /// The values parsed but do not form a configuration.
    #[error(transparent)]
    Config(#[from] SeverityConfigError),
}

/// An event with the severity the policy gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatedEvent {
    /// The event id, e.g. `ima.validation.ima-ng.not_in_allowlist`.
    pub event_id: String,
    /// The event's context.
    pub context: Value,
    /// Whether attestation may go on after it.
    pub recoverable: bool,
    /// Index into the labels.
    pub severity_level: u8,
    /// The label's name.
    pub severity_label: String,
    /// Vigil only: the file the event is about ([`Event::file`]); not in Keylime's
    /// context, and absent from older stored states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A round's failure, rated.
#[derive(Clone, Debug, PartialEq)]
pub struct RatedFailure {
    /// Every event, in the order found.
    pub events: Vec<RatedEvent>,
    /// Index in `events` of the first event with the highest level, if any.
    pub highest: Option<usize>,
    /// False if any event is irrecoverable.
    pub recoverable: bool,
    /// True when the verifier stops polling: an irrecoverable event, or the highest
    /// level reached the last label.
    pub stops_polling: bool,
    /// Events of the failure counted but not kept ([`Failure::omitted`]).
    pub omitted: u64,
}

impl RatedFailure {
    fn from_events(events: Vec<RatedEvent>, max_level: u8) -> Self {
        let mut highest: Option<usize> = None;
        for (i, e) in events.iter().enumerate() {
            // Strictly greater: the first event reaching the top level is the one kept.
            if highest
                .and_then(|h| events.get(h))
                .is_none_or(|h| e.severity_level > h.severity_level)
            {
                highest = Some(i);
            }
        }
        let recoverable = events.iter().all(|e| e.recoverable);
        let top = highest
            .and_then(|h| events.get(h))
            .map(|e| e.severity_level);
        Self {
            stops_polling: !recoverable || top == Some(max_level),
            events,
            highest,
            recoverable,
            omitted: 0,
        }
    }

    /// The event that rates the whole failure.
    pub fn highest_event(&self) -> Option<&RatedEvent> {
        self.highest.and_then(|h| self.events.get(h))
    }

    /// The failure's level (its highest event's), `None` when there is no event.
    pub fn level(&self) -> Option<u8> {
        self.highest_event().map(|e| e.severity_level)
    }
}
