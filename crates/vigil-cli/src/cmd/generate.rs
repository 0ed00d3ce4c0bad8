//! `vigil completions SHELL` and `vigil man DIR`: shell completions and manual pages,
//! generated from the same command-line definition clap parses, so they cannot drift
//! from it (and packagers need no build step of their own).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// The directory to write the pages to (created if missing): vigil.1, and
    /// vigil-<command>[-<subcommand>].1 for each command.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// Prints the completion script for `args.shell` to standard output.
pub(crate) fn completions(args: &CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = super::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "vigil", &mut out);
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a manual page for `vigil` and for each of its (sub)commands.
pub(crate) fn man(args: &ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    clap_mangen::generate_to(super::command(), &args.dir)
        .with_context(|| format!("cannot write the manual pages to {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
