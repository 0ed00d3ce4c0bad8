//! `vigil policy`: policies, made here and checked before they are enrolled.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use crate::policy_create;

/// Policies.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create a policy from the files, initrds or logs of a reference machine.
    #[command(subcommand)]
    Create(CreateCommand),
}

/// What kind of policy to create.
#[derive(Debug, Subcommand)]
pub(crate) enum CreateCommand {
    /// A runtime (IMA) policy, Keylime format v1, as `keylime-policy create runtime` makes.
    Runtime(policy_create::RuntimeArgs),
}

pub(crate) fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Create(CreateCommand::Runtime(args)) => policy_create::run(&args),
    }
}
