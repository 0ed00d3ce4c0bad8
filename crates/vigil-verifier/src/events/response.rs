//! Response rules: a TOML file (`response_rules`) of rules, each matching events and
//! naming the actions to take; read at start (a bad file stops the start, naming the
//! rule) and again on SIGHUP (a bad file then keeps the rules in force, with an error
//! line). See `docs/response.md`.
//!
//! ```toml
//! [[rules]]
//! name = "quarantine-on-runtime-change"
//! kinds = ["runtime"]            # any kind when absent
//! event_id = "ima\\..*"          # a failure id must match (whole id); any when absent
//! class = "web-frontend"         # the node's hardware class
//! labels = { env = "prod" }      # every label must be set to this value
//! min_severity = "error"         # the event's highest failure severity at least this
//! actions = [
//!   { action = "notify", sinks = ["nats"] },
//!   { action = "quarantine" },
//!   { action = "exec", command = ["/usr/local/bin/page-oncall"], timeout_secs = 10 },
//! ]
//! ```
//!
//! A rule matches failing events only (`policy_evaluation_passed: false`) unless it says
//! `on_pass = true`. Without a rule file every event goes to every sink; with one, an
//! event goes to the sinks its matching rules' `notify` actions name (every sink when a
//! `notify` names none), and `relearned` and `action` events to every sink.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use regex::Regex;
use serde::Deserialize;
use tracing::{error, info};
use vigil_core::events::{EventKind, IntegrityEvent};

/// The largest rule file read.
const MAX_RULES_BYTES: u64 = 1 << 20;

/// One action a rule asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ActionSpec {
    /// Send the event to these sinks (every configured sink when empty).
    Notify {
        #[serde(default)]
        sinks: Vec<String>,
    },
    /// Keylime's signed revocation notice to the node's peers.
    Revoke,
    /// Ask the node's agent to cut the node off the network but for the control plane.
    Quarantine,
    /// Ask the node's agent to power the node off.
    Shutdown,
    /// Run a command on the verifier host, the event as JSON on its stdin.
    Exec {
        command: Vec<String>,
        #[serde(default = "default_timeout")]
        timeout_secs: u64,
    },
    /// Adopt new measurements covered by a known-good set of the node's class.
    Relearn,
}

fn default_timeout() -> u64 {
    30
}

impl ActionSpec {
    /// The action's name, as recorded.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Notify { .. } => "notify",
            Self::Revoke => "revoke",
            Self::Quarantine => "quarantine",
            Self::Shutdown => "shutdown",
            Self::Exec { .. } => "exec",
            Self::Relearn => "relearn",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    kinds: Vec<EventKind>,
    event_id: Option<String>,
    class: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    min_severity: Option<String>,
    #[serde(default)]
    on_pass: bool,
    actions: Vec<ActionSpec>,
}

/// One rule, checked.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) name: String,
    kinds: Vec<EventKind>,
    event_id: Option<Regex>,
    class: Option<String>,
    labels: BTreeMap<String, String>,
    /// Index into the severity labels.
    min_severity: Option<usize>,
    on_pass: bool,
    pub(crate) actions: Vec<ActionSpec>,
}

/// Why a rule file is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RulesError {
    /// The file cannot be read.
    #[error("response_rules {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// It is not a rule file.
    #[error("response_rules {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// One rule is wrong.
    #[error("response_rules {path}: rule {rule:?}: {message}")]
    Rule {
        path: PathBuf,
        rule: String,
        message: String,
    },
}

/// The rules in force.
#[derive(Debug, Default)]
pub(crate) struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    /// Whether a rule file is configured (else every event goes to every sink).
    configured: bool,
}

impl RuleSet {
    /// Reads and checks the rule file at `path`; `severities` are the verifier's
    /// labels, lowest first; `sinks` the configured sink names.
    pub(crate) fn load(
        path: &Path,
        severities: &[String],
        sinks: &[String],
    ) -> Result<Self, RulesError> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_RULES_BYTES).read_to_string(&mut text))
            .map_err(|source| RulesError::Read {
                path: path.to_owned(),
                source,
            })?;
        let file: RuleFile = toml::from_str(&text).map_err(|e| RulesError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for raw in file.rules {
            let bad = |message: String| RulesError::Rule {
                path: path.to_owned(),
                rule: raw.name.clone(),
                message,
            };
            let event_id = raw
                .event_id
                .as_deref()
                .map(|re| Regex::new(&format!("^(?:{re})$")))
                .transpose()
                .map_err(|e| bad(format!("event_id: {e}")))?;
            let min_severity = raw
                .min_severity
                .as_deref()
                .map(|l| {
                    severities
                        .iter()
                        .position(|s| s == l)
                        .ok_or_else(|| bad(format!("min_severity: unknown label {l:?}")))
                })
                .transpose()?;
            for a in &raw.actions {
                match a {
                    ActionSpec::Notify { sinks: named } => {
                        if let Some(s) = named.iter().find(|s| !sinks.contains(s)) {
                            return Err(bad(format!("notify: sink {s:?} is not in event_sinks")));
                        }
                    }
                    ActionSpec::Exec { command, .. } if command.is_empty() => {
                        return Err(bad("exec: empty command".into()));
                    }
                    _ => {}
                }
            }
            rules.push(Rule {
                name: raw.name,
                kinds: raw.kinds,
                event_id,
                class: raw.class,
                labels: raw.labels,
                min_severity,
                on_pass: raw.on_pass,
                actions: raw.actions,
            });
        }
        Ok(Self {
            rules,
            configured: true,
        })
    }

    /// The rules `event` matches, in file order.
    pub(crate) fn matching<'a>(
        &'a self,
        event: &'a IntegrityEvent,
        severities: &'a [String],
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.matches(event, severities))
    }

    /// The sinks `event` goes to, of the configured `all`.
    pub(crate) fn sinks_for(
        &self,
        event: &IntegrityEvent,
        severities: &[String],
        all: &[String],
    ) -> Vec<String> {
        if !self.configured || matches!(event.kind, EventKind::Relearned | EventKind::Action) {
            return all.to_vec();
        }
        let mut out: Vec<String> = Vec::new();
        for rule in self.matching(event, severities) {
            for a in &rule.actions {
                if let ActionSpec::Notify { sinks } = a {
                    let named = if sinks.is_empty() {
                        all
                    } else {
                        sinks.as_slice()
                    };
                    for s in named {
                        if !out.contains(s) {
                            out.push(s.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// The first matching rule that asks for a relearn.
    pub(crate) fn relearn_rule(
        &self,
        event: &IntegrityEvent,
        severities: &[String],
    ) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.actions.contains(&ActionSpec::Relearn) && r.matches(event, severities))
            .map(|r| r.name.as_str())
    }
}

impl Rule {
    fn matches(&self, event: &IntegrityEvent, severities: &[String]) -> bool {
        if event.policy_evaluation_passed && !self.on_pass {
            return false;
        }
        if matches!(event.kind, EventKind::Relearned | EventKind::Action)
            && !self.kinds.contains(&event.kind)
        {
            // Responses to responses only when a rule names those kinds.
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&event.kind) {
            return false;
        }
        if let Some(re) = &self.event_id {
            if !event.failures.iter().any(|f| re.is_match(&f.id)) {
                return false;
            }
        }
        if self.class.is_some() && self.class != event.node.class {
            return false;
        }
        if self
            .labels
            .iter()
            .any(|(k, v)| event.node.labels.get(k) != Some(v))
        {
            return false;
        }
        if let Some(min) = self.min_severity {
            let top = event
                .failures
                .iter()
                .filter_map(|f| severities.iter().position(|s| *s == f.severity))
                .max();
            if top.is_none_or(|t| t < min) {
                return false;
            }
        }
        true
    }
}

/// The rules in force, swapped whole on reload.
#[derive(Debug)]
pub(crate) struct Rules {
    path: Option<PathBuf>,
    severities: Vec<String>,
    sinks: Vec<String>,
    current: RwLock<Arc<RuleSet>>,
}

impl Rules {
    /// The rules of `path` (none when `None`).
    pub(crate) fn new(
        path: Option<PathBuf>,
        severities: Vec<String>,
        sinks: Vec<String>,
    ) -> Result<Self, RulesError> {
        let set = match &path {
            Some(p) => RuleSet::load(p, &severities, &sinks)?,
            None => RuleSet::default(),
        };
        Ok(Self {
            path,
            severities,
            sinks,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// The rules in force now.
    pub(crate) fn current(&self) -> Arc<RuleSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The severity labels, lowest first.
    pub(crate) fn severities(&self) -> &[String] {
        &self.severities
    }

    /// Reads the file again (SIGHUP); a bad file leaves the rules in force.
    pub(crate) fn reload(&self) {
        let Some(path) = &self.path else { return };
        match RuleSet::load(path, &self.severities, &self.sinks) {
            Ok(set) => {
                info!(rules = set.rules.len(), path = %path.display(), "response rules reloaded");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
            }
            Err(e) => error!("{e}; the rules in force stay"),
        }
    }
}

#[cfg(test)]
mod tests {
    use vigil_core::attestation::UnixTime;
    use vigil_core::events::{EventFailure, EventNode, Trigger};

    use super::*;

    fn labels() -> Vec<String> {
        ["info", "warning", "error", "emergency"]
            .map(String::from)
            .to_vec()
    }

    fn event(kind: EventKind, id: &str, severity: &str) -> IntegrityEvent {
        let node = EventNode {
            node_id: "n".into(),
            class: Some("c1".into()),
            labels: [("env".to_owned(), "prod".to_owned())].into(),
        };
        let mut e = IntegrityEvent::new(
            &node,
            kind,
            Trigger::VerdictChanged,
            false,
            UnixTime::EPOCH,
            [0; 16],
        );
        e.failures.push(EventFailure {
            id: id.into(),
            severity: severity.into(),
            file: None,
        });
        e
    }

    fn rules(text: &str) -> Result<RuleSet, RulesError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rules.toml");
        std::fs::write(&p, text).unwrap();
        RuleSet::load(&p, &labels(), &["file".into(), "nats".into()])
    }

    #[test]
    fn rules_match_kind_id_class_labels_and_severity() {
        let set = rules(
            r#"
            [[rules]]
            name = "r1"
            kinds = ["runtime"]
            event_id = "ima\\..*"
            class = "c1"
            labels = { env = "prod" }
            min_severity = "error"
            actions = [{ action = "notify", sinks = ["nats"] }, { action = "relearn" }]
            [[rules]]
            name = "r2"
            actions = [{ action = "exec", command = ["/bin/true"] }]
            "#,
        )
        .unwrap();
        let l = labels();
        let e = event(
            EventKind::Runtime,
            "ima.validation.ima-ng.runtime_policy_hash",
            "emergency",
        );
        assert_eq!(
            set.matching(&e, &l)
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        assert_eq!(
            set.sinks_for(&e, &l, &["file".into(), "nats".into()]),
            ["nats"]
        );
        assert_eq!(set.relearn_rule(&e, &l), Some("r1"));
        let low = event(EventKind::Runtime, "ima.x", "warning");
        assert_eq!(set.relearn_rule(&low, &l), None);
        let boot = event(EventKind::EarlyBoot, "ima.x", "emergency");
        assert_eq!(set.relearn_rule(&boot, &l), None);
        let quote = event(
            EventKind::Runtime,
            "qoute_validation.quote_validation",
            "emergency",
        );
        assert_eq!(set.relearn_rule(&quote, &l), None);
        assert!(set.sinks_for(&quote, &l, &["file".into()]).is_empty());
    }

    #[test]
    fn a_bad_rule_is_named() {
        let e =
            rules("[[rules]]\nname = \"x\"\nmin_severity = \"nope\"\nactions = []\n").unwrap_err();
        assert!(e.to_string().contains("rule \"x\": min_severity"), "{e}");
        let e = rules(
            "[[rules]]\nname = \"y\"\nactions = [{ action = \"notify\", sinks = [\"kafka\"] }]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("kafka"), "{e}");
        let e =
            rules("[[rules]]\nname = \"z\"\nactions = [{ action = \"reboot\" }]\n").unwrap_err();
        assert!(e.to_string().contains("reboot"), "{e}");
    }
}
