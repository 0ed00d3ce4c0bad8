//! `vigil`: the operator's command line.
//!
//! Exit codes: 0 when the checked evidence is trusted, 1 when it is not, 2 on bad input
//! or usage errors (`vigil tenant status` adds 3: not attested yet, or unreachable).

mod cmd;
mod policy_create;
mod tenant;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cmd::parse(std::env::args_os().collect());
    match cmd::run(cli) {
        Ok(code) => code,
        // A reader that stopped reading (`vigil eventlog dump LOG | head`) is not worth
        // a message: end quietly with the status of a Unix tool killed by SIGPIPE
        // (128 + 13), which no script mistakes for a verdict.
        Err(err) if is_broken_pipe(&err) => ExitCode::from(141),
        Err(err) => {
            anstream::eprintln!(
                "{}error:{} {}",
                cmd::style::ERROR.render(),
                cmd::style::ERROR.render_reset(),
                vigil_service::report::chain(&err)
            );
            ExitCode::from(2)
        }
    }
}

/// Whether `err` comes from writing to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(BrokenPipe))
    })
}
