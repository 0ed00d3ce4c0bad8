//! Listing the files of a root filesystem that a runtime policy covers, with Keylime's
//! rules: symbolic links are not followed, only regular files owned by uid 0 count, and
//! these directories are skipped: the fixed list below, the `--skip-path` ones, and every
//! mount point whose filesystem type differs from that of `/`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context, Result};

use super::hashing::FileJob;

/// Directories never hashed: virtual filesystems, removable media and variable data.
pub(crate) const BASE_EXCLUDE_DIRS: [&str; 10] = [
    "/sys",
    "/run",
    "/proc",
    "/lost+found",
    "/dev",
    "/media",
    "/snap",
    "/mnt",
    "/var",
    "/tmp",
];

/// `path` made absolute and `.`/`..` resolved by text, as Python's `os.path.abspath`
/// does (symbolic links are not resolved).
fn abspath(path: &Path) -> Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Mount points (from `/proc/self/mounts`) whose filesystem type differs from the root
/// filesystem's, leaving out those already under an excluded directory. Keylime compares
/// these host paths with paths *inside* the walked tree, so that is done here too.
fn foreign_mounts(excluded: &[String]) -> Vec<String> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    let mounts: Vec<(String, &str)> = table
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            Some((unescape_mount(dir), fstype))
        })
        .collect();
    let root_type = mounts.iter().find(|(d, _)| d == "/").map(|(_, t)| *t);
    mounts
        .iter()
        .filter(|(_, t)| Some(*t) != root_type)
        // A plain string prefix test, as Keylime's (so `/var` also covers `/variable`).
        .filter(|(d, _)| !excluded.iter().any(|e| d.starts_with(e.as_str())))
        .map(|(d, _)| d.clone())
        .collect()
}

/// The kernel writes space, tab, newline and backslash in mount paths as octal escapes.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Directories every root filesystem has: a --rootfs with none of them is likely a
/// subdirectory given by mistake.
const ROOT_MARKS: [&str; 4] = ["etc", "usr", "bin", "lib"];

/// The files under `rootfs` to hash, keyed as Keylime keys them: the path inside the
/// root filesystem, with spaces replaced by `_` (as IMA writes them in its log).
pub(crate) fn collect(rootfs: &Path, skip_paths: &[String]) -> Result<Vec<FileJob>> {
    let root = abspath(rootfs)?;
    if !root.is_dir() {
        bail!("--rootfs {}: not a directory", rootfs.display());
    }
    if !ROOT_MARKS.iter().any(|d| root.join(d).is_dir()) {
        eprintln!(
            "warning: --rootfs {} has none of {}/: it is taken as the root of a tree, so \
             its files are recorded from / (a file {}/x as /x), which a node's IMA log will \
             not show; pass the root of the filesystem (e.g. / or a mounted image)",
            rootfs.display(),
            ROOT_MARKS.join("/, "),
            rootfs.display()
        );
    }
    let root_str = root.to_string_lossy().into_owned();
    let mut excluded: Vec<String> = Vec::new();
    for d in skip_paths.iter().filter(|d| !d.is_empty()) {
        let abs_d = abspath(Path::new(d))?;
        if root.starts_with(&abs_d) {
            // The whole root filesystem is skipped.
            return Ok(Vec::new());
        }
        if !Path::new(d).starts_with(rootfs) {
            eprintln!(
                "warning: ignoring --skip-path {d}: it is not under {}",
                rootfs.display()
            );
            continue;
        }
        let abs_d = abs_d.to_string_lossy().into_owned();
        if root_str == "/" {
            // Keylime drops every skip path when the root filesystem is `/` (a bug);
            // Vigil skips them as asked.
            excluded.push(abs_d);
        } else if let Some(rel) = abs_d.strip_prefix(&root_str) {
            excluded.push(rel.to_owned());
        }
    }
    excluded.extend(BASE_EXCLUDE_DIRS.iter().map(|s| (*s).to_owned()));
    let mounts = foreign_mounts(&excluded);
    let excluded: HashSet<String> = excluded.into_iter().chain(mounts).collect();

    let walk = Walk {
        root_str,
        excluded,
        jobs: Mutex::new(Vec::new()),
    };
    // Directories are read in parallel on the current rayon pool: on a 2-CPU machine
    // the walk of /usr (115k files) took about a third of a second on one thread.
    rayon::scope(|s| walk.visit(s, root));
    Ok(walk
        .jobs
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner))
}

/// One walk of a root filesystem.
struct Walk {
    root_str: String,
    excluded: HashSet<String>,
    jobs: Mutex<Vec<FileJob>>,
}

impl Walk {
    /// The path inside the root filesystem.
    fn rel(&self, p: &Path) -> String {
        let s = p.to_string_lossy();
        if self.root_str == "/" {
            s.into_owned()
        } else {
            s.strip_prefix(self.root_str.as_str())
                .unwrap_or(&s)
                .to_owned()
        }
    }

    /// Lists `dir`'s files and walks its subdirectories as tasks of their own.
    fn visit<'s>(&'s self, s: &rayon::Scope<'s>, dir: PathBuf) {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("warning: skipping directory {}: {e}", dir.display());
                return;
            }
        };
        let mut found = Vec::new();
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(ft) = entry.file_type() else { continue };
            let path = entry.path();
            if ft.is_symlink() {
                continue;
            }
            if ft.is_file() {
                // Relative to the open directory (`fstatat`), not a lookup of the whole
                // path again; the entry is not a symlink, so this is its own metadata.
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if meta.uid() != 0 {
                    continue;
                }
                found.push(FileJob {
                    key: self.rel(&path).replace(' ', "_"),
                    size: meta.len(),
                    path,
                });
            } else if ft.is_dir() && !self.excluded.contains(&self.rel(&path)) {
                s.spawn(move |s| self.visit(s, path));
            }
        }
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(&mut found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_mount_escapes() {
        assert_eq!(
            abspath(Path::new("/a/./b/../c/")).unwrap(),
            PathBuf::from("/a/c")
        );
        assert_eq!(abspath(Path::new("/..")).unwrap(), PathBuf::from("/"));
        assert_eq!(unescape_mount("/mnt/a\\040b\\134"), "/mnt/a b\\");
        assert_eq!(unescape_mount("/x\\04"), "/x\\04");
    }
}
