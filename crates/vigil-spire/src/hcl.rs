//! The plugins' configuration as SPIRE hands it over: HCL text. Only what the plugins
//! need is read — `key = "string"` lines, `#` and `//` comments, blank lines; anything
//! else is refused with its line number, so a typo is not silently ignored.

use std::collections::BTreeMap;

/// Why the configuration text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HclError {
    /// A line that is not `key = "value"`.
    #[error("line {line}: expected key = \"value\", found {text:?}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A key this plugin does not know.
    #[error("unknown setting {0:?}")]
    Unknown(String),
    /// A required key is missing.
    #[error("missing setting {0:?}")]
    Missing(&'static str),
    /// The text is longer than [`MAX_HCL`].
    #[error("configuration of {0} bytes is too large")]
    TooLarge(usize),
}

/// The longest configuration accepted.
pub const MAX_HCL: usize = 64 << 10;

/// The settings of `text`, each key one of `known`.
pub fn parse(text: &str, known: &[&str]) -> Result<BTreeMap<String, String>, HclError> {
    if text.len() > MAX_HCL {
        return Err(HclError::TooLarge(text.len()));
    }
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let syntax = || HclError::Syntax {
            line: i + 1,
            text: raw.to_owned(),
        };
        let (key, value) = line.split_once('=').ok_or_else(syntax)?;
        let key = key.trim();
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.contains('"'))
            .ok_or_else(syntax)?;
        if !known.contains(&key) {
            return Err(HclError::Unknown(key.to_owned()));
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strings_and_refuses_the_rest() {
        let text = "# Vigil\nsocket_path = \"/run/vigil/agent.sock\"\n\n// more\n";
        let m = parse(text, &["socket_path"]).unwrap();
        assert_eq!(m["socket_path"], "/run/vigil/agent.sock");
        assert_eq!(
            parse("x = \"1\"", &["socket_path"]),
            Err(HclError::Unknown("x".into()))
        );
        assert!(matches!(
            parse("socket_path = 3", &["socket_path"]),
            Err(HclError::Syntax { line: 1, .. })
        ));
    }
}
