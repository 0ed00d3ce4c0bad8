//! Configuration: a TOML file, then `VIGIL_VERIFIER_<KEY>` environment overrides, then
//! defaults. Key names follow Keylime's `verifier.conf` where Keylime has the option
//! (compat §1.9). `docs/verifier.md` lists every key with its default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use vigil_core::attestation::{AttestationConfig, SeverityConfig, SeverityRule};

/// The environment prefix of overrides: `VIGIL_VERIFIER_PORT=9000`.
pub const ENV_PREFIX: &str = "VIGIL_VERIFIER_";

pub use vigil_service::settings::ConfigError;

/// When the measured-boot policy is evaluated (Keylime's `measured_boot_evaluate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MbEvaluate {
    /// Only until the first successful attestation (Keylime's default).
    #[default]
    Once,
    /// Every round.
    Always,
}

/// The verifier's configuration, as written in the file (paths not yet resolved).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This verifier's id (Keylime's `uuid`): enrolments record it, and the agent
    /// revocation channel notifies the nodes sharing it.
    pub uuid: String,
    /// Address the HTTPS port binds to.
    pub ip: IpAddr,
    /// HTTPS port (0 = any free port).
    pub port: u16,
    /// Directory for the default database and TLS material.
    pub state_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty = `sqlite://<state_dir>/cv_data.sqlite?mode=rwc`.
    pub database_url: String,
    /// TLS directory; empty = `<state_dir>/cv_ca`; relative = under `state_dir`.
    pub tls_dir: PathBuf,
    /// Server certificate, relative to `tls_dir` unless absolute.
    pub server_cert: PathBuf,
    /// Server private key, relative to `tls_dir` unless absolute.
    pub server_key: PathBuf,
    /// CA certificates admin client certificates must chain to, relative to `tls_dir`.
    pub trusted_client_ca: Vec<PathBuf>,
    /// The client certificate the verifier presents to nodes, relative to `tls_dir`.
    pub client_cert: PathBuf,
    /// Its private key, relative to `tls_dir`.
    pub client_key: PathBuf,
    /// Require an `mtls_cert` at enrolment and talk to nodes over mTLS only.
    pub enable_agent_mtls: bool,
    /// Largest request body accepted, in bytes.
    pub max_upload_size: usize,
    /// Seconds between two successful rounds of a node.
    pub quote_interval: f64,
    /// Base retry delay in seconds.
    pub retry_interval: f64,
    /// Failed requests tolerated before FAILED.
    pub max_retries: u32,
    /// Retry `n` waits `retry_interval ** n`.
    pub exponential_backoff: bool,
    /// Seconds a request to a node may take.
    pub request_timeout: f64,
    /// Vigil only: keep each node's connection open between quote requests while the
    /// node allows it (one TLS handshake per node rather than per round).
    pub agent_keep_alive: bool,
    /// Vigil only: probe nodes FAILED only for unreachability, and bring them back.
    pub auto_recover: bool,
    /// Severity labels, lowest first.
    pub severity_labels: Vec<String>,
    /// `{event_id, severity_label}` rules, first match wins.
    pub severity_policy: Vec<SeverityRule>,
    /// The measured-boot policy: `accept-all`, `reject-all` or `example`.
    pub measured_boot_policy_name: String,
    /// `once` or `always`.
    pub measured_boot_evaluate: MbEvaluate,
    /// Accept IMA time-of-measure/time-of-use violations.
    pub ignore_tomtou_errors: bool,
    /// Refuse runtime policies that are not DSSE envelopes verified with the
    /// `runtime_policy_key` of the request (Keylime's option of that name).
    pub require_allow_list_signatures: bool,
    /// Revocation channels: a subset of `agent`, `webhook`.
    pub enabled_revocation_notifications: Vec<String>,
    /// Webhook URL (`http://` or `https://`) for the `webhook` channel.
    pub webhook_url: String,
    /// Vigil only: this replica's name for leases; empty = `<uuid>-<hostname>-<pid>`.
    pub replica_id: String,
    /// Vigil only: lease duration in seconds; 0 = no leases (one verifier owns every
    /// node enrolled with its `uuid`).
    pub lease_ttl: u32,
    /// Vigil only: how many free nodes a replica claims per lease tick.
    pub lease_batch: u32,
    /// Vigil only: the largest answer read from a node, in bytes; a larger one fails
    /// the round as `internal.verifier.answer_too_large` without being read whole.
    pub max_answer_size: usize,
    /// Vigil only: the most quote rounds under way at once (from the request to the
    /// round recorded); a node due beyond that waits for one to end. A verifier that
    /// falls behind then queues nodes, not their answers and judged rounds. The
    /// default is four of the round writer's batches, so requests go on while one
    /// commits.
    pub max_rounds_in_flight: usize,
    /// Vigil only: a node whose last successful round is older than this many quote
    /// intervals (and at least 30 s) is reported as not currently attested
    /// (`attestation_status` TIMEOUT instead of PASS); 0 turns the check off.
    pub stale_after_intervals: f64,
    /// Vigil only (workload identity, docs/spire.md): the subject CNs of client
    /// certificates allowed the identity role (`/vigil/v1/identity/…`); empty = every
    /// client certificate the admin API accepts.
    pub identity_clients: Vec<String>,
    /// Vigil only: the SPIFFE trust domain identities are issued in (names the SPIFFE
    /// ID handed to `identity_evict_command`).
    pub identity_trust_domain: String,
    /// Vigil only: the registrar's HTTPS address (`ip:port`), asked for a node's EK
    /// certificate (the `vigil:ek_cert_issuer` selector) with this verifier's client
    /// certificate; empty = that selector is not given.
    pub identity_registrar: String,
    /// Vigil only: a command (program and arguments) run when a node with an issued
    /// identity fails attestation; `{spiffe_id}` and `{uuid}` in an argument are
    /// replaced. Empty = none. Example: `["spire-server", "agent", "evict",
    /// "-spiffeID", "{spiffe_id}"]`.
    pub identity_evict_command: Vec<String>,
    /// The trust gate's attestation-results signing key (PKCS#8 PEM, P-256): created
    /// at the first start when missing; empty = `<state_dir>/attestation-results-key.pem`,
    /// relative = under `state_dir`.
    pub attestation_results_key: PathBuf,
    /// How long the trust gate's EAR tokens are valid (seconds, at least 1).
    pub attestation_results_ttl: u32,
    /// Vigil only: where integrity events go, any of `file`, `webhook`, `nats`
    /// (`docs/events.md`); empty = no events.
    pub event_sinks: Vec<String>,
    /// The `file` sink's JSON-lines file, relative to `state_dir` unless absolute.
    pub event_file: PathBuf,
    /// The `webhook` sink's URL (`http://` or `https://`).
    pub event_webhook_url: String,
    /// The file holding the `webhook` sink's HMAC-SHA256 secret, relative to
    /// `state_dir` unless absolute.
    pub event_webhook_secret_file: PathBuf,
    /// The `nats` sink's server.
    pub event_nats_url: String,
    /// The `nats` sink's subject prefix: a node's events go to `<prefix>.<node id>`.
    pub event_nats_subject_prefix: String,
    /// The JetStream stream capturing `<prefix>.>` (created when missing).
    pub event_nats_stream: String,
    /// Vigil only: the response rule file (TOML, reloaded on SIGHUP), relative to
    /// `state_dir` unless absolute; empty = no rules (`docs/response.md`).
    pub response_rules: PathBuf,
    /// Log filter (`tracing` syntax).
    pub log: String,
    /// Log lines as `text` (the default) or `json` (one object per line).
    pub log_format: vigil_service::LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            uuid: "default".into(),
            ip: IpAddr::from([127, 0, 0, 1]),
            port: 8881,
            state_dir: PathBuf::from("/var/lib/vigil"),
            database_url: String::new(),
            tls_dir: PathBuf::new(),
            server_cert: PathBuf::from("server-cert.crt"),
            server_key: PathBuf::from("server-private.pem"),
            trusted_client_ca: vec![PathBuf::from("cacert.crt")],
            client_cert: PathBuf::from("client-cert.crt"),
            client_key: PathBuf::from("client-private.pem"),
            enable_agent_mtls: true,
            max_upload_size: 104_857_600,
            quote_interval: 2.0,
            retry_interval: 2.0,
            max_retries: 5,
            exponential_backoff: true,
            request_timeout: 60.0,
            agent_keep_alive: true,
            auto_recover: false,
            severity_labels: [
                "info",
                "notice",
                "warning",
                "error",
                "critical",
                "alert",
                "emergency",
            ]
            .map(String::from)
            .to_vec(),
            severity_policy: vec![SeverityRule {
                event_id: ".*".into(),
                severity_label: "emergency".into(),
            }],
            measured_boot_policy_name: "accept-all".into(),
            measured_boot_evaluate: MbEvaluate::Once,
            ignore_tomtou_errors: false,
            require_allow_list_signatures: false,
            enabled_revocation_notifications: vec!["agent".into()],
            webhook_url: String::new(),
            replica_id: String::new(),
            lease_ttl: 0,
            lease_batch: 50,
            max_answer_size: 256 << 20,
            max_rounds_in_flight: 1024,
            stale_after_intervals: 10.0,
            identity_clients: Vec::new(),
            identity_trust_domain: "example.org".into(),
            identity_registrar: String::new(),
            identity_evict_command: Vec::new(),
            attestation_results_key: PathBuf::new(),
            attestation_results_ttl: 300,
            event_sinks: Vec::new(),
            event_file: PathBuf::from("events.jsonl"),
            event_webhook_url: String::new(),
            event_webhook_secret_file: PathBuf::from("event-webhook.secret"),
            event_nats_url: "nats://127.0.0.1:4222".into(),
            event_nats_subject_prefix: "vigil.events".into(),
            event_nats_stream: "VIGIL_EVENTS".into(),
            response_rules: PathBuf::new(),
            log: "info".into(),
            log_format: vigil_service::LogFormat::Text,
        }
    }
}

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "trusted_client_ca",
    "severity_labels",
    "enabled_revocation_notifications",
    "identity_clients",
    "identity_evict_command",
    "event_sinks",
];
/// Keys whose environment value is a number or a boolean, not a string.
const SCALAR_KEYS: &[&str] = &[
    "port",
    "max_upload_size",
    "quote_interval",
    "retry_interval",
    "max_retries",
    "exponential_backoff",
    "request_timeout",
    "agent_keep_alive",
    "auto_recover",
    "ignore_tomtou_errors",
    "require_allow_list_signatures",
    "enable_agent_mtls",
    "lease_ttl",
    "lease_batch",
    "stale_after_intervals",
    "max_answer_size",
    "max_rounds_in_flight",
    "attestation_results_ttl",
];

fn seconds(key: &str, v: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v).map_err(|_| ConfigError::Invalid {
        origin: "configuration".into(),
        message: format!("{key}: {v} is not a number of seconds"),
    })
}

impl Config {
    /// Reads `file` (if any), applies the environment overrides in `env` (pairs of
    /// name and value; pass `std::env::vars()`), and fills in defaults.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        vigil_service::settings::load_checked(
            file,
            env,
            vigil_service::settings::EnvKeys {
                prefix: ENV_PREFIX,
                lists: LIST_KEYS,
                scalars: SCALAR_KEYS,
            },
            // Fail at start, naming the key, rather than at the first round.
            Self::check,
        )
    }

    /// What the types do not say: the severities, the measured-boot policy's name and
    /// the revocation channels.
    fn check(&self) -> Result<(), String> {
        self.attestation()?;
        self.measured_boot_policy_name
            .parse::<vigil_core::policy::measured_boot::MbPolicy>()
            .map_err(|e| format!("measured_boot_policy_name: {e}"))?;
        if let Some(sink) = self
            .event_sinks
            .iter()
            .find(|s| !crate::events::SINK_NAMES.contains(&s.as_str()))
        {
            return Err(format!(
                "event_sinks: unknown sink '{sink}' (known: {})",
                crate::events::SINK_NAMES.join(", ")
            ));
        }
        if self.event_sinks.iter().any(|s| s == "webhook") && self.event_webhook_url.is_empty() {
            return Err("event_sinks: webhook needs event_webhook_url".into());
        }
        match self
            .enabled_revocation_notifications
            .iter()
            .find(|c| !matches!(c.as_str(), "agent" | "webhook"))
        {
            Some(channel) => Err(format!(
                "enabled_revocation_notifications: unknown channel '{channel}' (known: agent, webhook)"
            )),
            None => Ok(()),
        }
    }

    /// The engine's configuration.
    pub fn attestation(&self) -> Result<Arc<AttestationConfig>, String> {
        let severity = SeverityConfig::new(self.severity_labels.clone(), &self.severity_policy)
            .map_err(|e| format!("severity_labels/severity_policy: {e}"))?;
        Ok(Arc::new(AttestationConfig {
            quote_interval: seconds("quote_interval", self.quote_interval)
                .map_err(|e| e.to_string())?,
            retry_interval: seconds("retry_interval", self.retry_interval)
                .map_err(|e| e.to_string())?,
            max_retries: self.max_retries,
            exponential_backoff: self.exponential_backoff,
            auto_recover: self.auto_recover,
            severity,
        }))
    }

    /// `request_timeout` as a duration (at least 1 ms).
    pub fn request_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.request_timeout)
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_millis(1))
    }

    /// How old a node's last successful round may be before the node is reported as
    /// not currently attested; `None` when the check is off.
    pub fn stale_after(&self) -> Option<Duration> {
        if self.stale_after_intervals <= 0.0 || !self.stale_after_intervals.is_finite() {
            return None;
        }
        let limit = Duration::try_from_secs_f64(self.quote_interval * self.stale_after_intervals)
            .unwrap_or(Duration::MAX);
        Some(limit.max(Duration::from_secs(30)))
    }

    /// The database URL in use.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.state_dir.join("cv_data.sqlite").display()
            )
        } else {
            self.database_url.clone()
        }
    }

    /// The attestation-results key file in use.
    pub fn attestation_results_key(&self) -> PathBuf {
        if self.attestation_results_key.as_os_str().is_empty() {
            self.state_dir.join("attestation-results-key.pem")
        } else {
            self.state_dir.join(&self.attestation_results_key)
        }
    }

    /// The TLS directory in use.
    pub fn tls_dir(&self) -> PathBuf {
        if self.tls_dir.as_os_str().is_empty() {
            self.state_dir.join("cv_ca")
        } else {
            self.state_dir.join(&self.tls_dir)
        }
    }

    /// A TLS file: absolute as given, else under [`tls_dir`](Self::tls_dir).
    pub fn tls_file(&self, p: &Path) -> PathBuf {
        self.tls_dir().join(p)
    }

    /// This replica's lease holder name.
    pub fn replica_id(&self) -> String {
        if self.replica_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "host".into());
            format!("{}-{host}-{}", self.uuid, std::process::id())
        } else {
            self.replica_id.clone()
        }
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
    fn defaults_are_keylimes() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.port, 8881);
        assert_eq!(c.uuid, "default");
        assert_eq!(
            c.database_url(),
            "sqlite:///var/lib/vigil/cv_data.sqlite?mode=rwc"
        );
        let a = c.attestation().unwrap();
        assert_eq!(a.quote_interval, Duration::from_secs(2));
        assert_eq!(a.max_retries, 5);
        assert_eq!(a.severity.max_level(), 6);
        assert_eq!(c.request_timeout(), Duration::from_secs(60));
        assert_eq!(c.measured_boot_evaluate, MbEvaluate::Once);
    }

    #[test]
    fn file_environment_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(
            &f,
            "quote_interval = 0.5\nmeasured_boot_evaluate = \"always\"\n\
             [[severity_policy]]\nevent_id = \"ima.*\"\nseverity_label = \"warning\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            env(&[
                ("VIGIL_VERIFIER_MAX_RETRIES", "2"),
                (
                    "VIGIL_VERIFIER_ENABLED_REVOCATION_NOTIFICATIONS",
                    "agent, webhook",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.attestation().unwrap().quote_interval.as_millis(), 500);
        assert_eq!(c.max_retries, 2);
        assert_eq!(c.measured_boot_evaluate, MbEvaluate::Always);
        assert_eq!(c.enabled_revocation_notifications, ["agent", "webhook"]);
        let e = Config::load(None, env(&[("VIGIL_VERIFIER_PORT", "x")])).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = Config::load(
            None,
            env(&[("VIGIL_VERIFIER_MEASURED_BOOT_POLICY_NAME", "nope")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("measured_boot_policy_name"), "{e}");
        let e = Config::load(
            None,
            env(&[("VIGIL_VERIFIER_ENABLED_REVOCATION_NOTIFICATIONS", "zeromq")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("zeromq"), "{e}");
    }
}
