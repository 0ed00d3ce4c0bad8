//! `vigil known-good add|list|show|delete`: known-good measurement sets at the
//! verifier (Vigil's `/vigil/v1/known-good`), which a relearn rule adopts for nodes of
//! the set's hardware class (`docs/response.md`). A set comes from a node an operator
//! has just updated (`--from-node ID`: the values its last round found changed) or
//! from files: a UEFI event log (replayed to PCRs 0–7), an IMA log (each file's
//! digest), a PCR list (`{"<pcr>": "<hex>" | ["<hex>", …]}`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::tenant::{self, block_on, finish, Conn};
use super::{read_file, MAX_EVENT_LOG, MAX_POLICY_FILE, MAX_SMALL_FILE};

#[derive(Debug, Subcommand)]
pub(crate) enum KnownGoodCommand {
    /// Record a set for a hardware class.
    Add(AddArgs),
    /// The sets at the verifier.
    List(ListArgs),
    /// One set, with its measurements.
    Show(NameArgs),
    /// Delete a set.
    Delete(NameArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The set's name (letters, digits, `-`, `_`, `.`).
    name: String,
    /// The hardware class whose nodes it applies to.
    #[arg(long)]
    class: String,
    /// The values the node's last round found changed (a canary just updated).
    #[arg(long, value_name = "ID", conflicts_with_all = ["eventlog", "ima_log", "pcrs"])]
    from_node: Option<String>,
    /// A UEFI event log: its replay of PCRs 0–7 (SHA-256 bank).
    #[arg(long, value_name = "FILE")]
    eventlog: Option<PathBuf>,
    /// An IMA measurement list: each file's digest.
    #[arg(long, value_name = "FILE")]
    ima_log: Option<PathBuf>,
    /// PCR values: a JSON object `{"<pcr>": "<hex>" | ["<hex>", …]}`.
    #[arg(long, value_name = "FILE")]
    pcrs: Option<PathBuf>,
    /// Who records it [default: $USER].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only sets of this class.
    #[arg(long)]
    class: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
pub(crate) struct NameArgs {
    /// The set's name.
    name: String,
    #[command(flatten)]
    conn: Conn,
}

/// The measurements of the given files.
fn measurements(a: &AddArgs) -> Result<Value> {
    let mut pcrs: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(path) = &a.eventlog {
        let bytes = read_file(path, MAX_EVENT_LOG)?;
        let log = vigil_core::eventlog::parse(&bytes)
            .with_context(|| format!("{}: not a UEFI event log", path.display()))?;
        let banks = log.replay();
        let sha256 = banks
            .get(&vigil_core::HashAlg::Sha256)
            .cloned()
            .unwrap_or_default();
        for (pcr, value) in sha256.into_iter().filter(|(p, _)| *p <= 7) {
            pcrs.entry(pcr).or_default().push(value.to_hex());
        }
    }
    if let Some(path) = &a.ima_log {
        let bytes = read_file(path, MAX_POLICY_FILE)?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{}: not an IMA log (not UTF-8)", path.display()))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let entry = vigil_core::ima::ImaEntry::parse(line)
                .with_context(|| format!("{} line {}", path.display(), n + 1))?;
            let digest = entry.digest.to_digest().to_hex();
            let list = files.entry(entry.name.to_owned()).or_default();
            if !list.contains(&digest) {
                list.push(digest);
            }
        }
    }
    if let Some(path) = &a.pcrs {
        let v: BTreeMap<String, Value> = serde_json::from_slice(&read_file(path, MAX_SMALL_FILE)?)
            .with_context(|| format!("{}: not a JSON object of PCRs", path.display()))?;
        for (k, values) in v {
            let pcr: u32 = k
                .parse()
                .with_context(|| format!("{}: {k:?} is no PCR index", path.display()))?;
            let list = match values {
                Value::String(s) => vec![s],
                Value::Array(items) => items
                    .into_iter()
                    .map(|i| i.as_str().map(str::to_lowercase))
                    .collect::<Option<_>>()
                    .with_context(|| format!("{}: PCR {pcr}: not hex strings", path.display()))?,
                _ => anyhow::bail!("{}: PCR {pcr}: not a hex string", path.display()),
            };
            pcrs.entry(pcr).or_default().extend(list);
        }
    }
    if pcrs.is_empty() && files.is_empty() {
        anyhow::bail!("no measurements: give --from-node, or --eventlog, --ima-log or --pcrs");
    }
    Ok(json!({ "pcrs": pcrs, "files": files }))
}

pub(crate) fn run(cmd: KnownGoodCommand) -> Result<ExitCode> {
    finish(block_on(async move {
        match cmd {
            KnownGoodCommand::Add(a) => {
                let by =
                    a.by.clone()
                        .or_else(|| std::env::var("USER").ok())
                        .unwrap_or_else(|| "unknown".into());
                let mut body = json!({ "name": a.name, "class": a.class, "recorded_by": by });
                match &a.from_node {
                    Some(id) => body["from_node"] = json!(id),
                    None => body["measurements"] = measurements(&a)?,
                }
                let t = tenant::tenant_for(&a.conn)?;
                let set = t
                    .vigil("POST", "known-good", Some(body))
                    .await?
                    .context("the verifier has no known-good sets (not a Vigil verifier?)")?;
                super::print_json(&set)?;
                Ok(ExitCode::SUCCESS)
            }
            KnownGoodCommand::List(a) => {
                let t = tenant::tenant_for(&a.conn)?;
                let path = match &a.class {
                    Some(c) => format!("known-good?class={c}"),
                    None => "known-good".into(),
                };
                let sets = t
                    .vigil("GET", &path, None)
                    .await?
                    .context("the verifier has no known-good sets (not a Vigil verifier?)")?;
                for s in sets["sets"].as_array().into_iter().flatten() {
                    println!(
                        "{}\tclass {}\trecorded by {} at {}",
                        s["name"].as_str().unwrap_or_default(),
                        s["class"].as_str().unwrap_or_default(),
                        s["recorded_by"].as_str().unwrap_or_default(),
                        s["recorded_at"]
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            KnownGoodCommand::Show(a) => {
                let t = tenant::tenant_for(&a.conn)?;
                match t
                    .vigil("GET", &format!("known-good/{}", a.name), None)
                    .await?
                {
                    Some(set) => {
                        super::print_json(&set)?;
                        Ok(ExitCode::SUCCESS)
                    }
                    None => anyhow::bail!("no known-good set named {}", a.name),
                }
            }
            KnownGoodCommand::Delete(a) => {
                let t = tenant::tenant_for(&a.conn)?;
                match t
                    .vigil("DELETE", &format!("known-good/{}", a.name), None)
                    .await?
                {
                    Some(_) => Ok(ExitCode::SUCCESS),
                    None => anyhow::bail!("no known-good set named {}", a.name),
                }
            }
        }
    }))
}
