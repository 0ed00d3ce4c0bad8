//! `vigil store import-keylime`: a Keylime database of enrolled nodes carried over into
//! Vigil's stores, so an operator switching keeps every node's identity and enrolment
//! and no node re-enrols. Reading Keylime's tables and writing Vigil's records is
//! vigil-store's (`vigil_store::keylime`); this command picks the stores, checks that
//! Vigil's verifier can use each policy, and tells the operator what was carried over
//! and what was not, with why.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use vigil_store::keylime::{self, How, ImportReport, KeylimeDump};
use vigil_store::Store;

/// Vigil's stores.
#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Imports Keylime's registrar and verifier databases (SQLite files or PostgreSQL
    /// URLs, as Keylime's `database_url`): registrar records, enrolments and their
    /// runtime and measured-boot policies. Exit 0 when every row was carried over, 1
    /// when some were not (each is named, with why).
    ImportKeylime(ImportArgs),
}

/// `vigil store import-keylime URL... [--to URL]`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// Keylime's databases: /var/lib/keylime/reg_data.sqlite and cv_data.sqlite (paths,
    /// `sqlite:///…` URLs), or `postgresql://…`; each is read for the tables it holds.
    #[arg(required = true, value_name = "URL")]
    from: Vec<String>,
    /// Vigil's store for both the registrar and the verifier records.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Vigil's registrar store (instead of --to or the registrar's configuration).
    #[arg(long, value_name = "URL")]
    registrar_to: Option<String>,
    /// Vigil's verifier store (instead of --to or the verifier's configuration).
    #[arg(long, value_name = "URL")]
    verifier_to: Option<String>,
    /// Where registrar.toml and verifier.toml are read from when no store URL is
    /// given: their `database_url`, else the service's default under its `state_dir`.
    #[arg(long, value_name = "DIR", default_value = "/etc/vigil")]
    config_dir: PathBuf,
    /// The verifier that attests the imported nodes (Vigil's verifier `uuid`): by
    /// default each keeps the Keylime verifier's `uuid` it had (`default` unless set).
    #[arg(long, value_name = "ID")]
    verifier_id: Option<String>,
    /// Overwrite records and policies Vigil already holds under the same id or name.
    #[arg(long)]
    replace: bool,
    /// Print what would be imported; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as one JSON object: `imported` (`table`, `id`, `how`: new,
    /// replaced or same, `notes`), `not_imported` (`table`, `id`, `reason`), `dry_run`.
    #[arg(long)]
    json: bool,
}

/// Runs a `vigil store` command.
pub(crate) fn run(cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCommand::ImportKeylime(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(import(args))
        }
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let registrar_url = destination(&args, args.registrar_to.as_ref(), "registrar")?;
    let verifier_url = destination(&args, args.verifier_to.as_ref(), "verifier")?;

    let mut dump = KeylimeDump::default();
    for url in &args.from {
        keylime::read(url, &mut dump)
            .await
            .with_context(|| format!("cannot read Keylime's database {}", redact(url)))?;
    }
    check_with_vigil(&mut dump);
    if let Some(id) = &args.verifier_id {
        for e in &mut dump.verifier {
            if e.enrolment.verifier_id != *id {
                e.notes.push(format!(
                    "verifier_id {:?} becomes {id:?}",
                    e.enrolment.verifier_id
                ));
                e.enrolment.verifier_id.clone_from(id);
            }
        }
    }

    let registrar = Store::open(&registrar_url)
        .await
        .with_context(|| format!("cannot open Vigil's store {}", redact(&registrar_url)))?;
    let verifier = if verifier_url == registrar_url {
        registrar.clone()
    } else {
        Store::open(&verifier_url)
            .await
            .with_context(|| format!("cannot open Vigil's store {}", redact(&verifier_url)))?
    };
    let report = keylime::import(dump, &registrar, &verifier, args.replace, args.dry_run)
        .await
        .context("import into Vigil's store")?;
    registrar.close().await;
    verifier.close().await;
    if args.json {
        super::print_json(&as_json(&report, args.dry_run))?;
    } else {
        print(&report, args.dry_run);
    }
    Ok(if report.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The store one side's records go to: its own flag, `--to`, else its configuration.
fn destination(args: &ImportArgs, own: Option<&String>, service: &str) -> anyhow::Result<String> {
    if let Some(url) = own.or(args.to.as_ref()) {
        return Ok(url.clone());
    }
    let file = args.config_dir.join(format!("{service}.toml"));
    let table: toml::Table = match std::fs::read_to_string(&file) {
        Ok(text) => text
            .parse()
            .with_context(|| format!("cannot parse {}", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let string = |key: &str| table.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    if !string("database_url").is_empty() {
        return Ok(string("database_url").to_owned());
    }
    // The service's own default (its Config::database_url): the SQLite file Keylime's
    // same service uses, under the state directory.
    let state_dir = match string("state_dir") {
        "" => Path::new("/var/lib/vigil"),
        dir => Path::new(dir),
    };
    let name = if service == "registrar" {
        "reg_data.sqlite"
    } else {
        "cv_data.sqlite"
    };
    Ok(format!(
        "sqlite://{}?mode=rwc",
        state_dir.join(name).display()
    ))
}

/// Refuses what Vigil's verifier could not use: a runtime policy or `tpm_policy` it
/// cannot parse would fail every attestation of the node.
fn check_with_vigil(dump: &mut KeylimeDump) {
    dump.retain_runtime_policies(|p| match &p.ima_policy {
        Some(text) => vigil_core::policy::runtime::RuntimePolicy::from_json(text.as_bytes())
            .map(drop)
            .map_err(|e| format!("Vigil cannot use this runtime policy: {e}")),
        None => Ok(()),
    });
    dump.retain_mb_policies(|p| match &p.mb_policy {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| format!("the measured-boot policy is not JSON: {e}"))?;
            vigil_core::policy::measured_boot::RefState::from_json(&value)
                .map(drop)
                .map_err(|e| format!("Vigil cannot use this measured-boot policy: {e}"))
        }
        None => Ok(()),
    });
    dump.retain_enrolments(|e| {
        vigil_core::policy::tpm::TpmPolicy::from_json(&e.tpm_policy)
            .map(drop)
            .map_err(|err| format!("Vigil cannot use its tpm_policy: {err}"))
    });
}

fn as_json(report: &ImportReport, dry_run: bool) -> serde_json::Value {
    let imported: Vec<_> = report
        .imported
        .iter()
        .map(|i| {
            let how = match i.how {
                How::New => "new",
                How::Replaced => "replaced",
                How::Same => "same",
            };
            serde_json::json!({"table": i.table, "id": i.id, "how": how, "notes": i.notes})
        })
        .collect();
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|s| serde_json::json!({"table": s.table, "id": s.id, "reason": s.reason}))
        .collect();
    serde_json::json!({"imported": imported, "not_imported": skipped, "dry_run": dry_run})
}

fn print(report: &ImportReport, dry_run: bool) {
    let verb = if dry_run { "would import" } else { "imported" };
    for i in &report.imported {
        let how = match i.how {
            How::New => "",
            How::Replaced => " (replacing Vigil's)",
            How::Same => " (Vigil already holds the same; kept)",
        };
        println!("{verb}: {} {}{how}", i.table, i.id);
        for note in &i.notes {
            println!("  note: {note}");
        }
    }
    for s in &report.skipped {
        println!("not imported: {} {}: {}", s.table, s.id, s.reason);
    }
    println!(
        "{} {verb}, {} not imported{}",
        report.imported.len(),
        report.skipped.len(),
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
}

/// A database URL for a message: without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
