//! `vigil-agent`: runs the agent until SIGTERM or SIGINT; SIGHUP re-measures the IMA
//! emulation targets.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vigil_agent::{Agent, Config};
use vigil_service::{Signal, Signals};

/// Vigil's node agent: Keylime's agent REST API (quotes, IMA and UEFI logs, payloads,
/// revocation actions) over mTLS, registering with a Keylime-compatible registrar.
#[derive(Debug, Parser)]
#[command(name = "vigil-agent", version)]
struct Cli {
    /// TOML configuration file (every key is optional; see docs/agent.md).
    /// VIGIL_AGENT_<KEY> environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// IMA emulation: measure these files (or every file under these directories)
    /// into PCR 10 and an emulated measurement list, overriding `ima_emulate`.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    ima_emulate: Vec<PathBuf>,
    /// The TPM's TCTI, overriding `tpm_tcti` (e.g. swtpm:host=127.0.0.1,port=2321).
    #[arg(long, value_name = "TCTI")]
    tcti: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if !cli.ima_emulate.is_empty() {
        config.ima_emulate = cli.ima_emulate;
    }
    if let Some(t) = cli.tcti {
        config.tpm_tcti = t;
    }
    let (log, format) = (config.log.clone(), config.log_format);
    vigil_service::run(
        "vigil-agent",
        &log,
        format,
        vigil_service::Runtime::default(),
        || run(config),
    )
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Signals are handled before readiness is reported, so a stop sent as soon as the
    // agent is ready is a graceful one.
    let mut signals = Signals::with_hangup()?;
    let agent = Agent::start(&config).await.context("cannot start")?;
    // Ready once the API port is bound; registration goes on in the background.
    vigil_service::notify::ready();
    while signals.next().await? == Signal::Hangup {
        match agent.ima_rescan().await {
            Ok(n) => tracing::info!(entries = n, "IMA emulation: rescan on SIGHUP"),
            Err(e) => tracing::warn!("IMA emulation rescan: {e}"),
        }
    }
    agent.shutdown().await;
    Ok(())
}
