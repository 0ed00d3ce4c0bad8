//! `vigil tenant ...`: enrol nodes with a verifier and manage them (Keylime's
//! `keylime_tenant`), and the connection options `vigil policy push|list|show|delete`
//! share. The client logic lives in `crate::tenant`.
//!
//! Exit status: 0 done, 1 refused (a service said no, a node failed a check, or the
//! node is unknown), 2 bad input or a service that cannot be reached.

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
use crate::tenant::http::{Client, TlsFiles};
use crate::tenant::identity::AcceptLists;
use crate::tenant::policy::PolicyArgs;

/// Where the verifier and registrar are, and how to reach them.
#[derive(Debug, Clone, Args)]
pub(crate) struct Conn {
    /// The verifier's address.
    #[arg(
        long,
        short = 'v',
        alias = "cv",
        value_name = "IP",
        default_value = "127.0.0.1",
        global = true
    )]
    verifier_ip: String,
    /// The verifier's port.
    #[arg(
        long,
        alias = "cvport",
        value_name = "PORT",
        default_value_t = 8881,
        global = true
    )]
    verifier_port: u16,
    /// List only nodes of this verifier id (`list`).
    #[arg(long, alias = "cvid", value_name = "ID", global = true)]
    verifier_id: Option<String>,
    /// The registrar's address.
    #[arg(
        long,
        short = 'r',
        alias = "registrarhost",
        value_name = "IP",
        default_value = "127.0.0.1",
        global = true
    )]
    registrar_ip: String,
    /// The registrar's TLS port.
    #[arg(
        long,
        alias = "registrarport",
        value_name = "PORT",
        default_value_t = 8891,
        global = true
    )]
    registrar_port: u16,
    /// The tenant's TLS files in Keylime's cv_ca layout: cacert.crt (the services' CA),
    /// client-cert.crt and client-private.pem [default: STATE_DIR/cv_ca].
    #[arg(long, value_name = "DIR", global = true)]
    tls_dir: Option<PathBuf>,
    /// Vigil's state directory (TLS files, the --cert CA, the EK vendor CA store).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/vigil",
        env = "VIGIL_STATE_DIR",
        global = true
    )]
    state_dir: PathBuf,
    /// Talk plain HTTP to the verifier and registrar (tests only: admin routes need
    /// mTLS in Keylime and Vigil).
    #[arg(long, global = true)]
    insecure_no_tls: bool,
    /// Seconds a request may take.
    #[arg(long, value_name = "SECS", default_value_t = 60, global = true)]
    timeout: u64,
    /// Attempts when waiting for a node or the verifier.
    #[arg(long, value_name = "N", default_value_t = 5, global = true)]
    max_retries: u32,
    /// Seconds between attempts (doubled each time with --exponential-backoff).
    #[arg(long, value_name = "SECS", default_value_t = 2.0, global = true)]
    retry_interval: f64,
    /// Double the wait after each failed attempt.
    #[arg(long, global = true)]
    exponential_backoff: bool,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Conn {
    fn tenant(&self) -> Result<Tenant> {
        let timeout = Duration::from_secs(self.timeout.max(1));
        let tls_dir = self
            .tls_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("cv_ca"));
        let files = TlsFiles::in_dir(&tls_dir);
        let config = if self.insecure_no_tls {
            None
        } else {
            Some(files.service_config()?)
        };
        let interval = Duration::try_from_secs_f64(self.retry_interval.max(0.0))
            .context("--retry-interval is not a number of seconds")?;
        Ok(Tenant {
            verifier: Client::new(
                &self.verifier_ip,
                self.verifier_port,
                config.clone(),
                timeout,
            ),
            registrar: Client::new(&self.registrar_ip, self.registrar_port, config, timeout),
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
            anstream::eprintln!("{}error:{} {e:#}", ERROR.render(), ERROR.render_reset());
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
    #[command(alias = "cvstatus")]
    Status(IdArg),
    /// A node's record at the registrar.
    Regstatus(IdArg),
    /// The nodes registered at the registrar.
    Reglist,
    /// Remove a node from the registrar (it must register again).
    Regdelete(IdArg),
}

#[derive(Debug, Args)]
struct IdArg {
    /// The node id (agent UUID).
    #[arg(short = 'u', long = "uuid", value_name = "ID")]
    uuid: String,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The full status of every node (Keylime's `bulkinfo`).
    #[arg(long)]
    bulk: bool,
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
}

pub(crate) fn run(args: TenantArgs) -> Result<ExitCode> {
    let conn = args.conn;
    finish(block_on(async move {
        let tenant = conn.tenant()?;
        match args.command {
            TenantCommand::Add(a) => add(&tenant, &conn, a, false).await,
            TenantCommand::Update(a) => add(&tenant, &conn, a, true).await,
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
            TenantCommand::List(a) => list(&tenant, &conn, a.bulk).await,
            TenantCommand::Status(a) => status(&tenant, &conn, &a.uuid).await,
            TenantCommand::Regstatus(a) => regstatus(&tenant, &conn, &a.uuid).await,
            TenantCommand::Reglist => {
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

fn done(conn: &Conn, id: &str, what: &str, value: Value) -> Result<ExitCode> {
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

async fn add(tenant: &Tenant, conn: &Conn, a: AddArgs, update: bool) -> Result<ExitCode> {
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

async fn list(tenant: &Tenant, conn: &Conn, bulk: bool) -> Result<ExitCode> {
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

async fn status(tenant: &Tenant, conn: &Conn, id: &str) -> Result<ExitCode> {
    let Some(s) = tenant.cv_status(id).await? else {
        return Err(anyhow::Error::new(Refused(format!(
            "{id} is not enrolled at the verifier at {}:{} (enrol it with `vigil tenant add`)",
            conn.verifier_ip, conn.verifier_port
        ))));
    };
    if conn.json {
        // Keylime's tenant prints {id: status} with the state as text.
        let mut s2 = s.clone();
        if let Some(code) = s["operational_state"].as_u64() {
            if let Ok(state) = OperationalState::from_code(code) {
                s2["operational_state"] = json!(state.description());
            }
        }
        super::print_json(&json!({ id: s2 }))?;
        return Ok(status_exit(&s));
    }
    let mut out = anstream::stdout().lock();
    let code = s["operational_state"].as_u64();
    let bad = matches!(code, Some(7 | 9 | 10));
    let style = if bad { ERROR } else { OK };
    writeln!(
        out,
        "{}{id}{}: {}{}{}",
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
    writeln!(out, "  last_event_id: {}", field("last_event_id"))?;
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
    Ok(status_exit(&s))
}

/// `status` exits 3 for a node that is not currently attested: its verifier reports no
/// successful round within its staleness limit (`TIMEOUT`), so a script polling status
/// cannot mistake a stalled node for a passing one.
fn status_exit(status: &Value) -> ExitCode {
    if status["attestation_status"] == "TIMEOUT" {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

async fn regstatus(tenant: &Tenant, conn: &Conn, id: &str) -> Result<ExitCode> {
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
    conn.tenant()
}
