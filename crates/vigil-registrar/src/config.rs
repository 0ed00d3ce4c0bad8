//! Configuration: a TOML file, then `VIGIL_REGISTRAR_<KEY>` environment overrides,
//! then defaults. Key names follow Keylime's `registrar.conf` where Keylime has the
//! option. `docs/registrar.md` lists every key with its default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The environment prefix of overrides: `VIGIL_REGISTRAR_PORT=9000`.
pub const ENV_PREFIX: &str = "VIGIL_REGISTRAR_";

pub use vigil_service::settings::ConfigError;

/// What to do with certificates that are not DER (Keylime's `malformed_cert_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MalformedCertAction {
    /// Accept and log a warning (Keylime's default).
    #[default]
    Warn,
    /// Refuse the registration (400).
    Reject,
    /// Accept silently.
    Ignore,
}

/// The registrar's configuration, as written in the file (paths not yet resolved).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address both ports bind to.
    pub ip: IpAddr,
    /// Plain-HTTP port: version, registration and activation (0 = any free port).
    pub port: u16,
    /// HTTPS port: everything, admin routes only with a client certificate.
    pub tls_port: u16,
    /// Directory for the default database and TLS material.
    pub state_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty = `sqlite://<state_dir>/reg_data.sqlite?mode=rwc`.
    pub database_url: String,
    /// TLS directory; empty = `<state_dir>/cv_ca`; relative = under `state_dir`.
    pub tls_dir: PathBuf,
    /// Server certificate, relative to `tls_dir` unless absolute.
    pub server_cert: PathBuf,
    /// Server private key, relative to `tls_dir` unless absolute.
    pub server_key: PathBuf,
    /// CA certificates client certificates must chain to, relative to `tls_dir`.
    pub trusted_client_ca: Vec<PathBuf>,
    /// Largest request body accepted, in bytes.
    pub max_upload_size: usize,
    /// Certificates that are not DER: `warn`, `reject` or `ignore`.
    pub malformed_cert_action: MalformedCertAction,
    /// Require an EK certificate that chains to `tpm_cert_store` at registration.
    pub require_ek_cert: bool,
    /// Vendor CA directory (`*.pem`) for `require_ek_cert`; empty =
    /// `<state_dir>/tpm_cert_store`; relative = under `state_dir`.
    pub tpm_cert_store: PathBuf,
    /// Require the AK to be a restricted signing key fixed to its TPM.
    pub check_ak_attributes: bool,
    /// Log filter (`tracing` syntax: `info`, `vigil_registrar=debug`, …).
    pub log: String,
    /// Log lines as `text` (the default) or `json` (one object per line).
    pub log_format: vigil_service::LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ip: IpAddr::from([127, 0, 0, 1]),
            port: 8890,
            tls_port: 8891,
            state_dir: PathBuf::from("/var/lib/vigil"),
            database_url: String::new(),
            tls_dir: PathBuf::new(),
            server_cert: PathBuf::from("server-cert.crt"),
            server_key: PathBuf::from("server-private.pem"),
            trusted_client_ca: vec![PathBuf::from("cacert.crt")],
            max_upload_size: 1 << 20,
            malformed_cert_action: MalformedCertAction::Warn,
            require_ek_cert: false,
            tpm_cert_store: PathBuf::new(),
            check_ak_attributes: true,
            log: "info".into(),
            log_format: vigil_service::LogFormat::Text,
        }
    }
}

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["trusted_client_ca"];
/// Keys whose environment value is a number or a boolean, not a string.
const SCALAR_KEYS: &[&str] = &[
    "port",
    "tls_port",
    "max_upload_size",
    "require_ek_cert",
    "check_ak_attributes",
];

impl Config {
    /// Reads `file` (if any), applies the environment overrides in `env` (pairs of
    /// name and value; pass `std::env::vars()`), and fills in defaults.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        vigil_service::settings::load(
            file,
            env,
            vigil_service::settings::EnvKeys {
                prefix: ENV_PREFIX,
                lists: LIST_KEYS,
                scalars: SCALAR_KEYS,
            },
        )
    }

    /// The database URL in use.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.state_dir.join("reg_data.sqlite").display()
            )
        } else {
            self.database_url.clone()
        }
    }

    /// The TLS directory in use.
    pub fn tls_dir(&self) -> PathBuf {
        under(&self.state_dir, &self.tls_dir, "cv_ca")
    }

    /// A TLS file: absolute as given, else under [`tls_dir`](Self::tls_dir).
    pub fn tls_file(&self, p: &Path) -> PathBuf {
        self.tls_dir().join(p)
    }

    /// The EK vendor CA directory in use.
    pub fn tpm_cert_store(&self) -> PathBuf {
        under(&self.state_dir, &self.tpm_cert_store, "tpm_cert_store")
    }
}

/// `p` if absolute, `base/p` if relative, `base/default` if empty.
fn under(base: &Path, p: &Path, default: &str) -> PathBuf {
    if p.as_os_str().is_empty() {
        base.join(default)
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_match_keylime_ports_and_paths() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!((c.port, c.tls_port), (8890, 8891));
        assert_eq!(
            c.database_url(),
            "sqlite:///var/lib/vigil/reg_data.sqlite?mode=rwc"
        );
        assert_eq!(c.tls_dir(), Path::new("/var/lib/vigil/cv_ca"));
        assert_eq!(
            c.tls_file(&c.server_cert),
            Path::new("/var/lib/vigil/cv_ca/server-cert.crt")
        );
        assert_eq!(c.tls_file(Path::new("/etc/x.pem")), Path::new("/etc/x.pem"));
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.toml");
        std::fs::write(
            &f,
            "port = 9000\nstate_dir = \"/srv/v\"\nmalformed_cert_action = \"reject\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            env(&[
                ("VIGIL_REGISTRAR_TLS_PORT", "9001"),
                ("VIGIL_REGISTRAR_TRUSTED_CLIENT_CA", "a.crt, b.crt"),
                ("VIGIL_REGISTRAR_REQUIRE_EK_CERT", "true"),
                ("VIGIL_REGISTRAR_DATABASE_URL", "postgres://db/reg"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!((c.port, c.tls_port), (9000, 9001));
        assert_eq!(c.malformed_cert_action, MalformedCertAction::Reject);
        assert_eq!(
            c.trusted_client_ca,
            vec![PathBuf::from("a.crt"), "b.crt".into()]
        );
        assert!(c.require_ek_cert);
        assert_eq!(c.database_url(), "postgres://db/reg");
        assert_eq!(c.tpm_cert_store(), Path::new("/srv/v/tpm_cert_store"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, env(&[("VIGIL_REGISTRAR_PORT", "eighty")])).unwrap_err();
        assert!(e.to_string().contains("port: invalid type"), "{e}");
        let e = Config::load(None, env(&[("VIGIL_REGISTRAR_BOGUS", "1")])).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.toml");
        std::fs::write(&f, "malformed_cert_action = \"maybe\"\n").unwrap();
        let e = Config::load(Some(&f), env(&[])).unwrap_err();
        assert!(e.to_string().contains("maybe"), "{e}");
    }
}
