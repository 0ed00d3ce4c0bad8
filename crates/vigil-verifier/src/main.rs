//! `vigil-verifier`: runs the verifier until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vigil_verifier::{Config, Verifier};

/// Vigil's verifier: Keylime's verifier REST API and continuous attestation of
/// every enrolled node (HTTPS, admin routes over mTLS).
#[derive(Debug, Parser)]
#[command(name = "vigil-verifier", version)]
struct Cli {
    /// TOML configuration file (every key is optional; see docs/verifier.md).
    /// VIGIL_VERIFIER_<KEY> environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL (`sqlite://PATH?mode=rwc` or `postgres://…`), overriding
    /// `database_url`.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-verifier: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(url) = cli.database {
        config.database_url = url;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-verifier: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-verifier: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &Config) -> anyhow::Result<()> {
    let verifier = Verifier::start(config).await.context("cannot start")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("cannot handle SIGINT")?,
    }
    verifier.shutdown().await;
    Ok(())
}
