//! Measured-boot policies: Keylime's `example` policy (and the `accept-all` and
//! `reject-all` built-ins) evaluated over a UEFI event log against a reference state,
//! and the generator of reference states from a known-good log.
//!
//! Keylime's policies do not read the binary log: they read what its parser makes of it
//! (`tpm2_eventlog --eventlog-version=2`, loaded as YAML, enriched, and with every string
//! passed through a tpm2-tools-version-dependent unescaping). [`LogView`] builds that
//! same data from Vigil's own decoder, quirks included (the unescaping turns the `\f` of
//! `\EFI\fedora` into a form feed, as Keylime's does), because the policies match on it
//! and failure reasons quote it.
//!
//! [`bootlog_evaluate`] is the verifier's entry point and returns Keylime's failure
//! events: `measured_boot.missing_pcrs` when the quote lacks a PCR the policy relies on,
//! and `measured_boot.policy_<name>` with the reason when the log does not pass.
//! [`MbPolicy::relevant_pcrs`] feeds the PCR comparison
//! (`policy::tpm::MeasuredBootPcrs::relevant`).

mod check;
mod create;
mod example;
mod pyrepr;
mod refstate;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

use crate::eventlog::{self, EventLog, RenderOptions};
use crate::failure::{Component, Event, Failure};

pub use create::{create_refstate, CreateError, CreatedRefState};
pub use example::RELEVANT_PCRS as EXAMPLE_RELEVANT_PCRS;
pub use refstate::{DigestSet, Kernel, Key, RefState, RefStateError, ScrtmAndBios};

/// A measured-boot policy, by the name Keylime's `measured_boot_policy_name` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MbPolicy {
    /// `accept-all` (Keylime's default): every log passes.
    AcceptAll,
    /// `reject-all`: no log passes.
    RejectAll,
    /// `example`: the log must match the reference state.
    Example,
}

/// A policy name Vigil does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("there is no measured-boot policy named '{0}' (known: accept-all, reject-all, example)")]
pub struct UnknownPolicy(pub String);

impl MbPolicy {
    /// The policy's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AcceptAll => "accept-all",
            Self::RejectAll => "reject-all",
            Self::Example => "example",
        }
    }

    /// The PCRs the policy relies on; empty means no restriction.
    pub fn relevant_pcrs(self) -> BTreeSet<u32> {
        match self {
            Self::AcceptAll | Self::RejectAll => BTreeSet::new(),
            Self::Example => example::RELEVANT_PCRS.into_iter().collect(),
        }
    }
}

impl fmt::Display for MbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MbPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "accept-all" => Ok(Self::AcceptAll),
            "reject-all" => Ok(Self::RejectAll),
            "example" => Ok(Self::Example),
            _ => Err(UnknownPolicy(s.to_owned())),
        }
    }
}

/// The parsed log as Keylime's measured-boot code sees it: `{"events": [...]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogView(pub Value);

/// Keylime's post-processing of tpm2-tools (5.2 and later) strings: it undoes C escapes
/// that the YAML loader already undid (so literal `\f`, `\t`, ... in the text become
/// control characters) and drops one trailing NUL.
fn keylime_unescape(s: &str) -> String {
    const ESCAPES: [(&str, &str); 10] = [
        ("\\0", "\0"),
        ("\\a", "\u{7}"),
        ("\\b", "\u{8}"),
        ("\\t", "\t"),
        ("\\v", "\u{b}"),
        ("\\f", "\u{c}"),
        ("\\r", "\r"),
        ("\\e", "\u{1b}"),
        ("\\'", "'"),
        ("\\\\", "\\"),
    ];
    let mut out = s.to_owned();
    for (escaped, plain) in ESCAPES {
        if out.contains(escaped) {
            out = out.replace(escaped, plain);
        }
    }
    if out.ends_with('\0') {
        out.pop();
    }
    out
}

fn unescape_all(v: &mut Value) {
    match v {
        Value::String(s) if !s.is_empty() => *s = keylime_unescape(s),
        Value::Array(items) => items.iter_mut().for_each(unescape_all),
        Value::Object(map) => map.values_mut().for_each(unescape_all),
        _ => {}
    }
}

impl LogView {
    /// Builds the view of a parsed log (device paths as libefivar text, as Keylime's
    /// enrichment prints them).
    pub fn new(log: &EventLog<'_>) -> Self {
        let mut events = Value::Array(eventlog::to_yaml_values(log, RenderOptions::default()));
        unescape_all(&mut events);
        Self(json!({ "events": events }))
    }

    /// The events.
    pub fn events(&self) -> &[Value] {
        self.0["events"].as_array().map_or(&[], Vec::as_slice)
    }
}

/// Why a log did not pass a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The reference state is not one the policy can use (Keylime reports this as
    /// "policy evaluation failed: …").
    #[error("policy evaluation failed: {0}")]
    RefState(#[from] RefStateError),
    /// The log does not match: Keylime's reason text.
    #[error("{0}")]
    Mismatch(String),
}

/// Evaluates a log against a reference state with a policy.
pub fn evaluate(policy: MbPolicy, refstate: &Value, log: &LogView) -> Result<(), Rejection> {
    match policy {
        MbPolicy::AcceptAll => Ok(()),
        MbPolicy::RejectAll => Err(Rejection::Mismatch("reject all".to_owned())),
        MbPolicy::Example => {
            let rs = RefState::from_json(refstate)?;
            let (test, builder) = example::compile(&rs);
            let mut ctx = builder.ctx();
            let reason = test.why_not(&mut ctx, &log.0);
            if reason.is_empty() {
                Ok(())
            } else {
                Err(Rejection::Mismatch(reason))
            }
        }
    }
}

/// The verifier's measured-boot step, as Keylime's `bootlog_evaluate`: no evaluation for
/// an empty reference state (`{}`, `null`, ...), `missing_pcrs` when the quote lacks a PCR
/// the policy relies on, otherwise `policy_<name>` when the log does not pass.
pub fn bootlog_evaluate(
    policy: MbPolicy,
    refstate: &Value,
    log: &LogView,
    pcrs_in_quote: &BTreeSet<u32>,
) -> Failure {
    let mut failure = Failure::new();
    if !check::truthy(refstate) {
        return failure;
    }
    let missing: Vec<u32> = policy
        .relevant_pcrs()
        .difference(pcrs_in_quote)
        .copied()
        .collect();
    if !missing.is_empty() {
        failure.push(Event::new(
            Component::MeasuredBoot,
            &[],
            "missing_pcrs",
            json!({ "context": "PCRs are missing in quote", "data": missing }),
            true,
        ));
        return failure;
    }
    if let Err(rejection) = evaluate(policy, refstate, log) {
        // Keylime's example policy adds an empty vendor_db to the refstate it then prints.
        let mut shown = refstate.clone();
        if let (MbPolicy::Example, Value::Object(m)) = (policy, &mut shown) {
            if RefState::reaches_vendor_db_default(refstate) && !m.contains_key("vendor_db") {
                m.insert("vendor_db".to_owned(), Value::Array(Vec::new()));
            }
        }
        failure.push(Event::new(
            Component::MeasuredBoot,
            &[],
            &format!("policy_{}", policy.name()),
            json!({
                "context": "Boot attestation failed",
                "policy": policy.name(),
                "refstate": pyrepr::repr(&shown, false),
                "reason": rejection.to_string(),
            }),
            true,
        ));
    }
    failure
}

#[cfg(test)]
mod tests;
