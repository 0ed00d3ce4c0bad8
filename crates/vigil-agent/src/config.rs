//! Configuration: a TOML file, then `VIGIL_AGENT_<KEY>` environment overrides, then
//! defaults. Key names follow rust-keylime's `agent.conf` where it has the option.
//! `docs/agent.md` lists every key with its default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vigil_core::HashAlg;
use vigil_tpm::{AkAlg, AkKey, EkAlg, EkSource};

pub use vigil_service::settings::ConfigError;

/// The environment prefix of overrides: `VIGIL_AGENT_PORT=9003`.
pub const ENV_PREFIX: &str = "VIGIL_AGENT_";

/// Keylime's default agent UUID (rust-keylime `DEFAULT_UUID`).
pub const DEFAULT_UUID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";

/// Where the node-local identity socket is made by default.
pub const DEFAULT_IDENTITY_SOCKET: &str = "/run/vigil/agent.sock";

/// The agent's configuration, as written in the file (paths not yet resolved).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The agent's UUID: what it registers as and what the server certificate's CN
    /// carries.
    pub uuid: String,
    /// Address the API binds to.
    pub ip: IpAddr,
    /// API port (0 = any free port).
    pub port: u16,
    /// Address registered for the verifier and tenant to reach the agent.
    pub contact_ip: IpAddr,
    /// Port registered (0 = the port actually bound).
    pub contact_port: u16,
    /// A plain-HTTP port serving only `healthz`, `readyz` and `metrics` to anyone (the
    /// API port needs a client certificate under mTLS); unset = not served, 0 = any
    /// free port.
    pub ops_port: Option<u16>,
    /// The registrar's address.
    pub registrar_ip: IpAddr,
    /// The registrar's plain-HTTP registration port.
    pub registrar_port: u16,
    /// How to reach the TPM (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`).
    pub tpm_tcti: String,
    /// PCR bank quoted and AK name/signing hash: `sha256`, `sha384`, `sha1`.
    pub tpm_hash_alg: String,
    /// EK (and AK) key type: `rsa` (RSA-2048) or `ecc` (P-256).
    pub tpm_encryption_alg: String,
    /// AK signing scheme: `rsassa` (with `rsa`) or `ecdsa` (with `ecc`).
    pub tpm_signing_alg: String,
    /// A persistent EK handle (`0x81010001`); empty = the TCG default template.
    pub ek_handle: String,
    /// Directory for the AK blob, the NK and the generated server certificate.
    pub state_dir: PathBuf,
    /// CA certificates client certificates must chain to (relative = under
    /// `state_dir`).
    pub trusted_client_ca: Vec<PathBuf>,
    /// Server certificate (relative = under `state_dir`); generated if absent.
    pub server_cert: PathBuf,
    /// Server key (relative = under `state_dir`); generated if absent.
    pub server_key: PathBuf,
    /// Serve HTTPS with mandatory client certificates (off: plain HTTP, no payloads).
    pub enable_agent_mtls: bool,
    /// The kernel's IMA measurement list (or the emulated one).
    pub ima_ml_path: PathBuf,
    /// The UEFI event log.
    pub measuredboot_ml_path: PathBuf,
    /// Where payloads are decrypted and unzipped (relative = under `state_dir`).
    pub secure_dir: PathBuf,
    /// Script run from the unzipped payload once both key halves arrived.
    pub payload_script: String,
    /// Run payloads even without mTLS (Keylime's `enable_insecure_payload`).
    pub enable_insecure_payload: bool,
    /// The `RevocationNotifier` certificate (relative = under `secure_dir/unzipped`).
    pub revocation_cert: PathBuf,
    /// Revocation actions run for every verified notice (names in the actions
    /// directory).
    pub revocation_actions: Vec<String>,
    /// Where revocation actions live.
    pub revocation_actions_dir: PathBuf,
    /// Also look actions up in the unzipped payload (and honour its `action_list`).
    pub allow_payload_revocation_actions: bool,
    /// Seconds each revocation action may run.
    pub revocation_action_timeout: u64,
    /// Vigil only: response actions the verifier asks for (`quarantine`, `shutdown`) are
    /// only logged, not run (`docs/response.md`).
    pub response_dry_run: bool,
    /// The quarantine script (drop the network except to `control_plane`).
    pub quarantine_script: PathBuf,
    /// The shutdown script (power off).
    pub shutdown_script: PathBuf,
    /// The control plane's addresses the quarantine script keeps reachable.
    pub control_plane: Vec<String>,
    /// IMA emulation: files, or directories (every regular file under them), measured
    /// into PCR 10 and `ima_ml_path`. Empty = off.
    pub ima_emulate: Vec<PathBuf>,
    /// IMA emulation: the log written (relative = under `state_dir`), served instead of
    /// `ima_ml_path` while emulation is on.
    pub ima_emulate_log: PathBuf,
    /// IMA emulation: seconds between rescans (0 = only at start and on demand).
    pub ima_emulate_interval: u64,
    /// Longest pause between registration attempts, in seconds.
    pub registration_retry_max: u64,
    /// Serve `agent/info` and `quotes/identity` on the node-local unix socket
    /// `identity_socket` (plain HTTP: the socket file's mode and group decide who may
    /// ask; docs/spire.md).
    pub serve_identity_socket: bool,
    /// The node-local identity socket's path.
    pub identity_socket: PathBuf,
    /// The socket file's mode, in octal.
    pub identity_socket_mode: String,
    /// The socket file's group (a name from `/etc/group` or a number); empty = the
    /// agent's own group.
    pub identity_socket_group: String,
    /// Also serve `agent/info` and `quotes/identity` on the network API (as Keylime's
    /// agent and `keylime/spire-keylime-plugin` expect); off = only on the socket.
    pub identity_on_network: bool,
    /// Log filter (`tracing` syntax).
    pub log: String,
    /// Log lines as `text` (the default) or `json` (one object per line).
    pub log_format: vigil_service::LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        let localhost = IpAddr::from([127, 0, 0, 1]);
        Self {
            uuid: DEFAULT_UUID.into(),
            ip: localhost,
            port: 9002,
            contact_ip: localhost,
            contact_port: 9002,
            ops_port: None,
            registrar_ip: localhost,
            registrar_port: 8890,
            tpm_tcti: "device:/dev/tpmrm0".into(),
            tpm_hash_alg: "sha256".into(),
            tpm_encryption_alg: "rsa".into(),
            tpm_signing_alg: "rsassa".into(),
            ek_handle: String::new(),
            state_dir: PathBuf::from("/var/lib/vigil-agent"),
            trusted_client_ca: vec![PathBuf::from("cv_ca/cacert.crt")],
            server_cert: PathBuf::from("server-cert.crt"),
            server_key: PathBuf::from("server-private.pem"),
            enable_agent_mtls: true,
            ima_ml_path: PathBuf::from("/sys/kernel/security/ima/ascii_runtime_measurements"),
            measuredboot_ml_path: PathBuf::from(
                "/sys/kernel/security/tpm0/binary_bios_measurements",
            ),
            secure_dir: PathBuf::from("secure"),
            payload_script: "autorun.sh".into(),
            enable_insecure_payload: false,
            revocation_cert: PathBuf::from("RevocationNotifier-cert.crt"),
            revocation_actions: Vec::new(),
            revocation_actions_dir: PathBuf::from("/usr/libexec/vigil"),
            allow_payload_revocation_actions: true,
            revocation_action_timeout: 30,
            response_dry_run: true,
            quarantine_script: PathBuf::from("/usr/libexec/vigil/quarantine.sh"),
            shutdown_script: PathBuf::from("/usr/libexec/vigil/shutdown.sh"),
            control_plane: Vec::new(),
            ima_emulate: Vec::new(),
            ima_emulate_log: PathBuf::from("ima_emulated_measurements"),
            ima_emulate_interval: 10,
            registration_retry_max: 60,
            serve_identity_socket: false,
            identity_socket: PathBuf::from(DEFAULT_IDENTITY_SOCKET),
            identity_socket_mode: "0660".into(),
            identity_socket_group: "vigil".into(),
            identity_on_network: true,
            log: "info".into(),
            log_format: vigil_service::LogFormat::Text,
        }
    }
}

const LIST_KEYS: &[&str] = &[
    "trusted_client_ca",
    "revocation_actions",
    "ima_emulate",
    "control_plane",
];
const SCALAR_KEYS: &[&str] = &[
    "port",
    "contact_port",
    "ops_port",
    "registrar_port",
    "enable_agent_mtls",
    "enable_insecure_payload",
    "allow_payload_revocation_actions",
    "revocation_action_timeout",
    "ima_emulate_interval",
    "registration_retry_max",
    "serve_identity_socket",
    "identity_on_network",
    "response_dry_run",
];

/// A configuration value that parses as TOML but means nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value:?}: {message}")]
pub struct InvalidValue {
    /// The key.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// What is accepted.
    pub message: &'static str,
}

impl Config {
    /// Reads `file` (if any), applies the environment overrides in `env` (pass
    /// `std::env::vars()`), and fills in defaults.
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

    /// A state file: absolute as given, else under `state_dir`.
    pub fn state_file(&self, p: &Path) -> PathBuf {
        self.state_dir.join(p)
    }

    /// The secure directory in use.
    pub fn secure_dir(&self) -> PathBuf {
        self.state_dir.join(&self.secure_dir)
    }

    /// The revocation certificate in use.
    pub fn revocation_cert(&self) -> PathBuf {
        self.secure_dir()
            .join("unzipped")
            .join(&self.revocation_cert)
    }

    /// The quoted bank.
    pub fn hash_alg(&self) -> Result<HashAlg, InvalidValue> {
        HashAlg::from_name(&self.tpm_hash_alg)
            .filter(|h| *h != HashAlg::Sm3_256)
            .ok_or_else(|| InvalidValue {
                key: "tpm_hash_alg",
                value: self.tpm_hash_alg.clone(),
                message: "sha1, sha256, sha384 or sha512",
            })
    }

    /// The EK source.
    pub fn ek_source(&self) -> Result<EkSource, InvalidValue> {
        if !self.ek_handle.is_empty() {
            let h = self.ek_handle.trim_start_matches("0x");
            return u32::from_str_radix(h, 16)
                .map(EkSource::Persistent)
                .map_err(|_| InvalidValue {
                    key: "ek_handle",
                    value: self.ek_handle.clone(),
                    message: "a hex persistent handle such as 0x81010001",
                });
        }
        Ok(EkSource::Template(match self.tpm_encryption_alg.as_str() {
            "rsa" | "rsa2048" => EkAlg::Rsa2048,
            "ecc" | "ecc256" => EkAlg::EccP256,
            "ecc384" => EkAlg::EccP384,
            _ => return Err(self.bad_enc()),
        }))
    }

    fn bad_enc(&self) -> InvalidValue {
        InvalidValue {
            key: "tpm_encryption_alg",
            value: self.tpm_encryption_alg.clone(),
            message: "rsa, ecc or ecc384",
        }
    }

    /// The identity socket's file mode (permission bits only).
    pub fn identity_socket_mode(&self) -> Result<u32, InvalidValue> {
        u32::from_str_radix(&self.identity_socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| InvalidValue {
                key: "identity_socket_mode",
                value: self.identity_socket_mode.clone(),
                message: "octal permission bits such as 0660",
            })
    }

    /// The AK algorithms.
    pub fn ak_alg(&self) -> Result<AkAlg, InvalidValue> {
        let key = match (
            self.tpm_encryption_alg.as_str(),
            self.tpm_signing_alg.as_str(),
        ) {
            ("rsa" | "rsa2048", "rsassa") => AkKey::Rsa2048,
            ("ecc" | "ecc256", "ecdsa") => AkKey::EccP256,
            ("ecc384", "ecdsa") => AkKey::EccP384,
            ("rsa" | "rsa2048" | "ecc" | "ecc256" | "ecc384", _) => {
                return Err(InvalidValue {
                    key: "tpm_signing_alg",
                    value: self.tpm_signing_alg.clone(),
                    message: "rsassa with an RSA key, ecdsa with an ECC key",
                })
            }
            _ => return Err(self.bad_enc()),
        };
        Ok(AkAlg {
            key,
            hash: self.hash_alg()?,
        })
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
    fn defaults_and_overrides() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!((c.port, c.registrar_port), (9002, 8890));
        assert_eq!(c.ak_alg().unwrap(), AkAlg::RSA_SHA256);
        assert_eq!(c.ek_source().unwrap(), EkSource::Template(EkAlg::Rsa2048));
        assert_eq!(
            c.revocation_cert(),
            Path::new("/var/lib/vigil-agent/secure/unzipped/RevocationNotifier-cert.crt")
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.toml");
        std::fs::write(&f, "port = 9100\ntpm_encryption_alg = \"ecc\"\n").unwrap();
        let c = Config::load(
            Some(&f),
            env(&[
                ("VIGIL_AGENT_TPM_SIGNING_ALG", "ecdsa"),
                ("VIGIL_AGENT_IMA_EMULATE", "/usr/bin, /etc/hosts"),
                ("VIGIL_AGENT_ENABLE_AGENT_MTLS", "false"),
                ("VIGIL_AGENT_EK_HANDLE", "0x81010001"),
            ]),
        )
        .unwrap();
        assert_eq!(c.port, 9100);
        assert_eq!(c.ak_alg().unwrap(), AkAlg::ECC_P256_SHA256);
        assert_eq!(
            c.ima_emulate,
            vec![PathBuf::from("/usr/bin"), "/etc/hosts".into()]
        );
        assert!(!c.enable_agent_mtls);
        assert_eq!(c.ek_source().unwrap(), EkSource::Persistent(0x8101_0001));
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::load(None, env(&[("VIGIL_AGENT_PORT", "x")])).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let c = Config {
            tpm_signing_alg: "ecdsa".into(),
            ..Config::default()
        };
        assert_eq!(c.ak_alg().unwrap_err().key, "tpm_signing_alg");
        let c = Config {
            tpm_hash_alg: "md5".into(),
            ..Config::default()
        };
        assert_eq!(c.hash_alg().unwrap_err().key, "tpm_hash_alg");
    }
}
