//! Exclude lists: Python regular expressions, applied as Keylime applies them.
//!
//! Keylime joins every exclude pattern into one expression, `(p1)|(p2)|…`, and tests each
//! path with Python's `re.match`: anchored at the start of the path, not required to
//! reach its end. [`ExcludeMatcher`] does the same with one compiled automaton, after
//! translating the few bits of Python syntax Rust's `regex` spells differently.
//! Patterns that need look-around or backreferences (which `regex` cannot run in linear
//! time) are handed to `fancy-regex` instead of being refused.
//!
//! Nearly every path of a measurement list is *not* excluded, and most exclude patterns
//! begin with a literal directory (`^/tmp/`, `/var/log/`). So before the automaton runs,
//! a [`StartFilter`] built from the pattern's own prefix literals (`regex-syntax`'s
//! extractor, whose contract is that every match begins with one of them) turns most
//! paths away after looking at their first bytes. It only ever answers "cannot match";
//! the regex still decides every other path, so the semantics are the regex's.

/// A pattern that compiles neither as translated for `regex` nor with `fancy-regex`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exclude pattern {index} '{pattern}' is not a valid regular expression: {reason}")]
pub struct ExcludeError {
    /// Position of the pattern in the list (0-based).
    pub index: usize,
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The compiled exclude list.
#[derive(Debug, Clone)]
pub struct ExcludeMatcher {
    engine: Engine,
    /// `None` when some match could begin with anything (or the prefixes are unknown).
    starts: Option<StartFilter>,
}

#[derive(Debug, Clone)]
enum Engine {
    /// Every pattern runs on `regex` (linear time, the normal case).
    Fast(regex::Regex),
    /// Some pattern needs look-around or backreferences.
    Fancy(fancy_regex::Regex),
}

impl ExcludeMatcher {
    /// Compiles `patterns`, or `None` for an empty list (Keylime then excludes nothing).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Option<Self>, ExcludeError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut translated = Vec::with_capacity(patterns.len());
        let mut fancy = false;
        for (index, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.as_ref();
            let rust = translate(pattern);
            // Each pattern alone first, so an error names the pattern at fault.
            if let Err(fast_err) = regex::Regex::new(&rust) {
                fancy_regex::Regex::new(&rust).map_err(|fancy_err| ExcludeError {
                    index,
                    pattern: pattern.to_owned(),
                    reason: if is_unsupported_feature(&fast_err) {
                        fancy_err.to_string()
                    } else {
                        first_line(&fast_err.to_string())
                    },
                })?;
                fancy = true;
            }
            translated.push(rust);
        }
        let combined = format!("\\A(?:({}))", translated.join(")|("));
        let whole = |reason: String| ExcludeError {
            index: 0,
            pattern: patterns
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(" | "),
            reason: format!("the combined exclude list does not compile: {reason}"),
        };
        Ok(Some(if fancy {
            Self {
                engine: Engine::Fancy(
                    fancy_regex::Regex::new(&combined).map_err(|e| whole(e.to_string()))?,
                ),
                starts: None,
            }
        } else {
            Self {
                engine: Engine::Fast(
                    regex::RegexBuilder::new(&combined)
                        .size_limit(64 << 20)
                        .build()
                        .map_err(|e| whole(first_line(&e.to_string())))?,
                ),
                starts: StartFilter::new(&combined),
            }
        }))
    }

    /// True when the path is excluded (Python `re.match` of the combined pattern).
    #[inline]
    pub fn is_match(&self, path: &str) -> bool {
        if self.starts.as_ref().is_some_and(|f| !f.may_match(path)) {
            return false;
        }
        match &self.engine {
            Engine::Fast(re) => re.is_match(path),
            // A pattern that backtracks past fancy-regex's limit cannot prove a match.
            Engine::Fancy(re) => re.is_match(path).unwrap_or(false),
        }
    }
}

/// The set of literals every match must start with, checked on a path's first bytes.
#[derive(Clone)]
struct StartFilter {
    /// First bytes of the one-byte literals: a path starting with one may match.
    single: [u64; 4],
    /// First two bytes of the longer literals, as a 65,536-bit set.
    pairs: Box<[u64; 1024]>,
    /// The longer literals, sorted (those sharing two first bytes are adjacent).
    long: Vec<Box<[u8]>>,
}

impl StartFilter {
    /// The filter for a pattern `regex` compiles, or `None` when a match may begin with
    /// anything (an empty or unbounded prefix set).
    fn new(pattern: &str) -> Option<Self> {
        use regex_syntax::hir::literal::{ExtractKind, Extractor};
        // The same parser and default options `regex::Regex::new` uses.
        let hir = regex_syntax::ParserBuilder::new()
            .build()
            .parse(pattern)
            .ok()?;
        let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
        let mut filter = Self {
            single: [0; 4],
            pairs: Box::new([0; 1024]),
            long: Vec::new(),
        };
        for lit in seq.literals()? {
            match *lit.as_bytes() {
                [] => return None,
                [b] => set_bit(&mut filter.single, usize::from(b)),
                [b0, b1, ..] => {
                    set_bit(&mut filter.pairs[..], pair(b0, b1));
                    filter.long.push(lit.as_bytes().into());
                }
            }
        }
        filter.long.sort_unstable();
        filter.long.dedup();
        Some(filter)
    }

    /// False when no match can start at the beginning of `path`.
    #[inline]
    fn may_match(&self, path: &str) -> bool {
        let b = path.as_bytes();
        let (Some(&b0), b1) = (b.first(), b.get(1)) else {
            return false; // every literal is non-empty
        };
        if has_bit(&self.single, usize::from(b0)) {
            return true;
        }
        let Some(&b1) = b1 else {
            return false;
        };
        if !has_bit(&self.pairs[..], pair(b0, b1)) {
            return false;
        }
        let key = [b0, b1];
        let from = self.long.partition_point(|l| l.get(..2) < Some(&key[..]));
        self.long
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|l| l.get(..2) == Some(&key[..]))
            .any(|l| b.starts_with(l))
    }
}

impl std::fmt::Debug for StartFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartFilter")
            .field("long", &self.long.len())
            .finish_non_exhaustive()
    }
}

fn pair(b0: u8, b1: u8) -> usize {
    usize::from(b0) << 8 | usize::from(b1)
}

fn set_bit(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

#[inline]
fn has_bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
}

fn is_unsupported_feature(err: &regex::Error) -> bool {
    let text = err.to_string();
    text.contains("look-around") || text.contains("backreferences")
}

fn first_line(text: &str) -> String {
    // regex's messages draw the pattern with a caret over several lines; keep the gist.
    text.lines()
        .filter(|l| l.trim_start().starts_with("error:"))
        .map(|l| l.trim().trim_start_matches("error:").trim().to_owned())
        .next()
        .unwrap_or_else(|| text.lines().last().unwrap_or_default().trim().to_owned())
}

/// Rewrites Python `re` syntax into the equivalent Rust syntax where the two differ:
/// `\Z` → `\z`, `(?P=name)` → `\k<name>`, a `{` that does not start a valid quantifier
/// (a literal in Python, an error in Rust) and `{,n}` (Python's `{0,n}`), and the
/// characters that are literal inside a Python class but special inside a Rust one
/// (`[`, `&&`, `~~`, `--`).
pub fn translate(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    let mut class_start = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => {
                match chars.get(i + 1) {
                    Some('Z') => out.push_str("\\z"),
                    Some(&next) => {
                        out.push('\\');
                        out.push(next);
                    }
                    None => out.push('\\'),
                }
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                class_start = i;
                out.push('[');
                // `[]` and `[^]` start a class whose first member is a literal `]`.
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i + 1) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            ']' if in_class && i > class_start => {
                in_class = false;
                out.push(']');
            }
            '[' | '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            '-' if in_class && chars.get(i + 1) == Some(&'-') => out.push_str("\\-"),
            '(' if !in_class && starts_with(&chars, i, "(?P=") => {
                let name_end = chars[i..].iter().position(|&c| c == ')').map(|p| i + p);
                if let Some(end) = name_end {
                    let name: String = chars[i + 4..end].iter().collect();
                    out.push_str(&format!("\\k<{name}>"));
                    i = end + 1;
                    continue;
                }
                out.push('(');
            }
            '{' if !in_class => match quantifier_len(&chars, i) {
                Some((len, rewritten)) => {
                    out.push_str(&rewritten);
                    i += len;
                    continue;
                }
                None => out.push_str("\\{"),
            },
            '}' if !in_class => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

fn starts_with(chars: &[char], at: usize, prefix: &str) -> bool {
    prefix
        .chars()
        .enumerate()
        .all(|(k, p)| chars.get(at + k) == Some(&p))
}

/// When `chars[at]` opens a valid Python quantifier (`{m}`, `{m,}`, `{m,n}`, `{,n}`),
/// returns its length and its Rust spelling.
fn quantifier_len(chars: &[char], at: usize) -> Option<(usize, String)> {
    let close = chars.get(at + 1..)?.iter().position(|&c| c == '}')? + at + 1;
    let body: String = chars.get(at + 1..close)?.iter().collect();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let rewritten = match body.split_once(',') {
        None if digits(&body) => format!("{{{body}}}"),
        Some((lo, hi)) if (digits(lo) || lo.is_empty()) && (digits(hi) || hi.is_empty()) => {
            if lo.is_empty() && hi.is_empty() {
                return None; // `{,}` is a literal in Python
            }
            let lo = if lo.is_empty() { "0" } else { lo };
            format!("{{{lo},{hi}}}")
        }
        _ => return None,
    };
    Some((close - at + 1, rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(p: &[&str]) -> ExcludeMatcher {
        ExcludeMatcher::new(p).unwrap().unwrap()
    }

    #[test]
    fn anchored_at_start_not_full_match() {
        let m = matcher(&["/tmp/.*", ".*\\.pyc$", "/proc/[0-9]+/", "boot_aggregate"]);
        assert!(m.is_match("/tmp/x"));
        assert!(!m.is_match("/var/tmp/x"), "re.match anchors at the start");
        assert!(m.is_match("/usr/lib/python3/x.pyc"));
        assert!(!m.is_match("/usr/lib/python3/x.pyc.bak"));
        assert!(m.is_match("/proc/12/status"));
        assert!(
            m.is_match("boot_aggregate_extra"),
            "prefix match, as Python"
        );
        assert!(!m.is_match("/usr/bin/ls"));
        assert!(ExcludeMatcher::new::<&str>(&[]).unwrap().is_none());
    }

    #[test]
    fn keylime_style_patterns() {
        let m = matcher(&[
            "^/var/log/",
            "/opt/app+tools/lib/.*\\.so",
            "/usr/share/doc/",
        ]);
        assert!(m.is_match("/var/log/syslog"));
        assert!(m.is_match("/opt/apptools/lib/x.so"), "+ is a quantifier");
        assert!(!m.is_match("/opt/app+tools/lib/x.so"));
        assert!(m.is_match("/usr/share/doc/README"));
    }

    #[test]
    fn python_syntax_is_translated() {
        assert_eq!(translate("/x\\Z"), "/x\\z");
        assert_eq!(translate("a{2,}b{,3}"), "a{2,}b{0,3}");
        assert_eq!(translate("/dir{name}"), "/dir\\{name\\}");
        assert_eq!(translate("[[]"), "[\\[]");
        assert_eq!(translate("[]a]"), "[\\]a]");
        assert_eq!(translate("[a&&b]"), "[a\\&\\&b]");
        let m = matcher(&["/etc/x\\Z", "/dir{name}", "/a[[]b"]);
        assert!(m.is_match("/etc/x"));
        assert!(!m.is_match("/etc/xy"));
        assert!(m.is_match("/dir{name}/f"));
        assert!(m.is_match("/a[b"));
    }

    #[test]
    fn look_around_and_backreferences_use_fancy_regex() {
        let m = matcher(&["/tmp/(?!keep)", "/srv/(?P<d>[a-z]+)/(?P=d)/"]);
        assert!(matches!(m.engine, Engine::Fancy(_)));
        assert!(m.is_match("/tmp/scratch"));
        assert!(!m.is_match("/tmp/keepme"));
        assert!(m.is_match("/srv/abc/abc/x"));
        assert!(!m.is_match("/srv/abc/abd/x"));
    }

    #[test]
    fn start_filter_never_changes_a_verdict() {
        let lists: &[&[&str]] = &[
            &["^/tmp/", "/var/log/.*", "boot_aggregate", "/proc/[0-9]+/"],
            &["(?i)/TMP/", "/usr/lib/python3.*\\.pyc$", "x", "/é/"],
            &["[/x]tmp/", "(/usr|/opt)/lib/", "a?b", "/s{2,}", "/etc/x\\Z"],
            &["/tmp/", ".*\\.pyc"],
            &[""],
            &["^$"],
            &["(?m)^/tmp/", "\\b/var/"],
        ];
        let paths = [
            "",
            "/",
            "x",
            "b",
            "ab",
            "/t",
            "/tmp",
            "/tmp/",
            "/TmP/x",
            "/var/log/syslog",
            "/var/lo",
            "boot_aggregate",
            "boot_aggregatex",
            "/proc/1/x",
            "/proc/x/",
            "/usr/lib/python3/x.pyc",
            "/usr/lib/python3/x.py",
            "/é/x",
            "/É/x",
            "xtmp/a",
            "/opt/lib/x",
            "/usr/lib/x",
            "/sss",
            "/s",
            "/etc/x",
            "/etc/xy",
            "bb",
            "\n/tmp/",
        ];
        for list in lists {
            let m = matcher(list);
            let plain = ExcludeMatcher {
                engine: m.engine.clone(),
                starts: None,
            };
            for p in paths {
                assert_eq!(m.is_match(p), plain.is_match(p), "{list:?} on {p:?}");
            }
        }
        // Lists starting with literals get a filter; ones that can start anywhere do not.
        assert!(matcher(&["^/tmp/", "/var/log/"]).starts.is_some());
        assert!(matcher(&["/tmp/", "x"]).starts.is_some());
        assert!(matcher(&[".*\\.pyc"]).starts.is_none());
        assert!(matcher(&[""]).starts.is_none());
        let m = matcher(&["^/tmp/excluded0/", "^/tmp/excluded1/"]);
        let f = m.starts.as_ref().unwrap();
        assert!(!f.may_match("/usr/bin/ls"));
        assert!(!f.may_match("/tmp/other"));
        assert!(f.may_match("/tmp/excluded1/x"));
    }

    #[test]
    fn broken_patterns_are_named() {
        let err = ExcludeMatcher::new(&["/ok/", "/bad/(unclosed"]).unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(err.pattern, "/bad/(unclosed");
        assert!(
            err.to_string()
                .contains("exclude pattern 1 '/bad/(unclosed'"),
            "{err}"
        );
        assert!(ExcludeMatcher::new(&["*x"]).is_err());
    }
}
