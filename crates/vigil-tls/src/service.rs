//! The `main` every service binary shares: logging, a tokio runtime, the service's
//! body, and exit codes, so `vigil-registrar`, `vigil-verifier` and `vigil-agent` differ
//! only in what they start.

use std::future::Future;
use std::process::ExitCode;

/// Runs a service: logs at `RUST_LOG` (else `log`, the configured filter), builds a
/// multi-threaded tokio runtime and runs `body` on it. Errors are printed as
/// `<name>: <error and its causes>`; the exit status is 0 on success, 1 on failure.
pub fn run<F, Fut>(name: &str, log: &str, body: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| log.to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT: the services' signal to shut down gracefully.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use anyhow::Context;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        r = tokio::signal::ctrl_c() => r.context("cannot handle SIGINT"),
    }
}
