//! `vigil-sim`: N simulated Keylime-API pull agents on loopback, for benchmarks and
//! fleet tests (the `vigil-sim` binary, and the verifier's fleet test through [`Sim`]).
//! Each node has its own software AK (ECC P-256 or RSA-2048), mTLS certificate and
//! loopback address, an IMA log growing at a configurable rate with PCR 10 consistent
//! with it, a UEFI log with PCRs 0–7 consistent with it, and a boot time; its quotes are
//! real `TPMS_ATTEST` structures signed by its AK over the verifier's nonce, so a
//! verifier does its full work. Every quote request is noted per node ([`Sim::report`]:
//! poll lag, gaps, double attestations, seen from the nodes' side).
#![forbid(unsafe_code)]

mod enrol;
pub mod faults;
mod material;
mod node;
mod serve;
mod stats;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

pub use enrol::VerifierApi;
use faults::{Fault, Kind};
pub use node::AkKind;
use node::Node;
pub use stats::cpu_seconds;

/// What a simulation is made of.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many nodes.
    pub nodes: usize,
    /// The port every node listens on (each at its own address 127.b.c.d).
    pub port: u16,
    /// The AK's algorithm.
    pub ak: AkKind,
    /// New IMA entries per node per second.
    pub ima_rate: f64,
    /// Distinct allowed files in the shared runtime policy.
    pub files: u16,
    /// The UEFI event log every node booted with.
    pub uefi_log: PathBuf,
    /// CA certificates whose client certificates the nodes accept (the verifier's).
    pub verifier_ca: Vec<PathBuf>,
    /// The first group of the node ids (random when `None`).
    pub run_id: Option<u32>,
}

impl SimConfig {
    /// `nodes` nodes on `port` trusting `verifier_ca`, ECC AKs, one IMA entry a second,
    /// 1000 allowed files, tpm2-tools' `event-bootorder.bin` UEFI log from the shared
    /// test data.
    pub fn new(nodes: usize, port: u16, verifier_ca: PathBuf) -> Self {
        Self {
            nodes,
            port,
            ak: AkKind::Ecc,
            ima_rate: 1.0,
            files: 1000,
            uefi_log: PathBuf::from(DEFAULT_UEFI_LOG),
            verifier_ca: vec![verifier_ca],
            run_id: None,
        }
    }
}

/// The UEFI log nodes boot with by default.
pub const DEFAULT_UEFI_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/tpm2-tools/event-bootorder.bin"
);

/// A running simulation: the nodes, served until it is dropped.
pub struct Sim {
    fleet: Arc<serve::Fleet>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.server.abort();
    }
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
fn make_nodes(args: &SimConfig) -> Result<Vec<Node>> {
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

fn apply_fault(fleet: &serve::Fleet, fault: &Fault) {
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
}

impl Sim {
    /// Makes the nodes (on every core) and serves them.
    pub async fn start(config: &SimConfig) -> Result<Self> {
        let material = material::Material::new(&config.uefi_log, config.files)?;
        let nodes = make_nodes(config)?;
        let fleet = Arc::new(serve::Fleet {
            stats: stats::Stats::new(nodes.len()),
            nodes,
            material,
            started: Instant::now(),
        });
        let server = serve::serve(fleet.clone(), config.port).await?;
        Ok(Self { fleet, server })
    }

    /// Registers and activates every node with the registrar at `url` (plain HTTP).
    pub async fn register(&self, url: &str, concurrency: usize) -> Result<()> {
        enrol::register(&self.fleet, url, concurrency).await
    }

    /// Uploads the shared policies and enrols every node with the verifier `api`.
    pub async fn enrol(&self, api: &Arc<VerifierApi>, concurrency: usize) -> Result<()> {
        enrol::upload_policies(&self.fleet, api).await?;
        enrol::enrol(&self.fleet, api, concurrency).await
    }

    /// The node ids, by index.
    pub fn ids(&self) -> Vec<String> {
        self.fleet.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// Time since the nodes started serving.
    pub fn elapsed(&self) -> Duration {
        self.fleet.started.elapsed()
    }

    /// Injects `fault` now.
    pub fn apply(&self, fault: &Fault) {
        apply_fault(&self.fleet, fault);
    }

    /// The figures over the quote requests made between `from` and `to` (times since
    /// serving started), nodes in `faulty` left out, for a verifier polling every
    /// `interval`: `window_s`, `quotes`, `quotes_per_s`, `nodes_attested`, `lag_ms` and
    /// `gap_ms` (`p50`, `p99`, `max`), `doubles` (requests to a node less than half an
    /// interval after the previous one: two pollers) and `retries` (a request with
    /// the previous one's nonce: the same round sent again, counted apart).
    pub fn report(
        &self,
        interval: Duration,
        from: Duration,
        to: Duration,
        faulty: &HashSet<usize>,
    ) -> Value {
        self.fleet.stats.report(
            interval.as_millis() as u64,
            from.as_millis() as u64,
            to.as_millis() as u64,
            faulty,
        )
    }

    /// The nodes with at least one quote request after `since` (time since serving
    /// started), by index.
    pub fn attested_since(&self, since: Duration) -> HashSet<usize> {
        self.fleet.stats.attested_since(since.as_millis() as u64)
    }

    /// Writes every quote request (`at_ms,node,gap_ms,retry`) to `path`.
    pub fn write_events(&self, path: &std::path::Path) -> Result<()> {
        self.fleet
            .stats
            .write_csv(path)
            .with_context(|| format!("{}", path.display()))
    }
}
