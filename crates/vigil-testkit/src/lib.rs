//! Test harness shared by the crates that test against a software TPM: a private
//! `swtpm` per test on a free TCP port pair with its own state directory, killed (by
//! its PID) on drop, optionally manufactured by `swtpm_setup` with EK certificates
//! issued by a local CA (`swtpm_localca`), so the EK certificate chain is real.
//!
//! Tests never share a TPM, so they run in parallel without a global lock.
//!
//! When a needed tool is missing, the constructors return `None` so the test can skip
//! with a printed note, except under `CI`, where they panic: CI must never stop
//! testing silently. `scripts/setup.sh` installs swtpm, swtpm-tools and tpm2-tools.
//!
//! Dev-only (`publish = false`): it panics on any harness failure, as tests want.
//!
//! With the `db` feature, [`db`] gives each test its own SQLite file or PostgreSQL
//! schema. With the `keylime` feature, [`keylime`] starts Keylime 7.14.3's registrar and
//! verifier and runs its tenant, as peers for the interoperability tests.

#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "keylime")]
pub mod keylime;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`), where a
/// missing tool or database fails the test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// What [`Swtpm::manufactured`] needs besides the tools the test itself names.
pub const MANUFACTURE_TOOLS: &[&str] = &["swtpm", "swtpm_setup", "swtpm_localca"];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Whether every tool in `tools` is installed. If not: under `CI` this panics; otherwise
/// it prints a skip note naming `test` and returns `false`.
pub fn require(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: swtpm/tpm2-tools missing ({}); install them with scripts/setup.sh",
        missing.join(", ")
    );
    assert!(!under_ci(), "{msg}");
    eprintln!("SKIPPED {msg}");
    false
}

/// Two consecutive free ports (server, control: the swtpm TCTI always finds the control
/// channel at server + 1), probed by binding them.
fn free_port_pair() -> Option<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
        let port = first.local_addr().ok()?.port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return Some(port);
        }
    }
    None
}

/// A running swtpm and a scratch directory (its state, the local CA when manufactured,
/// and files for tpm2-tools).
pub struct Swtpm {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    ca: Option<PathBuf>,
}

impl Swtpm {
    /// Starts a fresh TPM (manufactured by swtpm itself on first start, no EK
    /// certificates), or `None` when one of `tools` (or swtpm) is missing outside CI.
    pub fn start(test: &str, tools: &[&str]) -> Option<Self> {
        if !require(test, &[&["swtpm"], tools].concat()) {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        Some(Self::spawn(test, dir, None))
    }

    /// Starts a TPM manufactured by `swtpm_setup --create-ek-cert --create-platform-cert`
    /// with a local CA in the scratch directory (see [`Self::ca_dir`]) and only the
    /// SHA-256 PCR bank active. swtpm_setup makes an RSA-2048 EK (certificate at NV
    /// `0x01c00002`) and an ECC P-384 EK (persisted at `0x81010016`, certificate at
    /// `0x01c00016`).
    pub fn manufactured(test: &str, tools: &[&str]) -> Option<Self> {
        if !require(test, &[MANUFACTURE_TOOLS, tools].concat()) {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = manufacture(dir.path());
        Some(Self::spawn(test, dir, Some(ca)))
    }

    fn spawn(test: &str, dir: tempfile::TempDir, ca: Option<PathBuf>) -> Self {
        let (child, port) = launch(test, dir.path());
        Self {
            child,
            port,
            dir,
            ca,
        }
    }

    /// Stops swtpm and starts it again on the same state (a TPM reboot: transient
    /// objects and sessions are gone, persistent ones and NV stay). The port may change.
    pub fn restart(&mut self) {
        stop(&mut self.child);
        let (child, port) = launch("restart", self.dir.path());
        self.child = child;
        self.port = port;
    }

    /// The TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The local CA's directory (its issuer and root certificates among private keys),
    /// when manufactured.
    pub fn ca_dir(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a tpm2-tools command against this TPM in the scratch directory, then flushes
    /// transient objects (each tool leaves its keys loaded, and the TPM has only a few
    /// slots).
    pub fn try_tool(&self, tool: &str, args: &[&str]) -> Output {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .expect("run tpm2-tools");
        if tool != "tpm2_flushcontext" {
            let flush = self
                .command("tpm2_flushcontext")
                .arg("-t")
                .output()
                .expect("run tpm2_flushcontext");
            assert!(flush.status.success(), "tpm2_flushcontext -t: {flush:?}");
        }
        out
    }

    /// [`Self::try_tool`] that must succeed.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.try_tool(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", self.tcti())
            .stdin(Stdio::null());
        c
    }

    /// `TPM2_ActivateCredential` through tpm2-tools with the EK's policy session
    /// (PolicySecret on the endorsement hierarchy, as the EK template requires); the
    /// recovered secret, or the failed command's output.
    pub fn activate(
        &self,
        ak_ctx: &str,
        ek_ctx: &str,
        credential: &Path,
    ) -> Result<Vec<u8>, Output> {
        let out_file = self.path("activated.out");
        let _ = std::fs::remove_file(&out_file);
        self.tool(
            "tpm2_startauthsession",
            &["--policy-session", "-S", "session.ctx"],
        );
        self.tool("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"]);
        let out = self.try_tool(
            "tpm2_activatecredential",
            &[
                "-c",
                ak_ctx,
                "-C",
                ek_ctx,
                "-i",
                credential.to_str().expect("UTF-8 path"),
                "-o",
                out_file.to_str().expect("UTF-8 path"),
                "-P",
                "session:session.ctx",
            ],
        );
        self.tool("tpm2_flushcontext", &["session.ctx"]);
        if out.status.success() {
            Ok(std::fs::read(&out_file).expect("activated secret"))
        } else {
            Err(out)
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Kills exactly this child (`Child::kill` signals its PID) and reaps it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `swtpm socket` on `dir/state`, retrying when another process takes the probed
/// port first; returns once the control channel accepts connections.
fn launch(test: &str, dir: &Path) -> (Child, u16) {
    let state = dir.join("state");
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port_pair().expect("no free TCP port pair on 127.0.0.1");
        let log = std::fs::File::create(dir.join("swtpm.log")).expect("log");
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn swtpm");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_error = format!(
                    "swtpm exited with {status}: {}",
                    std::fs::read_to_string(dir.join("swtpm.log")).unwrap_or_default()
                );
                break;
            }
            // The control channel is up once swtpm listens; the server port is bound
            // before it. Probing the server port would use up swtpm's one connection.
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
                return (child, port);
            }
            if Instant::now() > deadline {
                stop(&mut child);
                last_error = "swtpm did not listen within 10 s".into();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{test}: cannot start swtpm: {last_error}");
}

/// Manufactures a TPM in `dir/state` with swtpm_setup and a local CA living in
/// `dir/localca`; returns the CA directory.
fn manufacture(dir: &Path) -> PathBuf {
    let (state, ca) = (dir.join("state"), dir.join("localca"));
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::create_dir_all(&ca).expect("CA dir");
    let localca_conf = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .expect("write localca config");
    let localca_options = dir.join("swtpm-localca.options");
    std::fs::write(
        &localca_options,
        "--platform-manufacturer Vigil\n--platform-version 2.1\n--platform-model test\n",
    )
    .expect("write localca options");
    let setup_conf = dir.join("swtpm_setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            localca_conf.display(),
            localca_options.display()
        ),
    )
    .expect("write swtpm_setup config");
    let out = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(&state)
        .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
        .arg("--config")
        .arg(&setup_conf)
        .output()
        .expect("run swtpm_setup");
    assert!(
        out.status.success(),
        "swtpm_setup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ca
}
