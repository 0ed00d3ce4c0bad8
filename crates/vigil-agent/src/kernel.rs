//! The kernel interfaces the agent reads: the TPM device, the IMA measurement list and
//! the UEFI event log in securityfs. When one is missing or closed to the agent's user,
//! the TPM stack's own error (`response code not recognized: … 0xa000a`) or a bare
//! "No such file or directory" does not say what to do; these checks do, before the
//! agent starts or when it first serves an empty list.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Which kernel interface a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The TPM character device (`tpm_tcti = "device:…"`).
    TpmDevice,
    /// The IMA measurement list (`ima_ml_path`).
    ImaList,
    /// The UEFI event log (`measuredboot_ml_path`).
    EventLog,
}

/// A kernel interface the agent cannot open, with what to check.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {what} {path}: {source}; {hint}", what = self.what(), hint = self.hint())]
pub struct Unavailable {
    /// Which interface.
    pub kind: Source,
    /// The path tried.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

impl Unavailable {
    fn what(&self) -> &'static str {
        match self.kind {
            Source::TpmDevice => "the TPM device",
            Source::ImaList => "the IMA measurement list",
            Source::EventLog => "the UEFI event log",
        }
    }

    /// What to check, by interface and by the kind of failure.
    pub fn hint(&self) -> String {
        let denied = self.source.kind() == ErrorKind::PermissionDenied;
        let missing = self.source.kind() == ErrorKind::NotFound;
        match (self.kind, denied) {
            (Source::TpmDevice, false) if !missing => "is another process holding it? \
                 `/dev/tpm0` admits one user at a time; `/dev/tpmrm0`, the kernel's \
                 resource manager, is shared"
                .into(),
            (Source::TpmDevice, true) => "run the agent as root or as a user in the group \
                 that owns the device (`tss` on most distributions; see `ls -l /dev/tpm*`)"
                .into(),
            (Source::TpmDevice, false) => format!(
                "does this machine have a TPM 2.0, enabled in the firmware, with its kernel \
                 driver loaded (`ls /dev/tpm*`)? Set `tpm_tcti` to the device that exists \
                 (for swtpm: `swtpm:host=…,port=…`); the configured one is `device:{}`",
                self.path.display()
            ),
            (Source::ImaList | Source::EventLog, true) => "securityfs is readable by root \
                 only: run the agent as root, or give its user read access to the file"
                .into(),
            (Source::ImaList, false) => "is `ima_policy` set on the kernel command line \
                 (e.g. `ima_policy=tcb`) and securityfs mounted on /sys/kernel/security? \
                 Set `ima_ml_path` if the list is elsewhere, or use `ima_emulate`"
                .into(),
            (Source::EventLog, false) => "the firmware did not hand the kernel a TCG event \
                 log (legacy BIOS boot, or no TPM driver), so measured boot cannot be \
                 attested; set `measuredboot_ml_path` if the log is elsewhere"
                .into(),
        }
    }
}

/// Opens `path` for reading (and writing, for the TPM device) to see whether the agent
/// can use it. Opening `/dev/tpmrm0` and closing it again leaves no state in the TPM.
pub fn check(kind: Source, path: &Path) -> Result<(), Unavailable> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(kind == Source::TpmDevice);
    options.open(path).map(drop).map_err(|source| Unavailable {
        kind,
        path: path.to_owned(),
        source,
    })
}

/// The device of a `device:PATH` TCTI (other TCTIs name no device file).
pub fn tcti_device(tcti: &str) -> Option<&Path> {
    let rest = tcti.strip_prefix("device")?;
    match rest.strip_prefix(':') {
        Some(path) if !path.is_empty() => Some(Path::new(path)),
        // `device` alone means the TPM stack's default.
        _ if rest.is_empty() => Some(Path::new("/dev/tpm0")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(kind: Source, path: &str, err: ErrorKind) -> String {
        Unavailable {
            kind,
            path: path.into(),
            source: err.into(),
        }
        .to_string()
    }

    #[test]
    fn missing_tpm_device_names_the_device_and_what_to_check() {
        let m = unavailable(Source::TpmDevice, "/dev/tpmrm0", ErrorKind::NotFound);
        assert!(
            m.starts_with("cannot open the TPM device /dev/tpmrm0: "),
            "{m}"
        );
        assert!(m.contains("TPM 2.0, enabled in the firmware"), "{m}");
        assert!(m.contains("ls /dev/tpm*"), "{m}");
        assert!(m.contains("`tpm_tcti`"), "{m}");
    }

    #[test]
    fn tpm_device_without_permission_names_the_group() {
        let m = unavailable(
            Source::TpmDevice,
            "/dev/tpmrm0",
            ErrorKind::PermissionDenied,
        );
        assert!(m.contains("/dev/tpmrm0"), "{m}");
        assert!(m.contains("`tss`"), "{m}");
        assert!(!m.contains("firmware"), "{m}");
    }

    #[test]
    fn busy_tpm_device_points_at_the_resource_manager() {
        let m = unavailable(Source::TpmDevice, "/dev/tpm0", ErrorKind::Other);
        assert!(
            m.starts_with("cannot open the TPM device /dev/tpm0: "),
            "{m}"
        );
        assert!(m.contains("another process"), "{m}");
        assert!(m.contains("`/dev/tpmrm0`"), "{m}");
    }

    #[test]
    fn missing_ima_list_asks_for_ima_policy() {
        let path = "/sys/kernel/security/ima/ascii_runtime_measurements";
        let m = unavailable(Source::ImaList, path, ErrorKind::NotFound);
        assert!(m.contains(path), "{m}");
        assert!(
            m.contains("is `ima_policy` set on the kernel command line"),
            "{m}"
        );
        assert!(m.contains("`ima_ml_path`"), "{m}");
    }

    #[test]
    fn securityfs_without_permission_says_root() {
        for kind in [Source::ImaList, Source::EventLog] {
            let m = unavailable(kind, "/sys/kernel/security/x", ErrorKind::PermissionDenied);
            assert!(m.contains("securityfs is readable by root only"), "{m}");
        }
    }

    #[test]
    fn missing_event_log_says_measured_boot_cannot_be_attested() {
        let path = "/sys/kernel/security/tpm0/binary_bios_measurements";
        let m = unavailable(Source::EventLog, path, ErrorKind::NotFound);
        assert!(m.contains(path), "{m}");
        assert!(m.contains("measured boot cannot be attested"), "{m}");
        assert!(m.contains("`measuredboot_ml_path`"), "{m}");
    }

    #[test]
    fn check_reports_the_real_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("tpmrm9");
        let e = check(Source::TpmDevice, &missing).unwrap_err();
        assert_eq!(e.source.kind(), ErrorKind::NotFound);
        assert_eq!(e.path, missing);
        let list = dir.path().join("list");
        std::fs::write(&list, "").unwrap();
        check(Source::ImaList, &list).unwrap();
    }

    #[test]
    fn only_device_tctis_name_a_device() {
        assert_eq!(
            tcti_device("device:/dev/tpmrm0"),
            Some(Path::new("/dev/tpmrm0"))
        );
        assert_eq!(tcti_device("device"), Some(Path::new("/dev/tpm0")));
        assert_eq!(tcti_device("swtpm:host=127.0.0.1,port=2321"), None);
        assert_eq!(tcti_device("devicex:/dev/tpm0"), None);
        assert_eq!(tcti_device("device:"), None);
    }
}
