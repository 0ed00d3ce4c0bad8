//! Service configuration files: a TOML file, then `<PREFIX><KEY>` environment
//! overrides, then the defaults of the service's `#[serde(default)]` struct. Shared by
//! the registrar and the agent (every service already links this crate).

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
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
        origin,
        message: format!("{}: {}", e.path(), e.inner().message()),
    })
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, str::len) + 1;
    format!("line {line}, column {col}")
}
