//! `vigil policy`: policies nodes are judged against, made and checked before they are
//! enrolled: runtime (IMA) policies from a reference machine's files, initrds or IMA
//! log, and measured-boot reference states (make one from a known-good event log, check
//! a log against one). The tenant-side `policy push|list|...` will live here too.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vigil_core::eventlog;
use vigil_core::policy::measured_boot::{self, LogView, MbPolicy};

use super::style::{ERROR, OK, WARN};
use crate::policy_create;

/// Policies: create and check them offline.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create a policy from known-good evidence.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Check evidence against a policy.
    #[command(subcommand)]
    Check(CheckCommand),
}

/// What to create.
#[derive(Debug, Subcommand)]
pub(crate) enum CreateCommand {
    /// A runtime (IMA) policy, Keylime format v1, as `keylime-policy create runtime`
    /// makes, from a root filesystem, initrds, an IMA log, allowlists or a base policy.
    Runtime(policy_create::RuntimeArgs),
    /// A measured-boot reference state for Keylime's `example` policy, from a UEFI event
    /// log (like `keylime-policy create measured-boot`).
    ///
    /// Exit status: 0 on success, 2 on a malformed log or one without Secure Boot
    /// (unless --without-secureboot).
    MeasuredBoot(CreateMbArgs),
}

/// What to check.
#[derive(Debug, Subcommand)]
pub(crate) enum CheckCommand {
    /// Evaluate a UEFI event log against a measured-boot reference state, as Keylime's
    /// verifier does.
    ///
    /// Exit status: 0 when the log passes, 1 when it does not, 2 on bad input.
    MeasuredBoot(CheckMbArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateMbArgs {
    /// The binary event log (/sys/kernel/security/tpm0/binary_bios_measurements).
    #[arg(short = 'e', long)]
    eventlog: PathBuf,
    /// Accept a log with Secure Boot disabled (the reference state then requires it off).
    #[arg(short = 'i', long)]
    without_secureboot: bool,
    /// Where to write the reference state ('-' for stdout).
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CheckMbArgs {
    /// The binary event log.
    #[arg(short = 'e', long)]
    eventlog: PathBuf,
    /// The reference state (JSON).
    #[arg(short, long)]
    refstate: PathBuf,
    /// The policy: example, accept-all or reject-all.
    #[arg(long, default_value = "example")]
    policy: String,
    /// Print the failure events as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Create(CreateCommand::Runtime(args)) => policy_create::run(&args),
        PolicyCommand::Create(CreateCommand::MeasuredBoot(args)) => create_mb(&args),
        PolicyCommand::Check(CheckCommand::MeasuredBoot(args)) => check_mb(&args),
    }
}

fn read_log(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn create_mb(args: &CreateMbArgs) -> Result<ExitCode> {
    let bytes = read_log(&args.eventlog)?;
    let log = eventlog::parse(&bytes)
        .with_context(|| format!("malformed event log {}", args.eventlog.display()))?;
    let created = measured_boot::create_refstate(&LogView::new(&log), args.without_secureboot)
        .with_context(|| format!("no reference state from {}", args.eventlog.display()))?;
    for w in &created.warnings {
        anstream::eprintln!("{}warning:{} {w}", WARN.render(), WARN.render_reset());
    }
    let text = serde_json::to_string(&created.refstate)?;
    if args.output.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
    } else {
        std::fs::write(&args.output, text + "\n")
            .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn check_mb(args: &CheckMbArgs) -> Result<ExitCode> {
    let policy: MbPolicy = args.policy.parse()?;
    let text = std::fs::read_to_string(&args.refstate)
        .with_context(|| format!("cannot read {}", args.refstate.display()))?;
    let refstate: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.refstate.display()))?;
    if policy == MbPolicy::Example && measured_boot_is_nonempty(&refstate) {
        // A reference state the policy cannot use is bad input here, not a verdict.
        measured_boot::RefState::from_json(&refstate)
            .with_context(|| format!("unusable reference state {}", args.refstate.display()))?;
    }
    let bytes = read_log(&args.eventlog)?;
    let log = eventlog::parse(&bytes)
        .with_context(|| format!("malformed event log {}", args.eventlog.display()))?;
    // Offline there is no quote: every PCR the policy relies on counts as quoted.
    let quoted: BTreeSet<u32> = (0..24).collect();
    let failure = measured_boot::bootlog_evaluate(policy, &refstate, &LogView::new(&log), &quoted);
    if args.json {
        super::print_json(&json!({
            "valid": failure.is_empty(),
            "policy": policy.name(),
            "failures": failure.events(),
        }))?;
    } else if failure.is_empty() {
        let mut out = anstream::stdout().lock();
        writeln!(
            out,
            "{}pass{}: {} matches the reference state ({policy})",
            OK.render(),
            OK.render_reset(),
            args.eventlog.display()
        )?;
    } else {
        let mut out = anstream::stdout().lock();
        for e in failure.events() {
            writeln!(
                out,
                "{}fail{}: {}: {}",
                ERROR.render(),
                ERROR.render_reset(),
                e.event_id,
                e.context["reason"].as_str().unwrap_or_default()
            )?;
        }
    }
    Ok(if failure.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Keylime evaluates nothing for an empty reference state (`{}`, `null`, ...).
fn measured_boot_is_nonempty(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
        && !v.as_object().is_some_and(|m| m.is_empty())
        && !v.as_array().is_some_and(|a| a.is_empty())
        && !v.as_str().is_some_and(str::is_empty)
}
