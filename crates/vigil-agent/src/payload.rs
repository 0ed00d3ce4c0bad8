//! U/V bootstrap key and payload delivery (compat §7): shares are decrypted with the
//! NK and combined by `vigil_core::payload::ShareCombiner`; once K is known the
//! payload is decrypted, unzipped into `secure/unzipped` and its `autorun.sh` run —
//! once, and only with mTLS on (or `enable_insecure_payload`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};
use vigil_core::payload::{BootstrapKey, ShareCombiner};

/// Keylime's file names in `secure/unzipped`.
const DERIVED_KEY_FILE: &str = "derived_tci_key";
const DECRYPTED_FILE: &str = "decrypted_payload";
/// Largest unzipped payload accepted, in bytes: the secure directory is meant to be a
/// 1 MiB tmpfs in Keylime, so a payload expanding far beyond it is refused.
const MAX_UNZIPPED: u64 = 64 << 20;
/// How long `autorun.sh` may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The shares received so far and the payload, if any.
#[derive(Debug, Default)]
pub struct PayloadState {
    combiner: ShareCombiner,
    payload: Option<String>,
    /// Set once the payload was handled, so later shares do not run it again.
    done: bool,
}

/// What the agent should do after a share arrived.
#[derive(Debug)]
pub enum Next {
    /// Wait for the other half.
    Wait,
    /// K is known and a payload is to be handled now.
    Deliver {
        /// The key.
        key: BootstrapKey,
        /// The payload (base64), if the tenant sent one.
        payload: Option<String>,
    },
}

impl PayloadState {
    /// Adds a U share with its auth tag (and the payload sent with it).
    pub fn add_u(&mut self, id: &str, u: Vec<u8>, tag: String, payload: Option<String>) -> Next {
        if payload.is_some() {
            self.payload = payload;
        }
        let known = self.combiner.add_u(id, u, tag).is_some();
        self.next(known)
    }

    /// Adds a V share.
    pub fn add_v(&mut self, id: &str, v: Vec<u8>) -> Next {
        let known = self.combiner.add_v(id, v).is_some();
        self.next(known)
    }

    fn next(&mut self, known: bool) -> Next {
        match self.combiner.key() {
            Some(key) if known && !self.done => {
                self.done = true;
                Next::Deliver {
                    key: key.clone(),
                    payload: self.payload.take(),
                }
            }
            _ => Next::Wait,
        }
    }

    /// K, once U and V matched.
    pub fn key(&self) -> Option<&BootstrapKey> {
        self.combiner.key()
    }
}

/// Why a payload could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Decryption failed.
    #[error("payload: {0}")]
    Crypto(#[from] vigil_core::payload::PayloadError),
    /// A file cannot be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The zip is malformed, unsafe or too large.
    #[error("payload zip: {0}")]
    Zip(String),
    /// `autorun.sh` failed.
    #[error("{script}: {message}")]
    Script {
        /// The script.
        script: PathBuf,
        /// Exit status or why it did not run.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PayloadError + '_ {
    move |source| PayloadError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes K, decrypts and unzips the payload into `secure_dir/unzipped`, makes the
/// scripts named in `action_list` executable, and runs `script` if the payload holds
/// it. Returns the script's path when it ran.
pub async fn deliver(
    key: &BootstrapKey,
    payload: Option<&str>,
    secure_dir: &Path,
    script: &str,
) -> Result<Option<PathBuf>, PayloadError> {
    let unzipped = secure_dir.join("unzipped");
    make_private_dir(&unzipped)?;
    let key_path = unzipped.join(DERIVED_KEY_FILE);
    crate::keys::write_private(&key_path, key.as_bytes()).map_err(|e| PayloadError::Io {
        path: key_path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let Some(payload) = payload else {
        info!("bootstrap key derived; no payload was sent");
        return Ok(None);
    };
    let plain = key.decrypt_payload(payload)?;
    let dec = unzipped.join(DECRYPTED_FILE);
    std::fs::write(&dec, &plain).map_err(io(&dec))?;
    let dir = unzipped.clone();
    tokio::task::spawn_blocking(move || unzip(&plain, &dir))
        .await
        .map_err(|e| PayloadError::Zip(e.to_string()))??;
    let actions = unzipped.join("action_list");
    if let Ok(list) = std::fs::read_to_string(&actions) {
        for name in list.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let p = unzipped.join(name);
            if p.parent() == Some(unzipped.as_path()) && p.is_file() {
                set_mode(&p, 0o700);
            }
        }
    }
    let script_path = unzipped.join(script);
    if !script_path.is_file() {
        info!("payload unzipped into {}; no {script}", unzipped.display());
        return Ok(None);
    }
    set_mode(&script_path, 0o700);
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg(&script_path)
        .current_dir(&unzipped)
        .kill_on_drop(true);
    let status = tokio::time::timeout(SCRIPT_TIMEOUT, cmd.status())
        .await
        .map_err(|_| PayloadError::Script {
            script: script_path.clone(),
            message: format!("still running after {SCRIPT_TIMEOUT:?}; killed"),
        })?
        .map_err(|e| PayloadError::Script {
            script: script_path.clone(),
            message: e.to_string(),
        })?;
    if !status.success() {
        return Err(PayloadError::Script {
            script: script_path,
            message: format!("exited with {status}"),
        });
    }
    info!("payload script {} ran", script_path.display());
    Ok(Some(script_path))
}

pub(crate) fn make_private_dir(dir: &Path) -> Result<(), PayloadError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io(dir))
}

fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            warn!(path = %path.display(), "cannot chmod: {e}");
        }
    }
}

/// Unzips into `dir`, refusing entries that escape it and payloads that expand past
/// [`MAX_UNZIPPED`].
fn unzip(bytes: &[u8], dir: &Path) -> Result<(), PayloadError> {
    let zerr = |e: zip::result::ZipError| PayloadError::Zip(e.to_string());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(zerr)?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zerr)?;
        let Some(rel) = entry.enclosed_name() else {
            return Err(PayloadError::Zip(format!(
                "entry {:?} escapes the payload directory",
                entry.name()
            )));
        };
        let out = dir.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(io(&out))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut f = std::fs::File::create(&out).map_err(io(&out))?;
        let limit = MAX_UNZIPPED - total;
        let n = std::io::copy(&mut (&mut entry).take(limit + 1), &mut f).map_err(io(&out))?;
        if n > limit {
            return Err(PayloadError::Zip(format!(
                "unzipped payload exceeds {MAX_UNZIPPED} bytes"
            )));
        }
        total += n;
        #[cfg(unix)]
        if let Some(mode) = entry.unix_mode() {
            set_mode(&out, mode & 0o755);
        }
    }
    Ok(())
}

use std::io::Read as _;
