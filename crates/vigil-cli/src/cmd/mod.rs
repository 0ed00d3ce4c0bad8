//! Subcommands, one module each.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod ca;
mod class;
mod config;
mod credential;
mod demo;
mod ekcert;
mod eventlog;
pub(crate) mod gate;
mod generate;
mod identity;
mod ima;
mod known_good;
mod policy;
mod policy_file;
mod quote;
mod store;
pub(crate) mod style;
pub(crate) mod tenant;

/// Continuous TPM 2.0 remote attestation: the operator's tool.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// IMA measurement lists: check one against a runtime policy offline.
    #[command(subcommand)]
    Ima(ima::ImaCommand),
    /// UEFI event logs: replay one to per-bank PCR values, or print it decoded.
    #[command(subcommand)]
    Eventlog(eventlog::EventlogCommand),
    /// TPM quotes: verify one offline with an attestation key.
    #[command(subcommand)]
    Quote(quote::QuoteCommand),
    /// Credential activation: make (and inspect) a TPM2_MakeCredential blob for an EK and AK.
    #[command(subcommand)]
    Credential(credential::CredentialCommand),
    /// EK certificates: verify one against a store of TPM vendor CAs.
    #[command(subcommand)]
    Ekcert(ekcert::EkcertCommand),
    /// Policies: create a runtime policy (from a root filesystem, initrds or an IMA log)
    /// or a measured-boot reference state (from an event log), or check a log against one.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// TLS certificate authority: create one (Keylime's cv_ca layout) or issue certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Configuration files: import Keylime's (`vigil config import-keylime DIR --out OUTDIR`).
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Vigil's stores: import Keylime's database of enrolled nodes (`vigil store
    /// import-keylime URL...`).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Nodes at the verifier and registrar: enrol (add), status, list, stop, delete
    /// (Keylime's keylime_tenant; `-c add` style also accepted); defaults from
    /// /etc/vigil/tenant.toml and ~/.config/vigil/tenant.toml.
    Tenant(Box<tenant::TenantArgs>),
    /// Workload identity (docs/spire.md): an identity quote from the node's agent socket
    /// (`attest`), checked by the verifier with the node's selectors (`verify`).
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Hardware classes at the verifier (Vigil's trust gate): golden PCR values per
    /// kind of machine, learnt from a known-good node or given in a file.
    Class(Box<class::ClassArgs>),
    /// The provisioning trust gate: is a node trusted with evidence no older than
    /// --max-age (attesting it now if needed), with a signed EAR token; offline token
    /// checks; the verifier's attestation-results key.
    Gate(Box<gate::GateArgs>),
    /// Known-good measurement sets at the verifier, for relearn: add (from a node just
    /// updated, or from an event log, IMA log or PCR list), list, show, delete.
    #[command(subcommand)]
    KnownGood(known_good::KnownGoodCommand),
    /// Runs a whole deployment on this machine (swtpm, registrar, verifier, agent),
    /// attests a node, then shows the verifier catching an unknown script and a
    /// modified file; stops everything it started.
    Demo(demo::DemoArgs),
    /// Prints a shell completion script: `vigil completions bash >
    /// /etc/bash_completion.d/vigil` (zsh: into a directory of $fpath as `_vigil`;
    /// fish: ~/.config/fish/completions/vigil.fish).
    Completions(generate::CompletionsArgs),
    /// Writes manual pages (vigil.1 and one per command) into a directory.
    Man(generate::ManArgs),
}

/// The command line as parsed, documented and completed: [`Cli`] with each tenant and
/// policy command showing only the connection options that apply to it. They all take
/// the tenant's connection options, whose other members stay accepted
/// (`keylime_tenant` passes `-r ... -rp ...` to every command) but hidden.
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    const REGISTRAR: &[&str] = &["registrar_ip", "registrar_port"];
    const VERIFIER: &[&str] = &["verifier_ip", "verifier_port"];
    const RETRIES: &[&str] = &["max_retries", "retry_interval", "exponential_backoff"];
    const LIST_ONLY: &[&str] = &["verifier_id"];
    // Keylime's spellings of push's positional NAME and FILE, and what push ignores.
    const PUSH: &[&str] = &[
        "runtime_policy",
        "runtime_policy_name",
        "mb_policy",
        "mb_policy_name",
        "tpm_policy",
    ];
    /// Each command, and the options that do not apply to it.
    const TENANT: [(&str, &[&[&str]]); 12] = [
        ("add", &[LIST_ONLY]),
        ("set", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("update", &[LIST_ONLY]),
        ("delete", &[REGISTRAR, LIST_ONLY]),
        ("reactivate", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("stop", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("list", &[REGISTRAR, RETRIES]),
        ("status", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("relearn", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("regstatus", &[VERIFIER, RETRIES, LIST_ONLY]),
        ("reglist", &[VERIFIER, RETRIES, LIST_ONLY]),
        ("regdelete", &[VERIFIER, RETRIES, LIST_ONLY]),
    ];
    const POLICY: [(&str, &[&[&str]]); 4] = [
        ("push", &[REGISTRAR, RETRIES, LIST_ONLY, PUSH]),
        ("list", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("show", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("delete", &[REGISTRAR, RETRIES, LIST_ONLY]),
    ];
    const KNOWN_GOOD: [(&str, &[&[&str]]); 4] = [
        ("add", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("list", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("show", &[REGISTRAR, RETRIES, LIST_ONLY]),
        ("delete", &[REGISTRAR, RETRIES, LIST_ONLY]),
    ];
    fn hide(cmd: clap::Command, table: &[(&str, &[&[&str]])]) -> clap::Command {
        table.iter().fold(cmd, |cmd, (name, groups)| {
            cmd.mut_subcommand(*name, |sub| {
                groups
                    .iter()
                    .flat_map(|g| g.iter())
                    .fold(sub, |sub, id| sub.mut_arg(*id, |a| a.hide(true)))
            })
        })
    }
    Cli::command()
        .mut_subcommand("tenant", |tenant| hide(tenant, &TENANT))
        .mut_subcommand("policy", |policy| hide(policy, &POLICY))
        .mut_subcommand("known-good", |kg| hide(kg, &KNOWN_GOOD))
}

/// Parses `args` (after [`keylime_argv`]) with [`command`], exiting with clap's usage
/// message on an error, as `Cli::parse_from` does.
pub(crate) fn parse(args: Vec<std::ffi::OsString>) -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches_from(keylime_argv(args));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The most a TPM structure file holds (attestation, signature, PCR values, key, nonce):
/// real ones are a few KiB.
pub(crate) const MAX_TPM_FILE: u64 = 64 << 10;
/// The most a small JSON or PEM input holds (a `tpm_policy`, a golden PCR set, a key).
pub(crate) const MAX_SMALL_FILE: u64 = 16 << 20;
/// The most a UEFI event log holds: real ones are tens to hundreds of KiB.
pub(crate) const MAX_EVENT_LOG: u64 = 64 << 20;
/// The most a runtime policy, allowlist or exclude list holds: a whole distribution's
/// is a few hundred MiB.
pub(crate) const MAX_POLICY_FILE: u64 = 1 << 30;

/// Reads a whole file, refusing one over `limit` bytes: a wrong path (a disk image,
/// `/dev/zero`) is bad input, not a reason to exhaust memory.
pub(crate) fn read_file(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > limit {
        let size = if limit >= 1 << 20 {
            format!("{} MiB", limit >> 20)
        } else {
            format!("{} KiB", limit >> 10)
        };
        anyhow::bail!(
            "{} is larger than {size}, the limit for this input",
            path.display()
        );
    }
    Ok(bytes)
}

/// Prints one JSON value on its own line: the `--json` output of every subcommand.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// Runs a parsed command line, returning the process exit code.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ima(cmd) => ima::run(cmd),
        Command::Eventlog(cmd) => eventlog::run(cmd),
        Command::Quote(cmd) => quote::run(cmd),
        Command::Credential(cmd) => credential::run(cmd),
        Command::Ekcert(cmd) => ekcert::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Ca(cmd) => ca::run(cmd),
        Command::Config(cmd) => config::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Tenant(args) => tenant::run(*args),
        Command::Identity(cmd) => identity::run(cmd),
        Command::Class(args) => class::run(*args),
        Command::Gate(args) => gate::run(*args),
        Command::KnownGood(cmd) => known_good::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Completions(args) => generate::completions(&args),
        Command::Man(args) => generate::man(&args),
    }
}

/// Accepts `keylime_tenant` habits after `vigil tenant`: the `-c/--command NAME` form
/// (`vigil tenant -c add -u ID ...`), and Keylime's multi-letter single-dash flags
/// (`-vp`, `-rp`, `-tp`, `-vi`, `-nvc`), which clap cannot declare. Anything else is
/// left to clap. Policy commands (`-c addruntimepolicy`, ...) become `vigil policy`.
pub(crate) fn keylime_argv(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use std::ffi::OsString;
    if args.get(1).is_none_or(|a| a != "tenant") {
        return args;
    }
    let mut rest: Vec<OsString> = Vec::new();
    let mut command: Option<String> = None;
    let mut it = args.iter().skip(2);
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-c" | "--command" => command = it.next().map(|v| v.to_string_lossy().into_owned()),
            t if t.starts_with("--command=") => command = Some(t["--command=".len()..].to_owned()),
            "-vp" => rest.push("--verifier-port".into()),
            "-rp" => rest.push("--registrar-port".into()),
            "-tp" => rest.push("--port".into()),
            "-vi" => rest.push("--verifier-id".into()),
            // Keylime re-reads the verifier's address from the node's status first;
            // Vigil always talks to the verifier it was given.
            "-nvc" | "--no-verifier-check" => {}
            _ => rest.push(arg.clone()),
        }
    }
    let Some(command) = command else {
        return args;
    };
    let mapped: &[&str] = match command.as_str() {
        "add" | "update" | "delete" | "status" | "reactivate" | "regstatus" | "reglist"
        | "regdelete" => &[],
        "cvstatus" => &["status"],
        "cvlist" => &["list", "--keylime-format"],
        "bulkinfo" => &["list", "--bulk"],
        "addruntimepolicy" | "addallowlist" => &["policy", "push", "runtime"],
        "updateruntimepolicy" => &["policy", "push", "runtime", "--update"],
        "showruntimepolicy" | "showallowlist" => &["policy", "show", "runtime"],
        "deleteruntimepolicy" | "deleteallowlist" => &["policy", "delete", "runtime"],
        "listruntimepolicy" => &["policy", "list", "runtime"],
        "addmbpolicy" => &["policy", "push", "measured-boot"],
        "updatembpolicy" => &["policy", "push", "measured-boot", "--update"],
        "showmbpolicy" => &["policy", "show", "measured-boot"],
        "deletembpolicy" => &["policy", "delete", "measured-boot"],
        "listmbpolicy" => &["policy", "list", "measured-boot"],
        // Unknown: let clap report it as a subcommand.
        _ => &[],
    };
    let mut out = vec![args[0].clone()];
    if mapped.first() == Some(&"policy") {
        out.extend(mapped.iter().map(OsString::from));
    } else {
        out.push("tenant".into());
        if mapped.is_empty() {
            out.push(command.into());
        } else {
            out.extend(mapped.iter().map(OsString::from));
        }
    }
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<std::ffi::OsString> {
        s.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn keylime_command_form_is_rewritten() {
        assert_eq!(
            keylime_argv(argv(
                "vigil tenant -c add -u A -t 10.0.0.1 -tp 9002 -vp 8881"
            )),
            argv("vigil tenant add -u A -t 10.0.0.1 --port 9002 --verifier-port 8881")
        );
        assert_eq!(
            keylime_argv(argv("vigil tenant -u A --command=cvstatus")),
            argv("vigil tenant status -u A")
        );
        assert_eq!(
            keylime_argv(argv("vigil tenant -c cvlist")),
            argv("vigil tenant list --keylime-format")
        );
        assert_eq!(
            keylime_argv(argv("vigil tenant -c bulkinfo")),
            argv("vigil tenant list --bulk")
        );
        assert_eq!(
            keylime_argv(argv("vigil tenant -c addruntimepolicy --runtime-policy p.json --runtime-policy-name p -nvc")),
            argv("vigil policy push runtime --runtime-policy p.json --runtime-policy-name p")
        );
        assert_eq!(
            keylime_argv(argv("vigil tenant -c showmbpolicy --mb-policy-name m")),
            argv("vigil policy show measured-boot --mb-policy-name m")
        );
        // Without -c nothing changes; other subcommands are untouched.
        assert_eq!(
            keylime_argv(argv("vigil tenant status -u A")),
            argv("vigil tenant status -u A")
        );
        assert_eq!(
            keylime_argv(argv("vigil ca init -c x")),
            argv("vigil ca init -c x")
        );
    }

    #[test]
    fn every_rewritten_command_parses() {
        use clap::Parser;
        for c in [
            "add -u A --no-require-ek-cert",
            "update -u A --no-require-ek-cert",
            "delete -u A",
            "status -u A",
            "cvstatus -u A",
            "cvlist",
            "bulkinfo",
            "reactivate -u A",
            "regstatus -u A",
            "reglist",
            "regdelete -u A",
            "addruntimepolicy --runtime-policy-name n --runtime-policy f",
            "showruntimepolicy --runtime-policy-name n",
            "deleteruntimepolicy --runtime-policy-name n",
            "listruntimepolicy",
            "addmbpolicy --mb-policy-name n --mb-policy f",
            "showmbpolicy --mb-policy-name n",
            "deletembpolicy --mb-policy-name n",
            "listmbpolicy",
        ] {
            let line = format!("vigil tenant -c {c} -v 127.0.0.1 -vp 1 -r 127.0.0.1 -rp 2");
            Cli::try_parse_from(keylime_argv(argv(&line)))
                .unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
}
