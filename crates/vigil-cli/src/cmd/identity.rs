//! `vigil identity nonce|attest|verify`: workload identity's reference flow for systems
//! other than SPIRE (docs/spire.md). The server side asks the verifier for a nonce
//! (usable once, for a few minutes); on the node, `attest` asks the agent's node-local
//! socket for an identity quote over it; back on the server side, `verify` has the
//! verifier check that quote against that nonce (`POST /vigil/v1/identity/verify`, a
//! client certificate with the identity role) and prints the SPIFFE ID and the node's
//! selectors as JSON.
//!
//! ```sh
//! NONCE=$(vigil identity nonce)
//! ssh node vigil identity attest --nonce "$NONCE" > evidence.json
//! vigil identity verify --nonce "$NONCE" --evidence evidence.json
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vigil_service::client::{Client, Endpoint, Limits};

use super::{print_json, read_file, MAX_SMALL_FILE};

/// `vigil identity` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCommand {
    /// On the server side: a nonce from the verifier for the node's identity quote
    /// (usable once, for a few minutes), printed alone on a line.
    Nonce(VerifierArgs),
    /// On the node: an identity quote over NONCE from the agent's node-local socket,
    /// printed as JSON evidence (agent_uuid, hash_alg, nonce, quote).
    Attest(AttestArgs),
    /// On the server side: has the verifier check the evidence against the nonce this
    /// side picked; prints the SPIFFE ID and selectors as JSON (exit 0), or the
    /// verifier's reason for refusing (exit 1).
    Verify(VerifyArgs),
}

/// `vigil identity attest` options.
#[derive(Debug, Args)]
pub(crate) struct AttestArgs {
    /// The nonce the server side picked (letters and digits).
    #[arg(long)]
    nonce: String,
    /// The agent's node-local identity socket.
    #[arg(long, value_name = "PATH", default_value = "/run/vigil/agent.sock")]
    socket: PathBuf,
}

/// How to reach the verifier's identity routes.
#[derive(Debug, Args)]
pub(crate) struct VerifierArgs {
    /// The verifier's address.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8881")]
    verifier: SocketAddr,
    /// The directory of the CA certificate (cacert.crt) and the client certificate.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vigil/cv_ca")]
    tls_dir: PathBuf,
    /// The client certificate's name in the TLS directory: NAME-cert.crt and
    /// NAME-private.pem (one authorised for the identity role).
    #[arg(long, value_name = "NAME", default_value = "client")]
    cert: String,
}

impl VerifierArgs {
    /// `POST path` with `body`: the verifier's `results`, or its reason for refusing.
    async fn post(&self, path: &str, body: Option<&Value>) -> Result<Result<Value, String>> {
        let tls = vigil_tls::client_config(
            &self.tls_dir.join("cacert.crt"),
            Some((
                &self.tls_dir.join(format!("{}-cert.crt", self.cert)),
                &self.tls_dir.join(format!("{}-private.pem", self.cert)),
            )),
        )?;
        let limits = Limits {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            body_limit: 1 << 20,
        };
        let answer = Client::new(limits)
            .request(
                &Endpoint::addr(self.verifier).with_tls(Arc::new(tls)),
                hyper::Method::POST,
                path,
                body.map(|b| b.to_string().into_bytes()),
            )
            .await?;
        let mut json = answer.json();
        if answer.status != 200 {
            return Ok(Err(format!(
                "refused ({}): {}",
                answer.status,
                json["status"].as_str().unwrap_or("(no reason)")
            )));
        }
        Ok(Ok(json["results"].take()))
    }
}

/// `vigil identity verify` options.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The nonce this side got from the verifier (not the one the evidence says).
    #[arg(long)]
    nonce: String,
    /// The node's evidence, as `vigil identity attest` printed it.
    #[arg(long, value_name = "FILE")]
    evidence: PathBuf,
    /// The SPIFFE ID to issue [default: the verifier's, spiffe://<identity_trust_domain>/spire/agent/vigil/<uuid>].
    #[arg(long)]
    spiffe_id: Option<String>,
    #[command(flatten)]
    verifier: VerifierArgs,
}

pub(crate) fn run(cmd: IdentityCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd {
        IdentityCommand::Nonce(v) => runtime.block_on(nonce(&v)),
        IdentityCommand::Attest(a) => runtime.block_on(attest(&a)),
        IdentityCommand::Verify(a) => runtime.block_on(verify(&a)),
    }
}

fn check_nonce(nonce: &str) -> Result<()> {
    if nonce.is_empty() || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("the nonce must be 1 to 64 letters and digits");
    }
    Ok(())
}

async fn attest(a: &AttestArgs) -> Result<ExitCode> {
    check_nonce(&a.nonce)?;
    let info = vigil_spire::local::get(&a.socket, "/v2.6/agent/info").await?;
    let quote = vigil_spire::local::get(
        &a.socket,
        &format!("/v2.6/quotes/identity?nonce={}", a.nonce),
    )
    .await?;
    print_json(&json!({
        "agent_uuid": info["agent_uuid"],
        "hash_alg": info["tpm_hash_alg"],
        "nonce": a.nonce,
        "quote": quote["quote"],
    }))?;
    Ok(ExitCode::SUCCESS)
}

async fn verify(a: &VerifyArgs) -> Result<ExitCode> {
    check_nonce(&a.nonce)?;
    let evidence: Value = serde_json::from_slice(&read_file(&a.evidence, MAX_SMALL_FILE)?)
        .with_context(|| format!("{} is not JSON", a.evidence.display()))?;
    let field = |k: &str| {
        evidence[k]
            .as_str()
            .with_context(|| format!("{} has no {k}", a.evidence.display()))
    };
    let mut body = json!({
        "agent_uuid": field("agent_uuid")?,
        "hash_alg": field("hash_alg")?,
        "quote": field("quote")?,
        "nonce": a.nonce,
    });
    if let Some(id) = &a.spiffe_id {
        body["spiffe_id"] = json!(id);
    }
    match a
        .verifier
        .post("/vigil/v1/identity/verify", Some(&body))
        .await?
    {
        Ok(results) => {
            print_json(&results)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("vigil identity verify: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn nonce(v: &VerifierArgs) -> Result<ExitCode> {
    match v.post("/vigil/v1/identity/nonce", None).await? {
        Ok(results) => {
            let nonce = results["nonce"]
                .as_str()
                .context("the verifier sent no nonce")?;
            println!("{nonce}");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("vigil identity nonce: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}
