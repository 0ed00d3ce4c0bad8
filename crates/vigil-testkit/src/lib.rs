//! Test harness shared by the crates that test against a software TPM: a private
//! `swtpm` per test on a free TCP port pair with its own state directory, killed (by
//! its PID) on drop, optionally manufactured by `swtpm_setup` with EK certificates
//! issued by a local CA (`swtpm_localca`), so the EK certificate chain is real. The
//! process itself is `vigil-swtpm`'s, which `vigil demo` uses too.
//!
//! Tests never share a TPM, so they run in parallel without a global lock.
//!
//! When a needed tool is missing, the constructors return `None` so the test can skip,
//! after a `SKIPPED` line that `scripts/test.sh` repeats at the end of the run ([`skip`]),
//! except under `CI`, where they panic: CI must never stop testing silently.
//! `scripts/setup.sh` installs swtpm, swtpm-tools and tpm2-tools.
//!
//! Dev-only (`publish = false`): it panics on any harness failure, as tests want.
//!
//! With the `db` feature, [`db`] gives each test its own SQLite file or PostgreSQL
//! schema. With the `keylime` feature, [`keylime`] starts Keylime 7.14.3's registrar and
//! verifier and runs its tenant, as peers for the interoperability tests. With the
//! `metrics` feature, [`scrape`] reads a service's `/metrics` answer with a Prometheus
//! text-format parser. With the `node` feature, [`node`] is a node on a swtpm serving
//! Keylime's agent quote API to the verifier, honest or malicious.

#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "keylime")]
pub mod keylime;
#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "metrics")]
pub mod scrape;
mod skip;
mod tmpfs;

pub use tmpfs::Tmpfs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use skip::{keylime_python, skip, skip_at, under_ci};
pub use vigil_swtpm::MANUFACTURE_TOOLS;

/// Whether every tool in `tools` is installed. If not, [`skip`]s `test` (a panic under
/// `CI`) and returns `false`.
#[track_caller]
pub fn require(test: &str, tools: &[&str]) -> bool {
    let missing = vigil_swtpm::missing_tools(tools);
    if missing.is_empty() {
        return true;
    }
    skip(
        test,
        &format!(
            "swtpm/tpm2-tools missing ({}); install them with scripts/setup.sh",
            missing.join(", ")
        ),
    );
    false
}

/// A running swtpm and a scratch directory (its state, the local CA when manufactured,
/// and files for tpm2-tools).
pub struct Swtpm {
    process: vigil_swtpm::Swtpm,
    dir: tempfile::TempDir,
    ca: Option<PathBuf>,
}

impl Swtpm {
    /// Starts a fresh TPM (manufactured by swtpm itself on first start, no EK
    /// certificates), or `None` when one of `tools` (or swtpm) is missing outside CI.
    #[track_caller]
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
    #[track_caller]
    pub fn manufactured(test: &str, tools: &[&str]) -> Option<Self> {
        if !require(test, &[MANUFACTURE_TOOLS, tools].concat()) {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let ca =
            vigil_swtpm::manufacture(dir.path(), "test").unwrap_or_else(|e| panic!("{test}: {e}"));
        Some(Self::spawn(test, dir, Some(ca)))
    }

    fn spawn(test: &str, dir: tempfile::TempDir, ca: Option<PathBuf>) -> Self {
        let process = launch(test, dir.path());
        Self { process, dir, ca }
    }

    /// Stops swtpm and starts it again on the same state (a TPM reboot: transient
    /// objects and sessions are gone, persistent ones and NV stay). The port may change.
    pub fn restart(&mut self) {
        self.process.stop();
        self.process = launch("restart", self.dir.path());
    }

    /// Kills swtpm: the TPM is gone under whoever uses it (until [`Self::restart`]).
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// The TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        self.process.tcti()
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

/// Starts swtpm on `dir/state` (killed by its PID when the [`Swtpm`] drops).
fn launch(test: &str, dir: &Path) -> vigil_swtpm::Swtpm {
    vigil_swtpm::Swtpm::launch(dir).unwrap_or_else(|e| panic!("{test}: cannot start swtpm: {e}"))
}
