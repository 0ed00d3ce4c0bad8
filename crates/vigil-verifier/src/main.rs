//! `vigil-verifier`: runs the verifier until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vigil_verifier::{Config, Verifier};

/// mimalloc rather than glibc's allocator: a verifier holding thousands of nodes frees
/// each round's answer (tens of KiB) on another thread than the one that read it, and
/// glibc kept that memory as fragmented, resident heap (RSS per node 51 KiB with
/// glibc, 38 KiB with mimalloc at 3,000 nodes; docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
