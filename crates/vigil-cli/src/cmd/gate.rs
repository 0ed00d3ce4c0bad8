//! `vigil gate`: the provisioning trust gate. `check` asks the verifier whether nodes
//! are trusted with evidence no older than `--max-age` (it attests them now when
//! needed) and prints the answer with its signed EAR token; `verify-token` checks a
//! token offline; `key` prints the verifier's attestation-results public key.
//!
//! Exit status of `check`: 0 every node trusted, 1 one or more not trusted (unknown,
//! failing, unreachable), 2 an error (bad input, the verifier unreachable).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vigil_core::results;

use super::style::{EM, ERROR, OK};
use super::tenant::{self, Conn};
use crate::tenant::flow::Tenant;

/// `KEY=VALUE`, for `--label`.
pub(crate) fn parse_label(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    };
    if ok(k) && ok(v) {
        Ok((k.to_owned(), v.to_owned()))
    } else {
        Err(format!(
            "{text:?}: keys and values are letters, digits, '_', '.', '-' (at most 63)"
        ))
    }
}

/// A request to one of the verifier's `/vigil/v1/` routes; the answer whatever its
/// status.
pub(crate) async fn vigil(
    t: &Tenant,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<crate::tenant::http::Response> {
    Ok(t.verifier
        .request(
            method,
            &format!("/vigil/v1/{path}"),
            body.map(Value::to_string),
        )
        .await?)
}

/// The `results` of a 2xx answer, or an error with the verifier's text.
pub(crate) fn expect_ok(r: &crate::tenant::http::Response, doing: &str) -> Result<Value> {
    if (200..300).contains(&r.status) {
        Ok(r.results().clone())
    } else {
        Err(anyhow::Error::new(crate::tenant::flow::Refused(format!(
            "{doing}: the verifier answered {}: {}",
            r.status,
            r.status_text()
        ))))
    }
}

/// `PATCH /vigil/v1/nodes/{id}` with `{"class", "labels"}`.
pub(crate) async fn set_node(t: &Tenant, id: &str, body: &Value) -> Result<()> {
    let r = vigil(t, "PATCH", &format!("nodes/{id}"), Some(body)).await?;
    expect_ok(&r, &format!("setting {id}'s class and labels")).map(|_| ())
}

/// The trust gate.
#[derive(Debug, Args)]
pub(crate) struct GateArgs {
    #[command(subcommand)]
    command: GateCommand,
}

#[derive(Debug, Subcommand)]
enum GateCommand {
    /// Is the node (or every node with the labels) trusted with evidence no older than
    /// --max-age? The verifier attests it now when its evidence is older. Exit 0
    /// trusted, 1 not trusted, 2 error.
    Check(CheckArgs),
    /// Checks an EAR token offline: signature (with --key), expiry, and --nonce.
    /// Exit 0 valid, 1 not, 2 bad input.
    VerifyToken(VerifyArgs),
    /// Prints the verifier's attestation-results public key (PEM).
    Key(KeyArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The node id (or select nodes with --label).
    #[arg(value_name = "ID", required_unless_present = "labels")]
    id: Option<String>,
    /// Every node with this label (repeatable: all must match), checked concurrently.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label, conflicts_with = "id")]
    labels: Vec<(String, String)>,
    /// How old the evidence may be (seconds); older evidence means a round now.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    max_age: u64,
    /// A nonce the EAR token must carry (8–64 characters of A-Z a-z 0-9 - . _ ~).
    #[arg(long, value_name = "NONCE")]
    nonce: Option<String>,
    /// Seconds the verifier may wait for an on-demand round (an unreachable node is
    /// not trusted once it passes); keep it below --timeout, the HTTP request's.
    #[arg(long = "round-timeout", value_name = "SECS", default_value_t = 30.0)]
    round_timeout: f64,
    /// Nodes checked at once with --label.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The token (`-` reads it from standard input).
    #[arg(value_name = "TOKEN")]
    token: String,
    /// The verifier's attestation-results public key (PEM, from `vigil gate key`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The nonce the token must carry.
    #[arg(long, value_name = "NONCE")]
    nonce: Option<String>,
    /// Print the claims as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct KeyArgs {
    #[command(flatten)]
    conn: Conn,
}

pub(crate) fn run(args: GateArgs) -> Result<ExitCode> {
    match args.command {
        GateCommand::Check(a) => tenant::finish(tenant::block_on(check(a))),
        GateCommand::VerifyToken(a) => verify_token(&a),
        GateCommand::Key(a) => tenant::finish(tenant::block_on(async move {
            let t = tenant::tenant_for(&a.conn)?;
            let r = vigil(&t, "GET", "trust/key", None).await?;
            if r.status != 200 {
                expect_ok(&r, "reading the attestation-results key")?;
            }
            print!("{}", r.text);
            Ok(ExitCode::SUCCESS)
        })),
    }
}

/// One node's gate answer, or why there is none.
async fn check_one(t: &Tenant, id: &str, a: &CheckArgs) -> Result<Value> {
    let mut path = format!(
        "trust/{id}?max_age={}&timeout={}",
        a.max_age, a.round_timeout
    );
    if let Some(n) = &a.nonce {
        path.push_str(&format!("&nonce={n}"));
    }
    let r = vigil(t, "GET", &path, None).await?;
    if r.status == 404 {
        return Ok(json!({
            "node_id": id,
            "trusted": false,
            "reasons": [{"id": "unknown", "context": {"message": "the node is not enrolled at the verifier"}}],
        }));
    }
    expect_ok(&r, &format!("checking {id}"))
}

async fn check(a: CheckArgs) -> Result<ExitCode> {
    let t = Arc::new(tenant::tenant_for(&a.conn)?);
    let ids = match &a.id {
        Some(id) => vec![id.clone()],
        None => {
            let selector: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let r = vigil(
                &t,
                "GET",
                &format!("nodes?label={}", selector.join(",")),
                None,
            )
            .await?;
            let nodes = expect_ok(&r, "selecting nodes by label")?;
            nodes["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    if ids.is_empty() {
        anyhow::bail!("no node carries the labels {:?}", a.labels);
    }
    let a = Arc::new(a);
    let limit = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let (t, a, limit, id) = (t.clone(), a.clone(), limit.clone(), id.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            (i, check_one(&t, &id, &a).await)
        });
    }
    let mut answers: Vec<Option<Result<Value>>> = ids.iter().map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (i, answer) = done.context("a gate check task failed")?;
        answers[i] = Some(answer);
    }
    let mut code = ExitCode::SUCCESS;
    let (mut untrusted, mut errors) = (false, false);
    for (id, answer) in ids.iter().zip(answers) {
        match answer {
            Some(Ok(v)) => {
                untrusted |= v["trusted"] != true;
                print_answer(&v, a.conn.json)?;
            }
            Some(Err(e)) => {
                errors = true;
                anstream::eprintln!(
                    "{}error:{} {id}: {}",
                    ERROR.render(),
                    ERROR.render_reset(),
                    vigil_service::report::chain(&e)
                );
            }
            None => errors = true,
        }
    }
    if untrusted {
        code = ExitCode::from(1);
    }
    if errors && !untrusted {
        code = ExitCode::from(2);
    }
    Ok(code)
}

/// A reason as one line: the event id, and for a PCR outside the class what was
/// quoted and what is allowed.
fn reason_text(r: &Value) -> String {
    let id = r["id"].as_str().unwrap_or("?");
    let c = &r["context"];
    if let (Some(got), Some(expected)) = (c["got"].as_str(), c["expected"].as_array()) {
        let allowed: Vec<&str> = expected.iter().filter_map(Value::as_str).collect();
        let class = c["class"]
            .as_str()
            .map(|c| format!(" of class {c}"))
            .unwrap_or_default();
        return format!("{id}: quoted {got}, allowed{class}: {}", allowed.join(", "));
    }
    match c.get("message").and_then(Value::as_str) {
        Some(m) => format!("{id}: {m}"),
        None => id.to_owned(),
    }
}

fn print_answer(v: &Value, as_json: bool) -> Result<()> {
    if as_json {
        return super::print_json(v);
    }
    let mut out = anstream::stdout().lock();
    let id = v["node_id"].as_str().unwrap_or("?");
    if v["trusted"] == true {
        let class = v["class"]
            .as_str()
            .map(|c| format!(", class {c}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}{id}{} {}trusted{} (evidence at {}{}{class})",
            EM.render(),
            EM.render_reset(),
            OK.render(),
            OK.render_reset(),
            v["evidence_time"],
            if v["attested_now"] == true {
                ", attested now"
            } else {
                ""
            },
        )?;
    } else {
        writeln!(
            out,
            "{}{id}{} {}NOT trusted{}",
            EM.render(),
            EM.render_reset(),
            ERROR.render(),
            ERROR.render_reset()
        )?;
        for r in v["reasons"].as_array().into_iter().flatten() {
            writeln!(out, "  {}", reason_text(r))?;
        }
    }
    if let Some(token) = v["token"].as_str() {
        writeln!(out, "  token: {token}")?;
    }
    Ok(())
}

fn verify_token(a: &VerifyArgs) -> Result<ExitCode> {
    let token = if a.token == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), results::MAX_TOKEN_LEN as u64 + 1),
            &mut s,
        )
        .context("reading the token from standard input")?;
        s
    } else {
        a.token.clone()
    };
    let key = super::read_file(&a.key, super::MAX_SMALL_FILE)?;
    let key = String::from_utf8(key).context("the key file is not PEM text")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match results::verify(&token, &key, a.nonce.as_deref(), now) {
        Ok(ear) => {
            if a.json {
                super::print_json(&ear)?;
            } else {
                let (id, appraisal) = ear
                    .submods
                    .iter()
                    .next()
                    .map_or(("?", None), |(k, v)| (k.as_str(), Some(v)));
                anstream::println!(
                    "{}valid{}: node {id}, ear_status {}, issued {}, expires {}",
                    OK.render(),
                    OK.render_reset(),
                    ear.ear_status.name(),
                    ear.iat,
                    ear.exp.unwrap_or(0)
                );
                if let Some(a) = appraisal {
                    anstream::println!(
                        "  trustworthiness: {}",
                        serde_json::to_string(&a.ear_trustworthiness_vector)?
                    );
                    anstream::println!(
                        "  verifier claims: {}",
                        serde_json::to_string(&a.ear_verifier_claims)?
                    );
                }
            }
            // The token holds; what it says (ear_status) is printed, not the exit status.
            Ok(ExitCode::SUCCESS)
        }
        Err(results::ResultsError::Key(e)) => Err(anyhow::anyhow!("{}: {e}", a.key.display())),
        Err(e) => {
            anstream::eprintln!("{}invalid{}: {e}", ERROR.render(), ERROR.render_reset());
            Ok(ExitCode::from(1))
        }
    }
}
