//! Subcommands, one module each.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ca;
mod credential;
mod ekcert;
mod eventlog;
mod ima;
mod policy;
mod quote;
pub(crate) mod style;

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
    }
}
