//! `vigil config import-keylime`: Keylime's configuration files turned into Vigil's, so
//! that an operator switching keeps their settings. Keylime's Python services write
//! INI files (`verifier.conf`, `registrar.conf`, `tenant.conf`) and its agent a TOML
//! one (`agent.conf`); Vigil's services read flat TOML. Each Keylime option either
//! maps to one Vigil key (a table below) or is named as not carried over, on the
//! terminal and in a comment at the top of the file written, so nothing is dropped
//! silently.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

/// Configuration files.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Reads Keylime's verifier.conf, registrar.conf, tenant.conf and agent.conf from
    /// DIR and writes verifier.toml, registrar.toml, tenant.toml and agent.toml into
    /// OUTDIR, naming every option that has no Vigil equivalent.
    ImportKeylime(ImportArgs),
}

/// `vigil config import-keylime DIR --out OUTDIR`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The directory holding Keylime's configuration files (/etc/keylime).
    dir: PathBuf,
    /// The directory the Vigil files are written into (created if missing).
    #[arg(long, value_name = "OUTDIR")]
    out: PathBuf,
}

/// Runs a `vigil config` command.
pub(crate) fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::ImportKeylime(args) => import(&args),
    }
}

/// How a Keylime value becomes a Vigil one.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A string, kept as written.
    Str,
    /// An IP address (Vigil's services bind addresses, not names).
    Ip,
    /// One of the values Vigil knows.
    OneOf(&'static [&'static str]),
    /// A path or name whose Keylime value `default`, `generate` or empty means the
    /// service's own default, which Vigil's default matches: then no key is written.
    Path,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// `True`/`False` (Python) or `true`/`false` (TOML).
    Bool,
    /// A list: Python or JSON list syntax, or comma-separated; `default` or empty
    /// leaves Vigil's default.
    List,
    /// JSON (the verifier's `severity_policy`), written as TOML.
    Json,
    /// A database URL: Keylime's `sqlite` (its default file) leaves Vigil's default,
    /// which is the same file name under the state directory; SQLAlchemy's
    /// `postgresql+driver://` loses its driver.
    Database,
}

/// One Keylime option Vigil has: (Keylime section, Keylime option, Vigil file, Vigil key, kind).
type Rule = (&'static str, &'static str, Target, &'static str, Kind);

/// The files Vigil reads, each from one Keylime file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Verifier,
    Registrar,
    Tenant,
    Agent,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Verifier => "verifier",
            Self::Registrar => "registrar",
            Self::Tenant => "tenant",
            Self::Agent => "agent",
        }
    }
}

use Kind::{Bool, Database, Float, Int, Ip, Json, List, OneOf, Path as P, Str};
use Target::{Agent, Registrar, Tenant, Verifier};

/// The options Vigil carries over. `version` (of the file format) is not an option.
const RULES: &[Rule] = &[
    ("verifier", "uuid", Verifier, "uuid", Str),
    ("verifier", "ip", Verifier, "ip", Ip),
    ("verifier", "port", Verifier, "port", Int),
    (
        "verifier",
        "enable_agent_mtls",
        Verifier,
        "enable_agent_mtls",
        Bool,
    ),
    ("verifier", "tls_dir", Verifier, "tls_dir", P),
    ("verifier", "server_key", Verifier, "server_key", P),
    ("verifier", "server_cert", Verifier, "server_cert", P),
    (
        "verifier",
        "trusted_client_ca",
        Verifier,
        "trusted_client_ca",
        List,
    ),
    ("verifier", "client_key", Verifier, "client_key", P),
    ("verifier", "client_cert", Verifier, "client_cert", P),
    (
        "verifier",
        "database_url",
        Verifier,
        "database_url",
        Database,
    ),
    (
        "verifier",
        "exponential_backoff",
        Verifier,
        "exponential_backoff",
        Bool,
    ),
    (
        "verifier",
        "retry_interval",
        Verifier,
        "retry_interval",
        Float,
    ),
    ("verifier", "max_retries", Verifier, "max_retries", Int),
    (
        "verifier",
        "quote_interval",
        Verifier,
        "quote_interval",
        Float,
    ),
    (
        "verifier",
        "max_upload_size",
        Verifier,
        "max_upload_size",
        Int,
    ),
    (
        "verifier",
        "request_timeout",
        Verifier,
        "request_timeout",
        Float,
    ),
    (
        "verifier",
        "measured_boot_policy_name",
        Verifier,
        "measured_boot_policy_name",
        OneOf(&["accept-all", "reject-all", "example"]),
    ),
    (
        "verifier",
        "measured_boot_evaluate",
        Verifier,
        "measured_boot_evaluate",
        OneOf(&["once", "always"]),
    ),
    (
        "verifier",
        "severity_labels",
        Verifier,
        "severity_labels",
        List,
    ),
    (
        "verifier",
        "severity_policy",
        Verifier,
        "severity_policy",
        Json,
    ),
    (
        "verifier",
        "ignore_tomtou_errors",
        Verifier,
        "ignore_tomtou_errors",
        Bool,
    ),
    (
        "verifier",
        "require_allow_list_signatures",
        Verifier,
        "require_allow_list_signatures",
        Bool,
    ),
    (
        "revocations",
        "enabled_revocation_notifications",
        Verifier,
        "enabled_revocation_notifications",
        List,
    ),
    ("revocations", "webhook_url", Verifier, "webhook_url", Str),
    ("registrar", "ip", Registrar, "ip", Ip),
    ("registrar", "port", Registrar, "port", Int),
    ("registrar", "tls_port", Registrar, "tls_port", Int),
    ("registrar", "tls_dir", Registrar, "tls_dir", P),
    ("registrar", "server_key", Registrar, "server_key", P),
    ("registrar", "server_cert", Registrar, "server_cert", P),
    (
        "registrar",
        "trusted_client_ca",
        Registrar,
        "trusted_client_ca",
        List,
    ),
    (
        "registrar",
        "database_url",
        Registrar,
        "database_url",
        Database,
    ),
    (
        "registrar",
        "malformed_cert_action",
        Registrar,
        "malformed_cert_action",
        OneOf(&["warn", "reject", "ignore"]),
    ),
    // Keylime's tenant checks EK certificates; Vigil's registrar does.
    (
        "tenant",
        "require_ek_cert",
        Registrar,
        "require_ek_cert",
        Bool,
    ),
    ("tenant", "tpm_cert_store", Registrar, "tpm_cert_store", P),
    ("tenant", "verifier_ip", Tenant, "verifier_ip", Str),
    ("tenant", "verifier_port", Tenant, "verifier_port", Int),
    ("tenant", "registrar_ip", Tenant, "registrar_ip", Str),
    ("tenant", "registrar_port", Tenant, "registrar_port", Int),
    ("tenant", "tls_dir", Tenant, "tls_dir", P),
    (
        "tenant",
        "exponential_backoff",
        Tenant,
        "exponential_backoff",
        Bool,
    ),
    ("tenant", "retry_interval", Tenant, "retry_interval", Float),
    ("tenant", "max_retries", Tenant, "max_retries", Int),
    ("tenant", "request_timeout", Tenant, "timeout", Int),
    ("agent", "uuid", Agent, "uuid", Str),
    ("agent", "ip", Agent, "ip", Ip),
    ("agent", "port", Agent, "port", Int),
    ("agent", "contact_ip", Agent, "contact_ip", Ip),
    ("agent", "contact_port", Agent, "contact_port", Int),
    ("agent", "registrar_ip", Agent, "registrar_ip", Ip),
    ("agent", "registrar_port", Agent, "registrar_port", Int),
    ("agent", "keylime_dir", Agent, "state_dir", P),
    (
        "agent",
        "trusted_client_ca",
        Agent,
        "trusted_client_ca",
        List,
    ),
    ("agent", "server_cert", Agent, "server_cert", P),
    ("agent", "server_key", Agent, "server_key", P),
    (
        "agent",
        "enable_agent_mtls",
        Agent,
        "enable_agent_mtls",
        Bool,
    ),
    ("agent", "tpm_hash_alg", Agent, "tpm_hash_alg", Str),
    (
        "agent",
        "tpm_encryption_alg",
        Agent,
        "tpm_encryption_alg",
        Str,
    ),
    ("agent", "tpm_signing_alg", Agent, "tpm_signing_alg", Str),
    ("agent", "ek_handle", Agent, "ek_handle", P),
    ("agent", "ima_ml_path", Agent, "ima_ml_path", P),
    (
        "agent",
        "measuredboot_ml_path",
        Agent,
        "measuredboot_ml_path",
        P,
    ),
    ("agent", "payload_script", Agent, "payload_script", Str),
    (
        "agent",
        "enable_insecure_payload",
        Agent,
        "enable_insecure_payload",
        Bool,
    ),
    ("agent", "revocation_cert", Agent, "revocation_cert", P),
    (
        "agent",
        "revocation_actions",
        Agent,
        "revocation_actions",
        List,
    ),
    (
        "agent",
        "revocation_actions_dir",
        Agent,
        "revocation_actions_dir",
        P,
    ),
    (
        "agent",
        "allow_payload_revocation_actions",
        Agent,
        "allow_payload_revocation_actions",
        Bool,
    ),
];

/// Keylime's input files: (file name, the Vigil file its leftovers are noted in).
const SOURCES: [(&str, Target); 4] = [
    ("verifier.conf", Verifier),
    ("registrar.conf", Registrar),
    ("tenant.conf", Tenant),
    ("agent.conf", Agent),
];

/// Options read from one file: (section, option, value as text).
type Options = Vec<(String, String, String)>;

/// Reads every Keylime file present, then writes the Vigil files: a file that does not
/// parse stops the import before anything is written.
fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let mut tables: BTreeMap<Target, toml::Table> = BTreeMap::new();
    let mut left: BTreeMap<Target, Vec<String>> = BTreeMap::new();
    let mut present = Vec::new();
    for (file, target) in SOURCES {
        let path = args.dir.join(file);
        if !path.exists() {
            println!("note: {} not found, skipped", path.display());
            continue;
        }
        present.push(target);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let options = if target == Agent {
            parse_toml(&text)
        } else {
            parse_ini(&text)
        }
        .with_context(|| format!("{} does not parse", path.display()))?;
        for (section, key, value) in options {
            if key == "version" {
                continue;
            }
            let rule = RULES.iter().find(|r| r.0 == section && r.1 == key);
            let outcome = match rule {
                Some(&(_, _, to, vigil_key, kind)) => convert(kind, &value)
                    .map(|v| {
                        if let Some(v) = v {
                            tables.entry(to).or_default().insert(vigil_key.into(), v);
                        }
                    })
                    .map_err(|why| format!("[{section}] {key} = {value}: {why}")),
                None => Err(format!("[{section}] {key} = {value}")),
            };
            if let Err(line) = outcome {
                let line = line.trim_end().to_owned();
                println!("not carried over: {file} {line}");
                left.entry(target).or_default().push(line);
            }
        }
    }
    if present.is_empty() {
        bail!(
            "no Keylime configuration file in {} (verifier.conf, registrar.conf, tenant.conf, agent.conf)",
            args.dir.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (_, target) in SOURCES {
        let table = tables.remove(&target).unwrap_or_default();
        if !present.contains(&target) && table.is_empty() {
            continue;
        }
        let mut text = format!(
            "# Vigil's {} configuration, imported from Keylime's by `vigil config import-keylime`.\n",
            target.name()
        );
        match left.get(&target) {
            Some(lines) => {
                text += "# Keylime options not carried over (Vigil has no equivalent):\n";
                for line in lines {
                    text += &format!("#   {line}\n");
                }
            }
            None => text += "# Every Keylime option was carried over.\n",
        }
        text += "\n";
        text += &toml::to_string(&table).context("cannot write TOML")?;
        let path = args.out.join(format!("{}.toml", target.name()));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The options of an INI file as Python's configparser reads Keylime's: `[section]`
/// headers, `key = value` or `key: value`, `#` and `;` comment lines, and indented
/// lines continuing the value before them.
fn parse_ini(text: &str) -> anyhow::Result<Options> {
    let mut options: Options = Vec::new();
    let mut section: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match options.last_mut() {
                Some(last) => {
                    last.2.push('\n');
                    last.2.push_str(trimmed);
                    continue;
                }
                None => bail!("line {}: a continuation line before any option", n + 1),
            }
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = Some(name.trim().to_owned());
            continue;
        }
        let Some(at) = trimmed.find(['=', ':']) else {
            bail!("line {}: neither a [section] nor `option = value`", n + 1);
        };
        let Some(section) = &section else {
            bail!("line {}: an option before any [section]", n + 1);
        };
        let (key, value) = (trimmed[..at].trim(), trimmed[at + 1..].trim());
        options.push((section.clone(), key.to_owned(), value.to_owned()));
    }
    Ok(options)
}

/// The options of Keylime's agent.conf (TOML, options under `[agent]`), each value as
/// text: a string as it is, anything else in TOML syntax.
fn parse_toml(text: &str) -> anyhow::Result<Options> {
    let table: toml::Table = toml::from_str(text)?;
    let mut options = Vec::new();
    for (section, body) in table {
        let toml::Value::Table(body) = body else {
            bail!("`{section}` is not a [section]");
        };
        for (key, value) in body {
            let text = match value {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            options.push((section.clone(), key, text));
        }
    }
    Ok(options)
}

/// `value` as `kind`, or `None` when it means the default, or why it cannot be carried.
fn convert(kind: Kind, value: &str) -> Result<Option<toml::Value>, String> {
    let value = unquote(value.trim());
    let is_default = matches!(value, "" | "default" | "generate");
    Ok(Some(match kind {
        Str => toml::Value::String(value.to_owned()),
        Ip => match value.parse::<std::net::IpAddr>() {
            Ok(_) => toml::Value::String(value.to_owned()),
            Err(_) => return Err("not an IP address".into()),
        },
        OneOf(known) if known.contains(&value) => toml::Value::String(value.to_owned()),
        OneOf(known) => return Err(format!("Vigil knows only {}", known.join(", "))),
        P | List | Database if is_default => return Ok(None),
        P => toml::Value::String(value.to_owned()),
        Int => toml::Value::Integer(
            value
                .parse::<i64>()
                .ok()
                .or_else(|| {
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0)
                        .map(|f| f as i64)
                })
                .ok_or("not a whole number")?,
        ),
        Float => toml::Value::Float(value.parse().map_err(|_| "not a number")?),
        Bool => toml::Value::Boolean(match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return Err("not true or false".into()),
        }),
        List => toml::Value::Array(list(value).into_iter().map(toml::Value::String).collect()),
        Json => {
            let json: serde_json::Value =
                serde_json::from_str(value).map_err(|e| format!("not JSON: {e}"))?;
            toml::Value::try_from(json).map_err(|e| e.to_string())?
        }
        Database if value == "sqlite" => return Ok(None),
        Database => match value.split_once("://") {
            Some((scheme, rest)) if scheme.starts_with("postgresql") => {
                toml::Value::String(format!("postgres://{rest}"))
            }
            _ => return Err("only `sqlite` and PostgreSQL URLs carry over".into()),
        },
    }))
}

/// `s` without one pair of surrounding quotes (Keylime's templates quote some values).
fn unquote(s: &str) -> &str {
    ['"', '\'']
        .iter()
        .find_map(|q| s.strip_prefix(*q).and_then(|t| t.strip_suffix(*q)))
        .unwrap_or(s)
}

/// A list written as Python (`['a', 'b']`), JSON (`["a"]`) or comma-separated text.
fn list(value: &str) -> Vec<String> {
    let inner = value
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(value);
    inner
        .split(',')
        .map(|item| unquote(item.trim()).to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_in_each_spelling() {
        assert_eq!(list("['agent', 'webhook']"), ["agent", "webhook"]);
        assert_eq!(list("[\"info\", \"error\"]"), ["info", "error"]);
        assert_eq!(list("a.pem, b.pem"), ["a.pem", "b.pem"]);
        assert!(list("[]").is_empty());
    }

    #[test]
    fn values_that_mean_the_default_write_nothing() {
        assert_eq!(convert(P, "default"), Ok(None));
        assert_eq!(convert(Database, "sqlite"), Ok(None));
        assert_eq!(
            convert(Database, "postgresql+psycopg2://u@h/db"),
            Ok(Some(toml::Value::String("postgres://u@h/db".into())))
        );
        assert!(convert(Database, "mysql://h/db").is_err());
        assert_eq!(convert(Int, "60.0"), Ok(Some(toml::Value::Integer(60))));
        assert!(convert(Bool, "maybe").is_err());
        assert!(convert(Ip, "\"verifier.example\"").is_err());
        assert!(convert(OneOf(&["once", "always"]), "sometimes").is_err());
    }

    #[test]
    fn ini_errors_name_the_line() {
        let err = parse_ini("[a]\nx = 1\nnonsense\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(parse_ini("x = 1\n").is_err());
    }
}
