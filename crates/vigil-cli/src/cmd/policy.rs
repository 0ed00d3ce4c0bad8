//! `vigil policy`: policies nodes are judged against, made and checked before they are
//! enrolled: runtime (IMA) policies from a reference machine's files, initrds or IMA
//! log, and measured-boot reference states (make one from a known-good event log, check
//! a log against one), signed, converted from legacy allowlists and validated
//! (`policy_file.rs`) — and named policies stored at the verifier (`push`, `list`,
//! `show`, `delete`; Keylime's `keylime_tenant -c addruntimepolicy` and friends).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vigil_core::eventlog;
use vigil_core::policy::measured_boot::{self, LogView, MbPolicy};

use super::policy_file;
use super::style::{ERROR, OK, WARN};
use super::tenant::{self, Conn};
use crate::policy_create;
use crate::tenant::policy::PolicyArgs;

/// Policies: create and check them offline.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create a policy from known-good evidence.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Check evidence against a policy.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Sign a policy (DSSE), as `keylime-policy sign` does.
    #[command(subcommand)]
    Sign(SignCommand),
    /// Convert a legacy allowlist (and exclude list) to a v1 runtime policy, as
    /// `keylime_convert_runtime_policy` does.
    ///
    /// Exit status: 0 written, 2 on bad input (the message names the file and line).
    Convert(policy_file::ConvertArgs),
    /// Validate a policy file: a runtime policy (v1 JSON, DSSE-signed or a legacy
    /// allowlist) or a measured-boot reference state.
    ///
    /// Exit status: 0 valid, 1 invalid (each problem is named), 2 unreadable, empty or
    /// oversized input.
    Validate(policy_file::ValidateArgs),
    /// Store a named policy at the verifier (POST, or PUT with --update).
    ///
    /// Exit status: 0 stored, 1 refused (exists, or unknown with --update), 2 bad input.
    Push(Box<PushArgs>),
    /// List the named policies stored at the verifier.
    List(ListArgs),
    /// Show a named policy stored at the verifier.
    Show(NamedArgs),
    /// Delete a named policy at the verifier (refused while nodes use it).
    Delete(NamedArgs),
}

/// Which kind of stored policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoredKind {
    /// Runtime (IMA) policies: the verifier's `allowlists/`.
    Runtime,
    /// Measured-boot reference states: the verifier's `mbpolicies/`.
    MeasuredBoot,
}

impl StoredKind {
    fn path(self) -> &'static str {
        match self {
            Self::Runtime => "allowlists",
            Self::MeasuredBoot => "mbpolicies",
        }
    }

    fn names_key(self) -> &'static str {
        match self {
            Self::Runtime => "runtimepolicy names",
            Self::MeasuredBoot => "mbpolicy names",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// runtime or measured-boot.
    #[arg(value_enum)]
    kind: StoredKind,
    /// The name to store it under.
    name: Option<String>,
    /// The policy file (a runtime policy, or a measured-boot reference state).
    file: Option<PathBuf>,
    /// Replace the policy stored under that name (PUT) instead of refusing.
    #[arg(long)]
    update: bool,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this kind [default: both].
    #[arg(value_enum)]
    kind: Option<StoredKind>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
pub(crate) struct NamedArgs {
    /// runtime or measured-boot.
    #[arg(value_enum)]
    kind: StoredKind,
    /// The policy's name.
    #[arg(required_unless_present = "name_flag")]
    name: Option<String>,
    /// The policy's name (Keylime's spellings).
    #[arg(
        long = "name",
        id = "name_flag",
        alias = "runtime-policy-name",
        alias = "mb-policy-name",
        alias = "allowlist-name",
        value_name = "NAME",
        conflicts_with = "name"
    )]
    name_flag: Option<String>,
    #[command(flatten)]
    conn: Conn,
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

/// What to sign.
#[derive(Debug, Subcommand)]
pub(crate) enum SignCommand {
    /// A runtime policy, into a DSSE envelope Keylime's verifier checks: ECDSA over
    /// SHA-256 with an EC key (`ecdsa` backend) or with a self-signed certificate for
    /// it (`x509` backend).
    ///
    /// Exit status: 0 written, 2 on bad input (invalid policy, unusable key).
    Runtime(policy_file::SignArgs),
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
        PolicyCommand::Sign(SignCommand::Runtime(args)) => policy_file::sign(&args),
        PolicyCommand::Convert(args) => policy_file::convert(&args),
        PolicyCommand::Validate(args) => policy_file::validate(&args),
        PolicyCommand::Push(args) => tenant::finish(tenant::block_on(push(*args))),
        PolicyCommand::List(args) => tenant::finish(tenant::block_on(list(args))),
        PolicyCommand::Show(args) => tenant::finish(tenant::block_on(show(args))),
        PolicyCommand::Delete(args) => tenant::finish(tenant::block_on(delete(args))),
    }
}

async fn push(mut a: PushArgs) -> Result<ExitCode> {
    // The name and file may come positionally or with Keylime's flags.
    let (name, file) = match a.kind {
        StoredKind::Runtime => (
            a.name.clone().or(a.policy.runtime_policy_name.clone()),
            a.file.clone().or(a.policy.runtime_policy.clone()),
        ),
        StoredKind::MeasuredBoot => (
            a.name.clone().or(a.policy.mb_policy_name.clone()),
            a.file.clone().or(a.policy.mb_policy.clone()),
        ),
    };
    let name = name.context("give the policy a name: vigil policy push KIND NAME FILE")?;
    let body = match a.kind {
        StoredKind::Runtime => {
            if file.is_none() && a.policy.allowlist.is_none() {
                anyhow::bail!("give the runtime policy file: vigil policy push runtime NAME FILE");
            }
            a.policy.runtime_policy = file;
            a.policy.runtime_policy_name = Some(name.clone());
            crate::tenant::body::runtime_policy_body(&a.policy.resolve()?)
        }
        StoredKind::MeasuredBoot => {
            a.policy.mb_policy = Some(file.context(
                "give the reference state file: vigil policy push measured-boot NAME FILE",
            )?);
            a.policy.mb_policy_name = Some(name.clone());
            crate::tenant::body::mb_policy_body(&a.policy.resolve()?)
        }
    };
    let t = tenant::tenant_for(&a.conn)?;
    t.policy_push(a.kind.path(), &name, &body, a.update).await?;
    if a.conn.json {
        super::print_json(&json!({"name": name, "kind": a.kind.path(), "stored": true}))?;
    } else {
        anstream::println!(
            "{}stored{} {} policy '{name}' at the verifier",
            OK.render(),
            OK.render_reset(),
            kind_text(a.kind)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn kind_text(kind: StoredKind) -> &'static str {
    match kind {
        StoredKind::Runtime => "runtime",
        StoredKind::MeasuredBoot => "measured-boot",
    }
}

async fn list(a: ListArgs) -> Result<ExitCode> {
    let t = tenant::tenant_for(&a.conn)?;
    let kinds = match a.kind {
        Some(k) => vec![k],
        None => vec![StoredKind::Runtime, StoredKind::MeasuredBoot],
    };
    let mut all = serde_json::Map::new();
    for kind in kinds {
        let results = t
            .policy_get(kind.path(), None)
            .await?
            .unwrap_or(Value::Null);
        let names: Vec<String> = results[kind.names_key()]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        all.insert(kind_text(kind).into(), json!(names));
    }
    if a.conn.json {
        super::print_json(&Value::Object(all))?;
    } else {
        let mut out = anstream::stdout().lock();
        for (kind, names) in &all {
            let names = names.as_array().cloned().unwrap_or_default();
            writeln!(
                out,
                "{kind} policies: {}",
                if names.is_empty() { "none" } else { "" }
            )?;
            for n in names {
                writeln!(out, "  {}", n.as_str().unwrap_or_default())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn named(a: &NamedArgs) -> Result<String> {
    a.name
        .clone()
        .or_else(|| a.name_flag.clone())
        .context("give the policy's name")
}

async fn show(a: NamedArgs) -> Result<ExitCode> {
    let name = named(&a)?;
    let t = tenant::tenant_for(&a.conn)?;
    let Some(results) = t.policy_get(a.kind.path(), Some(&name)).await? else {
        return Err(anyhow::Error::new(crate::tenant::flow::Refused(format!(
            "no {} policy named '{name}' at the verifier (see `vigil policy list`)",
            kind_text(a.kind)
        ))));
    };
    if a.conn.json {
        super::print_json(&results)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The policy itself is JSON text inside the answer: print it pretty.
    let key = match a.kind {
        StoredKind::Runtime => "runtime_policy",
        StoredKind::MeasuredBoot => "mb_policy",
    };
    let doc = results[key]
        .as_str()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .unwrap_or_else(|| results[key].clone());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    Ok(ExitCode::SUCCESS)
}

async fn delete(a: NamedArgs) -> Result<ExitCode> {
    let name = named(&a)?;
    let t = tenant::tenant_for(&a.conn)?;
    t.policy_delete(a.kind.path(), &name).await?;
    if a.conn.json {
        super::print_json(&json!({"name": name, "kind": a.kind.path(), "deleted": true}))?;
    } else {
        anstream::println!(
            "deleted {} policy '{name}' at the verifier",
            kind_text(a.kind)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_log(path: &Path) -> Result<Vec<u8>> {
    super::read_file(path, super::MAX_EVENT_LOG)
}

fn create_mb(args: &CreateMbArgs) -> Result<ExitCode> {
    let bytes = read_log(&args.eventlog)?;
    let log = eventlog::parse(&bytes)
        .with_context(|| format!("malformed event log {}", args.eventlog.display()))?;
    let created =
        match measured_boot::create_refstate(&LogView::new(&log), args.without_secureboot) {
            Err(measured_boot::CreateError::SecureBootDisabled) => anyhow::bail!(
                "no reference state from {}: its log has Secure Boot disabled; pass \
             -i/--without-secureboot to make one that requires it off",
                args.eventlog.display()
            ),
            other => other
                .with_context(|| format!("no reference state from {}", args.eventlog.display()))?,
        };
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
