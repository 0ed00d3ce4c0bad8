//! # vigil-tls
//!
//! TLS material and trust for Vigil's services and clients:
//!
//! - [`ca`]: a certificate authority laid out like Keylime's `tls_dir = generate`
//!   directory (`cv_ca`): `cacert.crt`, `server-cert.crt` / `server-private.pem`,
//!   `client-cert.crt` / `client-private.pem`, made with rcgen, so a fresh install
//!   has working mTLS without openssl, and [`ca::self_signed`] for an agent's own
//!   certificate;
//! - [`server_config`] and [`client_config`]: rustls configurations from PEM files —
//!   Vigil's own or an existing Keylime `cv_ca`; [`danger`] holds the client
//!   configuration that does not check the server's name (Keylime's clients' habit);
//! - [`load_cert_store`]: a TPM vendor trust store (Keylime's `tpm_cert_store`).
//!
//! Everything uses rustls' aws-lc-rs provider, the crypto library the core already
//! links.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca;
mod config;
pub mod danger;
mod pinned;
mod trust;

pub use config::{
    certificate_issuer, client_config, peer_common_name, peer_subject, server_config, ClientAuth,
};
pub use pinned::{pinned_client_config, CertPin, PinCheckedConfig, PinnedIdentity};
pub use trust::load_cert_store;

use std::path::PathBuf;

/// Why TLS material cannot be made or loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The CA directory already holds a CA (`ca init` without `force`).
    #[error("{path} already exists (use --force to replace the CA)")]
    Exists {
        /// The existing CA certificate.
        path: PathBuf,
    },
    /// Certificate generation failed.
    #[error("cannot generate certificate {name}: {message}")]
    Generate {
        /// The certificate being made (`ca`, `server`, a client name).
        name: String,
        /// rcgen's error.
        message: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA list is unusable.
    #[error("invalid client CA: {0}")]
    ClientVerifier(String),
    /// A TPM vendor trust store (`tpm_cert_store`) is unusable.
    #[error("trust store {path}: {message}")]
    CertStore {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl TlsError {
    /// What to do when a service's TLS files in `tls_dir` are missing: create them
    /// with `vigil ca init` (a missing file is the usual first-run mistake). Empty for
    /// other errors.
    pub fn setup_hint(&self, tls_dir: &std::path::Path) -> String {
        match self {
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => format!(
                "; run `vigil ca init --dir {}` first (or set tls_dir to an existing \
                 Keylime cv_ca)",
                tls_dir.display()
            ),
            _ => String::new(),
        }
    }
}
