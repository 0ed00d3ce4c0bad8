//! `vigil-registrar`: runs the registrar until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vigil_registrar::{Config, Registrar};

/// Vigil's registrar: Keylime's registrar REST API (registration and credential
/// activation on the HTTP port, admin routes over mTLS on the HTTPS port).
#[derive(Debug, Parser)]
#[command(name = "vigil-registrar", version)]
struct Cli {
    /// TOML configuration file (every key is optional; see docs/registrar.md).
    /// VIGIL_REGISTRAR_<KEY> environment variables override it.
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
            eprintln!("vigil-registrar: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(url) = cli.database {
        config.database_url = url;
    }
    let (log, format) = (config.log.clone(), config.log_format);
    vigil_service::run(
        "vigil-registrar",
        &log,
        format,
        vigil_service::Runtime::default(),
        || async move {
            // Signals are handled before readiness is reported, so a stop sent as soon as
            // the service is ready is a graceful one.
            let mut signals = vigil_service::Signals::stop_only()?;
            let registrar = Registrar::start(&config).await.context("cannot start")?;
            vigil_service::notify::ready();
            signals.next().await?;
            registrar.shutdown().await;
            Ok(())
        },
    )
}
