//! Attestation failures in Keylime's model: a verdict is a list of events, each with a
//! dotted event id (`ima.validation.ima-ng.not_in_allowlist`), a JSON context and a
//! recoverable flag. Event ids are kept verbatim, misspellings included
//! (`qoute_validation`), because operators and tools match on them.
//!
//! Severity labels and `severity_policy` are applied by the verifier, not here.

use serde::Serialize;
use serde_json::Value;

/// The component an event id starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// `qoute_validation` (Keylime's spelling, kept on purpose).
    QuoteValidation,
    /// `pcr_validation`.
    PcrValidation,
    /// `measured_boot`.
    MeasuredBoot,
    /// `ima`.
    Ima,
    /// `internal`.
    Internal,
    /// `tee_attestation`.
    Tee,
    /// `default`.
    Default,
}

impl Component {
    /// The event-id prefix, exactly as Keylime spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::QuoteValidation => "qoute_validation",
            Self::PcrValidation => "pcr_validation",
            Self::MeasuredBoot => "measured_boot",
            Self::Ima => "ima",
            Self::Internal => "internal",
            Self::Tee => "tee_attestation",
            Self::Default => "default",
        }
    }
}

/// One failure event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// `component[.sub_component…].event`, verbatim Keylime spelling.
    pub event_id: String,
    /// Structured context; a plain message is `{"message": "..."}` as in Keylime.
    pub context: Value,
    /// Whether attestation may continue after this event.
    pub recoverable: bool,
    /// Vigil only: the file an IMA policy event is about, for operators (Keylime's
    /// `runtime_policy_hash` context has only digests). Kept out of `context` so that
    /// contexts, which revocation notices carry and the differential tests compare,
    /// stay exactly Keylime's; serialised only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl Event {
    /// Builds an event id from its parts: `component.sub1.sub2.event`.
    pub fn new(
        component: Component,
        sub_components: &[&str],
        event: &str,
        context: Value,
        recoverable: bool,
    ) -> Self {
        let mut event_id = String::from(component.as_str());
        for part in sub_components.iter().chain(std::iter::once(&event)) {
            event_id.push('.');
            event_id.push_str(part);
        }
        Self {
            event_id,
            context,
            recoverable,
            file: None,
        }
    }

    /// The same event, annotated with the file it is about ([`Event::file`]).
    pub fn with_file(mut self, path: impl Into<String>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// A context that is only a message, in Keylime's `{"message": ...}` shape.
    pub fn message(text: impl Into<String>) -> Value {
        serde_json::json!({ "message": text.into() })
    }
}

/// How many events a [`Failure`] keeps whole. Past it, an event is kept only when no
/// kept event has its id and recoverability — all that rating a failure reads
/// ([`crate::attestation::SeverityConfig::rate`]) — and is otherwise only counted: a
/// hostile log of millions of failing lines costs bounded memory, and the verdict, the
/// severity and the event that sets it are the same as with every event kept.
pub const MAX_KEPT_EVENTS: usize = 4096;

/// The failures of one attestation step; empty means it passed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Failure {
    events: Vec<Event>,
    /// Events counted but not kept (past [`MAX_KEPT_EVENTS`]).
    #[serde(skip_serializing_if = "is_zero")]
    omitted: u64,
    /// The (id, recoverable) kinds kept, once the cap is reached.
    #[serde(skip)]
    kinds: Option<std::collections::HashSet<(String, bool)>>,
}

impl PartialEq for Failure {
    /// The events kept and the count of the others (`kinds` only caches the former).
    fn eq(&self, other: &Self) -> bool {
        self.events == other.events && self.omitted == other.omitted
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Failure {
    /// No events: a pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one event (whole, or only counted past [`MAX_KEPT_EVENTS`] when its kind
    /// is already kept).
    pub fn push(&mut self, event: Event) {
        if self.events.len() < MAX_KEPT_EVENTS {
            self.events.push(event);
            return;
        }
        let kinds = self.kinds.get_or_insert_with(|| {
            self.events
                .iter()
                .map(|e| (e.event_id.clone(), e.recoverable))
                .collect()
        });
        if kinds.insert((event.event_id.clone(), event.recoverable)) {
            self.events.push(event);
        } else {
            self.omitted += 1;
        }
    }

    /// Appends every event of `other`.
    pub fn merge(&mut self, other: Self) {
        self.omitted += other.omitted;
        for event in other.events {
            self.push(event);
        }
    }

    /// How many events were recorded, kept or not.
    pub fn recorded(&self) -> u64 {
        self.events.len() as u64 + self.omitted
    }

    /// How many events were counted but not kept.
    pub fn omitted(&self) -> u64 {
        self.omitted
    }

    /// The events, in the order they were found.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// True when nothing failed.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// True when any event is irrecoverable (Keylime then stops polling the node).
    pub fn is_irrecoverable(&self) -> bool {
        self.events.iter().any(|e| !e.recoverable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_dotted_and_verbatim() {
        let e = Event::new(
            Component::Ima,
            &["validation", "ima-ng"],
            "not_in_allowlist",
            Event::message("File not found in allowlist: /x"),
            true,
        );
        assert_eq!(e.event_id, "ima.validation.ima-ng.not_in_allowlist");
        assert_eq!(e.context["message"], "File not found in allowlist: /x");
        let q = Event::new(
            Component::QuoteValidation,
            &[],
            "quote_validation",
            Value::Null,
            false,
        );
        assert_eq!(q.event_id, "qoute_validation.quote_validation");
        let mut f = Failure::new();
        assert!(f.is_empty());
        f.push(e);
        assert!(!f.is_irrecoverable());
        f.push(q);
        assert!(f.is_irrecoverable());
        assert_eq!(f.events().len(), 2);
    }

    #[test]
    fn past_the_cap_only_new_kinds_are_kept_and_the_rest_counted() {
        let ev = |name: &str, recoverable| {
            Event::new(Component::Ima, &[], name, Value::Null, recoverable)
        };
        let mut f = Failure::new();
        for _ in 0..MAX_KEPT_EVENTS + 10 {
            f.push(ev("not_in_allowlist", true));
        }
        f.push(ev("ima_hash", true));
        f.push(ev("not_in_allowlist", false));
        f.push(ev("ima_hash", true));
        assert_eq!(f.events().len(), MAX_KEPT_EVENTS + 2);
        assert_eq!(f.omitted(), 11);
        assert_eq!(f.recorded(), MAX_KEPT_EVENTS as u64 + 13);
        assert!(f.is_irrecoverable(), "the irrecoverable kind is kept");
        let mut g = Failure::new();
        g.push(ev("x", true));
        g.merge(f);
        assert_eq!(g.recorded(), MAX_KEPT_EVENTS as u64 + 14);
        assert_eq!(serde_json::to_value(&g).unwrap()["omitted"], 12);
        assert!(serde_json::to_value(Failure::new())
            .unwrap()
            .get("omitted")
            .is_none());
    }

    #[test]
    fn the_file_annotation_is_serialised_only_when_set() {
        let plain = Event::new(Component::Ima, &[], "x", Value::Null, true);
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("file").is_none(), "{json}");
        let annotated = plain.with_file("/usr/bin/x");
        let json = serde_json::to_value(&annotated).unwrap();
        assert_eq!(json["file"], "/usr/bin/x");
        assert_eq!(json["context"], Value::Null);
    }
}
