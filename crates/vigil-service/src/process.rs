//! The `main` every service binary shares: logging, a tokio runtime, the service's
//! body, the signals that stop it, and exit codes, so `vigil-registrar`,
//! `vigil-verifier` and `vigil-agent` differ only in what they start.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};

/// How a service writes its log lines (`log_format` in each service's configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: time, level, spans, target, message, fields.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields` with the
    /// `message`, the current `span` and the `spans` it is in), for log collectors.
    Json,
}

/// What a service asks of its tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Runtime {
    /// The most threads its blocking pool may have (tokio's 512 when `None`). Every
    /// thread that allocates keeps its own allocator caches: a service whose blocking
    /// work is bounded CPU work gains nothing from more threads than it runs at once.
    pub blocking_threads: Option<usize>,
}

/// Runs a service: logs at `RUST_LOG` (else `log`, the configured filter) in `format`,
/// builds a multi-threaded tokio runtime as `runtime` says and runs `body` on it.
/// Errors are printed as `<name>: <error and its causes>`; the exit status is 0 on
/// success, 1 on failure.
pub fn run<F, Fut>(name: &str, log: &str, format: LogFormat, runtime: Runtime, body: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| log.to_owned());
    let _ = tracing::subscriber::set_global_default(subscriber(&filter, format, std::io::stdout));
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = runtime.blocking_threads {
        builder.max_blocking_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {}", crate::report::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The services' log subscriber: events passing `filter` (an `EnvFilter` directive),
/// written to `writer` in `format`.
pub fn subscriber<W>(
    filter: &str,
    format: LogFormat,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

/// What a signal asks of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: shut down gracefully.
    Stop,
    /// SIGHUP, when asked for ([`Signals::with_hangup`]): the service's own refresh
    /// (the agent re-measures its IMA emulation targets).
    Hangup,
}

/// The signals a service listens to, installed once at start so none is missed
/// between two waits.
#[derive(Debug)]
pub struct Signals {
    term: UnixSignal,
    interrupt: UnixSignal,
    hangup: Option<UnixSignal>,
}

impl Signals {
    /// SIGTERM and SIGINT only: SIGHUP keeps its default action. Needs a running tokio
    /// runtime.
    pub fn stop_only() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hangup: None,
        })
    }

    /// SIGTERM and SIGINT, and SIGHUP as [`Signal::Hangup`].
    pub fn with_hangup() -> anyhow::Result<Self> {
        let mut signals = Self::stop_only()?;
        signals.hangup = Some(signal(SignalKind::hangup()).context("cannot handle SIGHUP")?);
        Ok(signals)
    }

    /// Waits for the next signal. A stop is reported to systemd (`STOPPING=1`, see
    /// [`crate::notify`]) before it is returned, so the unit shows as deactivating while
    /// the service drains.
    pub async fn next(&mut self) -> anyhow::Result<Signal> {
        let Self {
            term,
            interrupt,
            hangup,
        } = self;
        let hangup = async {
            match hangup {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let signal = tokio::select! {
            _ = term.recv() => Signal::Stop,
            _ = interrupt.recv() => Signal::Stop,
            _ = hangup => Signal::Hangup,
        };
        if signal == Signal::Stop {
            crate::notify::notify(crate::notify::State::Stopping);
        }
        Ok(signal)
    }
}
