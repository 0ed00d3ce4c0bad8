//! `vigil eventlog`: UEFI (TCG PC Client) event logs.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use vigil_core::eventlog;

use super::style::EM;

/// UEFI event logs (`/sys/kernel/security/tpm0/binary_bios_measurements`).
#[derive(Debug, Subcommand)]
pub(crate) enum EventlogCommand {
    /// Replay a log to the PCR values it implies, per bank.
    ///
    /// Exit status: 0 on success, 2 on a malformed log.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The binary event log.
    file: PathBuf,
    /// Print `{"<bank>": {"<pcr>": "<hex>", ...}, ...}` instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: EventlogCommand) -> Result<ExitCode> {
    match cmd {
        EventlogCommand::Replay(args) => replay(&args),
    }
}

fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let log = eventlog::parse(&bytes)
        .with_context(|| format!("malformed event log {}", args.file.display()))?;
    let banks = log.replay();
    if args.json {
        let mut out = Map::new();
        for (alg, pcrs) in &banks {
            let pcrs: Map<String, Value> = pcrs
                .iter()
                .map(|(i, d)| (i.to_string(), Value::String(d.to_hex())))
                .collect();
            out.insert(alg.name().to_owned(), Value::Object(pcrs));
        }
        super::print_json(&out)?;
    } else {
        let mut out = anstream::stdout().lock();
        let (em, r) = (EM.render(), EM.render_reset());
        writeln!(
            out,
            "{em}{}{r}: {} events",
            args.file.display(),
            log.events.len()
        )?;
        for (alg, pcrs) in &banks {
            writeln!(out, "{em}{alg}{r}")?;
            for (i, d) in pcrs {
                writeln!(out, "  {i:>2}: {d}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
