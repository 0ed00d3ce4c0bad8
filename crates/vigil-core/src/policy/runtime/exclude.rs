//! Exclude lists: Python regular expressions, applied as Keylime applies them.
//!
//! Keylime joins every exclude pattern into one expression, `(p1)|(p2)|…`, and tests each
//! path with Python's `re.match`: anchored at the start of the path, not required to
//! reach its end. [`ExcludeMatcher`] does the same with one compiled automaton, after
//! translating the few bits of Python syntax Rust's `regex` spells differently.
//! Patterns that need look-around or backreferences (which `regex` cannot run in linear
//! time) are handed to `fancy-regex` instead of being refused.

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
pub enum ExcludeMatcher {
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
            Self::Fancy(fancy_regex::Regex::new(&combined).map_err(|e| whole(e.to_string()))?)
        } else {
            Self::Fast(
                regex::RegexBuilder::new(&combined)
                    .size_limit(64 << 20)
                    .build()
                    .map_err(|e| whole(first_line(&e.to_string())))?,
            )
        }))
    }

    /// True when the path is excluded (Python `re.match` of the combined pattern).
    #[inline]
    pub fn is_match(&self, path: &str) -> bool {
        match self {
            Self::Fast(re) => re.is_match(path),
            // A pattern that backtracks past fancy-regex's limit cannot prove a match.
            Self::Fancy(re) => re.is_match(path).unwrap_or(false),
        }
    }
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
        assert!(matches!(m, ExcludeMatcher::Fancy(_)));
        assert!(m.is_match("/tmp/scratch"));
        assert!(!m.is_match("/tmp/keepme"));
        assert!(m.is_match("/srv/abc/abc/x"));
        assert!(!m.is_match("/srv/abc/abd/x"));
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
