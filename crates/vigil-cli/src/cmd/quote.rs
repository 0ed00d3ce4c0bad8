//! `vigil quote check`: verify a TPM quote offline, as the verifier does (the operator's
//! `tpm2_checkquote`, accepting Keylime's quote string or tpm2-tools' three files).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use vigil_core::failure::Failure;
use vigil_core::policy::golden::GoldenPcrs;
use vigil_core::policy::tpm::{check_pcrs, ImaPcr, PcrCheck, TpmPolicy};
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuotePart, QuoteVerifier, VerifiedQuote};
use vigil_core::HashAlg;

use super::style::{EM, ERROR, OK};

/// TPM quotes.
#[derive(Debug, Subcommand)]
pub(crate) enum QuoteCommand {
    /// Verify a quote's signature, nonce and PCR digest with an attestation key.
    ///
    /// Exit status: 0 valid, 1 invalid (a well-formed quote that fails a check), 2 bad
    /// input (a file that cannot be read or is oversized, a quote string or structure
    /// that does not parse).
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
    /// Check the quoted PCRs against Keylime's `tpm_policy` (JSON text, or `@FILE`).
    #[arg(long, value_name = "JSON|@FILE")]
    tpm_policy: Option<String>,
    /// The node's public key (PEM) bound into PCR 16: PCR 16 must be its extend.
    #[arg(long, value_name = "FILE")]
    data_key: Option<PathBuf>,
    /// Check the quoted PCRs against a golden PCR set for the node's hardware class.
    #[arg(long, value_name = "FILE")]
    golden: Option<PathBuf>,
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

/// Reads a TPM structure file (bounded: they are a few KiB).
fn read(path: &Path) -> Result<Vec<u8>> {
    super::read_file(path, super::MAX_TPM_FILE)
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
    // A structure that does not parse is bad input (exit 2); only a well-formed quote
    // gets a verdict.
    if let Err(e) = quote.parse_parts() {
        let given = match (e.part, &args.attest, &args.sig, &args.pcrs) {
            (QuotePart::Attest, Some(path), ..)
            | (QuotePart::Signature, _, Some(path), _)
            | (QuotePart::Pcrs, .., Some(path)) => path.display().to_string(),
            _ => "--quote".to_owned(),
        };
        return Err(anyhow::Error::new(e).context(format!("malformed quote in {given}")));
    }
    let nonce = match (&args.nonce, &args.nonce_file) {
        (Some(n), _) => n.as_bytes().to_vec(),
        (None, Some(f)) => read(f)?,
        (None, None) => bail!("give --nonce or --nonce-file"),
    };
    let checks = PcrChecks::load(args)?;
    let verdict = QuoteVerifier::new(ak)
        .allow_rsapss(args.allow_rsapss)
        .verify(&quote, &nonce, args.hash_alg)
        .and_then(|v| checks.run(&v).map(|()| v));
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
                    // Keylime puts the reason under "error" (signature, nonce, digest),
                    // "data" (clock) or "context" (PCRs), with "message" beside it.
                    let mut msg = ["error", "data", "context", "message"]
                        .iter()
                        .find_map(|k| e.context[k].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    if let (Some(got), Some(expected)) =
                        (e.context.get("got"), e.context.get("expected"))
                    {
                        msg.push_str(&format!(" (got {got}, expected {expected})"));
                    } else if let Some(data) = e.context.get("data").filter(|d| d.is_array()) {
                        msg.push_str(&format!(" {data}"));
                    }
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

/// The PCR checks asked for besides the quote itself.
struct PcrChecks {
    tpm_policy: Option<TpmPolicy>,
    data_key: Option<String>,
    golden: Option<GoldenPcrs>,
}

impl PcrChecks {
    fn load(args: &CheckArgs) -> Result<Self> {
        let tpm_policy = match &args.tpm_policy {
            None => None,
            Some(text) => {
                let json = match text.strip_prefix('@') {
                    Some(file) => {
                        String::from_utf8(super::read_file(Path::new(file), super::MAX_SMALL_FILE)?)
                            .with_context(|| format!("{file} is not UTF-8"))?
                    }
                    None => text.clone(),
                };
                Some(TpmPolicy::from_json(&json).context("invalid --tpm-policy")?)
            }
        };
        let data_key = match &args.data_key {
            None => None,
            Some(f) => Some(
                String::from_utf8(super::read_file(f, super::MAX_SMALL_FILE)?)
                    .with_context(|| format!("{} is not a PEM text", f.display()))?,
            ),
        };
        let golden = match &args.golden {
            None => None,
            Some(f) => Some(
                GoldenPcrs::from_json(&String::from_utf8_lossy(&super::read_file(
                    f,
                    super::MAX_SMALL_FILE,
                )?))
                .with_context(|| format!("invalid golden PCR set {}", f.display()))?,
            ),
        };
        Ok(Self {
            tpm_policy,
            data_key,
            golden,
        })
    }

    /// Keylime's PCR checks (PCR 16 binding, `tpm_policy`) and the golden set, on a
    /// verified quote. PCR 10 is IMA's and is judged by `vigil ima check`, not here.
    fn run(&self, quote: &VerifiedQuote) -> Result<(), Failure> {
        let mut failure = Failure::new();
        if self.tpm_policy.is_some() || self.data_key.is_some() {
            let empty = TpmPolicy::empty();
            let verdict = check_pcrs(
                quote.bank,
                &quote.pcrs,
                &PcrCheck {
                    tpm_policy: self.tpm_policy.as_ref().unwrap_or(&empty),
                    data: self.data_key.as_deref(),
                    ima: &ImaPcr::Checked(Failure::new()),
                    measured_boot: None,
                },
            );
            failure.merge(verdict.failure);
        }
        if let Some(golden) = &self.golden {
            failure.merge(golden.check(quote.bank, &quote.pcrs));
        }
        if failure.is_empty() {
            Ok(())
        } else {
            Err(failure)
        }
    }
}
