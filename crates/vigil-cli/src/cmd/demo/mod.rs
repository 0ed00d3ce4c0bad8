//! `vigil demo`: a whole attestation deployment on this machine, narrated. A swtpm
//! manufactured with an EK certificate, `vigil-registrar` and `vigil-verifier`
//! (SQLite), and `vigil-agent` measuring a directory of files into PCR 10 (IMA
//! emulation); a runtime policy made from the node's IMA log; the node enrolled with
//! `vigil tenant add` and attested; then an unknown script and a modified measured
//! file, each caught by the verifier with the file it names.
//! Other scenarios (`identity`, `gate`, `response`) reuse the control plane, the
//! nodes and the tenant helpers here; each is a module of its own.
//!
//! The operator commands run as the user would run them: this executable's own
//! `ca init`, `policy create runtime`, `tenant add|status|reactivate`. Every process
//! is stopped by its PID at the end, on failure and on Ctrl-C.
//!
//! Exit status: 0 when every step behaved as shown, 1 when one did not (with the end
//! of every log), 130 when interrupted, 2 on bad arguments.

mod gate;
mod identity;
mod procs;
mod response;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use super::style::{EM, ERROR, OK, WARN};
use procs::{check_interrupted, pause, Processes};

/// The demo node's UUID.
const NODE: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
/// Marks a directory as the demo's, so that only such a directory is ever wiped.
const MARKER: &str = ".vigil-demo";
/// How often the demo polls while it waits.
const POLL: Duration = Duration::from_millis(250);

/// What the demo shows after the node is attested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
enum Scenario {
    /// An unknown script and a modified measured file, caught.
    #[default]
    Tour,
    /// Workload identity: SPIRE's plugin pair issues the node's SPIFFE ID with its
    /// selectors; the node is tampered, the same flow is refused and the eviction hook
    /// runs (docs/spire.md).
    Identity,
    /// The provisioning trust gate: two nodes of one hardware class, one released and
    /// one held (its boot loader differs), EAR tokens checked offline
    /// (docs/trust-gate.md).
    Gate,
    /// Integrity events, response rules and relearn: an unplanned change quarantined
    /// (dry-run), events on NATS and in a file, a planned update recorded from a canary
    /// and adopted (docs/response.md).
    Response,
}

/// `vigil demo` options.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// The scenario after the node is attested.
    #[arg(value_enum, default_value_t = Scenario::Tour)]
    scenario: Scenario,
    /// Leave everything running after the verdicts, for exploration, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// The demo's directory: state, logs and the measured files. Wiped at start when it
    /// is a previous demo's (it must otherwise be empty or absent).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "vigil-demo",
        env = "VIGIL_DEMO_DIR"
    )]
    dir: PathBuf,
    /// Seconds each wait may take before the demo fails.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 90,
        env = "VIGIL_DEMO_TIMEOUT"
    )]
    timeout: u64,
    /// Where vigil-registrar, vigil-verifier and vigil-agent are [default: the
    /// directory of this vigil executable].
    #[arg(long, value_name = "DIR", env = "VIGIL_DEMO_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// NATS JetStream for the response scenario's events (it fails without it).
    #[arg(
        long,
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222",
        env = "VIGIL_DEMO_NATS_URL"
    )]
    nats_url: String,
}

pub(crate) fn run(args: DemoArgs) -> Result<ExitCode> {
    let vigil = std::env::current_exe().context("cannot find the vigil executable")?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => vigil
            .parent()
            .context("the vigil executable has no directory")?
            .to_owned(),
    };
    let bins = ["vigil-registrar", "vigil-verifier", "vigil-agent"].map(|b| bin_dir.join(b));
    if let Some(missing) = bins.iter().find(|b| !b.is_file()) {
        bail!(
            "{} not found: build it (cargo build -p vigil-registrar -p vigil-verifier -p \
             vigil-agent) or name its directory with --bin-dir",
            missing.display()
        );
    }
    if args.scenario == Scenario::Identity {
        identity::check_plugins(&bin_dir)?;
    }
    let missing = vigil_swtpm::missing_tools(vigil_swtpm::MANUFACTURE_TOOLS);
    if !missing.is_empty() {
        bail!(
            "{} not installed (scripts/setup.sh installs swtpm and swtpm-tools)",
            missing.join(", ")
        );
    }
    // The response scenario's events go to NATS: checked before anything starts.
    let nats = match args.scenario {
        Scenario::Response => Some(response::Nats::connect(&args.nats_url)?),
        _ => None,
    };
    let dir = prepare_dir(&args.dir)?;
    procs::watch_signals()?;
    let [registrar, verifier, agent] = bins;
    let bins = Binaries {
        registrar,
        verifier,
        agent,
    };
    let mut demo = Demo {
        scenario: args.scenario,
        bin_dir,
        vigil,
        dir: dir.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        procs: Processes::new(&dir)?,
        tenant: Vec::new(),
        started: Instant::now(),
        nats,
    };
    let result = match args.scenario {
        Scenario::Gate => demo.run_gate(&bins),
        Scenario::Response => demo.run_response(&bins),
        Scenario::Tour | Scenario::Identity => demo.run(&bins, args.keep_running),
    };
    let code = match result {
        Ok(()) => 0,
        // A signal also makes the commands the demo was running fail: it was Ctrl-C.
        Err(_) if check_interrupted().is_err() => {
            println!("\ninterrupted");
            130
        }
        Err(e) => {
            demo.report_failure(&e);
            1
        }
    };
    step("Stopping everything the demo started, by PID");
    demo.procs
        .stop_all(|name, pid| note(&format!("{name} (pid {pid})")));
    if let Some(nats) = &demo.nats {
        match nats.delete() {
            Ok(()) => note(&format!("NATS stream {} deleted", nats.stream())),
            Err(e) => note(&format!("NATS stream {} not deleted: {e}", nats.stream())),
        }
    }
    Ok(ExitCode::from(code))
}

/// The demo's directory, absolute: created, or wiped when a previous demo made it.
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    if dir.join(MARKER).exists() {
        procs::stop_leftovers(&dir);
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot wipe the previous demo in {}", dir.display()))?;
        std::fs::create_dir_all(&dir)?;
    } else if std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty and not a previous demo's directory; name another with --dir",
            dir.display()
        );
    }
    std::fs::write(
        dir.join(MARKER),
        "made by `vigil demo`, wiped by its next run\n",
    )?;
    Ok(dir)
}

fn step(text: &str) {
    anstream::println!("{}== {text}{}", EM.render(), EM.render_reset());
}

fn note(text: &str) {
    println!("   {text}");
}

fn verdict(text: &str) {
    anstream::println!("{}-> {text}{}", OK.render(), OK.render_reset());
}

/// A free TCP port on 127.0.0.1 not among `taken`.
fn free_port(taken: &[u16]) -> Result<u16> {
    for _ in 0..50 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    bail!("no free TCP port on 127.0.0.1")
}

/// The service executables.
struct Binaries {
    registrar: PathBuf,
    verifier: PathBuf,
    agent: PathBuf,
}

/// The TCP ports on 127.0.0.1.
struct Ports {
    registrar: u16,
    registrar_tls: u16,
    verifier: u16,
    agent: u16,
}

impl Ports {
    /// Four distinct free ports.
    fn free() -> Result<Self> {
        let mut taken = Vec::new();
        for _ in 0..4 {
            taken.push(free_port(&taken)?);
        }
        let [registrar, registrar_tls, verifier, agent]: [u16; 4] = taken
            .try_into()
            .map_err(|_| anyhow::anyhow!("four ports were asked for"))?;
        Ok(Self {
            registrar,
            registrar_tls,
            verifier,
            agent,
        })
    }
}

/// A failure event of the node's last failed round, as the status object shows it.
struct Caught {
    event_id: String,
    message: String,
    file: String,
}

struct Demo {
    scenario: Scenario,
    /// Where the service (and plugin) executables are.
    bin_dir: PathBuf,
    vigil: PathBuf,
    dir: PathBuf,
    timeout: Duration,
    procs: Processes,
    /// `tenant` and its connection options.
    tenant: Vec<OsString>,
    started: Instant,
    /// The response scenario's JetStream stream.
    nats: Option<response::Nats>,
}

impl Demo {
    fn run(&mut self, bins: &Binaries, keep: bool) -> Result<()> {
        let ports = Ports::free()?;
        self.tenant = self.tenant_args(&ports);
        self.start_control_plane(bins, &ports, 1.0)?;
        self.start_node(bins, &ports)?;
        self.enrol()?;
        self.attest()?;
        match self.scenario {
            Scenario::Tour => {
                self.unknown_script()?;
                self.modified_file()?;
            }
            Scenario::Identity => self.identity(&ports)?,
            Scenario::Gate | Scenario::Response => {
                unreachable!("the gate and response scenarios run their own nodes")
            }
        }
        println!(
            "\ndemo: every step as expected, in {:.1} s; logs in {}",
            self.started.elapsed().as_secs_f64(),
            self.path("logs").display()
        );
        if keep {
            self.keep_running(&ports)?;
        }
        Ok(())
    }

    /// `tenant` and the options that reach this demo's services.
    fn tenant_args(&self, ports: &Ports) -> Vec<OsString> {
        vec![
            "tenant".into(),
            "--tls-dir".into(),
            self.path("cv_ca").into_os_string(),
            "--verifier-port".into(),
            ports.verifier.to_string().into(),
            "--registrar-port".into(),
            ports.registrar_tls.to_string().into(),
            "--state-dir".into(),
            self.dir.clone().into_os_string(),
        ]
    }

    /// A path in the demo's directory.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The CA, the registrar and the verifier (a quote every `quote_interval` seconds).
    fn start_control_plane(
        &mut self,
        bins: &Binaries,
        ports: &Ports,
        quote_interval: f64,
    ) -> Result<()> {
        step("Control plane: a CA for mTLS, a registrar and a verifier (SQLite)");
        let cv_ca = self.path("cv_ca");
        self.vigil_ok(&[
            "ca".into(),
            "init".into(),
            "--dir".into(),
            cv_ca.clone().into(),
        ])?;
        let (reg_dir, ver_dir) = (self.path("registrar"), self.path("verifier"));
        std::fs::create_dir_all(&reg_dir)?;
        std::fs::create_dir_all(&ver_dir)?;
        let reg_conf = self.path("registrar.toml");
        std::fs::write(
            &reg_conf,
            format!(
                "port = {}\ntls_port = {}\nstate_dir = {}\ntls_dir = {}\n",
                ports.registrar,
                ports.registrar_tls,
                toml_str(&reg_dir),
                toml_str(&cv_ca)
            ),
        )?;
        // Quotes every second, so that the demo's changes are caught within seconds.
        let ver_conf = self.path("verifier.toml");
        std::fs::write(
            &ver_conf,
            format!(
                "port = {}\nstate_dir = {}\ntls_dir = {}\nquote_interval = {quote_interval:?}\nretry_interval = 1.0\n{}",
                ports.verifier,
                toml_str(&ver_dir),
                toml_str(&cv_ca),
                self.verifier_extra(ports)?,
            ),
        )?;
        let pid = self.procs.spawn(
            "registrar",
            Command::new(&bins.registrar).arg("--config").arg(&reg_conf),
        )?;
        note(&format!(
            "vigil-registrar (pid {pid}) on 127.0.0.1:{} (agents) and :{} (mTLS)",
            ports.registrar, ports.registrar_tls
        ));
        let pid = self.procs.spawn(
            "verifier",
            Command::new(&bins.verifier).arg("--config").arg(&ver_conf),
        )?;
        note(&format!(
            "vigil-verifier (pid {pid}) on 127.0.0.1:{}, a quote every {quote_interval} s",
            ports.verifier
        ));
        Ok(())
    }

    /// The swtpm, the measured files and the agent, until it registered.
    /// Manufactures a swtpm in the demo's directory `proc` (its EK certificate from a
    /// local CA named `ca`), has the verifier side trust that CA's certificates (not its
    /// keys) through `tpm_cert_store`, starts it and hands it to the process list as
    /// `proc`: its TCTI string and port.
    fn launch_swtpm(&mut self, proc: &str, ca: &str, note_suffix: &str) -> Result<(String, u16)> {
        let tpm_dir = self.path(proc);
        let ca_dir = vigil_swtpm::manufacture(&tpm_dir, ca)?;
        let store = self.path("tpm_cert_store");
        std::fs::create_dir_all(&store)?;
        for (from, to) in [
            ("issuercert.pem", "issuer"),
            ("swtpm-localca-rootca-cert.pem", "root"),
        ] {
            std::fs::copy(ca_dir.join(from), store.join(format!("{ca}-{to}.pem")))?;
        }
        let swtpm = vigil_swtpm::Swtpm::launch(&tpm_dir)?;
        let (tcti, port) = (swtpm.tcti(), swtpm.port());
        note(&format!(
            "swtpm (pid {}) on 127.0.0.1:{port}{note_suffix}",
            swtpm.pid()
        ));
        self.procs.adopt_swtpm(proc, swtpm);
        Ok((tcti, port))
    }

    fn start_node(&mut self, bins: &Binaries, ports: &Ports) -> Result<()> {
        step("A node: swtpm manufactured with an EK certificate, vigil-agent measuring files");
        let (tcti, _) = self.launch_swtpm("swtpm", "demo", ", EK certificate from a local CA")?;

        let files = self.path("node");
        std::fs::create_dir_all(&files)?;
        for tool in ["ls", "cat", "sh"] {
            let from = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.is_file())
                .with_context(|| format!("{tool} not found in /usr/bin or /bin"))?;
            std::fs::copy(&from, files.join(tool))?;
        }
        write_script(&files.join("backup.sh"), "echo \"backup done\"")?;
        std::fs::write(files.join("sshd_config"), "PermitRootLogin no\n")?;
        let agent_dir = self.path("agent");
        std::fs::create_dir_all(&agent_dir)?;
        let agent_conf = self.path("agent.toml");
        std::fs::write(
            &agent_conf,
            format!(
                "uuid = \"{NODE}\"\nport = {port}\ncontact_port = {port}\n\
                 registrar_port = {}\ntpm_tcti = \"{tcti}\"\nstate_dir = {}\n\
                 trusted_client_ca = [{}]\nima_emulate = [{}]\nima_emulate_interval = 1\n{}",
                ports.registrar,
                toml_str(&agent_dir),
                toml_str(&self.path("cv_ca").join("cacert.crt")),
                toml_str(&files),
                self.agent_extra(),
                port = ports.agent,
            ),
        )?;
        for (port, name) in [
            (ports.registrar, "registrar"),
            (ports.registrar_tls, "registrar"),
            (ports.verifier, "verifier"),
        ] {
            self.wait_for(&format!("{name} to listen on port {port}"), |_| {
                Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok())
            })?;
        }
        let pid = self.procs.spawn(
            "agent",
            Command::new(&bins.agent).arg("--config").arg(&agent_conf),
        )?;
        note(&format!(
            "vigil-agent {NODE} (pid {pid}) on :{}, measuring the 5 files of {} every second",
            ports.agent,
            files.display()
        ));
        self.wait_for("the agent to register with the registrar", |d| {
            Ok(d.tenant_cmd(&["regstatus", "-u", NODE])?
                .status
                .success()
                .then_some(()))
        })?;
        note("the agent registered and activated its AK with the registrar");
        Ok(())
    }

    /// The runtime policy from the node's IMA log, and `vigil tenant add`.
    fn enrol(&mut self) -> Result<()> {
        step("Runtime policy from the node's IMA log, then enrolment");
        let policy = self.path("runtime-policy.json");
        self.vigil_ok(&[
            "policy".into(),
            "create".into(),
            "runtime".into(),
            "-m".into(),
            self.ima_log().into(),
            "-o".into(),
            policy.clone().into(),
        ])?;
        let digests = serde_json::from_slice::<Value>(&std::fs::read(&policy)?)?["digests"]
            .as_object()
            .map_or(0, serde_json::Map::len);
        note(&format!(
            "$ vigil policy create runtime -m <the node's IMA log>: {digests} allowed names (boot_aggregate and the files)"
        ));
        let out = self.tenant_cmd(&[
            OsString::from("add"),
            "-u".into(),
            NODE.into(),
            "--runtime-policy".into(),
            policy.into(),
            "--tpm-cert-store".into(),
            self.path("tpm_cert_store").into(),
        ])?;
        self.save_log("tenant-add", &out);
        if !out.status.success() {
            bail!(
                "vigil tenant add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        note("$ vigil tenant add: identity quote and EK certificate checked, node handed to the verifier");
        Ok(())
    }

    /// Until three rounds passed, showing the count rise.
    fn attest(&mut self) -> Result<()> {
        step("Waiting for the verifier to attest the node");
        let t0 = Instant::now();
        let mut shown = 0;
        self.wait_for("the node to be attested 3 times", |d| {
            let Some(s) = d.status()? else {
                return Ok(None);
            };
            let count = s["attestation_count"].as_u64().unwrap_or(0);
            if s["operational_state"] == "Get Quote" && count > shown {
                shown = count;
                note(&format!(
                    "{:4.1} s  Get Quote, attestation_count {count}, attestation_status {}",
                    t0.elapsed().as_secs_f64(),
                    s["attestation_status"].as_str().unwrap_or("?")
                ));
            }
            Ok((shown >= 3).then_some(()))
        })?;
        self.show_status()?;
        verdict(&format!(
            "verdict 1: the node is trusted ({shown} quotes verified)"
        ));
        Ok(())
    }

    /// A new script in the measured directory, run, and caught.
    fn unknown_script(&mut self) -> Result<()> {
        let script = self.path("node").join("bad-script.sh");
        step(&format!("An unknown script: {}", script.display()));
        write_script(&script, "echo \"an unknown script ran\"")?;
        let out = Command::new(&script)
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        note(&format!(
            "$ {} -> {}",
            script.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
        note("the agent measures every new or changed file of its directory each second (real IMA measures at exec)");
        let caught = self.wait_caught("ima.validation.ima-ng.not_in_allowlist", &script)?;
        self.show_catch(&caught, "File not found in allowlist")?;
        verdict(&format!(
            "verdict 2: the node is refused: {} is not in its runtime policy",
            script.display()
        ));
        Ok(())
    }

    /// A measured file changed, measured again, and caught.
    fn modified_file(&mut self) -> Result<()> {
        let target = self.path("node").join("backup.sh");
        step(&format!(
            "A modified measured file: appending to {}",
            target.display()
        ));
        self.modify_measured_file(&target)?;
        // Keylime's default severity policy rates every event at the top level, and the
        // verifier stops polling a node at its first failure: reactivate resumes it.
        self.tenant_ok(&["reactivate", "-u", NODE])?;
        note("$ vigil tenant reactivate: the verifier stopped polling at the failure (Keylime's default); attest again");
        let caught = self.wait_caught("ima.validation.ima-ng.runtime_policy_hash", &target)?;
        self.show_catch(&caught, "Hash not found in runtime policy")?;
        verdict(&format!(
            "verdict 3: the node is refused: {} no longer matches its runtime policy",
            target.display()
        ));
        Ok(())
    }

    /// Appends a line to the measured file `target` and waits until the agent measured
    /// its new digest.
    fn modify_measured_file(&mut self, target: &Path) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(target)?;
        f.write_all(b"# changed\n")?;
        drop(f);
        let (ima_log, name) = (self.ima_log(), target.to_string_lossy().into_owned());
        self.wait_measured(target, &name, &ima_log)
    }

    /// Waits until `ima_log` holds the digest of `target` under the name `measured_as`.
    fn wait_measured(&mut self, target: &Path, measured_as: &str, ima_log: &Path) -> Result<()> {
        self.wait_for("the agent to measure the changed file", |_| {
            let log = std::fs::read_to_string(ima_log).unwrap_or_default();
            let digest = vigil_core::HashAlg::Sha256.hash(&std::fs::read(target)?);
            let entry = format!("sha256:{} {measured_as}", digest.to_hex());
            Ok(log.contains(&entry).then_some(()))
        })?;
        note("measured: the agent extended PCR 10 with its new digest");
        Ok(())
    }

    /// The agent's emulated IMA log.
    fn ima_log(&self) -> PathBuf {
        self.path("agent").join("ima_emulated_measurements")
    }

    /// Waits (up to the timeout) until `probe` gives a value, failing early when a
    /// process exited or a signal arrived.
    fn wait_for<T>(
        &mut self,
        what: &str,
        mut probe: impl FnMut(&mut Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        loop {
            check_interrupted()?;
            self.procs
                .check_running()
                .with_context(|| format!("while waiting for {what}"))?;
            if let Some(v) = probe(self)? {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {} s waiting for {what}",
                    self.timeout.as_secs()
                );
            }
            pause(POLL)?;
        }
    }

    /// Waits until the node's last failed round has `event_id` about `file`.
    fn wait_caught(&mut self, event_id: &str, file: &Path) -> Result<Caught> {
        let t0 = Instant::now();
        let file = file.to_string_lossy().into_owned();
        let caught = self.wait_for(
            &format!("the verifier to report {event_id} for {file}"),
            |d| {
                let Some(s) = d.status()? else {
                    return Ok(None);
                };
                let found = s["vigil"]["last_failures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|f| f["event_id"] == event_id && f["file"] == file.as_str());
                Ok(found.map(|f| Caught {
                    event_id: event_id.to_owned(),
                    message: f["context"]["message"].as_str().unwrap_or("").to_owned(),
                    file: file.clone(),
                }))
            },
        )?;
        note(&format!("caught in {:.1} s", t0.elapsed().as_secs_f64()));
        Ok(caught)
    }

    /// Shows the status and the verifier's log line for a caught failure; checks that
    /// the node is refused and that the log names the file.
    fn show_catch(&mut self, caught: &Caught, message: &str) -> Result<()> {
        let state = self.status()?.map(|s| s["operational_state"].clone());
        let state = state
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        if !matches!(
            state.as_str(),
            "Invalid Quote" | "Failed" | "Tenant Quote Failed"
        ) {
            bail!(
                "the verifier reported {} but the node is in '{state}'",
                caught.event_id
            );
        }
        if !caught.message.starts_with(message) {
            bail!(
                "{} says '{}', not '{message}'",
                caught.event_id,
                caught.message
            );
        }
        let (r, rr) = (ERROR.render(), ERROR.render_reset());
        anstream::println!(
            "   state: {r}{state}{rr}, event: {r}{}{rr}",
            caught.event_id
        );
        self.show_status()?;
        // The verifier logs each failing event; the annotation names the file.
        let log = self.procs.log("verifier");
        let line = self.wait_for("the verifier's log to name the file", |_| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(text
                .lines()
                .rev()
                .find(|l| l.contains(&caught.event_id) && l.contains(&caught.file))
                .map(str::to_owned))
        })?;
        let shown = line.find(message).map_or(line.as_str(), |i| &line[i..]);
        note(&format!("verifier log: {shown}"));
        Ok(())
    }

    fn keep_running(&mut self, ports: &Ports) -> Result<()> {
        let dir = self.dir.display();
        anstream::println!(
            "\n{}Everything keeps running; Ctrl-C stops it (exit 0).{} Try:",
            WARN.render(),
            WARN.render_reset()
        );
        let conn = format!(
            "--tls-dir {dir}/cv_ca --verifier-port {} --registrar-port {}",
            ports.verifier, ports.registrar_tls
        );
        println!("   {} tenant status -u {NODE} {conn}", self.vigil.display());
        println!("   {} tenant list {conn}", self.vigil.display());
        println!("   tail -f {dir}/logs/verifier.log");
        // Ctrl-C is how this ends: every step already behaved as shown.
        loop {
            self.procs.check_running()?;
            if pause(Duration::from_secs(1)).is_err() {
                println!();
                return Ok(());
            }
        }
    }

    fn vigil(&self, args: &[OsString]) -> Result<Output> {
        Command::new(&self.vigil)
            .args(args)
            .env_remove("VIGIL_STATE_DIR")
            .output()
            .with_context(|| format!("cannot run {}", self.vigil.display()))
    }

    fn vigil_ok(&self, args: &[OsString]) -> Result<()> {
        let out = self.vigil(args)?;
        if !out.status.success() {
            bail!(
                "vigil {} failed: {}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn tenant_cmd<S: Into<OsString> + Clone>(&self, args: &[S]) -> Result<Output> {
        let mut all = self.tenant.clone();
        all.extend(args.iter().cloned().map(Into::into));
        self.vigil(&all)
    }

    fn tenant_ok(&self, args: &[&str]) -> Result<()> {
        let mut all = self.tenant.clone();
        all.extend(args.iter().map(OsString::from));
        self.vigil_ok(&all)
    }

    /// The node's status object from `vigil tenant status --json` (state as text), or
    /// `None` while the verifier does not know it. The exit code says attested (0),
    /// failed (1) or not yet (3): the object is printed in each case.
    fn status(&self) -> Result<Option<Value>> {
        let out = self.tenant_cmd(&["status", "-u", NODE, "--json"])?;
        if !matches!(out.status.code(), Some(0 | 1 | 3)) || out.stdout.is_empty() {
            return Ok(None);
        }
        let mut v: Value = serde_json::from_slice(&out.stdout)
            .context("vigil tenant status --json printed no JSON")?;
        Ok(Some(v[NODE].take()))
    }

    /// Prints `vigil tenant status`, indented.
    fn show_status(&self) -> Result<()> {
        let out = self.tenant_cmd(&["status", "-u", NODE])?;
        note("$ vigil tenant status");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            note(&format!("  {line}"));
        }
        Ok(())
    }

    fn save_log(&self, name: &str, out: &Output) {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::write(self.procs.log(name), text);
    }

    /// The reason, then the end of every log.
    fn report_failure(&self, e: &anyhow::Error) {
        anstream::eprintln!(
            "\n{}demo: FAILED: {e:#}{}",
            ERROR.render(),
            ERROR.render_reset()
        );
        let mut text = String::new();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.join("logs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        logs.push(self.dir.join("swtpm").join("swtpm.log"));
        for log in logs.iter().filter(|l| l.is_file()) {
            let _ = writeln!(text, "\n--- {} (last 15 lines)", log.display());
            let _ = writeln!(text, "{}", procs::tail(log, 15));
        }
        eprint!("{text}");
    }
}

/// A TOML string for a path.
fn toml_str(p: &Path) -> String {
    Value::String(p.to_string_lossy().into_owned()).to_string()
}

/// Writes an executable shell script.
fn write_script(path: &Path, body: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
