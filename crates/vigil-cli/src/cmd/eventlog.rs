//! `vigil eventlog`: UEFI (TCG PC Client) event logs.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use vigil_core::eventlog;

use super::style::EM;

/// UEFI event logs (`/sys/kernel/security/tpm0/binary_bios_measurements`).
#[derive(Debug, Subcommand)]
pub(crate) enum EventlogCommand {
    /// Replay a log to the PCR values it implies, per bank.
    ///
    /// Exit status: 0 on success, 2 on a malformed log (or bytes that are not one: a
    /// log starts with the Spec ID event, or with a measurement for a SHA-1 log).
    Replay(ReplayArgs),
    /// Print every event, decoded, as `tpm2_eventlog` prints it (YAML), or as JSON.
    ///
    /// The YAML has tpm2_eventlog's field names and layout, which Keylime's
    /// measured-boot policies match on. Exit status: 0 on success, 2 on a malformed log.
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    /// The binary event log.
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    format: Format,
    /// JSON output: the same as --format json (every other command's spelling).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// tpm2_eventlog's `--eventlog-version`: 1 prints variable data as hex, 2 decodes
    /// it (what Keylime uses).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
    eventlog_version: u32,
    /// Device paths as libefivar text (`efivar`, before efivar 39; `efivar39`) or hex
    /// (tpm2-tools built without libefivar, as Debian's is).
    #[arg(long, value_enum, default_value_t = DevicePaths::Efivar)]
    device_paths: DevicePaths,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DevicePaths {
    Hex,
    Efivar,
    Efivar39,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The binary event log.
    file: PathBuf,
    /// Print `{"<bank>": {"<pcr>": "<hex>", ...}, ..., "boot_aggregates": {"<bank>":
    /// ["<hex>", ...]}}` instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: EventlogCommand) -> Result<ExitCode> {
    match cmd {
        EventlogCommand::Replay(args) => replay(&args),
        EventlogCommand::Dump(args) => dump(&args),
    }
}

fn dump(args: &DumpArgs) -> Result<ExitCode> {
    let bytes = super::read_file(&args.file, super::MAX_EVENT_LOG)?;
    let log = eventlog::parse(&bytes)
        .with_context(|| format!("malformed event log {}", args.file.display()))?;
    let opts = eventlog::RenderOptions {
        version: args.eventlog_version,
        device_paths: match args.device_paths {
            DevicePaths::Hex => eventlog::DevicePathStyle::Hex,
            DevicePaths::Efivar => eventlog::DevicePathStyle::Efivar,
            DevicePaths::Efivar39 => eventlog::DevicePathStyle::Efivar39,
        },
    };
    let format = if args.json { Format::Json } else { args.format };
    match format {
        Format::Yaml => {
            let mut out = std::io::stdout().lock();
            out.write_all(eventlog::to_yaml(&log, opts).as_bytes())?;
            out.flush()?;
        }
        Format::Json => super::print_json(&eventlog::to_json(&log, opts))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    let bytes = super::read_file(&args.file, super::MAX_EVENT_LOG)?;
    let log = eventlog::parse(&bytes)
        .with_context(|| format!("malformed event log {}", args.file.display()))?;
    let banks = log.replay();
    let aggregates = eventlog::boot_aggregates(&banks);
    if args.json {
        let mut out = Map::new();
        for (alg, pcrs) in &banks {
            let pcrs: Map<String, Value> = pcrs
                .iter()
                .map(|(i, d)| (i.to_string(), Value::String(d.to_hex())))
                .collect();
            out.insert(alg.name().to_owned(), Value::Object(pcrs));
        }
        // As the text: IMA's boot_aggregate per bank (over PCRs 0-7, then 0-9).
        let forms: Map<String, Value> = aggregates
            .iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(alg, forms)| {
                let forms = forms.iter().map(|d| Value::String(d.to_hex())).collect();
                (alg.name().to_owned(), Value::Array(forms))
            })
            .collect();
        out.insert("boot_aggregates".to_owned(), Value::Object(forms));
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
        for (alg, forms) in aggregates.iter().filter(|(_, f)| !f.is_empty()) {
            writeln!(out, "{em}boot_aggregate {alg}{r} (PCRs 0-7, then 0-9)")?;
            for d in forms {
                writeln!(out, "  {d}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
