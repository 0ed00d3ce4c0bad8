//! `vigil tenant ...`: enrol nodes with a verifier and manage them (Keylime's
//! `keylime_tenant`), and the connection options `vigil policy push|list|show|delete`
//! share. The client logic lives in `crate::tenant`.
//!
//! Exit status: 0 done, 1 refused (a service said no, a node failed a check, or the
//! node is unknown), 2 bad input or a service that cannot be reached; `status` has its
//! own (see `status_exit`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vigil_core::attestation::OperationalState;

use super::style::{EM, ERROR, OK, WARN};
use crate::tenant::flow::{AddPlan, Delivery, Refused, Retry, Tenant};
use crate::tenant::http::{Client, Peer, TlsFiles, Unreachable};
use crate::tenant::identity::AcceptLists;
use crate::tenant::policy::PolicyArgs;

/// Where the verifier and registrar are, and how to reach them: options of `vigil
/// tenant` and of each of its commands (so they go before or after the command's name;
/// after wins), each command showing those that apply to it ([`super::command`]). Each
/// value comes from the flag, else a `VIGIL_TENANT_*` variable, else `~/.config/vigil/tenant.toml`, else
/// `/etc/vigil/tenant.toml`, else the default shown (see [`Settings`]).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection (defaults from tenant.toml)")]
pub(crate) struct Conn {
    /// The verifier's address [default: 127.0.0.1].
    #[arg(long, short = 'v', alias = "cv", value_name = "IP")]
    verifier_ip: Option<String>,
    /// The verifier's port [default: 8881].
    #[arg(long, alias = "cvport", value_name = "PORT")]
    verifier_port: Option<u16>,
    /// List only nodes of this verifier id (`list`).
    #[arg(long, alias = "cvid", value_name = "ID")]
    verifier_id: Option<String>,
    /// The registrar's address [default: 127.0.0.1].
    #[arg(long, short = 'r', alias = "registrarhost", value_name = "IP")]
    registrar_ip: Option<String>,
    /// The registrar's TLS port [default: 8891].
    #[arg(long, alias = "registrarport", value_name = "PORT")]
    registrar_port: Option<u16>,
    /// The tenant's TLS files in Keylime's cv_ca layout: cacert.crt (the services' CA),
    /// client-cert.crt and client-private.pem [default: STATE_DIR/cv_ca].
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// Vigil's state directory (TLS files, the --cert CA, the EK vendor CA store)
    /// [default: /var/lib/vigil].
    #[arg(long, value_name = "DIR", env = "VIGIL_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Accept a verifier or registrar certificate that does not name the address it is
    /// reached by, as Keylime's tenant does (warns: any certificate from the CA, a
    /// node's included, then passes for the service).
    #[arg(long)]
    tls_no_name_check: bool,
    /// Talk plain HTTP to the verifier and registrar (tests only: admin routes need
    /// mTLS in Keylime and Vigil).
    #[arg(long)]
    insecure_no_tls: bool,
    /// Seconds a request may take [default: 60].
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Attempts when waiting for a node or the verifier [default: 5].
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
    /// Seconds between attempts (doubled each time with --exponential-backoff)
    /// [default: 2].
    #[arg(long, value_name = "SECS")]
    retry_interval: Option<f64>,
    /// Double the wait after each failed attempt.
    #[arg(long)]
    exponential_backoff: bool,
    /// Print JSON instead of text.
    #[arg(long, help_heading = "Output")]
    pub(crate) json: bool,
}

/// The tenant's configuration file (`tenant.toml`), also read from `VIGIL_TENANT_<KEY>`
/// variables: the connection options, so that a call need not repeat them (Keylime's
/// `tenant.conf`). A key left out keeps the value of the file before it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Settings {
    verifier_ip: Option<String>,
    verifier_port: Option<u16>,
    verifier_id: Option<String>,
    registrar_ip: Option<String>,
    registrar_port: Option<u16>,
    tls_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    tls_no_name_check: Option<bool>,
    timeout: Option<u64>,
    max_retries: Option<u32>,
    retry_interval: Option<f64>,
    exponential_backoff: Option<bool>,
}

/// How `VIGIL_TENANT_*` values are typed.
const ENV_KEYS: vigil_service::settings::EnvKeys<'static> = vigil_service::settings::EnvKeys {
    prefix: "VIGIL_TENANT_",
    lists: &[],
    scalars: &[
        "verifier_port",
        "registrar_port",
        "tls_no_name_check",
        "timeout",
        "max_retries",
        "retry_interval",
        "exponential_backoff",
    ],
};

/// The system-wide configuration file.
const SYSTEM_SETTINGS: &str = "/etc/vigil/tenant.toml";

impl Settings {
    /// `/etc/vigil/tenant.toml`, then the user's (`$XDG_CONFIG_HOME/vigil/tenant.toml`,
    /// else `~/.config/vigil/tenant.toml`), then the `VIGIL_TENANT_*` variables of
    /// `env`, each overriding the keys it sets. Missing files are skipped.
    pub(crate) fn load(env: &[(String, String)]) -> Result<Self> {
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| PathBuf::from(v))
                .filter(|p| p.is_absolute())
        };
        let user = get("XDG_CONFIG_HOME")
            .or_else(|| get("HOME").map(|h| h.join(".config")))
            .map(|dir| dir.join("vigil/tenant.toml"));
        let files: Vec<PathBuf> = std::iter::once(PathBuf::from(SYSTEM_SETTINGS))
            .chain(user)
            .filter(|f| f.exists())
            .collect();
        let mut merged = Self::default();
        // The variables apply with the last file (or alone): they override every file.
        let layers: Vec<Option<&std::path::Path>> = if files.is_empty() {
            vec![None]
        } else {
            files.iter().map(|f| Some(f.as_path())).collect()
        };
        let last = layers.len() - 1;
        for (i, file) in layers.into_iter().enumerate() {
            let vars = if i == last { env.to_vec() } else { Vec::new() };
            let layer: Self = vigil_service::settings::load(file, vars, ENV_KEYS)?;
            merged = layer.over(merged);
        }
        Ok(merged)
    }

    /// `self`'s keys, and `base`'s where `self` has none.
    fn over(self, base: Self) -> Self {
        Self {
            verifier_ip: self.verifier_ip.or(base.verifier_ip),
            verifier_port: self.verifier_port.or(base.verifier_port),
            verifier_id: self.verifier_id.or(base.verifier_id),
            registrar_ip: self.registrar_ip.or(base.registrar_ip),
            registrar_port: self.registrar_port.or(base.registrar_port),
            tls_dir: self.tls_dir.or(base.tls_dir),
            state_dir: self.state_dir.or(base.state_dir),
            tls_no_name_check: self.tls_no_name_check.or(base.tls_no_name_check),
            timeout: self.timeout.or(base.timeout),
            max_retries: self.max_retries.or(base.max_retries),
            retry_interval: self.retry_interval.or(base.retry_interval),
            exponential_backoff: self.exponential_backoff.or(base.exponential_backoff),
        }
    }
}

impl Conn {
    /// `self`'s options (given after the command's name), and `parent`'s (given
    /// before it) where `self` has none.
    fn or(&self, parent: &Self) -> Self {
        Self {
            verifier_ip: self
                .verifier_ip
                .clone()
                .or_else(|| parent.verifier_ip.clone()),
            verifier_port: self.verifier_port.or(parent.verifier_port),
            verifier_id: self
                .verifier_id
                .clone()
                .or_else(|| parent.verifier_id.clone()),
            registrar_ip: self
                .registrar_ip
                .clone()
                .or_else(|| parent.registrar_ip.clone()),
            registrar_port: self.registrar_port.or(parent.registrar_port),
            tls_dir: self.tls_dir.clone().or_else(|| parent.tls_dir.clone()),
            state_dir: self.state_dir.clone().or_else(|| parent.state_dir.clone()),
            tls_no_name_check: self.tls_no_name_check || parent.tls_no_name_check,
            insecure_no_tls: self.insecure_no_tls || parent.insecure_no_tls,
            timeout: self.timeout.or(parent.timeout),
            max_retries: self.max_retries.or(parent.max_retries),
            retry_interval: self.retry_interval.or(parent.retry_interval),
            exponential_backoff: self.exponential_backoff || parent.exponential_backoff,
            json: self.json || parent.json,
        }
    }

    /// The flags given over `settings`, and the defaults under both.
    pub(crate) fn resolve(&self, settings: Settings) -> Connection {
        let flags = Settings {
            verifier_ip: self.verifier_ip.clone(),
            verifier_port: self.verifier_port,
            verifier_id: self.verifier_id.clone(),
            registrar_ip: self.registrar_ip.clone(),
            registrar_port: self.registrar_port,
            tls_dir: self.tls_dir.clone(),
            state_dir: self.state_dir.clone(),
            tls_no_name_check: self.tls_no_name_check.then_some(true),
            timeout: self.timeout,
            max_retries: self.max_retries,
            retry_interval: self.retry_interval,
            exponential_backoff: self.exponential_backoff.then_some(true),
        };
        let s = flags.over(settings);
        let state_dir = s
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/vigil"));
        Connection {
            verifier_ip: s.verifier_ip.unwrap_or_else(|| "127.0.0.1".into()),
            verifier_port: s.verifier_port.unwrap_or(8881),
            verifier_id: s.verifier_id,
            registrar_ip: s.registrar_ip.unwrap_or_else(|| "127.0.0.1".into()),
            registrar_port: s.registrar_port.unwrap_or(8891),
            tls_dir: s.tls_dir.unwrap_or_else(|| state_dir.join("cv_ca")),
            state_dir,
            tls_no_name_check: s.tls_no_name_check.unwrap_or(false),
            insecure_no_tls: self.insecure_no_tls,
            timeout: s.timeout.unwrap_or(60),
            max_retries: s.max_retries.unwrap_or(5),
            retry_interval: s.retry_interval.unwrap_or(2.0),
            exponential_backoff: s.exponential_backoff.unwrap_or(false),
            json: self.json,
        }
    }

    /// [`Self::resolve`] with the configuration files and this process's environment.
    pub(crate) fn load(&self) -> Result<Connection> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Ok(self.resolve(Settings::load(&env).context("the tenant's configuration is unusable")?))
    }
}

/// A [`Conn`] resolved ([`Conn::resolve`]): every value set.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    verifier_ip: String,
    verifier_port: u16,
    verifier_id: Option<String>,
    registrar_ip: String,
    registrar_port: u16,
    tls_dir: PathBuf,
    state_dir: PathBuf,
    tls_no_name_check: bool,
    insecure_no_tls: bool,
    timeout: u64,
    max_retries: u32,
    retry_interval: f64,
    exponential_backoff: bool,
    pub(crate) json: bool,
}

impl Connection {
    fn tenant(&self) -> Result<Tenant> {
        let timeout = Duration::from_secs(self.timeout.max(1));
        let files = TlsFiles::in_dir(&self.tls_dir);
        let config = if self.insecure_no_tls {
            None
        } else {
            if self.tls_no_name_check {
                crate::tenant::warn(
                    "not checking that the verifier's and registrar's certificates name the \
                     address they are reached by (--tls-no-name-check): any certificate from \
                     the CA passes",
                );
            }
            Some(files.service_config(!self.tls_no_name_check)?)
        };
        let interval = Duration::try_from_secs_f64(self.retry_interval.max(0.0))
            .context("--retry-interval is not a number of seconds")?;
        let verifier = Peer {
            name: "the verifier",
            hint: "is the verifier running there? check -v/--verifier-ip and --verifier-port \
                   (or verifier_ip and verifier_port in tenant.toml)"
                .to_owned(),
        };
        let registrar = Peer {
            name: "the registrar",
            hint: "is the registrar running there? check -r/--registrar-ip and \
                   --registrar-port (or registrar_ip and registrar_port in tenant.toml)"
                .to_owned(),
        };
        Ok(Tenant {
            verifier: Client::new(
                verifier,
                &self.verifier_ip,
                self.verifier_port,
                config.clone(),
                timeout,
            ),
            registrar: Client::new(
                registrar,
                &self.registrar_ip,
                self.registrar_port,
                config,
                timeout,
            ),
            verifier_ip: self.verifier_ip.clone(),
            verifier_port: self.verifier_port,
            tls: (!self.insecure_no_tls).then_some(files),
            timeout,
            retry: Retry {
                max: self.max_retries.max(1),
                interval,
                exponential: self.exponential_backoff,
            },
            verifier_id: self.verifier_id.clone(),
        })
    }
}

/// Runs an async body on a small runtime (the CLI is otherwise synchronous).
pub(crate) fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// Maps a result to the exit status: refusals are 1, other errors 2.
pub(crate) fn finish(result: Result<ExitCode>) -> Result<ExitCode> {
    match result {
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            anstream::eprintln!(
                "{}error:{} {}",
                ERROR.render(),
                ERROR.render_reset(),
                vigil_service::report::chain(&e)
            );
            Ok(ExitCode::from(1))
        }
        other => other,
    }
}

/// Nodes: enrol, inspect, stop, remove.
#[derive(Debug, Args)]
pub(crate) struct TenantArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Enrol a registered node: check its identity quote against the registrar's AK
    /// and its EK certificate, send it U (and a payload), enrol it at the verifier.
    Add(AddArgs),
    /// Delete the node at the verifier and add it again with new options.
    Update(AddArgs),
    /// Set a node's hardware class and labels at the verifier (Vigil), without
    /// enrolling it again; its next round is judged with the class.
    Set(SetArgs),
    /// Remove a node from the verifier.
    Delete(IdArg),
    /// Restart attestation of a stopped or failed node.
    Reactivate(IdArg),
    /// Stop attesting a node (state TENANT_FAILED).
    Stop(IdArg),
    /// The nodes enrolled at the verifier.
    #[command(alias = "cvlist")]
    List(ListArgs),
    /// A node's attestation status at the verifier (and Vigil's failure details).
    ///
    /// Exit status: 0 attested (polled, attestation_status PASS, at least one
    /// successful round); 1 failed (Failed, Invalid Quote, or stopped: Tenant Quote
    /// Failed) or not enrolled; 2 bad input; 3 not attested yet or not now (Start, a
    /// retry, PENDING, TIMEOUT: no successful round within the verifier's staleness
    /// limit) or the verifier did not answer.
    #[command(alias = "cvstatus")]
    Status(IdArg),
    /// Adopt the node's current measurements as its baseline: the values its last
    /// round found changed go into a new version of its policies (the old one kept),
    /// and it is reactivated. Refused when that round failed on anything but changed
    /// measurements (a quote signature, a nonce, a log replay).
    Relearn(IdArg),
    /// A node's record at the registrar.
    Regstatus(IdArg),
    /// The nodes registered at the registrar.
    Reglist(ConnArgs),
    /// Remove a node from the registrar (it must register again).
    Regdelete(IdArg),
}

impl TenantCommand {
    /// The connection options given after the command's name.
    fn conn(&self) -> &Conn {
        match self {
            Self::Add(a) | Self::Update(a) => &a.conn,
            Self::Set(a) => &a.conn,
            Self::Delete(a)
            | Self::Reactivate(a)
            | Self::Stop(a)
            | Self::Status(a)
            | Self::Relearn(a)
            | Self::Regstatus(a)
            | Self::Regdelete(a) => &a.conn,
            Self::List(a) => &a.conn,
            Self::Reglist(a) => &a.conn,
        }
    }
}

#[derive(Debug, Args)]
struct IdArg {
    /// The node id (agent UUID).
    #[arg(short = 'u', long = "uuid", value_name = "ID")]
    uuid: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
struct ConnArgs {
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    conn: Conn,
    /// The full status of every node (Keylime's `bulkinfo`).
    #[arg(long)]
    bulk: bool,
    /// With --json, Keylime's `{"uuids": [[id, ...]]}` (set by `-c cvlist`).
    #[arg(long, hide = true)]
    keylime_format: bool,
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The node id (agent UUID).
    #[arg(short = 'u', long = "uuid", value_name = "ID")]
    uuid: String,
    /// The node's address [default: the one it registered].
    #[arg(short = 't', long, value_name = "IP")]
    targethost: Option<String>,
    /// The node's port [default: the registered one, else 9002].
    #[arg(long, alias = "targetport", value_name = "PORT")]
    port: Option<u16>,
    /// The address the verifier should use, when it differs from --targethost.
    #[arg(long, alias = "cv_targethost", value_name = "IP")]
    cv_targethost: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Deliver a certificate package made by the CA in DIR ('default':
    /// STATE_DIR/ca; created on first use).
    #[arg(long, value_name = "DIR|default", conflicts_with = "payload")]
    cert: Option<String>,
    /// Extra files (the top level of DIR) for the --cert package.
    #[arg(long, value_name = "DIR", requires = "cert")]
    include: Option<PathBuf>,
    /// Deliver this file to the node, encrypted, once it passed attestation.
    #[arg(long, short = 'f', alias = "file", value_name = "FILE")]
    payload: Option<PathBuf>,
    /// Wait until the node proves it derived the bootstrap key (stop it at the
    /// verifier otherwise).
    #[arg(long)]
    verify: bool,
    /// Do not check the EK certificate against --tpm-cert-store.
    #[arg(long)]
    no_require_ek_cert: bool,
    /// TPM vendor CA certificates (*.pem) [default: STATE_DIR/tpm_cert_store].
    #[arg(long, value_name = "DIR")]
    tpm_cert_store: Option<PathBuf>,
    /// The node API version [default: negotiated].
    #[arg(long, alias = "supported-version", value_name = "VERSION")]
    agent_api_version: Option<String>,
    /// Accepted quote banks.
    #[arg(long, value_delimiter = ',', default_values = ["sha512", "sha384", "sha256"])]
    accept_hash_algs: Vec<String>,
    /// Accepted EK algorithms.
    #[arg(long, value_delimiter = ',', default_values = ["ecc", "rsa"])]
    accept_encryption_algs: Vec<String>,
    /// Accepted AK signing schemes.
    #[arg(long, value_delimiter = ',', default_values = ["ecschnorr", "rsassa"])]
    accept_signing_algs: Vec<String>,
    /// Vigil's hardware class of the node: its rounds are also judged against the
    /// class's golden PCR values (`vigil class create`).
    #[arg(long, value_name = "NAME")]
    class: Option<String>,
    /// A label of the node (repeatable), for `vigil gate check --label`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = super::gate::parse_label)]
    labels: Vec<(String, String)>,
    #[command(flatten)]
    conn: Conn,
}

/// `vigil tenant set`: a node's class and labels, without enrolling it again.
#[derive(Debug, Args)]
struct SetArgs {
    /// The node id (agent UUID).
    #[arg(short = 'u', long = "uuid", value_name = "ID")]
    uuid: String,
    /// Its hardware class.
    #[arg(long, value_name = "NAME", conflicts_with = "no_class")]
    class: Option<String>,
    /// Remove its hardware class.
    #[arg(long)]
    no_class: bool,
    /// Its labels, replacing the ones it has (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = super::gate::parse_label)]
    labels: Vec<(String, String)>,
    /// Remove all its labels.
    #[arg(long, conflicts_with = "labels")]
    no_labels: bool,
    #[command(flatten)]
    conn: Conn,
}

pub(crate) fn run(args: TenantArgs) -> Result<ExitCode> {
    let conn = args.command.conn().or(&args.conn).load()?;
    finish(block_on(async move {
        let tenant = conn.tenant()?;
        match args.command {
            TenantCommand::Add(a) => add(&tenant, &conn, a, false).await,
            TenantCommand::Update(a) => add(&tenant, &conn, a, true).await,
            TenantCommand::Set(a) => {
                let mut body = serde_json::Map::new();
                if a.no_class {
                    body.insert("class".into(), Value::Null);
                } else if let Some(c) = &a.class {
                    body.insert("class".into(), json!(c));
                }
                if a.no_labels || !a.labels.is_empty() {
                    let labels: std::collections::BTreeMap<_, _> = a.labels.into_iter().collect();
                    body.insert("labels".into(), json!(labels));
                }
                if body.is_empty() {
                    anyhow::bail!(
                        "nothing to set: give --class, --no-class, --label or --no-labels"
                    );
                }
                super::gate::set_node(&tenant, &a.uuid, &Value::Object(body)).await?;
                done(
                    &conn,
                    &a.uuid,
                    "class and labels set",
                    json!({"agent_id": a.uuid, "set": true}),
                )
            }
            TenantCommand::Delete(a) => {
                let existed = tenant.cv_delete(&a.uuid).await?;
                done(
                    &conn,
                    &a.uuid,
                    if existed {
                        "deleted from the verifier"
                    } else {
                        "was not enrolled at the verifier"
                    },
                    json!({"agent_id": a.uuid, "deleted": existed}),
                )
            }
            TenantCommand::Reactivate(a) => {
                tenant.cv_put(&a.uuid, "reactivate").await?;
                done(
                    &conn,
                    &a.uuid,
                    "reactivated",
                    json!({"agent_id": a.uuid, "reactivated": true}),
                )
            }
            TenantCommand::Stop(a) => {
                tenant.cv_put(&a.uuid, "stop").await?;
                done(
                    &conn,
                    &a.uuid,
                    "stopped",
                    json!({"agent_id": a.uuid, "stopped": true}),
                )
            }
            TenantCommand::List(a) => list(&tenant, &conn, &a).await,
            TenantCommand::Status(a) => status(&tenant, &conn, &a.uuid).await,
            TenantCommand::Relearn(a) => {
                let adopted = tenant
                    .vigil("POST", &format!("agents/{}/relearn", a.uuid), None)
                    .await?
                    .ok_or_else(|| {
                        anyhow::Error::new(Refused(format!(
                            "{} is not enrolled, or the verifier has no relearn",
                            a.uuid
                        )))
                    })?;
                let n = adopted["adopted"].as_array().map_or(0, Vec::len);
                done(
                    &conn,
                    &a.uuid,
                    &format!("relearnt: {n} changed value(s) adopted, node reactivated"),
                    json!({"agent_id": a.uuid, "adopted": adopted["adopted"]}),
                )
            }
            TenantCommand::Regstatus(a) => regstatus(&tenant, &conn, &a.uuid).await,
            TenantCommand::Reglist(_) => {
                let ids = tenant.reg_list().await?;
                if conn.json {
                    super::print_json(&json!({"uuids": ids}))?;
                } else {
                    print_ids(&ids, "registered")?;
                }
                Ok(ExitCode::SUCCESS)
            }
            TenantCommand::Regdelete(a) => {
                if tenant.reg_delete(&a.uuid).await? {
                    done(
                        &conn,
                        &a.uuid,
                        "deleted from the registrar",
                        json!({"agent_id": a.uuid, "deleted": true}),
                    )
                } else {
                    Err(anyhow::Error::new(Refused(format!(
                        "{} is not registered",
                        a.uuid
                    ))))
                }
            }
        }
    }))
}

fn done(conn: &Connection, id: &str, what: &str, value: Value) -> Result<ExitCode> {
    if conn.json {
        super::print_json(&value)?;
    } else {
        anstream::println!("{}{id}{} {what}", EM.render(), EM.render_reset());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_ids(ids: &[String], what: &str) -> Result<()> {
    let mut out = anstream::stdout().lock();
    if ids.is_empty() {
        writeln!(out, "no nodes {what}")?;
    }
    for id in ids {
        writeln!(out, "{id}")?;
    }
    Ok(())
}

async fn add(tenant: &Tenant, conn: &Connection, a: AddArgs, update: bool) -> Result<ExitCode> {
    let policies = a.policy.resolve()?;
    let delivery = match (&a.cert, &a.payload) {
        (Some(dir), _) => Delivery::Cert {
            dir: if dir == "default" {
                conn.state_dir.join("ca")
            } else {
                PathBuf::from(dir)
            },
            include: a.include.clone(),
        },
        (None, Some(file)) => Delivery::File(file.clone()),
        (None, None) => Delivery::None,
    };
    if a.verify && matches!(delivery, Delivery::None) {
        anyhow::bail!("--verify works only when something is delivered: --payload or --cert");
    }
    let ek_store = if a.no_require_ek_cert {
        None
    } else {
        let dir = a
            .tpm_cert_store
            .clone()
            .unwrap_or_else(|| conn.state_dir.join("tpm_cert_store"));
        Some(super::ekcert::load_store(&dir).with_context(|| {
            "the EK certificate check needs TPM vendor CA certificates: pass --tpm-cert-store \
             (e.g. Keylime's tpm_cert_store) or --no-require-ek-cert"
        })?)
    };
    let plan = AddPlan {
        id: a.uuid.clone(),
        host: a.targethost,
        port: a.port,
        cv_host: a.cv_targethost,
        policies,
        delivery,
        verify: a.verify,
        ek_store,
        accept: AcceptLists {
            hash: a.accept_hash_algs,
            encryption: a.accept_encryption_algs,
            signing: a.accept_signing_algs,
        },
        agent_api_version: a.agent_api_version,
        class: a.class,
        labels: a.labels.into_iter().collect(),
    };
    if update {
        tenant.cv_delete(&plan.id).await?;
    }
    let report = tenant.add(&plan).await?;
    if conn.json {
        super::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = anstream::stdout().lock();
    writeln!(
        out,
        "{}enrolled{} {}{}{} (node {}, API {}, identity quote {} verified)",
        OK.render(),
        OK.render_reset(),
        EM.render(),
        report.agent_id,
        EM.render_reset(),
        report.node,
        report.api_version,
        report.hash_alg
    )?;
    match &report.ek_chain {
        Some(chain) => writeln!(out, "  EK certificate: {}", chain.join(" <- "))?,
        None => writeln!(
            out,
            "  EK certificate: {}not checked{}",
            WARN.render(),
            WARN.render_reset()
        )?,
    }
    if report.payload_delivered {
        writeln!(
            out,
            "  payload: U sent; the node gets V after its first good integrity quote{}",
            if report.key_verified {
                " (key derivation verified)"
            } else {
                ""
            }
        )?;
    }
    writeln!(
        out,
        "  state: {}",
        state_text(&report.status["operational_state"])
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `3` → `Get Quote (GET_QUOTE)`; anything else as given.
fn state_text(v: &Value) -> String {
    v.as_u64()
        .and_then(|c| OperationalState::from_code(c).ok())
        .map_or_else(
            || v.to_string(),
            |s| format!("{} ({})", s.description(), s.name()),
        )
}

async fn list(tenant: &Tenant, conn: &Connection, a: &ListArgs) -> Result<ExitCode> {
    let bulk = a.bulk;
    if conn.json && !bulk && !a.keylime_format {
        // Vigil's own: one object per node, with its state and times.
        let results = tenant.cv_list(true).await?;
        let nodes: Vec<Value> = results
            .as_object()
            .map(|map| map.iter().map(|(id, s)| list_entry(id, s)).collect())
            .unwrap_or_default();
        super::print_json(&nodes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let results = tenant.cv_list(bulk).await?;
    if conn.json {
        super::print_json(&results)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !bulk {
        let ids = results["uuids"]
            .as_array()
            .map(|a| crate::tenant::flow::flatten_ids(a))
            .unwrap_or_default();
        print_ids(&ids, "enrolled")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = anstream::stdout().lock();
    match results.as_object() {
        Some(map) if !map.is_empty() => {
            for (id, s) in map {
                writeln!(
                    out,
                    "{id}  {}  attestations {}",
                    state_text(&s["operational_state"]),
                    s["attestation_count"]
                )?;
            }
        }
        _ => writeln!(out, "no nodes enrolled")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A node of `list --json`: its id, state (text and code), attestation status and
/// count, and the times of its last quote and last successful attestation (Unix
/// seconds, 0 = never).
fn list_entry(id: &str, s: &Value) -> Value {
    let state = s["operational_state"]
        .as_u64()
        .and_then(|c| OperationalState::from_code(c).ok());
    json!({
        "agent_id": id,
        "operational_state": state.map(OperationalState::description),
        "operational_state_code": s["operational_state"],
        "attestation_status": s.get("attestation_status"),
        "attestation_count": s["attestation_count"],
        "last_received_quote": s["last_received_quote"],
        "last_successful_attestation": s["last_successful_attestation"],
        "ip": s["ip"],
        "port": s["port"],
    })
}

async fn status(tenant: &Tenant, conn: &Connection, id: &str) -> Result<ExitCode> {
    let answer = match tenant.cv_status(id).await {
        // No answer: whether the node is attested is not known (exit 3, not 2).
        Err(e) if e.downcast_ref::<Unreachable>().is_some_and(|u| u.no_answer) => {
            anstream::eprintln!(
                "{}error:{} {}",
                ERROR.render(),
                ERROR.render_reset(),
                vigil_service::report::chain(&e)
            );
            return Ok(ExitCode::from(NOT_ATTESTED));
        }
        other => other?,
    };
    let Some(s) = answer else {
        return Err(anyhow::Error::new(Refused(format!(
            "{id} is not enrolled at the verifier at {}:{} (enrol it with `vigil tenant add`)",
            conn.verifier_ip, conn.verifier_port
        ))));
    };
    // Vigil's response actions on the node (a Keylime verifier has none: skipped).
    let actions = tenant
        .vigil("GET", &format!("agents/{id}/actions"), None)
        .await
        .ok()
        .flatten()
        .map(|a| a["actions"].clone())
        .unwrap_or(Value::Null);
    if conn.json {
        // Keylime's tenant prints {id: status} with the state as text.
        let mut s2 = s.clone();
        if !actions.is_null() {
            s2["vigil_actions"] = actions.clone();
        }
        if let Some(code) = s["operational_state"].as_u64() {
            if let Ok(state) = OperationalState::from_code(code) {
                s2["operational_state"] = json!(state.description());
            }
        }
        super::print_json(&json!({ id: s2 }))?;
        return Ok(status_exit(&s));
    }
    let mut out = anstream::stdout().lock();
    write_status(&mut out, id, &s)?;
    write_actions(&mut out, &actions)?;
    Ok(status_exit(&s))
}

/// The response actions taken on the node, newest first (`status`).
fn write_actions(out: &mut impl Write, actions: &Value) -> std::io::Result<()> {
    let Some(list) = actions.as_array().filter(|l| !l.is_empty()) else {
        return Ok(());
    };
    writeln!(out, "{EM}response actions{EM:#} (newest first):")?;
    for a in list {
        let outcome = a["outcome"].as_str().unwrap_or_default();
        let style = match outcome {
            "done" => OK,
            "dry_run" => WARN,
            _ => ERROR,
        };
        writeln!(
            out,
            "  {} {} (rule {}): {style}{outcome}{style:#}: {}",
            a["at"],
            a["action"].as_str().unwrap_or_default(),
            a["rule"].as_str().unwrap_or_default(),
            a["detail"].as_str().unwrap_or_default()
        )?;
    }
    Ok(())
}

/// The text of `status`: the state (and the last failed round's event), the status
/// fields, and Vigil's failure details.
fn write_status(out: &mut impl Write, id: &str, s: &Value) -> std::io::Result<()> {
    let code = s["operational_state"].as_u64();
    let bad = matches!(code, Some(7 | 9 | 10));
    let style = if bad { ERROR } else { OK };
    // The last failed round's own events (Vigil's verifier), each once: `last_event_id`
    // is the event that raised `severity_level`, which Keylime (and so Vigil) keeps
    // until a more severe one, so it may be an earlier round's, or one of several.
    let mut last_round: Vec<&str> = Vec::new();
    for failure in s["vigil"]["last_failures"].as_array().into_iter().flatten() {
        if let Some(id) = failure["event_id"].as_str() {
            if !last_round.contains(&id) {
                last_round.push(id);
            }
        }
    }
    let headline_event = if bad && !last_round.is_empty() {
        format!(": {}", last_round.join(", "))
    } else {
        String::new()
    };
    writeln!(
        out,
        "{}{id}{}: {}{}{headline_event}{}",
        EM.render(),
        EM.render_reset(),
        style.render(),
        state_text(&s["operational_state"]),
        style.render_reset()
    )?;
    let field = |k: &str| match &s[k] {
        Value::Null => "-".to_owned(),
        Value::String(t) => t.clone(),
        v => v.to_string(),
    };
    let when = |k: &str| match s[k].as_i64() {
        Some(0) | None => "never".to_owned(),
        Some(t) => vigil_core::tpm::ek_cert::format_unix_time(t),
    };
    writeln!(out, "  attestation_count: {}", field("attestation_count"))?;
    if s.get("attestation_status").is_some() {
        writeln!(out, "  attestation_status: {}", field("attestation_status"))?;
    }
    if let Some(class) = s["vigil"]["class"].as_str() {
        writeln!(out, "  hardware class: {class}")?;
    }
    if let Some(labels) = s["vigil"]["labels"].as_object().filter(|l| !l.is_empty()) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        writeln!(out, "  labels: {}", labels.join(", "))?;
    }
    if s["vigil"]["stale"] == true {
        writeln!(
            out,
            "  {}not currently attested{}: no successful round within the verifier's staleness limit",
            ERROR.render(),
            ERROR.render_reset()
        )?;
    }
    writeln!(
        out,
        "  last_received_quote: {}",
        when("last_received_quote")
    )?;
    writeln!(
        out,
        "  last_successful_attestation: {}",
        when("last_successful_attestation")
    )?;
    writeln!(out, "  severity_level: {}", field("severity_level"))?;
    let earlier = match s["last_event_id"].as_str() {
        Some(last) if !last_round.is_empty() && !last_round.contains(&last) => {
            " (the event that set severity_level, in an earlier round)"
        }
        _ => "",
    };
    writeln!(out, "  last_event_id: {}{earlier}", field("last_event_id"))?;
    writeln!(out, "  node: {}:{}", field("ip"), field("port"))?;
    if let Some(failures) = s["vigil"]["last_failures"]
        .as_array()
        .filter(|f| !f.is_empty())
    {
        writeln!(out, "  last failed round:")?;
        for f in failures {
            let ctx = &f["context"];
            let text = ctx
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| ctx.to_string(), str::to_owned);
            writeln!(
                out,
                "    {}{}{} [{}] {text}",
                ERROR.render(),
                f["event_id"].as_str().unwrap_or("?"),
                ERROR.render_reset(),
                f["severity_label"].as_str().unwrap_or("?")
            )?;
            // Vigil's annotation: Keylime's hash-mismatch context names no file.
            if let Some(file) = f["file"].as_str() {
                writeln!(out, "      file: {file}")?;
            }
        }
        if let Some(n) = s["vigil"]["last_failures_omitted"]
            .as_u64()
            .filter(|n| *n > 0)
        {
            writeln!(out, "    ... and {n} more")?;
        }
    }
    Ok(())
}

/// `status`'s exit code for a node that failed attestation (or was stopped).
const FAILED: u8 = 1;
/// `status`'s exit code for a node not (or no longer) known to be attested, or a
/// verifier that does not answer.
const NOT_ATTESTED: u8 = 3;

/// `status`'s exit code, so that a script can act on it (as `vigil gate check` will):
/// 0 attested — polled normally (`Get Quote`, `Provide V`) with `attestation_status`
/// `PASS`; 1 failed — `Failed`, `Invalid Quote` or stopped (`Tenant Quote Failed`);
/// 3 not attested yet or not now — just added (`Start`, `Saved`), retrying an
/// unreachable node, `PENDING`, or no successful round within the verifier's staleness
/// limit (`TIMEOUT`), so a stalled node is never mistaken for a passing one.
fn status_exit(status: &Value) -> ExitCode {
    let state = status["operational_state"]
        .as_u64()
        .and_then(|c| OperationalState::from_code(c).ok());
    let code = match state {
        Some(
            OperationalState::Failed
            | OperationalState::InvalidQuote
            | OperationalState::TenantFailed,
        ) => FAILED,
        // Keylime reports PASS in these states before the first quote is checked: a
        // node with no successful round is not attested yet. Before API 2.5 there is
        // no attestation_status, and the state alone says it.
        Some(OperationalState::GetQuote | OperationalState::ProvideV)
            if status["attestation_count"].as_u64().unwrap_or(0) > 0 =>
        {
            match status.get("attestation_status").and_then(Value::as_str) {
                None | Some("PASS") => 0,
                Some(_) => NOT_ATTESTED,
            }
        }
        _ => NOT_ATTESTED,
    };
    ExitCode::from(code)
}

async fn regstatus(tenant: &Tenant, conn: &Connection, id: &str) -> Result<ExitCode> {
    let Some(r) = tenant.reg_status(id).await? else {
        return Err(anyhow::Error::new(Refused(format!(
            "{id} does not exist at the registrar at {}:{}; check the node's log for its \
             registration",
            conn.registrar_ip, conn.registrar_port
        ))));
    };
    if conn.json {
        let mut r2 = r.clone();
        r2["operational_state"] = json!("Registered");
        super::print_json(&json!({ id: r2 }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = anstream::stdout().lock();
    writeln!(
        out,
        "{}{id}{}: {}registered{}",
        EM.render(),
        EM.render_reset(),
        OK.render(),
        OK.render_reset()
    )?;
    for k in ["ip", "port", "regcount"] {
        writeln!(out, "  {k}: {}", r[k])?;
    }
    writeln!(
        out,
        "  ek certificate: {}",
        if r["ekcert"].is_string() {
            "yes"
        } else {
            "none"
        }
    )?;
    writeln!(
        out,
        "  mtls certificate: {}",
        match r["mtls_cert"].as_str() {
            Some("disabled") | None => "none",
            Some(_) => "yes",
        }
    )?;
    Ok(ExitCode::SUCCESS)
}

/// For `vigil policy push|list|show|delete`.
pub(crate) fn tenant_for(conn: &Conn) -> Result<Tenant> {
    conn.load()?.tenant()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(status: Value) -> ExitCode {
        status_exit(&status)
    }

    #[test]
    fn status_exit_codes_say_attested_failed_or_not_yet() {
        let attested = json!({"operational_state": 3, "attestation_status": "PASS",
                              "attestation_count": 4});
        assert_eq!(exit(attested.clone()), ExitCode::SUCCESS);
        let mut provide_v = attested.clone();
        provide_v["operational_state"] = json!(5);
        assert_eq!(exit(provide_v), ExitCode::SUCCESS);
        // Before API 2.5: no attestation_status.
        assert_eq!(
            exit(json!({"operational_state": 3, "attestation_count": 1})),
            ExitCode::SUCCESS
        );
        for failed in [7, 9, 10] {
            let s = json!({"operational_state": failed, "attestation_status": "FAIL",
                           "attestation_count": 4});
            assert_eq!(exit(s), ExitCode::from(FAILED), "state {failed}");
        }
        for not_yet in [0, 1, 2, 4, 6, 8] {
            let s = json!({"operational_state": not_yet, "attestation_status": "PENDING",
                           "attestation_count": 4});
            assert_eq!(exit(s), ExitCode::from(NOT_ATTESTED), "state {not_yet}");
        }
        // Polled but never attested, stale, or pending.
        let mut never = attested.clone();
        never["attestation_count"] = json!(0);
        assert_eq!(exit(never), ExitCode::from(NOT_ATTESTED));
        for status in ["TIMEOUT", "PENDING"] {
            let mut s = attested.clone();
            s["attestation_status"] = json!(status);
            assert_eq!(exit(s), ExitCode::from(NOT_ATTESTED), "{status}");
        }
        assert_eq!(exit(json!({})), ExitCode::from(NOT_ATTESTED));
    }

    #[test]
    fn status_headline_is_the_last_rounds_events() {
        // The demo's last verdict: Keylime keeps the event that raised severity_level
        // (an earlier round's not_in_allowlist) while the last round failed on a hash.
        let hash = json!({
            "event_id": "ima.validation.ima-ng.runtime_policy_hash",
            "severity_label": "emergency",
            "context": {"message": "Hash not found in runtime policy"},
            "file": "/demo/app.conf",
        });
        let s = json!({
            "operational_state": 9, "attestation_status": "FAIL", "attestation_count": 3,
            "severity_level": 6,
            "last_event_id": "ima.validation.ima-ng.not_in_allowlist",
            "vigil": {"last_failures": [hash, hash]},
        });
        let mut out = Vec::new();
        write_status(&mut out, "node", &s).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "Invalid Quote (INVALID_QUOTE): ima.validation.ima-ng.runtime_policy_hash"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "last_event_id: ima.validation.ima-ng.not_in_allowlist (the event that set \
                 severity_level, in an earlier round)"
            ),
            "{text}"
        );
        assert!(text.contains("file: /demo/app.conf"), "{text}");
        // The demo's round: the unknown script again and the modified file, both at
        // the stored severity, so last_event_id stays the script's. Every event of the
        // round heads the text, each once; last_event_id is one of them.
        let script = json!({
            "event_id": "ima.validation.ima-ng.not_in_allowlist",
            "severity_label": "emergency",
            "context": {"message": "File not found in allowlist: /demo/x.sh"},
        });
        let mut both = s.clone();
        both["vigil"]["last_failures"] = json!([script, hash, hash]);
        let mut out = Vec::new();
        write_status(&mut out, "node", &both).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "Invalid Quote (INVALID_QUOTE): ima.validation.ima-ng.not_in_allowlist, \
                 ima.validation.ima-ng.runtime_policy_hash\n"
            ) || text.contains(
                "Invalid Quote (INVALID_QUOTE): ima.validation.ima-ng.not_in_allowlist, \
                 ima.validation.ima-ng.runtime_policy_hash\u{1b}"
            ),
            "{text}"
        );
        assert!(!text.contains("earlier round"), "{text}");
    }

    #[test]
    fn settings_layer_files_then_variables_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("vigil/tenant.toml");
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(
            &user,
            "verifier_ip = \"10.0.0.1\"\nverifier_port = 7\nregistrar_port = 8\n",
        )
        .unwrap();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let xdg = dir.path().to_str().unwrap();
        let settings = Settings::load(&env(&[
            ("XDG_CONFIG_HOME", xdg),
            ("VIGIL_TENANT_VERIFIER_PORT", "9"),
        ]))
        .unwrap();
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Flags {
            #[command(flatten)]
            conn: Conn,
        }
        let flags = Flags::parse_from(["t", "--registrar-port", "10"]);
        let c = flags.conn.resolve(settings);
        assert_eq!(
            (c.verifier_ip.as_str(), c.verifier_port, c.registrar_port),
            ("10.0.0.1", 9, 10)
        );
        assert_eq!(c.registrar_ip, "127.0.0.1");
        assert_eq!(c.tls_dir, PathBuf::from("/var/lib/vigil/cv_ca"));
        std::fs::write(&user, "verifier_prot = 7\n").unwrap();
        let e = Settings::load(&env(&[("XDG_CONFIG_HOME", xdg)])).unwrap_err();
        assert!(format!("{e:#}").contains("verifier_prot"), "{e:#}");
    }
}
