//! `vigil`: the operator's command line.
//!
//! Exit codes: 0 when the checked evidence is trusted, 1 when it is not, 2 on bad input
//! or usage errors.

mod cmd;
mod policy_create;
mod tenant;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse_from(cmd::keylime_argv(std::env::args_os().collect()));
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            anstream::eprintln!(
                "{}error:{} {err:#}",
                cmd::style::ERROR.render(),
                cmd::style::ERROR.render_reset()
            );
            ExitCode::from(2)
        }
    }
}
