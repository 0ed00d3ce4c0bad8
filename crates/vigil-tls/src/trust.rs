//! TPM vendor trust stores: Keylime's `tpm_cert_store` directory (EK, IAK and IDevID
//! issuer certificates as `*.pem` files), read once into a
//! [`vigil_core::tpm::ek_cert::EkCertStore`]. Shared by the registrar
//! (`require_ek_cert`, IAK/IDevID registration) and `vigil ekcert verify`.

use std::path::Path;

use vigil_core::tpm::ek_cert::EkCertStore;

use crate::TlsError;

/// Reads a trust store as Keylime does: a directory's `*.pem` files (taken in name
/// order, so the output is stable), or a single certificate file. A store that holds
/// no certificate is an error: a check against it could never pass.
pub fn load_cert_store(path: &Path) -> Result<EkCertStore, TlsError> {
    let fail = |message: String| TlsError::CertStore {
        path: path.to_owned(),
        message,
    };
    let read = |file: &Path| {
        std::fs::read(file).map_err(|source| TlsError::Io {
            path: file.to_owned(),
            source,
        })
    };
    let mut entries = Vec::new();
    if path.is_dir() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|source| TlsError::Io {
            path: path.to_owned(),
            source,
        })? {
            let entry = entry.map_err(|source| TlsError::Io {
                path: path.to_owned(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pem") && entry.path().is_file() {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let bytes = read(&path.join(&name))?;
            entries.push((name, bytes));
        }
    } else {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        entries.push((name, read(path)?));
    }
    let store = EkCertStore::from_entries(entries).map_err(|e| fail(e.to_string()))?;
    if store.is_empty() {
        return Err(fail("holds no certificate".into()));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pem_files_in_a_directory_and_refuses_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::init(&dir.path().join("ca"), &["localhost".into()], false).unwrap();
        let store_dir = dir.path().join("store");
        std::fs::create_dir(&store_dir).unwrap();
        let e = load_cert_store(&store_dir).unwrap_err();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        std::fs::copy(ca.ca_cert(), store_dir.join("root.pem")).unwrap();
        std::fs::write(store_dir.join("notes.txt"), "not a certificate").unwrap();
        assert_eq!(load_cert_store(&store_dir).unwrap().len(), 1);
        assert_eq!(load_cert_store(&ca.ca_cert()).unwrap().len(), 1);
        let missing = load_cert_store(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, TlsError::Io { .. }), "{missing}");
    }
}
