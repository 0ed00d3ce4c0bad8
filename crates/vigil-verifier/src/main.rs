//! `vigil-verifier`: runs the verifier until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vigil_verifier::{Config, Verifier};

/// jemalloc rather than glibc's allocator: a verifier holding thousands of nodes keeps
/// a few KiB for each for as long as it attests it, among each round's short-lived
/// answers (tens of KiB, freed on another thread than the one that read them), and the
/// allocator decides how much of the freed memory stays resident. At 3,000 nodes,
/// resident memory per node was 51 KiB with glibc, 25–27 KiB with mimalloc and
/// 19–20 KiB with jemalloc, for 11 KiB live (docs/benchmarks.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let (log, format) = (config.log.clone(), config.log_format);
    vigil_service::run("vigil-verifier", &log, format, || async move {
        // Signals are handled before readiness is reported, so a stop sent as soon as
        // the service is ready is a graceful one.
        let mut signals = vigil_service::Signals::stop_only()?;
        let verifier = Verifier::start(&config).await.context("cannot start")?;
        vigil_service::notify::ready();
        signals.next().await?;
        verifier.shutdown().await;
        Ok(())
    })
}
