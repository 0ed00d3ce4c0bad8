//! `vigil quote check`: verify a TPM quote offline, as the verifier does (the operator's
//! `tpm2_checkquote`, accepting Keylime's quote string or tpm2-tools' three files).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier};
use vigil_core::HashAlg;

use super::style::{EM, ERROR, OK};

/// TPM quotes.
#[derive(Debug, Subcommand)]
pub(crate) enum QuoteCommand {
    /// Verify a quote's signature, nonce and PCR digest with an attestation key.
    ///
    /// Exit status: 0 valid, 1 invalid, 2 bad input.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Keylime's quote string `r<attest>:<signature>:<pcrs>`.
    #[arg(long, value_name = "STRING", required_unless_present = "attest",
          conflicts_with_all = ["attest", "sig", "pcrs"])]
    quote: Option<String>,
    /// tpm2-tools' TPMS_ATTEST file (`tpm2_quote -m`).
    #[arg(long, value_name = "FILE", requires_all = ["sig", "pcrs"])]
    attest: Option<PathBuf>,
    /// tpm2-tools' signature file (`tpm2_quote -s`).
    #[arg(long, value_name = "FILE")]
    sig: Option<PathBuf>,
    /// The format of `--sig`, as `tpm2_quote -f` wrote it: `tss` (a TPMT_SIGNATURE, the
    /// default) or `plain` (bare RSASSA signature or DER ECDSA; scheme from the AK).
    #[arg(long, value_enum, default_value = "tss", requires = "sig")]
    sig_format: SigFormat,
    /// tpm2-tools' PCR file (`tpm2_quote -o`).
    #[arg(long, value_name = "FILE")]
    pcrs: Option<PathBuf>,
    /// The attestation key: PEM or DER SubjectPublicKeyInfo, or a TPM2B_PUBLIC file.
    #[arg(long, value_name = "FILE")]
    ak: PathBuf,
    /// The nonce the quote was requested with, as text.
    #[arg(long, value_name = "TEXT", required_unless_present = "nonce_file")]
    nonce: Option<String>,
    /// The nonce as raw bytes in a file (tpm2-tools' `-q` input).
    #[arg(long, value_name = "FILE", conflicts_with = "nonce")]
    nonce_file: Option<PathBuf>,
    /// The PCR bank the quote must be signed with.
    #[arg(long, value_name = "ALG", default_value = "sha256")]
    hash_alg: HashAlg,
    /// Also accept RSA-PSS signatures (Keylime refuses them).
    #[arg(long)]
    allow_rsapss: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SigFormat {
    /// TPMT_SIGNATURE.
    Tss,
    /// The bare signature.
    Plain,
}

pub(crate) fn run(cmd: QuoteCommand) -> Result<ExitCode> {
    match cmd {
        QuoteCommand::Check(args) => check(&args),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    let ak = AkPublicKey::from_spki_or_tpm2b(&read(&args.ak)?)
        .with_context(|| format!("invalid AK {}", args.ak.display()))?;
    let quote = match (&args.quote, &args.attest, &args.sig, &args.pcrs) {
        (Some(text), ..) => KeylimeQuote::parse(text)?,
        (None, Some(a), Some(s), Some(p)) => KeylimeQuote {
            attest: read(a)?,
            signature: match args.sig_format {
                SigFormat::Tss => read(s)?,
                SigFormat::Plain => ak
                    .signature_from_plain(&read(s)?, args.hash_alg)
                    .with_context(|| format!("invalid signature {}", s.display()))?,
            },
            pcr_blob: read(p)?,
        },
        _ => bail!("give --quote, or --attest with --sig and --pcrs"),
    };
    let nonce = match (&args.nonce, &args.nonce_file) {
        (Some(n), _) => n.as_bytes().to_vec(),
        (None, Some(f)) => read(f)?,
        (None, None) => bail!("give --nonce or --nonce-file"),
    };
    let verdict = QuoteVerifier::new(ak)
        .allow_rsapss(args.allow_rsapss)
        .verify(&quote, &nonce, args.hash_alg);
    if args.json {
        let out = match &verdict {
            Ok(v) => json!({
                "valid": true,
                "bank": v.bank,
                "pcrs": v.pcrs.iter().map(|(i, d)| (i.to_string(), serde_json::Value::String(d.to_hex()))).collect::<serde_json::Map<_, _>>(),
                "clock_info": v.clock_info,
                "firmware_version": v.firmware_version,
            }),
            Err(f) => json!({"valid": false, "failures": f.events()}),
        };
        super::print_json(&out)?;
    } else {
        let mut out = anstream::stdout().lock();
        let (em, r) = (EM.render(), EM.render_reset());
        match &verdict {
            Ok(v) => {
                writeln!(out, "PCRs ({}):", v.bank)?;
                for (i, d) in &v.pcrs {
                    writeln!(out, "  {em}{i:>2}{r}: {d}")?;
                }
                let c = v.clock_info;
                writeln!(
                    out,
                    "clock {} ms, resets {}, restarts {}, safe {}",
                    c.clock, c.reset_count, c.restart_count, c.safe
                )?;
                writeln!(out, "{}VALID{}", OK.render(), OK.render_reset())?;
            }
            Err(f) => {
                for e in f.events() {
                    // Keylime puts the reason under "error" (signature, nonce, digest) or
                    // "data" (clock), with a generic "message" beside it.
                    let msg = ["error", "data", "message"]
                        .iter()
                        .find_map(|k| e.context[k].as_str())
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "  {}FAIL{} {em}{}{r}  {msg}",
                        ERROR.render(),
                        ERROR.render_reset(),
                        e.event_id
                    )?;
                }
                writeln!(out, "{}INVALID{}", ERROR.render(), ERROR.render_reset())?;
            }
        }
    }
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
