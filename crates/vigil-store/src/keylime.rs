//! Reading a Keylime 7.x database, for `vigil store import-keylime`: the registrar's
//! `registrarmain` table and the verifier's `verifiermain`, `allowlists` (runtime
//! policies) and `mbpolicies` tables, at the schema Keylime's own migrations bring them
//! to (compat §2.4, §9.1), turned into Vigil's records.
//!
//! Keylime's database is only read: SQLite is opened read-only and none of Vigil's
//! migrations run on it. Every column is read as text (`CAST(… AS TEXT)`), so one
//! query serves both backends whatever type each of them gave a column (SQLite's
//! `INTEGER` booleans, PostgreSQL's `boolean` and `int4`), and the conversion to Vigil's
//! types is a pure function per row ([`registrar_agent`], [`verifier_agent`]). A row
//! that cannot be carried over becomes a [`Skipped`] naming it and why; the rest of
//! the import goes on.
//!
//! How Keylime stores what Vigil keeps as bytes: the registrar's TPM public areas are
//! base64, its certificates base64 DER (the `mtls_cert` too, which Vigil keeps as
//! PEM), or the literal `disabled`; the verifier's `tpm_policy` and algorithm lists are
//! JSON (the policy a JSON string holding the policy's own JSON text).

use std::collections::BTreeMap;
use std::str::FromStr;

use base64::Engine as _;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Database, Pool};

use crate::{Enrolment, NewMbPolicy, NewRuntimePolicy, PolicyRef, RegistrarAgent, StoreError};

/// Largest text accepted from one Keylime column (a runtime policy may be large).
const MAX_COLUMN: usize = 256 * 1024 * 1024;

/// Keylime's operational states that are failures: the node is imported stopped
/// (Keylime's Tenant Failed) so Vigil does not re-attest it before an operator looks.
const FAILED_STATES: [u8; 2] = [7, 9];
/// Keylime's Tenant Failed (the tenant's `stop`).
const TENANT_FAILED: u8 = 10;
/// Keylime's Terminated: the node is being deleted.
const TERMINATED: u8 = 8;

/// One Keylime row that is not carried over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The Keylime table (`registrarmain`, `verifiermain`, `allowlists`, `mbpolicies`).
    pub table: &'static str,
    /// The row's agent id or policy name.
    pub id: String,
    /// Why it cannot be imported.
    pub reason: String,
}

/// A verifier enrolment read from Keylime, with its policies by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylimeEnrolment {
    /// The enrolment, its policies as [`PolicyRef::Named`].
    pub enrolment: Enrolment,
    /// What changed on the way, for the operator (e.g. a failed node imported stopped).
    pub notes: Vec<String>,
}

/// Everything read from one or more Keylime databases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeylimeDump {
    /// Registrar records (`registrarmain`).
    pub registrar: Vec<RegistrarAgent>,
    /// Verifier enrolments (`verifiermain`).
    pub verifier: Vec<KeylimeEnrolment>,
    /// Named runtime policies (`allowlists`).
    pub runtime_policies: Vec<NewRuntimePolicy>,
    /// Named measured-boot policies (`mbpolicies`).
    pub mb_policies: Vec<NewMbPolicy>,
    /// Rows not carried over.
    pub skipped: Vec<Skipped>,
    /// The Keylime tables found, per database read (for the operator's summary).
    pub tables: Vec<&'static str>,
}

impl KeylimeDump {
    /// Keeps the runtime policies `check` accepts; each refused one is named as not
    /// imported with the reason `check` gives, and so is every enrolment using it.
    /// (The caller checks what the store cannot: that Vigil's verifier parses it.)
    pub fn retain_runtime_policies(
        &mut self,
        mut check: impl FnMut(&NewRuntimePolicy) -> Result<(), String>,
    ) {
        let mut refused = Vec::new();
        self.runtime_policies.retain(|p| match check(p) {
            Ok(()) => true,
            Err(reason) => {
                refused.push((p.name.clone(), reason));
                false
            }
        });
        for (name, reason) in refused {
            self.refuse_users(&name, |e| &e.runtime_policy);
            self.skipped.push(Skipped {
                table: "allowlists",
                id: name,
                reason,
            });
        }
    }

    /// Keeps the measured-boot policies `check` accepts, as
    /// [`Self::retain_runtime_policies`].
    pub fn retain_mb_policies(
        &mut self,
        mut check: impl FnMut(&NewMbPolicy) -> Result<(), String>,
    ) {
        let mut refused = Vec::new();
        self.mb_policies.retain(|p| match check(p) {
            Ok(()) => true,
            Err(reason) => {
                refused.push((p.name.clone(), reason));
                false
            }
        });
        for (name, reason) in refused {
            self.refuse_users(&name, |e| &e.mb_policy);
            self.skipped.push(Skipped {
                table: "mbpolicies",
                id: name,
                reason,
            });
        }
    }

    /// Keeps the enrolments `check` accepts; each refused one is named with its reason.
    pub fn retain_enrolments(&mut self, mut check: impl FnMut(&Enrolment) -> Result<(), String>) {
        let mut skipped = Vec::new();
        self.verifier.retain(|e| match check(&e.enrolment) {
            Ok(()) => true,
            Err(reason) => {
                skipped.push(Skipped {
                    table: "verifiermain",
                    id: e.enrolment.agent_id.clone(),
                    reason,
                });
                false
            }
        });
        self.skipped.append(&mut skipped);
    }

    fn refuse_users<P>(
        &mut self,
        name: &str,
        policy: impl Fn(&Enrolment) -> &Option<PolicyRef<P>>,
    ) {
        let uses = |e: &Enrolment| named(policy(e)) == Some(name);
        self.retain_enrolments(|e| {
            if uses(e) {
                Err(format!("its policy {name:?} is not imported"))
            } else {
                Ok(())
            }
        });
    }
}

/// The name of a policy an enrolment refers to by name.
fn named<P>(r: &Option<PolicyRef<P>>) -> Option<&str> {
    match r {
        Some(PolicyRef::Named(n)) => Some(n),
        _ => None,
    }
}

/// A row as text columns (NULL is `None`).
type Row = BTreeMap<String, Option<String>>;

const REGISTRAR_COLUMNS: &[&str] = &[
    "agent_id",
    "key",
    "aik_tpm",
    "ekcert",
    "ek_tpm",
    "iak_tpm",
    "idevid_tpm",
    "iak_cert",
    "idevid_cert",
    "mtls_cert",
    "virtual",
    "ip",
    "port",
    "active",
    "regcount",
];

const VERIFIER_COLUMNS: &[&str] = &[
    "agent_id",
    "v",
    "ip",
    "port",
    "verifier_id",
    "verifier_ip",
    "verifier_port",
    "operational_state",
    "public_key",
    "tpm_policy",
    "meta_data",
    "ima_policy_id",
    "mb_policy_id",
    "ima_sign_verification_keys",
    "revocation_key",
    "accept_tpm_hash_algs",
    "accept_tpm_encryption_algs",
    "accept_tpm_signing_algs",
    "supported_version",
    "ak_tpm",
    "mtls_cert",
    "accept_attestations",
];

const ALLOWLIST_COLUMNS: &[&str] = &["id", "name", "generator", "tpm_policy", "ima_policy"];
const MBPOLICY_COLUMNS: &[&str] = &["id", "name", "mb_policy"];

/// The Keylime tables this import reads, in the order they are converted: the policies
/// before the enrolments that name them by id.
const TABLES: [&str; 4] = ["registrarmain", "allowlists", "mbpolicies", "verifiermain"];

/// Turns the URL forms an operator may have in Keylime's configuration into what the
/// reader opens: `(is SQLite, path or PostgreSQL URL)`. A SQLite file is a plain path,
/// or a `sqlite:` URL naming an absolute path (SQLAlchemy's `sqlite:////abs`, sqlx's
/// `sqlite:///abs`: the slashes collapse to one); SQLAlchemy's `postgresql+driver://`
/// loses its driver.
fn normalise_url(url: &str) -> Result<(bool, String), StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        // A relative path would be ambiguous between SQLAlchemy's spelling (three
        // slashes: relative) and sqlx's (three slashes: absolute); it is given plain.
        let path = rest.trim_start_matches('/');
        let path = path.split('?').next().unwrap_or(path);
        return Ok((true, format!("/{path}")));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let base = scheme.split('+').next().unwrap_or(scheme);
        return match base {
            "postgres" | "postgresql" => Ok((false, format!("postgres://{rest}"))),
            other => Err(StoreError::UnsupportedUrl {
                scheme: other.to_owned(),
            }),
        };
    }
    Ok((true, url.to_owned()))
}

/// Reads every Keylime table found in the database at `url` (a SQLite file path or URL,
/// or a PostgreSQL URL, as Keylime's `database_url` may spell them) and converts its
/// rows, adding them to `dump`. A database holding none of the tables is an error.
pub async fn read(url: &str, dump: &mut KeylimeDump) -> Result<(), StoreError> {
    let (sqlite, url) = normalise_url(url)?;
    let tables = if sqlite {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{url}"))
            .map_err(StoreError::db("parse the Keylime SQLite path"))?
            .read_only(true)
            .create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(StoreError::db("open Keylime's SQLite database"))?;
        let names = "SELECT name FROM sqlite_master WHERE type = 'table'";
        let t = read_tables(&pool, names).await;
        pool.close().await;
        t?
    } else {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .map_err(StoreError::db("connect to Keylime's PostgreSQL database"))?;
        let names = "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                     WHERE table_schema = current_schema()";
        let t = read_tables(&pool, names).await;
        pool.close().await;
        t?
    };
    if tables.is_empty() {
        return Err(StoreError::InvalidValue {
            field: "database",
            reason: "holds none of Keylime's tables (registrarmain, verifiermain, allowlists, \
                     mbpolicies): is this Keylime's registrar or verifier database?"
                .into(),
        });
    }
    convert(tables, dump);
    Ok(())
}

/// The rows of each Keylime table present, in [`TABLES`] order.
async fn read_tables<D>(
    pool: &Pool<D>,
    names_sql: &str,
) -> Result<Vec<(&'static str, Vec<Row>)>, StoreError>
where
    D: Database,
    for<'c> &'c mut D::Connection: sqlx::Executor<'c, Database = D>,
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: sqlx::IntoArguments<'q, D>,
    usize: sqlx::ColumnIndex<D::Row>,
    String: sqlx::Type<D> + for<'r> sqlx::Decode<'r, D>,
    Option<String>: sqlx::Type<D> + for<'r> sqlx::Decode<'r, D>,
{
    let present: Vec<String> = sqlx::query_scalar(names_sql)
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("list Keylime's tables"))?;
    let mut out = Vec::new();
    for table in TABLES {
        if !present.iter().any(|t| t == table) {
            continue;
        }
        let columns = match table {
            "registrarmain" => REGISTRAR_COLUMNS,
            "verifiermain" => VERIFIER_COLUMNS,
            "allowlists" => ALLOWLIST_COLUMNS,
            _ => MBPOLICY_COLUMNS,
        };
        let select = columns
            .iter()
            .map(|c| format!("CAST({c} AS TEXT)"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {select} FROM {table}");
        let rows = sqlx::query(&sql)
            .fetch_all(pool)
            .await
            .map_err(StoreError::db(
            "read a Keylime table (is the schema Keylime 7's? start its service once to migrate)",
        ))?;
        let mut converted = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut r = Row::new();
            for (i, c) in columns.iter().enumerate() {
                let v: Option<String> =
                    sqlx::Row::try_get(row, i).map_err(StoreError::db("decode a Keylime row"))?;
                if v.as_ref().is_some_and(|v| v.len() > MAX_COLUMN) {
                    return Err(StoreError::InvalidValue {
                        field: "keylime column",
                        reason: format!("{table}.{c} is larger than {MAX_COLUMN} bytes"),
                    });
                }
                r.insert((*c).to_owned(), v);
            }
            converted.push(r);
        }
        out.push((table, converted));
    }
    Ok(out)
}

/// Converts the rows of the tables read, resolving the verifier's policy ids to names.
fn convert(tables: Vec<(&'static str, Vec<Row>)>, dump: &mut KeylimeDump) {
    let mut runtime_names = BTreeMap::new();
    let mut mb_names = BTreeMap::new();
    for (table, rows) in tables {
        dump.tables.push(table);
        for row in rows {
            let id = text(&row, "agent_id")
                .or_else(|| text(&row, "name"))
                .unwrap_or_default()
                .to_owned();
            let skip = |reason: String| Skipped {
                table,
                id: id.clone(),
                reason,
            };
            match table {
                "registrarmain" => match registrar_agent(&row) {
                    Ok(a) => dump.registrar.push(a),
                    Err(reason) => dump.skipped.push(skip(reason)),
                },
                "allowlists" => match runtime_policy(&row) {
                    Ok((key, p)) => {
                        runtime_names.insert(key, p.name.clone());
                        dump.runtime_policies.push(p);
                    }
                    Err(reason) => dump.skipped.push(skip(reason)),
                },
                "mbpolicies" => match mb_policy(&row) {
                    Ok((key, p)) => {
                        mb_names.insert(key, p.name.clone());
                        dump.mb_policies.push(p);
                    }
                    Err(reason) => dump.skipped.push(skip(reason)),
                },
                _ => match verifier_agent(&row, &runtime_names, &mb_names) {
                    Ok(e) => dump.verifier.push(e),
                    Err(reason) => dump.skipped.push(skip(reason)),
                },
            }
        }
    }
}

fn text<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
    row.get(col).and_then(|v| v.as_deref())
}

fn required<'a>(row: &'a Row, col: &str) -> Result<&'a str, String> {
    text(row, col)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{col} is empty"))
}

fn b64(col: &str, v: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|e| format!("{col} is not base64: {e}"))
}

fn opt_b64(row: &Row, col: &str) -> Result<Option<Vec<u8>>, String> {
    text(row, col)
        .filter(|v| !v.is_empty())
        .map(|v| b64(col, v))
        .transpose()
}

/// A Keylime boolean as text: SQLite's `1`/`0`, PostgreSQL's `true`/`false`.
fn boolean(row: &Row, col: &str) -> Result<bool, String> {
    match text(row, col) {
        None | Some("0" | "false" | "f" | "") => Ok(false),
        Some("1" | "true" | "t") => Ok(true),
        Some(other) => Err(format!("{col} is not a boolean: {other:?}")),
    }
}

fn number<T: FromStr>(row: &Row, col: &str) -> Result<Option<T>, String> {
    text(row, col)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{col} is out of range: {v:?}"))
        })
        .transpose()
}

/// A certificate column of Keylime's registrar (base64 DER, or PEM) as DER.
fn cert_der(col: &str, v: &str) -> Result<Vec<u8>, String> {
    let v = v.trim();
    if v.starts_with("-----BEGIN") {
        let body: String = v
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        return b64(col, &body);
    }
    b64(col, v)
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A `registrarmain` row as Vigil's registrar record.
pub(crate) fn registrar_agent(row: &Row) -> Result<RegistrarAgent, String> {
    let agent_id = required(row, "agent_id")?.to_owned();
    if boolean(row, "virtual")? {
        return Err("a virtual (vTPM) agent: Vigil has no vTPM support".into());
    }
    let aik_tpm = b64("aik_tpm", required(row, "aik_tpm")?)?;
    let cert = |col: &str| {
        text(row, col)
            .filter(|v| !v.is_empty())
            .map(|v| cert_der(col, v))
            .transpose()
    };
    let mtls_cert = match text(row, "mtls_cert").filter(|v| !v.is_empty()) {
        None => None,
        Some("disabled") => Some("disabled".to_owned()),
        Some(v) => Some(pem(&cert_der("mtls_cert", v)?)),
    };
    Ok(RegistrarAgent {
        agent_id,
        ek_tpm: opt_b64(row, "ek_tpm")?,
        ekcert: cert("ekcert")?,
        aik_tpm,
        iak_tpm: opt_b64(row, "iak_tpm")?,
        iak_cert: cert("iak_cert")?,
        idevid_tpm: opt_b64(row, "idevid_tpm")?,
        idevid_cert: cert("idevid_cert")?,
        key: text(row, "key").map(str::to_owned),
        active: boolean(row, "active")?,
        ip: text(row, "ip").map(str::to_owned),
        port: number(row, "port")?,
        mtls_cert,
        regcount: number(row, "regcount")?.unwrap_or(1),
    })
}

/// Keylime's JSON-pickled column: a JSON value whose text Vigil stores. A JSON string
/// holds the document's own text (the tenant sends `tpm_policy` as a string).
fn pickled_text(col: &str, v: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(v).map_err(|e| format!("{col} is not JSON: {e}"))? {
        Value::String(s) => {
            serde_json::from_str::<Value>(&s)
                .map_err(|e| format!("{col} does not hold JSON text: {e}"))?;
            Ok(s)
        }
        other => Ok(other.to_string()),
    }
}

fn string_list(row: &Row, col: &str) -> Result<Vec<String>, String> {
    let Some(v) = text(row, col).filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut value: Value =
        serde_json::from_str(v).map_err(|e| format!("{col} is not JSON: {e}"))?;
    if let Value::String(s) = &value {
        value = serde_json::from_str(s).map_err(|e| format!("{col} is not a JSON list: {e}"))?;
    }
    serde_json::from_value(value).map_err(|e| format!("{col} is not a list of strings: {e}"))
}

fn runtime_policy(row: &Row) -> Result<(String, NewRuntimePolicy), String> {
    let key = required(row, "id")?.to_owned();
    let name = required(row, "name")?.to_owned();
    let ima_policy = text(row, "ima_policy").filter(|v| !v.is_empty());
    if let Some(p) = ima_policy {
        serde_json::from_str::<Value>(p).map_err(|e| format!("ima_policy is not JSON: {e}"))?;
    }
    Ok((
        key,
        NewRuntimePolicy {
            name,
            generator: number(row, "generator")?,
            tpm_policy: text(row, "tpm_policy")
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            ima_policy: ima_policy.map(str::to_owned),
        },
    ))
}

fn mb_policy(row: &Row) -> Result<(String, NewMbPolicy), String> {
    let key = required(row, "id")?.to_owned();
    let name = required(row, "name")?.to_owned();
    let text = text(row, "mb_policy").filter(|v| !v.is_empty());
    if let Some(p) = text {
        serde_json::from_str::<Value>(p).map_err(|e| format!("mb_policy is not JSON: {e}"))?;
    }
    Ok((
        key,
        NewMbPolicy {
            name,
            mb_policy: text.map(str::to_owned),
        },
    ))
}

/// A `verifiermain` row as a Vigil enrolment, its policy ids resolved through the
/// names read from `allowlists` and `mbpolicies`.
pub(crate) fn verifier_agent(
    row: &Row,
    runtime_names: &BTreeMap<String, String>,
    mb_names: &BTreeMap<String, String>,
) -> Result<KeylimeEnrolment, String> {
    let agent_id = required(row, "agent_id")?.to_owned();
    let mut notes = Vec::new();
    let state: u8 = number(row, "operational_state")?.unwrap_or(1);
    if state == TERMINATED {
        return Err("being deleted by Keylime (Terminated)".into());
    }
    let operational_state = if FAILED_STATES.contains(&state) {
        notes.push(format!(
            "operational_state {state} (a failure) imported as 10 (Tenant Failed): \
             `vigil tenant reactivate` once reviewed"
        ));
        TENANT_FAILED
    } else if state > TENANT_FAILED {
        return Err(format!("operational_state {state} is not one of Keylime's"));
    } else {
        state
    };
    let policy_name = |col: &str, names: &BTreeMap<String, String>| {
        text(row, col)
            .filter(|v| !v.is_empty())
            .map(|id| {
                names
                    .get(id)
                    .cloned()
                    .ok_or_else(|| format!("{col} {id} names no policy that was read"))
            })
            .transpose()
    };
    let runtime = policy_name("ima_policy_id", runtime_names)?;
    let mb = policy_name("mb_policy_id", mb_names)?;
    let tpm_policy = match text(row, "tpm_policy").filter(|v| !v.is_empty()) {
        Some(v) => pickled_text("tpm_policy", v)?,
        None => "{}".to_owned(),
    };
    let ak_tpm = b64("ak_tpm", required(row, "ak_tpm")?)?;
    let enrolment = Enrolment {
        agent_id,
        v: text(row, "v").filter(|v| !v.is_empty()).map(str::to_owned),
        ip: text(row, "ip").map(str::to_owned),
        port: number(row, "port")?,
        verifier_id: text(row, "verifier_id").unwrap_or("default").to_owned(),
        verifier_ip: text(row, "verifier_ip").unwrap_or_default().to_owned(),
        verifier_port: number(row, "verifier_port")?.unwrap_or(0),
        operational_state,
        public_key: text(row, "public_key")
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        tpm_policy,
        meta_data: text(row, "meta_data").unwrap_or("{}").to_owned(),
        runtime_policy: runtime.map(PolicyRef::Named),
        mb_policy: mb.map(PolicyRef::Named),
        ima_sign_verification_keys: text(row, "ima_sign_verification_keys")
            .unwrap_or_default()
            .to_owned(),
        revocation_key: text(row, "revocation_key")
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        accept_tpm_hash_algs: string_list(row, "accept_tpm_hash_algs")?,
        accept_tpm_encryption_algs: string_list(row, "accept_tpm_encryption_algs")?,
        accept_tpm_signing_algs: string_list(row, "accept_tpm_signing_algs")?,
        supported_version: text(row, "supported_version")
            .unwrap_or_default()
            .to_owned(),
        ak_tpm,
        mtls_cert: text(row, "mtls_cert")
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        // NULL in pull mode, where the column means nothing.
        accept_attestations: text(row, "accept_attestations").is_none()
            || boolean(row, "accept_attestations")?,
        // Keylime has no hardware classes or labels.
        hardware_class: None,
        labels: Default::default(),
        class_since: 0,
    };
    Ok(KeylimeEnrolment { enrolment, notes })
}

/// How a record was carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Written where Vigil had no record of that id or name.
    New,
    /// Written over Vigil's record of that id or name (`replace`).
    Replaced,
    /// A policy Vigil already holds with the same content: kept, and used.
    Same,
}

/// One record carried over (or, in a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The Keylime table it comes from.
    pub table: &'static str,
    /// Its agent id or policy name.
    pub id: String,
    /// How it was written.
    pub how: How,
    /// What changed on the way.
    pub notes: Vec<String>,
}

/// What [`import`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Records carried over.
    pub imported: Vec<Imported>,
    /// Rows not carried over, with why (those [`read`] found too).
    pub skipped: Vec<Skipped>,
}

/// Writes what [`read`] found into Vigil's stores: registrar records into `registrar`,
/// policies and enrolments into `verifier` (the two may be one store). An id or name
/// Vigil already holds is skipped unless `replace` (a policy with the same content is
/// simply used); an enrolment whose policy was skipped is skipped too. With `dry_run`
/// nothing is written and the report says what would be.
///
/// Each record is its own write: an import that fails halfway (the database goes
/// away) leaves the records before it imported, and running it again with `replace`
/// finishes it.
pub async fn import(
    dump: KeylimeDump,
    registrar: &crate::Store,
    verifier: &crate::Store,
    replace: bool,
    dry_run: bool,
) -> Result<ImportReport, StoreError> {
    let mut report = ImportReport {
        skipped: dump.skipped,
        ..ImportReport::default()
    };
    let taken = |table, id: &str, what: &str| Skipped {
        table,
        id: id.to_owned(),
        reason: format!("Vigil's {what} store already holds it (--replace overwrites)"),
    };

    for a in &dump.registrar {
        let existed = registrar
            .registrar_agents()
            .get(&a.agent_id)
            .await?
            .is_some();
        if existed && !replace {
            report
                .skipped
                .push(taken("registrarmain", &a.agent_id, "registrar"));
            continue;
        }
        if !dry_run {
            registrar.registrar_agents().put(a, replace).await?;
        }
        report.imported.push(Imported {
            table: "registrarmain",
            id: a.agent_id.clone(),
            how: if existed { How::Replaced } else { How::New },
            notes: Vec::new(),
        });
    }

    // Enrolments being replaced go first: deleting one also deletes the policies named
    // after it, which the policy step below may be about to write.
    let agents = verifier.verifier_agents();
    let mut existing = Vec::new();
    for e in &dump.verifier {
        let id = &e.enrolment.agent_id;
        if agents.get(id).await?.is_some() {
            if replace && !dry_run {
                agents.delete(id).await?;
            }
            existing.push(id.clone());
        }
    }

    let policies = verifier.policies();
    let mut refused_runtime = Vec::new();
    for p in dump.runtime_policies {
        let old = policies.get_runtime(&p.name).await?;
        let how = match &old {
            None => How::New,
            Some(o)
                if o.checksum == crate::checksum(p.ima_policy.as_deref())
                    && o.tpm_policy == p.tpm_policy
                    && o.generator == p.generator =>
            {
                How::Same
            }
            Some(_) if replace => How::Replaced,
            Some(_) => {
                report
                    .skipped
                    .push(taken("allowlists", &p.name, "verifier"));
                refused_runtime.push(p.name);
                continue;
            }
        };
        let name = p.name.clone();
        if !dry_run {
            match how {
                How::New => drop(policies.create_runtime(p).await?),
                How::Replaced => drop(policies.update_runtime(p).await?),
                How::Same => {}
            }
        }
        report.imported.push(Imported {
            table: "allowlists",
            id: name,
            how,
            notes: Vec::new(),
        });
    }
    let mut refused_mb = Vec::new();
    for p in dump.mb_policies {
        let old = policies.get_mb(&p.name).await?;
        let how = match &old {
            None => How::New,
            Some(o) if o.checksum == crate::checksum(p.mb_policy.as_deref()) => How::Same,
            Some(_) if replace => How::Replaced,
            Some(_) => {
                report
                    .skipped
                    .push(taken("mbpolicies", &p.name, "verifier"));
                refused_mb.push(p.name);
                continue;
            }
        };
        let name = p.name.clone();
        if !dry_run {
            match how {
                How::New => drop(policies.create_mb(p).await?),
                How::Replaced => drop(policies.update_mb(p).await?),
                How::Same => {}
            }
        }
        report.imported.push(Imported {
            table: "mbpolicies",
            id: name,
            how,
            notes: Vec::new(),
        });
    }

    for e in dump.verifier {
        let id = e.enrolment.agent_id.clone();
        let blocked = named(&e.enrolment.runtime_policy)
            .filter(|n| refused_runtime.iter().any(|r| r == n))
            .or_else(|| named(&e.enrolment.mb_policy).filter(|n| refused_mb.iter().any(|r| r == n)))
            .map(str::to_owned);
        if let Some(name) = blocked {
            report.skipped.push(Skipped {
                table: "verifiermain",
                id,
                reason: format!("its policy {name:?} was not imported"),
            });
            continue;
        }
        let existed = existing.contains(&id);
        if existed && !replace {
            report.skipped.push(taken("verifiermain", &id, "verifier"));
            continue;
        }
        if !dry_run {
            agents.enrol(e.enrolment).await?;
        }
        report.imported.push(Imported {
            table: "verifiermain",
            id,
            how: if existed { How::Replaced } else { How::New },
            notes: e.notes,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[(&str, &str)]) -> Row {
        cols.iter()
            .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
            .collect()
    }

    #[test]
    fn urls_in_keylime_spellings() {
        assert_eq!(
            normalise_url("sqlite:////var/lib/keylime/cv_data.sqlite").unwrap(),
            (true, "/var/lib/keylime/cv_data.sqlite".into())
        );
        assert_eq!(
            normalise_url("postgresql+psycopg2://k@h/db").unwrap(),
            (false, "postgres://k@h/db".into())
        );
        assert!(normalise_url("mysql://h/db").is_err());
    }

    #[test]
    fn registrar_row_converts_and_vtpm_is_refused() {
        let r = row(&[
            ("agent_id", "a"),
            ("aik_tpm", "AQI="),
            ("ek_tpm", "AwQ="),
            ("mtls_cert", "disabled"),
            ("active", "true"),
            ("regcount", "2"),
            ("port", "9002"),
        ]);
        let a = registrar_agent(&r).unwrap();
        assert_eq!((a.aik_tpm, a.active, a.regcount), (vec![1, 2], true, 2));
        assert_eq!(a.mtls_cert.as_deref(), Some("disabled"));
        let mut v = r.clone();
        v.insert("virtual".into(), Some("1".into()));
        assert!(registrar_agent(&v).unwrap_err().contains("vTPM"));
        let mut bad = r;
        bad.insert("aik_tpm".into(), Some("!!".into()));
        assert!(registrar_agent(&bad).unwrap_err().contains("aik_tpm"));
    }

    #[test]
    fn verifier_row_resolves_policies_and_stops_failed_nodes() {
        let names = BTreeMap::from([("3".to_owned(), "p".to_owned())]);
        let r = row(&[
            ("agent_id", "a"),
            ("ak_tpm", "AQI="),
            ("operational_state", "9"),
            ("tpm_policy", r#""{\"mask\": \"0x400\"}""#),
            ("accept_tpm_hash_algs", r#"["sha256"]"#),
            ("ima_policy_id", "3"),
        ]);
        let e = verifier_agent(&r, &names, &BTreeMap::new()).unwrap();
        assert_eq!(e.enrolment.operational_state, TENANT_FAILED);
        assert_eq!(e.enrolment.tpm_policy, r#"{"mask": "0x400"}"#);
        assert_eq!(
            e.enrolment.runtime_policy,
            Some(PolicyRef::Named("p".into()))
        );
        assert_eq!(e.enrolment.accept_tpm_hash_algs, ["sha256"]);
        assert_eq!(e.notes.len(), 1);
        let mut gone = r.clone();
        gone.insert("ima_policy_id".into(), Some("4".into()));
        assert!(verifier_agent(&gone, &names, &BTreeMap::new()).is_err());
    }
}
