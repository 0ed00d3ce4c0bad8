//! Revocation notices (compat §6.7): verified with the `RevocationNotifier`
//! certificate by `vigil_core::revocation`, then the configured actions run, each given
//! the message as a JSON file, each with a timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tracing::{error, info, warn};
use vigil_core::revocation::{RevocationError, RevocationNotice};

/// Where actions come from and how long they may run.
#[derive(Debug, Clone)]
pub struct Actions {
    /// Names from the configuration (`revocation_actions`).
    pub names: Vec<String>,
    /// The actions directory.
    pub dir: PathBuf,
    /// The unzipped payload directory, searched too (and its `action_list` read) when
    /// payload actions are allowed.
    pub payload_dir: Option<PathBuf>,
    /// Per action.
    pub timeout: Duration,
}

/// Why a notice was refused.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// No certificate to verify with (no payload delivered it).
    #[error("no revocation certificate at {path}: {message}")]
    NoCert {
        /// The configured certificate.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The signature does not verify (or is missing).
    #[error(transparent)]
    Signature(#[from] RevocationError),
}

/// Verifies `notice` with the certificate at `cert`; the message object on success.
pub fn verify(notice: &RevocationNotice, cert: &Path) -> Result<Value, NoticeError> {
    let bytes = std::fs::read(cert).map_err(|e| NoticeError::NoCert {
        path: cert.to_owned(),
        message: e.to_string(),
    })?;
    let key = vigil_core::revocation::public_key(&bytes).map_err(|e| NoticeError::NoCert {
        path: cert.to_owned(),
        message: e.to_string(),
    })?;
    Ok(notice.verify(&key)?)
}

impl Actions {
    /// The action names in order: configuration first, then the payload's
    /// `action_list`.
    fn all_names(&self) -> Vec<String> {
        let mut names = self.names.clone();
        if let Some(dir) = &self.payload_dir {
            if let Ok(list) = std::fs::read_to_string(dir.join("action_list")) {
                names.extend(
                    list.lines()
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        names
    }

    fn find(&self, name: &str) -> Option<PathBuf> {
        // A name, not a path: nothing outside the two directories can be named.
        if name.contains('/') || name == ".." || name == "." {
            return None;
        }
        std::iter::once(&self.dir)
            .chain(self.payload_dir.as_ref())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    /// Runs every action with `message` written to a JSON file in `tmp_dir`; returns
    /// the names that ran successfully. Failures are logged, not fatal: every action
    /// gets its chance.
    pub async fn run(&self, message: &Value, tmp_dir: &Path) -> Vec<String> {
        let mut ok = Vec::new();
        let names = self.all_names();
        if names.is_empty() {
            info!("revocation notice verified; no actions configured");
            return ok;
        }
        let file = tmp_dir.join(format!("revocation-{}.json", std::process::id()));
        if let Err(e) = std::fs::write(&file, message.to_string()) {
            error!(path = %file.display(), "cannot write the revocation message: {e}");
            return ok;
        }
        for name in names {
            let Some(path) = self.find(&name) else {
                warn!(action = %name, "revocation action not found in {}", self.dir.display());
                continue;
            };
            let mut cmd = tokio::process::Command::new(&path);
            cmd.arg(&file).kill_on_drop(true);
            match tokio::time::timeout(self.timeout, cmd.status()).await {
                Ok(Ok(s)) if s.success() => {
                    info!(action = %name, "revocation action ran");
                    ok.push(name);
                }
                Ok(Ok(s)) => error!(action = %name, "revocation action failed: {s}"),
                Ok(Err(e)) => error!(action = %name, "revocation action cannot run: {e}"),
                Err(_) => error!(
                    action = %name,
                    "revocation action still running after {:?}; killed",
                    self.timeout
                ),
            }
        }
        let _ = std::fs::remove_file(&file);
        ok
    }
}
