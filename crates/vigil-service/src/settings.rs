//! Service configuration files: a TOML file, then `<PREFIX><KEY>` environment
//! overrides, then the defaults of the service's `#[serde(default)]` struct. One loader
//! for the registrar, the verifier and the agent, so a key is read, typed and named in
//! errors the same way by every service.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration is unusable. Each variant names the file, variable or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or a key is unknown or has the wrong type.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file, or "environment".
        origin: String,
        /// toml's message (it names the key).
        message: String,
    },
}

/// How environment values are typed.
#[derive(Debug, Clone, Copy)]
pub struct EnvKeys<'a> {
    /// The variable prefix, e.g. `VIGIL_REGISTRAR_`.
    pub prefix: &'a str,
    /// Keys whose value is a comma-separated list.
    pub lists: &'a [&'a str],
    /// Keys whose value is a number or a boolean (TOML syntax), not a string.
    pub scalars: &'a [&'a str],
}

/// Reads `file` (if any), applies the overrides in `env` (pairs of name and value;
/// pass `std::env::vars()`), and deserializes the result.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    keys: EnvKeys<'_>,
) -> Result<T, ConfigError> {
    load_checked(file, env, keys, |_| Ok(()))
}

/// [`load`], then `check` on the result: a value that parses but means nothing (an
/// unknown policy name, inconsistent severities) fails at start-up, its message
/// (which names the key) reported with the same origin as a type error.
pub fn load_checked<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    keys: EnvKeys<'_>,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, ConfigError> {
    let (origin, text) = match file {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
        ),
        None => ("defaults".to_owned(), String::new()),
    };
    let invalid = |origin: &str, e: toml::de::Error| ConfigError::Invalid {
        origin: origin.to_owned(),
        message: e.message().to_owned()
            + &e.span().map_or(String::new(), |s| {
                format!(" (at {})", line_col(&text, s.start))
            }),
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| invalid(&origin, e))?;
    let mut from_env = false;
    for (name, value) in env {
        let Some(key) = name.strip_prefix(keys.prefix) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let value = if keys.lists.contains(&key.as_str()) {
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            )
        } else if keys.scalars.contains(&key.as_str()) {
            // A number or boolean in TOML syntax; anything else stays a string, so the
            // type error below names the variable.
            toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value))
        } else {
            toml::Value::String(value)
        };
        table.insert(key, value);
        from_env = true;
    }
    let origin = if from_env {
        format!("{origin} with {}* overrides", keys.prefix)
    } else {
        origin
    };
    let value: T = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        ConfigError::Invalid {
            origin: origin.clone(),
            message: format!("{}: {}", e.path(), e.inner().message()),
        }
    })?;
    check(&value).map_err(|message| ConfigError::Invalid { origin, message })?;
    Ok(value)
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, str::len) + 1;
    format!("line {line}, column {col}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        port: u16,
        names: Vec<String>,
        mode: String,
    }

    impl Default for Demo {
        fn default() -> Self {
            Self {
                port: 1,
                names: Vec::new(),
                mode: "a".into(),
            }
        }
    }

    const KEYS: EnvKeys<'static> = EnvKeys {
        prefix: "DEMO_",
        lists: &["names"],
        scalars: &["port"],
    };

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn file_then_environment_then_check() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("demo.toml");
        std::fs::write(&file, "port = 7\nmode = \"b\"\n").unwrap();
        let d: Demo = load(
            Some(&file),
            env(&[("DEMO_NAMES", "x, ,y"), ("OTHER_PORT", "9")]),
            KEYS,
        )
        .unwrap();
        assert_eq!(
            (d.port, d.names, d.mode.as_str()),
            (7, vec!["x".into(), "y".into()], "b")
        );

        let e = load::<Demo>(None, env(&[("DEMO_PORT", "x")]), KEYS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "defaults with DEMO_* overrides: port: invalid type: string \"x\", expected u16"
        );
        let check = |d: &Demo| match d.mode.as_str() {
            "a" | "b" => Ok(()),
            other => Err(format!("mode: unknown mode '{other}'")),
        };
        let e =
            load_checked::<Demo>(Some(&file), env(&[("DEMO_MODE", "z")]), KEYS, check).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} with DEMO_* overrides: mode: unknown mode 'z'",
                file.display()
            )
        );
        std::fs::write(&file, "port = \n").unwrap();
        let e = load::<Demo>(Some(&file), env(&[]), KEYS).unwrap_err();
        assert!(e.to_string().contains("(at line 1, column"), "{e}");
    }
}
