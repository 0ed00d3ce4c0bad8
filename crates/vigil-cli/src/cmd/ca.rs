//! `vigil ca init|issue`: the TLS certificate authority for Vigil's services, laid out
//! like Keylime's `cv_ca` (see `vigil_tls::ca`), so mTLS works with no openssl.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use vigil_tls::ca::{self, CaDir, Kind};

use super::style::EM;

/// Where the registrar looks by default (`<state_dir>/cv_ca`).
const DEFAULT_DIR: &str = "/var/lib/vigil/cv_ca";

/// The TLS certificate authority.
#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a CA with a server and a client certificate (Keylime's
    /// `tls_dir = generate`): cacert.crt, server-cert.crt / server-private.pem,
    /// client-cert.crt / client-private.pem.
    Init(InitArgs),
    /// Issue another certificate from the CA: NAME-cert.crt / NAME-private.pem.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The CA directory (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Subject alternative names of the server certificate (DNS names or IP
    /// addresses), repeatable: every name clients reach the services by, since
    /// `vigil tenant` checks the one it connects to.
    #[arg(long = "san", value_name = "NAME", default_values = ["localhost", "127.0.0.1", "::1"])]
    sans: Vec<String>,
    /// Replace an existing CA (every certificate it issued stops being trusted).
    #[arg(long)]
    force: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    /// clientAuth: an admin or tenant identity.
    Client,
    /// serverAuth, with --san names.
    Server,
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The certificate's name: its subject CN and file name prefix ([A-Za-z0-9._-]).
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The CA directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// What the certificate is for.
    #[arg(long, value_enum, default_value_t = KindArg::Client)]
    kind: KindArg,
    /// Subject alternative names (server certificates), repeatable.
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,
    /// Replace an existing certificate of that name.
    #[arg(long)]
    force: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: CaCommand) -> Result<ExitCode> {
    match cmd {
        CaCommand::Init(a) => {
            let dir = ca::init(&a.dir, &a.sans, a.force)
                .with_context(|| format!("cannot create the CA in {}", a.dir.display()))?;
            report(&dir, &["server", "client"], a.json)
        }
        CaCommand::Issue(a) => {
            let dir = CaDir::new(&a.dir);
            let kind = match a.kind {
                KindArg::Client => Kind::Client,
                KindArg::Server => Kind::Server,
            };
            ca::issue(&dir, &a.name, kind, &a.sans, a.force).with_context(|| {
                format!(
                    "cannot issue '{}' from the CA in {}",
                    a.name,
                    a.dir.display()
                )
            })?;
            report(&dir, &[a.name.as_str()], a.json)
        }
    }
}

fn report(dir: &CaDir, names: &[&str], as_json: bool) -> Result<ExitCode> {
    if as_json {
        let certs: Vec<_> = names
            .iter()
            .map(|n| json!({"name": n, "cert": dir.cert(n), "key": dir.key(n)}))
            .collect();
        super::print_json(&json!({"ca_cert": dir.ca_cert(), "certificates": certs}))?;
    } else {
        anstream::println!(
            "CA certificate {}{}{}",
            EM.render(),
            dir.ca_cert().display(),
            EM.render_reset()
        );
        for n in names {
            anstream::println!(
                "{n}: {} (key {})",
                dir.cert(n).display(),
                dir.key(n).display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
