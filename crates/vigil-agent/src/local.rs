//! The node-local identity socket (docs/spire.md): a unix domain socket serving the
//! agent's `agent/info` and `quotes/identity` routes over plain HTTP, so that a process
//! on this node (a SPIRE agent's node attestor, `vigil identity attest`) proves it runs
//! next to this node's TPM without the network API. Who may ask is decided by the
//! socket file's owner, group and mode, checked by the kernel at `connect`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the identity socket cannot be set up. Each variant names the path or group.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket's directory, the socket itself, or its mode or group cannot be set.
    #[error("identity socket {path}: {doing}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        doing: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configured group is neither a number nor a name in `/etc/group`.
    #[error("identity_socket_group {0:?} is not a group of this system (/etc/group)")]
    UnknownGroup(String),
}

/// Binds the socket at `path` (a stale socket file is replaced; its directory is made
/// `0755` if missing), then sets `mode` and, if `group` is not empty, the group.
pub(crate) fn bind(path: &Path, mode: u32, group: &str) -> Result<UnixListener, SocketError> {
    let io = |doing| {
        let path = path.to_owned();
        move |source| SocketError::Io {
            path,
            doing,
            source,
        }
    };
    let gid = match group {
        "" => None,
        g => Some(gid_of(g, &read_group_file())?),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("creating its directory"))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io("setting its directory's mode"))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        // Only a socket left by an earlier run is removed, never another kind of file.
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
        }
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(io("binding"))?;
    std::os::unix::fs::chown(path, None, gid).map_err(io("setting its group"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting its mode"))?;
    Ok(listener)
}

fn read_group_file() -> String {
    std::fs::read_to_string("/etc/group").unwrap_or_default()
}

/// `group` as a gid: a number as is, else its line in `group_file` (`name:x:gid:…`).
fn gid_of(group: &str, group_file: &str) -> Result<u32, SocketError> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    group_file
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| SocketError::UnknownGroup(group.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_name_or_number() {
        let file = "root:x:0:\nvigil:x:998:spire\n";
        assert_eq!(gid_of("vigil", file).unwrap(), 998);
        assert_eq!(gid_of("0", file).unwrap(), 0);
        let e = gid_of("nobody-here", file).unwrap_err();
        assert!(e.to_string().contains("nobody-here"), "{e}");
    }
}
