//! `vigil ekcert verify`: is a TPM's EK certificate issued by a trusted vendor CA, and
//! does it certify this TPM's EK? The tenant's `require_ek_cert` check, offline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use vigil_core::tpm::ek_cert::{
    self, format_unix_time, parse_rfc3339, CertError, EkCert, EkCertStore, KeyMatchError,
    LinkSource, MalformedCertAction,
};

use super::style::{EM, ERROR, OK, WARN};

/// EK certificates.
#[derive(Debug, Subcommand)]
pub(crate) enum EkcertCommand {
    /// Verify an EK certificate against a store of vendor CA certificates.
    ///
    /// Every certificate in the store is a trust anchor (as in Keylime); intermediates
    /// (e.g. read from the TPM's NV indices 0x01c00100…) can bridge the gap.
    /// Exit status: 0 trusted, 1 not trusted, 2 bad input.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The EK certificate: DER (NV padding allowed), PEM or base64 DER.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// Intermediate CA certificates (PEM bundle or concatenated DER), repeatable.
    #[arg(long, value_name = "FILE")]
    intermediate: Vec<PathBuf>,
    /// The trust store: a directory of `*.pem` files (Keylime's `tpm_cert_store`
    /// layout; a file may hold several certificates) or a single certificate file.
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// The EK's public key: TPM2B_PUBLIC (`tpm2_createek -u`) or a PEM/DER
    /// SubjectPublicKeyInfo. The certificate must hold this key.
    #[arg(long, value_name = "FILE")]
    ek: Option<PathBuf>,
    /// Check validity periods at this time (RFC 3339, or `now`). Keylime never checks
    /// them; without this option neither does Vigil.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Refuse certificates that are not DER (Keylime's `malformed_cert_action = reject`).
    #[arg(long)]
    reject_malformed: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: EkcertCommand) -> Result<ExitCode> {
    match cmd {
        EkcertCommand::Verify(args) => verify(&args),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads a store directory as Keylime does (`*.pem`, in name order for stable
/// output), or a single file.
pub(crate) fn load_store(path: &Path) -> Result<EkCertStore> {
    Ok(vigil_tls::load_cert_store(path)?)
}

fn parse_at(text: &str) -> Result<i64> {
    if text == "now" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?;
        return i64::try_from(now.as_secs()).context("the system clock is out of range");
    }
    parse_rfc3339(text).with_context(|| {
        format!("--at: '{text}' is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z) or 'now'")
    })
}

fn verify(args: &VerifyArgs) -> Result<ExitCode> {
    let action = if args.reject_malformed {
        MalformedCertAction::Reject
    } else {
        MalformedCertAction::Accept
    };
    let cert = EkCert::parse(&read(&args.cert)?)
        .with_context(|| format!("invalid EK certificate {}", args.cert.display()))?;
    let mut intermediates = Vec::new();
    for path in &args.intermediate {
        intermediates.extend(
            EkCert::parse_all(&read(path)?)
                .with_context(|| format!("invalid intermediate {}", path.display()))?,
        );
    }
    let store = load_store(&args.store)?;
    let at = args.at.as_deref().map(parse_at).transpose()?;
    let ek_bytes = args.ek.as_deref().map(read).transpose()?;

    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    for skipped in store.skipped() {
        warnings.push(format!(
            "store entry {skipped} holds no certificate; skipped"
        ));
    }
    for (what, c) in std::iter::once(("EK certificate", &cert))
        .chain(intermediates.iter().map(|c| ("intermediate", c)))
    {
        match c.check_encoding(action) {
            Ok(()) if !c.is_der() => warnings.push(format!(
                "{what} '{}' is not DER: {}",
                c.subject(),
                c.der_issues().join("; ")
            )),
            Ok(()) => {}
            Err(e @ CertError::NotDer { .. }) => failures.push(format!("{what}: {e}")),
            Err(e) => return Err(e.into()),
        }
    }
    let key_match = match &ek_bytes {
        None => None,
        Some(bytes) => match cert.check_ek_public(bytes) {
            Ok(()) => Some(true),
            Err(KeyMatchError::BadEk(e)) => {
                bail!(
                    "invalid EK public key {}: {e}",
                    args.ek.as_deref().unwrap_or(Path::new("")).display()
                )
            }
            Err(e) => {
                failures.push(e.to_string());
                Some(false)
            }
        },
    };
    let chain = match ek_cert::verify(&cert, &intermediates, &store, at) {
        Ok(chain) => Some(chain),
        Err(e) => {
            failures.push(format!("not trusted: {e}"));
            None
        }
    };
    let trusted = failures.is_empty();

    if args.json {
        super::print_json(&json!({
            "trusted": trusted,
            "ek_cert": {
                "subject": cert.subject().to_string(),
                "issuer": cert.issuer().to_string(),
                "serial": hex::encode(cert.serial()),
                "not_before": format_unix_time(cert.not_before()),
                "not_after": format_unix_time(cert.not_after()),
                "signature_algorithm": cert.signature_algorithm().to_string(),
                "der": cert.is_der(),
                "der_issues": cert.der_issues(),
                "padding": cert.padding(),
            },
            "chain": chain.as_ref().map(|c| &c.links),
            "ek_key_match": key_match,
            "checked_at": at.map(format_unix_time),
            "store_certificates": store.len(),
            "failures": failures,
            "warnings": warnings,
        }))?;
    } else {
        {
            let mut err = anstream::stderr().lock();
            for w in &warnings {
                writeln!(err, "{}warning:{} {w}", WARN.render(), WARN.render_reset())?;
            }
        }
        let mut out = anstream::stdout().lock();
        let (em, r) = (EM.render(), EM.render_reset());
        writeln!(out, "EK certificate: {em}{}{r}", cert.subject())?;
        writeln!(out, "  issuer: {}", cert.issuer())?;
        writeln!(
            out,
            "  valid {} to {}{}",
            format_unix_time(cert.not_before()),
            format_unix_time(cert.not_after()),
            if at.is_some() { "" } else { " (not checked)" }
        )?;
        if let Some(chain) = &chain {
            writeln!(out, "chain:")?;
            for link in &chain.links {
                let from = match &link.source {
                    LinkSource::EkCert => "EK certificate".to_string(),
                    LinkSource::Intermediate { index } => format!("intermediate #{}", index + 1),
                    LinkSource::Store { entry } => format!("trust store: {entry}"),
                };
                writeln!(out, "  {em}{}{r}  ({from})", link.subject)?;
            }
        }
        if key_match == Some(true) {
            writeln!(out, "EK public key: matches the certificate")?;
        }
        for f in &failures {
            writeln!(out, "  {}FAIL{} {f}", ERROR.render(), ERROR.render_reset())?;
        }
        if trusted {
            writeln!(out, "{}TRUSTED{}", OK.render(), OK.render_reset())?;
        } else {
            writeln!(out, "{}NOT TRUSTED{}", ERROR.render(), ERROR.render_reset())?;
        }
    }
    Ok(if trusted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
