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

mod enrol;
mod faults;
mod material;
mod node;
mod serve;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use faults::{Fault, Kind};
use node::{AkKind, Node};

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
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata/tpm2-tools/event-bootorder.bin"))]
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
    /// Write every quote request (`at_ms,node,gap_ms`) here.
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

/// The client-certificate check every node shares.
fn client_verifier(cas: &[PathBuf]) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in rustls::pki_types::CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("{}", ca.display()))?
        {
            roots.add(c?)?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()?,
    )
}

/// Makes the nodes on every core.
fn make_nodes(args: &Args) -> Result<Vec<Node>> {
    let verifier = client_verifier(&args.verifier_ca)?;
    let run = args.run_id.unwrap_or_else(|| {
        let mut b = [0u8; 4];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        u32::from_be_bytes(b)
    });
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = args.nodes.div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.nodes)
            .step_by(chunk)
            .map(|first| {
                let verifier = verifier.clone();
                s.spawn(move || {
                    (first..(first + chunk).min(args.nodes))
                        .map(|i| {
                            Node::new(i, run, args.port, args.ak, args.ima_rate, verifier.clone())
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut nodes = Vec::with_capacity(args.nodes);
        for h in handles {
            nodes.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a node-making thread panicked"))??,
            );
        }
        Ok(nodes)
    })
}

fn apply(fleet: &serve::Fleet, fault: &Fault) {
    let last = fault.nodes.1.min(fleet.nodes.len().saturating_sub(1));
    for node in fleet.nodes.iter().take(last + 1).skip(fault.nodes.0) {
        match &fault.kind {
            Kind::Ima => node.measure_intruder(&fleet.material),
            Kind::Pcr => node.change_boot_pcr(),
            Kind::Nonce => node.set_faults(|f| f.wrong_nonce = true),
            Kind::Replay => node.set_faults(|f| f.replay = true),
            Kind::Down => node.set_faults(|f| f.unreachable = true),
            Kind::Up => node.set_faults(|f| f.unreachable = false),
            Kind::Slow(d) => node.set_faults(|f| f.delay = *d),
            Kind::Reboot => node.reboot(),
        }
    }
    eprintln!(
        "vigil-sim: fault {:?} on nodes {}-{}",
        fault.kind, fault.nodes.0, last
    );
}

async fn run(args: Args) -> Result<()> {
    let cpu0 = stats::cpu_seconds();
    let t = Instant::now();
    let material = material::Material::new(&args.uefi_log, args.files)?;
    let nodes = make_nodes(&args)?;
    eprintln!(
        "vigil-sim: {} nodes made in {:.1} s",
        nodes.len(),
        t.elapsed().as_secs_f64()
    );
    let fleet = Arc::new(serve::Fleet {
        stats: stats::Stats::new(nodes.len()),
        nodes,
        material,
        started: Instant::now(),
    });
    serve::serve(fleet.clone(), args.port).await?;
    if let Some(url) = &args.registrar {
        let t = Instant::now();
        enrol::register(&fleet, url, args.concurrency).await?;
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
        let api = Arc::new(enrol::VerifierApi::new(
            url,
            dir,
            args.verifier_server_name.as_deref(),
            &args.api_version,
        )?);
        let t = Instant::now();
        enrol::upload_policies(&fleet, &api).await?;
        enrol::enrol(&fleet, &api, args.concurrency).await?;
        eprintln!("vigil-sim: enrolled in {:.1} s", t.elapsed().as_secs_f64());
    }
    let enrolled = Instant::now();
    let enrolled_ms = fleet.started.elapsed().as_millis() as u64;
    let cpu_enrolled = stats::cpu_seconds();
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
            apply(&fleet, f);
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
    }
    let to_ms = fleet.started.elapsed().as_millis() as u64;
    let from_ms = enrolled_ms + (args.measure_after * 1000.0) as u64;
    let interval_ms = (args.interval * 1000.0) as u64;
    let faulty = faults::touched(&args.fault, fleet.nodes.len());
    let mut report = fleet.stats.report(interval_ms, from_ms, to_ms, &faulty);
    let cpu_serving = stats::cpu_seconds() - cpu_enrolled;
    let served = fleet
        .stats
        .report(interval_ms, enrolled_ms, to_ms, &Default::default())["quotes"]
        .as_u64()
        .unwrap_or(0);
    report["nodes"] = json!(fleet.nodes.len());
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
        fleet
            .stats
            .write_csv(path)
            .with_context(|| format!("{}", path.display()))?;
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
