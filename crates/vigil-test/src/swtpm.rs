//! A private software TPM per test: `swtpm` on a free TCP port pair with its own state
//! directory, driven with tpm2-tools through `TPM2TOOLS_TCTI`, killed (by PID) on drop.
//!
//! When swtpm or tpm2-tools is missing, [`Swtpm::start`] returns `None` so the test can
//! skip with a printed note, except under `CI`, where it panics: CI must never stop
//! comparing silently. `scripts/setup.sh` installs both.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The tools the differential tests run.
const TOOLS: &[&str] = &[
    "swtpm",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_readpublic",
    "tpm2_makecredential",
    "tpm2_activatecredential",
    "tpm2_startauthsession",
    "tpm2_policysecret",
    "tpm2_flushcontext",
    "tpm2_pcrextend",
    "tpm2_pcrread",
    "tpm2_quote",
    "tpm2_checkquote",
];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// A running swtpm and a scratch directory for the files tpm2-tools reads and writes.
pub struct Swtpm {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// Two consecutive free ports (server, control), probed by binding them.
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

impl Swtpm {
    /// Starts a fresh TPM (manufactured, started up, empty state), or `None` when the
    /// tools are missing outside CI.
    pub fn start(test: &str) -> Option<Self> {
        let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
        if !missing.is_empty() {
            let msg = format!(
                "{test}: swtpm/tpm2-tools missing ({}); install them with scripts/setup.sh",
                missing.join(", ")
            );
            assert!(!crate::under_ci(), "{msg}");
            eprintln!("SKIPPED {msg}");
            return None;
        }
        // A port can be taken between probing and swtpm binding it: try again then.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port_pair().expect("no free TCP port pair on 127.0.0.1");
            let dir = tempfile::tempdir().expect("temp dir");
            let state = dir.path().join("state");
            std::fs::create_dir(&state).expect("state dir");
            let log = std::fs::File::create(dir.path().join("swtpm.log")).expect("log");
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--server"])
                .arg(format!("type=tcp,port={port}"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={}", port + 1))
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
                        std::fs::read_to_string(dir.path().join("swtpm.log")).unwrap_or_default()
                    );
                    break;
                }
                // The control channel is up once swtpm listens; the server port is
                // bound before it.
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
                    return Some(Self { child, port, dir });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = "swtpm did not listen within 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{test}: cannot start swtpm: {last_error}");
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
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .stdin(Stdio::null());
        c
    }

    /// `TPM2_ActivateCredential` with the EK's policy session (PolicySecret on the
    /// endorsement hierarchy, as the EK template requires); the recovered secret, or
    /// the failed command's output.
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
                credential.to_str().unwrap(),
                "-o",
                out_file.to_str().unwrap(),
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
        // Child::kill signals exactly this process id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
