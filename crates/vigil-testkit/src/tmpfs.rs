//! A small tmpfs of the test's own, for tests of what happens when a filesystem fills
//! up. Mounting needs root: without it the test skips ([`crate::skip`]), except under
//! `CI`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a directory, unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. `8m`) on `dir`. `None` (after
    /// [`crate::skip`]ping the caller) where mounting is not allowed; under `CI` it panics.
    #[track_caller]
    pub fn mount(dir: &Path, size: &str) -> Option<Self> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Self {
                dir: dir.to_path_buf(),
            });
        }
        crate::skip(
            "tmpfs",
            &format!("cannot mount a tmpfs on {} (needs root)", dir.display()),
        );
        None
    }

    /// Fills the filesystem: writes `name` until no space is left, and returns its path.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join(name);
        if let Ok(mut f) = std::fs::File::create(&path) {
            let block = vec![0xa5u8; 64 * 1024];
            while f.write_all(&block).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}
