//! A software TPM (`swtpm`) as a child process, for the tests (through
//! `vigil-testkit`) and for `vigil demo`: manufactured by `swtpm_setup` with EK
//! certificates issued by a local CA (`swtpm_localca`), so the EK certificate chain is
//! real, then started on a free TCP port pair and stopped by its PID.
//!
//! Everything lives in one directory: `state/` (the TPM), `localca/` (the CA, its keys
//! among its certificates), the configuration files and `swtpm.log`.
//! `scripts/setup.sh` installs swtpm and swtpm-tools.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The programs [`manufacture`] and [`Swtpm::launch`] run.
pub const MANUFACTURE_TOOLS: &[&str] = &["swtpm", "swtpm_setup", "swtpm_localca"];

/// Why a swtpm could not be made or started.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    /// A file of the TPM's directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be run at all (not installed?).
    #[error("cannot run {program}: {source} (scripts/setup.sh installs swtpm and swtpm-tools)")]
    Spawn {
        /// The program.
        program: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `swtpm_setup` failed; its output.
    #[error("swtpm_setup failed: {0}")]
    Setup(String),
    /// swtpm did not come up.
    #[error("swtpm did not start: {0}")]
    Start(String),
}

/// The tools of `tools` that are not on `PATH`.
pub fn missing_tools<'a>(tools: &[&'a str]) -> Vec<&'a str> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    tools.iter().copied().filter(|t| !on_path(t)).collect()
}

fn write(path: PathBuf, text: String) -> Result<(), SwtpmError> {
    std::fs::write(&path, text).map_err(|source| SwtpmError::Io { path, source })
}

fn create_dir(path: PathBuf) -> Result<PathBuf, SwtpmError> {
    std::fs::create_dir_all(&path).map_err(|source| SwtpmError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Manufactures a TPM in `dir/state` with `swtpm_setup --create-ek-cert
/// --create-platform-cert` and a local CA in `dir/localca` (returned), with only the
/// SHA-256 PCR bank active. swtpm_setup makes an RSA-2048 EK (certificate at NV
/// `0x01c00002`) and an ECC P-384 EK (persisted at `0x81010016`, certificate at
/// `0x01c00016`). The CA's `issuercert.pem` and `swtpm-localca-rootca-cert.pem` are
/// what a verifier trusts; `model` goes into the platform certificate.
pub fn manufacture(dir: &Path, model: &str) -> Result<PathBuf, SwtpmError> {
    let state = create_dir(dir.join("state"))?;
    let ca = create_dir(dir.join("localca"))?;
    let localca_conf = dir.join("swtpm-localca.conf");
    write(
        localca_conf.clone(),
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )?;
    let localca_options = dir.join("swtpm-localca.options");
    write(
        localca_options.clone(),
        format!(
            "--platform-manufacturer Vigil\n--platform-version 2.1\n--platform-model {model}\n"
        ),
    )?;
    let setup_conf = dir.join("swtpm_setup.conf");
    write(
        setup_conf.clone(),
        format!(
            "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            localca_conf.display(),
            localca_options.display()
        ),
    )?;
    let out = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(&state)
        .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
        .arg("--config")
        .arg(&setup_conf)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SwtpmError::Spawn {
            program: "swtpm_setup",
            source,
        })?;
    if !out.status.success() {
        return Err(SwtpmError::Setup(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(ca)
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

/// A running `swtpm socket` on 127.0.0.1; killed (by its PID) and reaped on drop.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    port: u16,
}

impl Swtpm {
    /// Starts swtpm on the TPM state in `dir/state` (from [`manufacture`], or an empty
    /// directory: swtpm then manufactures a TPM without EK certificates), logging to
    /// `dir/swtpm.log`. Retries when another process takes the probed ports first;
    /// returns once the control channel accepts connections.
    pub fn launch(dir: &Path) -> Result<Self, SwtpmError> {
        let state = dir.join("state");
        let log_path = dir.join("swtpm.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port_pair()
                .ok_or_else(|| SwtpmError::Start("no free TCP port pair on 127.0.0.1".into()))?;
            let io = |source| SwtpmError::Io {
                path: log_path.clone(),
                source,
            };
            let log = std::fs::File::create(&log_path).map_err(io)?;
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--server"])
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io)?)
                .stderr(log)
                .spawn()
                .map_err(|source| SwtpmError::Spawn {
                    program: "swtpm",
                    source,
                })?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "swtpm exited with {status}: {}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                // The control channel is up once swtpm listens; the server port is
                // bound before it. Probing the server port would use up swtpm's one
                // connection.
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
                    return Ok(Self { child, port });
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
        Err(SwtpmError::Start(last_error))
    }

    /// The TPM's TCP port (the control channel is the next one).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The TCTI string for tss-esapi, tpm2-tools and `vigil-agent`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Kills exactly this process (`Child::kill` signals its PID) and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

// A manufactured swtpm is exercised by every test using `vigil_testkit::Swtpm`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named() {
        assert_eq!(
            missing_tools(&["sh", "vigil-no-such-tool"]),
            ["vigil-no-such-tool"]
        );
    }
}
