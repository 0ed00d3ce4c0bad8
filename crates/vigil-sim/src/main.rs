//! `vigil-sim`: N simulated Keylime-API pull agents on loopback, for benchmarks and
//! fleet tests. Each node has its own software AK (ECC P-256 or RSA-2048), mTLS
//! certificate and loopback address, an IMA log growing at `--ima-rate` entries a
//! second with PCR 10 consistent with it, the UEFI log `--uefi-log` with PCRs 0–7
//! consistent with it, and a boot time; its quotes are real `TPMS_ATTEST` structures
//! signed by its AK over the verifier's nonce, so a verifier does its full work.
//!
//! ```sh
//! vigil-sim --nodes 1000 --verifier-ca cv_ca/cacert.crt \
//!     --registrar http://127.0.0.1:8890 --verifier https://127.0.0.1:8881 \
//!     --verifier-tls-dir cv_ca --interval 2 --duration 60 --measure-after 10 \
//!     --fault ima@0-4@20 --report report.json
//! ```
//!
//! It registers every node with the registrar, uploads one runtime and one
//! measured-boot policy, enrols every node with the verifier, injects the faults, and
//! at the end prints what it saw from the nodes' side as one JSON object (requests per
//! second, poll lag and gap quantiles, double attestations, its own CPU).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use vigil_sim::faults::{self, Fault};
use vigil_sim::{cpu_seconds, AkKind, Sim, SimConfig, VerifierApi};

#[derive(Parser, Debug)]
#[command(version, about = "Simulated Keylime-API pull agents on loopback")]
struct Args {
    /// How many nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// The port every node listens on (each at its own address 127.b.c.d).
    #[arg(long, default_value_t = 29000)]
    port: u16,
    /// The AK's algorithm.
    #[arg(long, value_enum, default_value_t = AkKind::Ecc)]
    ak: AkKind,
    /// New IMA entries per node per second.
    #[arg(long, default_value_t = 1.0)]
    ima_rate: f64,
    /// Distinct allowed files in the shared runtime policy.
    #[arg(long, default_value_t = 1000)]
    files: u16,
    /// The UEFI event log every node booted with.
    #[arg(long, default_value = vigil_sim::DEFAULT_UEFI_LOG)]
    uefi_log: PathBuf,
    /// CA certificate(s) whose client certificates the nodes accept (the verifier's).
    #[arg(long, required = true)]
    verifier_ca: Vec<PathBuf>,
    /// The registrar's agent-side URL (plain HTTP); no registration without it.
    #[arg(long)]
    registrar: Option<String>,
    /// The verifier's URL (https); no enrolment without it.
    #[arg(long)]
    verifier: Option<String>,
    /// The verifier's `cv_ca` (cacert.crt, client-cert.crt, client-private.pem).
    #[arg(long)]
    verifier_tls_dir: Option<PathBuf>,
    /// The name the verifier's certificate carries, when not the URL's host.
    #[arg(long)]
    verifier_server_name: Option<String>,
    /// The verifier API version of the enrolment paths.
    #[arg(long, default_value = "2.2")]
    api_version: String,
    /// Registrations and enrolments in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// A fault, `KIND@FIRST[-LAST]@SECONDS` after enrolment (repeatable).
    #[arg(long)]
    fault: Vec<Fault>,
    /// The verifier's quote interval, seconds (for the lag figures).
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Seconds to serve after enrolment (0: until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Seconds after enrolment before the figures' window opens (warm-up).
    #[arg(long, default_value_t = 0.0)]
    measure_after: f64,
    /// Write the report (JSON) here too.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write every quote request (`at_ms,node,gap_ms,retry`) here.
    #[arg(long)]
    events: Option<PathBuf>,
    /// The first group of the node ids (hex; random by default, so a second run does
    /// not collide with the registrar's records of the first).
    #[arg(long, value_parser = |s: &str| u32::from_str_radix(s, 16))]
    run_id: Option<u32>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

async fn run(args: Args) -> Result<()> {
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let sim = Sim::start(&SimConfig {
        nodes: args.nodes,
        port: args.port,
        ak: args.ak,
        ima_rate: args.ima_rate,
        files: args.files,
        uefi_log: args.uefi_log.clone(),
        verifier_ca: args.verifier_ca.clone(),
        run_id: args.run_id,
    })
    .await?;
    eprintln!(
        "vigil-sim: {} nodes made in {:.1} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );
    if let Some(url) = &args.registrar {
        let t = Instant::now();
        sim.register(url, args.concurrency).await?;
        eprintln!(
            "vigil-sim: registered and activated in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    if let Some(url) = &args.verifier {
        let dir = args
            .verifier_tls_dir
            .as_deref()
            .context("--verifier needs --verifier-tls-dir")?;
        let api = Arc::new(VerifierApi::new(
            url,
            dir,
            args.verifier_server_name.as_deref(),
            &args.api_version,
        )?);
        let t = Instant::now();
        sim.enrol(&api, args.concurrency).await?;
        eprintln!("vigil-sim: enrolled in {:.1} s", t.elapsed().as_secs_f64());
    }
    let enrolled = Instant::now();
    let enrolled_at = sim.elapsed();
    let cpu_enrolled = cpu_seconds();
    eprintln!("vigil-sim: serving (ready)");
    let mut faults = args.fault.clone();
    faults.sort_by_key(|f| f.at);
    let end = (args.duration > 0.0).then(|| enrolled + Duration::from_secs_f64(args.duration));
    let mut pending = faults.iter().peekable();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let next = pending.peek().map(|f| enrolled + f.at);
        let wake = match (next, end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match wake {
                Some(w) => tokio::time::sleep_until(w.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
        while let Some(f) = pending.next_if(|f| enrolled + f.at <= Instant::now()) {
            sim.apply(f);
            eprintln!(
                "vigil-sim: fault {:?} on nodes {}-{}",
                f.kind, f.nodes.0, f.nodes.1
            );
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
    }
    let to = sim.elapsed();
    let from = enrolled_at + Duration::from_secs_f64(args.measure_after);
    let interval = Duration::from_secs_f64(args.interval);
    let faulty = faults::touched(&args.fault, args.nodes);
    let mut report = sim.report(interval, from, to, &faulty);
    let cpu_serving = cpu_seconds() - cpu_enrolled;
    let served = sim.report(interval, enrolled_at, to, &Default::default())["quotes"]
        .as_u64()
        .unwrap_or(0);
    report["nodes"] = json!(args.nodes);
    // Where the events' `at_ms` count from, for scripts lining them up with the clock.
    let started = std::time::SystemTime::now() - sim.elapsed();
    report["started_unix_ms"] = json!(started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64));
    report["nodes_with_faults"] = json!(faulty.len());
    report["sim_cpu_s"] = json!({
        "setup": cpu_enrolled - cpu0,
        "serving": cpu_serving,
        "per_quote_ms": if served > 0 { cpu_serving * 1000.0 / served as f64 } else { 0.0 },
    });
    let text = report.to_string();
    println!("{text}");
    if let Some(path) = &args.report {
        std::fs::write(path, &text).with_context(|| format!("{}", path.display()))?;
    }
    if let Some(path) = &args.events {
        sim.write_events(path)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}
