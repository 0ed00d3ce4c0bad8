//! Keylime 7.14.3 services as test peers: its registrar and verifier started from the
//! reference venv (`scripts/keylime-reference.sh`), each test with its own directory
//! (`KEYLIME_DIR`: the SQLite databases and the TLS material), free ports, and
//! `keylime_tenant` runs against whatever registrar and verifier the test names —
//! Keylime's or Vigil's.
//!
//! Configuration: the venv's default `*.conf` files (from `keylime_upgrade_config
//! --defaults`), overridden per process through Keylime's `KEYLIME_<COMPONENT>_<OPTION>`
//! environment variables. Every inherited `KEYLIME_*` variable is removed first, so
//! the test process's environment cannot leak into a peer.
//!
//! TLS: [`KeylimeEnv::new`] makes a CA with `vigil_tls::ca::init` in `KEYLIME_DIR/cv_ca`
//! (Keylime's file names), which Keylime's services (`tls_dir = default`), the tenant
//! and a Vigil service under test all share.
//!
//! Processes: each service starts in a process group of its own (`setsid`-like), since
//! Keylime's main process forks workers and ignores SIGTERM; dropping the
//! [`KeylimeService`] sends SIGKILL to that group (by its id, the leader's PID) and
//! reaps the leader. Nothing is ever stopped by name.
//!
//! The venv comes from `VIGIL_KEYLIME_PYTHON` (set by sourcing the env file
//! `scripts/keylime-reference.sh` prints). Without it [`KeylimeEnv::new`] returns `None`
//! so the test can skip ([`crate::skip`]), except under `CI`, where it panics.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a Keylime service may take to listen (Python start-up, migrations, on a
/// loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The Keylime venv's `bin` directory, from `VIGIL_KEYLIME_PYTHON`; `None` when unset
/// (after [`crate::skip`]ping `test`; a panic under `CI`).
#[track_caller]
pub fn venv_bin(test: &str) -> Option<PathBuf> {
    let python = crate::keylime_python(test)?;
    let bin = Path::new(&python)
        .parent()
        .expect("VIGIL_KEYLIME_PYTHON is a file in the venv's bin directory")
        .to_owned();
    assert!(
        bin.join("keylime_registrar").is_file(),
        "{test}: {} has no keylime_registrar: VIGIL_KEYLIME_PYTHON must be the reference venv's python",
        bin.display()
    );
    Some(bin)
}

/// A free TCP port on 127.0.0.1, probed by binding it (another process may take it
/// before the service does: starts retry on a new port).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// One test's Keylime installation: the venv, a `KEYLIME_DIR` and its CA.
pub struct KeylimeEnv {
    bin: PathBuf,
    dir: tempfile::TempDir,
    ca: vigil_tls::ca::CaDir,
}

impl KeylimeEnv {
    /// A fresh `KEYLIME_DIR` with a CA in `cv_ca` (server certificate for `localhost`
    /// and `127.0.0.1`), or `None` when there is no venv outside CI.
    #[track_caller]
    pub fn new(test: &str) -> Option<Self> {
        let bin = venv_bin(test)?;
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = vigil_tls::ca::init(
            &dir.path().join("cv_ca"),
            &["localhost".into(), "127.0.0.1".into()],
            false,
        )
        .expect("CA for Keylime's cv_ca");
        Some(Self { bin, dir, ca })
    }

    /// A fresh `KEYLIME_DIR` with nothing in `cv_ca` yet: Keylime's verifier started
    /// with `KEYLIME_VERIFIER_TLS_DIR=generate` makes the CA, server and client
    /// certificates there with its own `ca_util` (start it before the registrar, which
    /// reads them). `None` when there is no venv outside CI.
    #[track_caller]
    pub fn without_ca(test: &str) -> Option<Self> {
        let bin = venv_bin(test)?;
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = vigil_tls::ca::CaDir::new(dir.path().join("cv_ca"));
        Some(Self { bin, dir, ca })
    }

    /// Puts a manufactured swtpm's EK CA certificates (issuer and root, not its keys)
    /// into `KEYLIME_DIR/tpm_cert_store`, where [`Self::tenant`] points
    /// `keylime_tenant`'s EK-certificate check (`require_ek_cert`, on by default).
    pub fn trust_ek_ca(&self, tpm: &crate::Swtpm) {
        let store = self.dir.path().join("tpm_cert_store");
        std::fs::create_dir_all(&store).expect("tpm_cert_store");
        let ca = tpm.ca_dir().expect("a manufactured swtpm has an EK CA");
        for (from, to) in [
            ("issuercert.pem", "swtpm-issuer.pem"),
            ("swtpm-localca-rootca-cert.pem", "swtpm-root.pem"),
        ] {
            std::fs::copy(ca.join(from), store.join(to)).expect("copy the swtpm EK CA");
        }
    }

    /// `KEYLIME_DIR`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA in `KEYLIME_DIR/cv_ca` (Keylime's file names), to configure a Vigil
    /// service or client with.
    pub fn ca(&self) -> &vigil_tls::ca::CaDir {
        &self.ca
    }

    /// The venv's `bin` directory.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A command for a Keylime console script with this environment: the venv's
    /// configuration files, `KEYLIME_DIR`, no inherited `KEYLIME_*` variable.
    pub fn command(&self, script: &str) -> Command {
        let etc = self.bin.parent().expect("venv").join("etc");
        let mut c = Command::new(self.bin.join(script));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYLIME_") {
                c.env_remove(name);
            }
        }
        for component in ["verifier", "registrar", "tenant", "ca", "logging"] {
            c.env(
                format!("KEYLIME_{}_CONFIG", component.to_uppercase()),
                etc.join(format!("{component}.conf")),
            );
        }
        c.env("KEYLIME_DIR", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Starts Keylime's registrar (HTTP and HTTPS ports free, SQLite in `KEYLIME_DIR`,
    /// TLS from `cv_ca`); `extra` are more `KEYLIME_REGISTRAR_*` settings.
    pub fn registrar(&self, extra: &[(&str, &str)]) -> KeylimeService {
        self.start("registrar", "keylime_registrar", extra, |c, port| {
            let tls_port = free_port();
            c.env("KEYLIME_REGISTRAR_PORT", port.to_string())
                .env("KEYLIME_REGISTRAR_TLS_PORT", tls_port.to_string())
                .env("KEYLIME_REGISTRAR_TLS_DIR", "default");
            Some(tls_port)
        })
    }

    /// Starts Keylime's verifier (one worker, a free port, SQLite in `KEYLIME_DIR`,
    /// TLS from `cv_ca`) talking to the registrar on `registrar_tls_port`; `extra`
    /// are more `KEYLIME_VERIFIER_*` settings.
    pub fn verifier(&self, registrar_tls_port: u16, extra: &[(&str, &str)]) -> KeylimeService {
        self.start("verifier", "keylime_verifier", extra, |c, port| {
            c.env("KEYLIME_VERIFIER_PORT", port.to_string())
                .env("KEYLIME_VERIFIER_TLS_DIR", "default")
                .env("KEYLIME_VERIFIER_NUM_WORKERS", "1")
                .env(
                    "KEYLIME_VERIFIER_REGISTRAR_PORT",
                    registrar_tls_port.to_string(),
                );
            None
        })
    }

    fn start(
        &self,
        name: &str,
        script: &str,
        extra: &[(&str, &str)],
        configure: impl Fn(&mut Command, u16) -> Option<u16>,
    ) -> KeylimeService {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("service log");
            let mut c = self.command(script);
            let tls_port = configure(&mut c, port);
            for (k, v) in extra {
                c.env(k, v);
            }
            // Own process group: the group id is the leader's PID, which Drop kills.
            c.process_group(0)
                .stdout(log.try_clone().expect("log"))
                .stderr(log);
            let child = c.spawn().unwrap_or_else(|e| panic!("spawn {script}: {e}"));
            let mut service = KeylimeService {
                child,
                name: name.to_owned(),
                port,
                tls_port,
                log: log_path.clone(),
            };
            match service.wait_listening() {
                Ok(()) => return service,
                Err(e) => last = e,
            }
        }
        panic!("cannot start Keylime's {name}: {last}");
    }

    /// Runs `keylime_tenant` with `args` against the registrar's HTTPS port and a
    /// verifier port (Keylime's or Vigil's), with the CA's `client` certificate.
    pub fn tenant(&self, registrar_tls_port: u16, verifier_port: u16, args: &[&str]) -> TenantRun {
        self.tenant_with(registrar_tls_port, verifier_port, &[], args)
    }

    /// [`Self::tenant`] with more environment variables in `env`; they override the
    /// harness's. For example `KEYLIME_CA_PASSWORD`, which `--cert` needs (without it
    /// the tenant prompts for the CA password), or a `KEYLIME_TENANT_MAX_RETRIES` for the
    /// tenant's own polling loops.
    pub fn tenant_with(
        &self,
        registrar_tls_port: u16,
        verifier_port: u16,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> TenantRun {
        let out = self
            .command("keylime_tenant")
            .env(
                "KEYLIME_TENANT_REGISTRAR_PORT",
                registrar_tls_port.to_string(),
            )
            .env("KEYLIME_TENANT_VERIFIER_PORT", verifier_port.to_string())
            .env(
                "KEYLIME_TENANT_TPM_CERT_STORE",
                self.dir.path().join("tpm_cert_store"),
            )
            // No retries with back-off on a refused request: a test wants the answer.
            .env("KEYLIME_TENANT_MAX_RETRIES", "1")
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("run keylime_tenant");
        let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        TenantRun {
            success: out.status.success(),
            log,
        }
    }
}

/// A running Keylime service (its process group is killed on drop).
pub struct KeylimeService {
    child: Child,
    name: String,
    port: u16,
    tls_port: Option<u16>,
    log: PathBuf,
}

impl KeylimeService {
    /// The main port: the registrar's plain-HTTP port, the verifier's HTTPS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registrar's HTTPS port (the verifier has only [`Self::port`]).
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("only the registrar has a second port")
    }

    /// What the service logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.kill_group();
                return Err(format!(
                    "{} exited with {status}:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if ports
                .iter()
                .all(|p| TcpStream::connect((Ipv4Addr::LOCALHOST, *p)).is_ok())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill_group();
                return Err(format!(
                    "{} did not listen on {ports:?} within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL to the service's process group (its id is the leader's PID), then reaps
    /// the leader and removes the shared-memory socket Keylime leaves behind.
    fn kill_group(&mut self) {
        let pid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // SIGKILL is delivered asynchronously: wait until no live process (zombies
        // aside, their sockets are closed) is left in the group, so its ports are free.
        let deadline = Instant::now() + Duration::from_secs(10);
        while group_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(format!("/run/keylime/shared_data.{pid}.sock"));
    }
}

/// Whether a process of group `pgid` is still running (from `/proc/<pid>/stat`: the
/// state after the command name, then the parent and the group).
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(Result::ok).any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let group = f.nth(1).and_then(|g| g.parse::<u32>().ok());
        group == Some(pgid) && !matches!(state, Some("Z" | "X"))
    })
}

impl Drop for KeylimeService {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// A finished `keylime_tenant` run.
#[derive(Debug)]
pub struct TenantRun {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its stdout and stderr (Keylime logs to stderr).
    pub log: String,
}

impl TenantRun {
    /// The JSON objects the tenant logged (each `INFO - {...}` line, the JSON that
    /// ends a `retrieved {...}` line, or a line of JSON alone: `cvstatus` logs
    /// `Agent Info from …:` and the object on the next line), in order.
    pub fn json(&self) -> Vec<Value> {
        self.log
            .lines()
            .filter_map(|line| {
                let rest = match line.find(" - INFO - ") {
                    Some(i) => &line[i + " - INFO - ".len()..],
                    None if line.starts_with('{') => line,
                    None => return None,
                };
                let brace = rest.find('{')?;
                serde_json::from_str(&rest[brace..]).ok()
            })
            .collect()
    }

    /// The first logged JSON object with a `code` (the tenant's response envelope).
    pub fn response(&self) -> Option<Value> {
        self.json().into_iter().find(|v| v.get("code").is_some())
    }

    /// The JSON object logged under the first line containing `heading`: the tenant
    /// prints `cvstatus`, `cvlist` and `bulkinfo` results as `<heading>:` then the JSON
    /// on the next line.
    pub fn block(&self, heading: &str) -> Option<Value> {
        let mut lines = self.log.lines().skip_while(|l| !l.contains(heading));
        lines.next()?;
        serde_json::from_str(lines.next()?).ok()
    }
}
