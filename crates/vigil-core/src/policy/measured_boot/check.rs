//! The building blocks measured-boot policies are made of: tests over the parsed event
//! log (JSON data shaped as Keylime's parser leaves it) that either pass or say why not.
//!
//! The semantics, and the wording of every reason, are those of Keylime's
//! `mba/elchecking/tests.py`, because the reason is what a failed attestation reports.
//! A reason is English that reads as a sentence after a noun phrase naming the subject
//! ("Event.VariableName is … rather than …"); wrappers prefix the field or element.
//!
//! State lives in a [`Ctx`] made for one evaluation: which once-only tests have run and
//! the values stashed for the checks made after the last event. Sharing a once-only test
//! between two dispatch keys (Keylime registers one object under both spellings of a
//! GUID) is expressed by cloning the node: the clone keeps its id.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::pyrepr::{repr, repr_str, repr_tuple};

/// A compiled Python regular expression, matched with `re.fullmatch`.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Fast(regex::Regex),
    Fancy(fancy_regex::Regex),
}

impl Pattern {
    /// Compiles a Python pattern for full matches; `dotall` is `re.DOTALL`.
    pub(crate) fn new(pattern: &str, dotall: bool) -> Result<Self, String> {
        let rust = crate::policy::runtime::translate_python_regex(pattern);
        let flags = if dotall { "(?s)" } else { "" };
        let anchored = format!("{flags}\\A(?:{rust})\\z");
        match regex::RegexBuilder::new(&anchored)
            .size_limit(16 << 20)
            .build()
        {
            Ok(re) => Ok(Self::Fast(re)),
            Err(fast) => fancy_regex::Regex::new(&anchored)
                .map(Self::Fancy)
                .map_err(|fancy| {
                    let text = fast.to_string();
                    if text.contains("look-around") || text.contains("backreferences") {
                        fancy.to_string()
                    } else {
                        text.lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or_default()
                            .trim()
                            .to_owned()
                    }
                }),
        }
    }

    fn is_full_match(&self, s: &str) -> bool {
        match self {
            Self::Fast(re) => re.is_match(s),
            Self::Fancy(re) => re.is_match(s).unwrap_or(false),
        }
    }
}

/// One test.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    /// Passes everything.
    Accept,
    /// Fails everything with this reason.
    Reject(String),
    /// All must pass; the first failure is the reason.
    And(Vec<Self>),
    /// One must pass; otherwise every reason, bracketed.
    Or(Vec<Self>),
    /// Picks a test by the values of some fields of a dict.
    Dispatch {
        keys: Vec<&'static str>,
        cases: Vec<(Vec<Value>, Self)>,
    },
    /// Applies a test to one field.
    Field {
        name: &'static str,
        test: Box<Self>,
        show_name: bool,
    },
    /// Applies a test to every member of a list.
    Iterate { test: Box<Self>, show_elt: bool },
    /// Applies the n-th test to the n-th member of a list of exactly that length.
    Tuple(Vec<Self>),
    /// Passes only the first time it is run (per evaluation); shared by clones.
    Once { id: usize, test: Box<Self> },
    /// Stashes the subject under a name for [`Self::DelayCheck`] and passes.
    Delay(&'static str),
    /// Empties the stashes and passes.
    DelayInit(&'static [&'static str]),
    /// Tests the dict of stashed lists instead of the subject.
    DelayCheck {
        names: &'static [&'static str],
        test: Box<Self>,
    },
    /// Equals a string.
    StrEq(String),
    /// Fully matches a regular expression (`pattern` is how the reason shows it).
    Regex { re: Pattern, pattern: String },
    /// Has a digest in the approved set (algorithm → digests, in insertion order).
    Digests(Vec<(String, Vec<String>)>),
    /// A UEFI variable of this GUID and name, whose data passes a test.
    Variable {
        guid: String,
        name: (Pattern, String),
        data: Box<Self>,
    },
    /// A list of dicts with exactly these fields that contains every required tuple.
    SupersetOfDicts {
        fields: &'static [&'static str],
        reqs: Vec<Vec<Value>>,
    },
}

/// The mutable state of one evaluation.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    ran: Vec<bool>,
    stash: HashMap<&'static str, Vec<Value>>,
}

/// Hands out ids for once-only tests.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    next_once: usize,
}

impl Builder {
    /// A new once-only test.
    pub(crate) fn once(&mut self, test: Test) -> Test {
        self.next_once += 1;
        Test::Once {
            id: self.next_once - 1,
            test: Box::new(test),
        }
    }

    /// A fresh context for this builder's tests.
    pub(crate) fn ctx(&self) -> Ctx {
        Ctx {
            ran: vec![false; self.next_once],
            stash: HashMap::new(),
        }
    }
}

/// `FieldTest(name, test)`.
pub(crate) fn field(name: &'static str, test: Test) -> Test {
    Test::Field {
        name,
        test: Box::new(test),
        show_name: true,
    }
}

/// `DigestTest`/`DigestsTest` from `{alg: hex}` maps.
pub(crate) fn digests<'a>(good: impl IntoIterator<Item = &'a [(String, String)]>) -> Test {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for digest in good {
        for (alg, hex) in digest {
            match out.iter_mut().find(|(a, _)| a == alg) {
                Some((_, set)) if set.contains(hex) => {}
                Some((_, set)) => set.push(hex.clone()),
                None => out.push((alg.clone(), vec![hex.clone()])),
            }
        }
    }
    Test::Digests(out)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "None",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `str(x)`: strings bare, everything else as `repr`.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => repr(v, false),
    }
}

impl Test {
    /// Empty when `subject` passes, otherwise why not.
    pub(crate) fn why_not(&self, ctx: &mut Ctx, subject: &Value) -> String {
        match self {
            Self::Accept | Self::Delay(_) | Self::DelayInit(_) => {
                match self {
                    Self::Delay(name) => ctx.stash.entry(name).or_default().push(subject.clone()),
                    Self::DelayInit(names) => {
                        for name in *names {
                            ctx.stash.insert(name, Vec::new());
                        }
                    }
                    _ => {}
                }
                String::new()
            }
            Self::Reject(why) => why.clone(),
            Self::And(tests) => tests
                .iter()
                .map(|t| t.why_not(ctx, subject))
                .find(|r| !r.is_empty())
                .unwrap_or_default(),
            Self::Or(tests) => {
                if tests.is_empty() {
                    return "does not pass empty disjunction".to_owned();
                }
                let mut reasons = Vec::with_capacity(tests.len());
                for t in tests {
                    let r = t.why_not(ctx, subject);
                    if r.is_empty() {
                        return r;
                    }
                    reasons.push(r);
                }
                format!("[{}]", reasons.join(", "))
            }
            Self::Dispatch { keys, cases } => {
                let Value::Object(map) = subject else {
                    return "is not a dict".to_owned();
                };
                let mut vals = Vec::with_capacity(keys.len());
                for k in keys {
                    match map.get(*k) {
                        Some(v) => vals.push(v),
                        None => return format!("has no {k}"),
                    }
                }
                match cases
                    .iter()
                    .find(|(kv, _)| kv.iter().zip(&vals).all(|(a, b)| a == *b))
                {
                    Some((_, test)) => test.why_not(ctx, subject),
                    None => {
                        let names: Vec<Value> =
                            keys.iter().map(|k| Value::from(k.to_string())).collect();
                        format!(
                            "has unexpected {} combination {}",
                            repr_tuple(&names, false),
                            repr_tuple(vals, false)
                        )
                    }
                }
            }
            Self::Field {
                name,
                test,
                show_name,
            } => {
                let Value::Object(map) = subject else {
                    return "is not a dict".to_owned();
                };
                let Some(v) = map.get(*name) else {
                    return format!("has no {} field", repr_str(name, true));
                };
                let r = test.why_not(ctx, v);
                if !r.is_empty() && *show_name {
                    format!("{name} {r}")
                } else {
                    r
                }
            }
            Self::Iterate { test, show_elt } => {
                let Value::Array(items) = subject else {
                    return "is not a list".to_owned();
                };
                for (i, item) in items.iter().enumerate() {
                    let r = test.why_not(ctx, item);
                    if !r.is_empty() {
                        return if *show_elt {
                            format!("{} {r}", repr(item, true))
                        } else {
                            format!("[{i}] {r}")
                        };
                    }
                }
                String::new()
            }
            Self::Tuple(tests) => {
                let Value::Array(items) = subject else {
                    return "is not a list".to_owned();
                };
                let (n, m) = (items.len(), tests.len());
                if n > m {
                    return format!(" is longer ({n}) than the applicable tests ({m})");
                }
                if n < m {
                    return format!(" is shorter ({n}) than the applicable tests ({m})");
                }
                for (i, (t, item)) in tests.iter().zip(items).enumerate() {
                    let r = t.why_not(ctx, item);
                    if !r.is_empty() {
                        return format!("[{i}] {r}");
                    }
                }
                String::new()
            }
            Self::Once { id, test } => {
                if ctx.ran.get(*id).copied().unwrap_or(false) {
                    return "test was already run once".to_owned();
                }
                if let Some(flag) = ctx.ran.get_mut(*id) {
                    *flag = true;
                }
                test.why_not(ctx, subject)
            }
            Self::DelayCheck { names, test } => {
                let mut delayed = Map::new();
                for name in *names {
                    let v = ctx
                        .stash
                        .get(name)
                        .map_or(Value::Null, |l| Value::Array(l.clone()));
                    delayed.insert((*name).to_owned(), v);
                }
                test.why_not(ctx, &Value::Object(delayed))
            }
            Self::StrEq(expected) => match subject {
                Value::String(s) if s == expected => String::new(),
                Value::String(_) => format!("is not {}", repr_str(expected, true)),
                _ => "is not a str".to_owned(),
            },
            Self::Regex { re, pattern } => match subject {
                Value::String(s) if re.is_full_match(s) => String::new(),
                Value::String(_) => format!("does not match {pattern}"),
                _ => "is not a str".to_owned(),
            },
            Self::Digests(good) => digests_why_not(good, subject),
            Self::Variable { guid, name, data } => variable_why_not(ctx, guid, name, data, subject),
            Self::SupersetOfDicts { fields, reqs } => superset_why_not(fields, reqs, subject),
        }
    }
}

fn good_repr(good: &[(String, Vec<String>)]) -> String {
    let parts: Vec<String> = good
        .iter()
        .map(|(alg, set)| {
            let items: Vec<String> = set.iter().map(|h| repr_str(h, false)).collect();
            let set = if items.is_empty() {
                "set()".to_owned()
            } else {
                format!("{{{}}}", items.join(", "))
            };
            format!("{}: {set}", repr_str(alg, false))
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn digests_why_not(good: &[(String, Vec<String>)], subject: &Value) -> String {
    let Value::Object(map) = subject else {
        return "is not a dict".to_owned();
    };
    let Some(list) = map.get("Digests") else {
        return "has no Digests".to_owned();
    };
    let Value::Array(list) = list else {
        return "Digests is not a list".to_owned();
    };
    for (i, d) in list.iter().enumerate() {
        let Value::Object(d) = d else {
            return format!("Digests[{i}] is {}, not a dict", repr(d, false));
        };
        let Some(alg) = d.get("AlgorithmId") else {
            return format!("digest {i} has no AlgorithmId");
        };
        let Value::String(alg) = alg else {
            return format!(
                "Digests[{i}].AlgorithmId is {}, not a str",
                repr(alg, false)
            );
        };
        let Some(hash) = d.get("Digest") else {
            return format!("digest {i} has no Digest");
        };
        let Value::String(hash) = hash else {
            return format!("Digests[{i}].Digest is {}, not a str", repr(hash, false));
        };
        if let Some((_, set)) = good.iter().find(|(a, _)| a == alg) {
            if set.contains(hash) {
                return String::new();
            }
        }
    }
    format!("has no digest approved by {}", good_repr(good))
}

fn variable_why_not(
    ctx: &mut Ctx,
    guid: &str,
    name: &(Pattern, String),
    data: &Test,
    subject: &Value,
) -> String {
    let Value::Object(map) = subject else {
        return "is not a dict".to_owned();
    };
    let Some(evt) = map.get("Event") else {
        return "has no Event field".to_owned();
    };
    let Value::Object(evt) = evt else {
        return "Event is not a dict".to_owned();
    };
    let Some(var) = evt.get("VariableName") else {
        return "Event has no VariableName field".to_owned();
    };
    if var.as_str() != Some(guid) {
        return format!("Event.VariableName is {} rather than {guid}", py_str(var));
    }
    let Some(unicode) = evt.get("UnicodeName") else {
        return "Event has no UnicodeName field".to_owned();
    };
    let Some(value) = evt.get("VariableData") else {
        return "Event has no VariableData field".to_owned();
    };
    let Value::String(unicode) = unicode else {
        return "Event.UnicodeName is not a str".to_owned();
    };
    let (re, pattern) = name;
    if !re.is_full_match(unicode) {
        return format!("Event.UnicodeName, {unicode}, does not match {pattern}");
    }
    data.why_not(ctx, value)
}

fn superset_why_not(fields: &[&str], reqs: &[Vec<Value>], subject: &Value) -> String {
    let Value::Array(items) = subject else {
        return "is not a list".to_owned();
    };
    let mut actual: Vec<Vec<&Value>> = Vec::with_capacity(items.len());
    let names: Vec<Value> = fields.iter().map(|f| Value::from(f.to_string())).collect();
    for item in items {
        let Value::Object(m) = item else {
            return format!("member {} is not a dict", py_str(item));
        };
        if m.len() != fields.len() || !fields.iter().all(|f| m.contains_key(*f)) {
            return format!(
                "member {} does not have the right set of field names {}",
                repr(item, false),
                repr_tuple(&names, false)
            );
        }
        actual.push(fields.iter().filter_map(|f| m.get(*f)).collect());
    }
    let missing: Vec<String> = reqs
        .iter()
        .filter(|req| !actual.iter().any(|a| a.iter().copied().eq(req.iter())))
        .map(|req| repr_tuple(req, false))
        .collect();
    if missing.is_empty() {
        return String::new();
    }
    format!(
        "lacks {} combinations {{{}}}",
        repr_tuple(&names, false),
        missing.join(", ")
    )
}

/// Whether a JSON value is true in Python (`bool(x)` after `json.load`).
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's name for a JSON value's type, as `type(x)` prints it.
pub(crate) fn python_type(v: &Value) -> String {
    match v {
        Value::Null => "<class 'NoneType'>".to_owned(),
        v => format!("<class '{}'>", type_name(v)),
    }
}
