//! `vigil class`: hardware classes at the verifier (the trust gate's known-good PCR
//! values per kind of machine). A class is created from a golden-set file or learnt
//! from a known-good node's verified quote, widened with another node's values after
//! a firmware update, listed, shown and deleted (refused while nodes use it).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vigil_core::policy::golden::GoldenPcrs;

use super::gate::{expect_ok, vigil};
use super::style::{EM, OK};
use super::tenant::{self, Conn};
use crate::tenant::flow::Tenant;

/// Hardware classes.
#[derive(Debug, Args)]
pub(crate) struct ClassArgs {
    #[command(subcommand)]
    command: ClassCommand,
}

#[derive(Debug, Subcommand)]
enum ClassCommand {
    /// Creates a class from a golden PCR set file, or learnt from a known-good node
    /// (its PCRs from a quote taken now and verified with its AK).
    Create(CreateArgs),
    /// Also allows a node's current values (a canary after a firmware update).
    Widen(WidenArgs),
    /// Every class, with how many nodes use it.
    List(ConnOnly),
    /// One class, with its golden values.
    Show(NameArg),
    /// Deletes a class (refused while nodes use it).
    Delete(NameArg),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The class name.
    name: String,
    /// A golden PCR set: `{"name", "bank", "pcrs": {"0": ["hex", ...], ...}}`.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "from_node",
        required_unless_present = "from_node"
    )]
    golden: Option<PathBuf>,
    /// Learn the values from this known-good node.
    #[arg(long, value_name = "ID")]
    from_node: Option<String>,
    /// The PCRs learnt from the node (e.g. 0,2,4,7 or 0-7; TXT: 17-19,22).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "0-7",
        requires = "from_node"
    )]
    pcrs: String,
    /// What the class is.
    #[arg(long, default_value = "")]
    description: String,
    /// The measured-boot policy its nodes are meant to use, by name.
    #[arg(long, value_name = "NAME")]
    mb_policy: Option<String>,
    /// The runtime policy its nodes are meant to use, by name.
    #[arg(long, value_name = "NAME")]
    runtime_policy: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
struct WidenArgs {
    /// The class name.
    name: String,
    /// The node whose current values are allowed too.
    #[arg(long, value_name = "ID")]
    from_node: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
struct NameArg {
    /// The class name.
    name: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
struct ConnOnly {
    #[command(flatten)]
    conn: Conn,
}

pub(crate) fn run(args: ClassArgs) -> Result<ExitCode> {
    tenant::finish(tenant::block_on(async move {
        match args.command {
            ClassCommand::Create(a) => create(a).await,
            ClassCommand::Widen(a) => widen(a).await,
            ClassCommand::List(a) => {
                let t = tenant::tenant_for(&a.conn)?;
                let v = expect_ok(&vigil(&t, "GET", "classes", None).await?, "listing classes")?;
                if a.conn.json {
                    super::print_json(&v)?;
                    return Ok(ExitCode::SUCCESS);
                }
                let mut out = anstream::stdout().lock();
                let classes = v["classes"].as_array().cloned().unwrap_or_default();
                if classes.is_empty() {
                    writeln!(out, "no hardware classes")?;
                }
                for c in classes {
                    writeln!(
                        out,
                        "{}  {} node(s)  PCRs {}  {}",
                        c["name"].as_str().unwrap_or("?"),
                        c["nodes"],
                        pcr_keys(&c["golden"]),
                        c["description"].as_str().unwrap_or("")
                    )?;
                }
                Ok(ExitCode::SUCCESS)
            }
            ClassCommand::Show(a) => {
                let t = tenant::tenant_for(&a.conn)?;
                let v = expect_ok(
                    &vigil(&t, "GET", &format!("classes/{}", a.name), None).await?,
                    &format!("reading class {}", a.name),
                )?;
                if a.conn.json {
                    super::print_json(&v)?;
                } else {
                    anstream::println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Ok(ExitCode::SUCCESS)
            }
            ClassCommand::Delete(a) => {
                let t = tenant::tenant_for(&a.conn)?;
                expect_ok(
                    &vigil(&t, "DELETE", &format!("classes/{}", a.name), None).await?,
                    &format!("deleting class {}", a.name),
                )?;
                done(&a.conn, &a.name, "deleted")
            }
        }
    }))
}

/// The PCR numbers of a golden set, `0,2,4`.
fn pcr_keys(golden: &Value) -> String {
    golden["pcrs"]
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn done(conn: &Conn, name: &str, what: &str) -> Result<ExitCode> {
    if conn.json {
        super::print_json(&json!({"class": name, what: true}))?;
    } else {
        anstream::println!(
            "{}{what}{} class {}{name}{}",
            OK.render(),
            OK.render_reset(),
            EM.render(),
            EM.render_reset()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The node's values of `pcrs` (`0-7`, `0,2,4`), from a quote the verifier takes now
/// and verifies, as a golden set named `name`.
async fn learn(t: &Tenant, name: &str, node: &str, pcrs: &str) -> Result<GoldenPcrs> {
    let v = expect_ok(
        &vigil(t, "GET", &format!("nodes/{node}/pcrs?pcrs={pcrs}"), None).await?,
        &format!("reading {node}'s PCRs"),
    )?;
    let values: serde_json::Map<String, Value> = v["pcrs"]
        .as_object()
        .context("the verifier's answer has no PCR values")?
        .iter()
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    let set = json!({"name": name, "bank": v["bank"], "pcrs": values});
    GoldenPcrs::from_json(&set.to_string()).context("the node's PCR values")
}

async fn create(a: CreateArgs) -> Result<ExitCode> {
    let t = tenant::tenant_for(&a.conn)?;
    let golden = match (&a.golden, &a.from_node) {
        (Some(file), _) => {
            let text = super::read_file(file, super::MAX_SMALL_FILE)?;
            let text = String::from_utf8(text).context("the golden set is not UTF-8 text")?;
            GoldenPcrs::from_json(&text).with_context(|| format!("{}", file.display()))?
        }
        (None, Some(node)) => learn(&t, &a.name, node, &a.pcrs).await?,
        (None, None) => anyhow::bail!("give --golden FILE or --from-node ID"),
    };
    if golden.name() != a.name {
        anyhow::bail!(
            "the golden set is named {:?}: name the class after it",
            golden.name()
        );
    }
    let body = json!({
        "description": a.description,
        "golden": serde_json::from_str::<Value>(&golden.to_json())?,
        "mb_policy": a.mb_policy,
        "runtime_policy": a.runtime_policy,
    });
    expect_ok(
        &vigil(&t, "POST", &format!("classes/{}", a.name), Some(&body)).await?,
        &format!("creating class {}", a.name),
    )?;
    done(&a.conn, &a.name, "created")
}

async fn widen(a: WidenArgs) -> Result<ExitCode> {
    let t = tenant::tenant_for(&a.conn)?;
    let class = expect_ok(
        &vigil(&t, "GET", &format!("classes/{}", a.name), None).await?,
        &format!("reading class {}", a.name),
    )?;
    let mut golden = GoldenPcrs::from_json(&class["golden"].to_string())
        .with_context(|| format!("class {}'s golden set", a.name))?;
    let pcrs = golden
        .allowed()
        .keys()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let node = learn(&t, &a.name, &a.from_node, &pcrs).await?;
    golden.widen(&node)?;
    let body = json!({
        "description": class["description"],
        "golden": serde_json::from_str::<Value>(&golden.to_json())?,
        "mb_policy": class["mb_policy"],
        "runtime_policy": class["runtime_policy"],
    });
    expect_ok(
        &vigil(&t, "PUT", &format!("classes/{}", a.name), Some(&body)).await?,
        &format!("widening class {}", a.name),
    )?;
    done(&a.conn, &a.name, "widened")
}
