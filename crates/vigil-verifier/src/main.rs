//! `vigil-verifier`: runs the verifier until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vigil_service::Runtime;
use vigil_verifier::{Config, Verifier};

/// jemalloc rather than glibc's allocator: a verifier holding thousands of nodes keeps
/// a few KiB for each for as long as it attests it, among each round's short-lived
/// answers (tens of KiB, freed on another thread than the one that read them), and the
/// allocator decides how much of the freed memory stays resident. At 3,000 nodes,
/// resident memory per node was 51 KiB with glibc, 25–27 KiB with mimalloc and
/// 19–20 KiB with jemalloc, for 11 KiB live (docs/benchmarks.md).
///
/// jemalloc is built (`.cargo/config.toml`: `--with-malloc-conf`) to give freed pages
/// back after about a second rather than ten: at 10,000 nodes a verifier frees answers
/// of tens of KiB thousands of times a second, and ten seconds of them stayed resident
/// (15.3–17.1 KiB per node with ten, 14.1–15.5 with one, for the same CPU per
/// attestation). `_RJEM_MALLOC_CONF` in the environment still overrides it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The verifier's blocking pool: twice as many threads as cores. Judging answers is
/// its bulk, at most one per core at a time (the engine's `judging` permits); the rest
/// are for identity checks and file event sinks. tokio's pool grows to 512 threads
/// whenever a task comes before a finished one's thread is idle again, and it had grown
/// to 15 on 2 cores: each with its allocator caches, for 2 KiB more resident memory per
/// node at 5,000 nodes (docs/benchmarks.md).
fn runtime() -> Runtime {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Runtime {
        blocking_threads: Some(2 * cores),
    }
}

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
    vigil_service::run("vigil-verifier", &log, format, runtime(), || async move {
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
