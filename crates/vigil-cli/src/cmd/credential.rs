//! `vigil credential make|parse`: the registrar's MakeCredential as a command (the
//! operator's `tpm2_makecredential -T none`), writing and reading tpm2-tools' file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use vigil_core::tpm::credential::{make_credential, CredentialBlob};
use vigil_core::tpm::public::TpmPublic;

use super::style::EM;

/// Credential activation.
#[derive(Debug, Subcommand)]
pub(crate) enum CredentialCommand {
    /// Encrypt a secret to a TPM's EK for one AK (TPM2_MakeCredential in software).
    ///
    /// Writes tpm2-tools' credential file, which `tpm2_activatecredential -i` reads and
    /// Keylime's registrar sends base64-encoded as `blob`.
    Make(MakeArgs),
    /// Show the parts of a tpm2-tools credential file.
    Parse(ParseArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EkFormat {
    /// TPM2B_PUBLIC, as `tpm2_createek -u` or `tpm2_readpublic -o` write.
    Tpm2b,
    /// SubjectPublicKeyInfo (PEM or DER), with the TCG default EK template's parameters
    /// (nameAlg SHA-256, AES-128-CFB).
    Pem,
}

#[derive(Debug, Args)]
pub(crate) struct MakeArgs {
    /// The endorsement key's public part.
    #[arg(long, value_name = "FILE")]
    ek: PathBuf,
    /// How `--ek` is encoded.
    #[arg(long, value_enum, default_value = "tpm2b")]
    ek_format: EkFormat,
    /// The AK's name: a file with the binary name (`tpm2_createak -n`) or hex.
    #[arg(
        long,
        value_name = "FILE|HEX",
        required_unless_present = "ak",
        conflicts_with = "ak"
    )]
    ak_name: Option<String>,
    /// The AK's TPM2B_PUBLIC (`tpm2_createak -u`); its name is computed.
    #[arg(long, value_name = "FILE")]
    ak: Option<PathBuf>,
    /// The secret to protect (1 to digest-size-of-EK-nameAlg bytes, 32 for SHA-256).
    #[arg(long, value_name = "FILE")]
    secret: PathBuf,
    /// Where to write the credential file.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ParseArgs {
    /// A tpm2-tools credential file (`tpm2_makecredential -o`, `vigil credential make`).
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(cmd: CredentialCommand) -> Result<ExitCode> {
    match cmd {
        CredentialCommand::Make(args) => make(&args),
        CredentialCommand::Parse(args) => parse(&args),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn ak_name(args: &MakeArgs) -> Result<Vec<u8>> {
    match (&args.ak_name, &args.ak) {
        (_, Some(ak)) => Ok(TpmPublic::parse_tpm2b(&read(ak)?)
            .with_context(|| format!("invalid AK {}", ak.display()))?
            .name()),
        // A file when one exists by that name (tpm2-tools writes names as binary),
        // otherwise hex as `tpm2_makecredential -n` takes it.
        (Some(name), None) if Path::new(name).is_file() => read(Path::new(name)),
        (Some(name), None) => hex::decode(name.trim())
            .with_context(|| format!("--ak-name '{name}' is neither a file nor hexadecimal")),
        (None, None) => bail!("give --ak-name or --ak"),
    }
}

fn make(args: &MakeArgs) -> Result<ExitCode> {
    let ek_bytes = read(&args.ek)?;
    let ek = match args.ek_format {
        EkFormat::Tpm2b => TpmPublic::parse_tpm2b(&ek_bytes),
        EkFormat::Pem => TpmPublic::ek_from_spki(&ek_bytes),
    }
    .with_context(|| format!("invalid EK {}", args.ek.display()))?;
    let name = ak_name(args)?;
    let secret = read(&args.secret)?;
    let blob = make_credential(&ek, &name, &secret, &mut rand_core::OsRng)
        .context("cannot make the credential")?;
    std::fs::write(&args.output, blob.to_tpm2_tools())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn parse(args: &ParseArgs) -> Result<ExitCode> {
    let blob = CredentialBlob::parse_tpm2_tools(&read(&args.file)?)
        .with_context(|| format!("invalid credential file {}", args.file.display()))?;
    if args.json {
        super::print_json(&json!({
            "integrity_hmac": hex::encode(blob.integrity()),
            "enc_identity": hex::encode(blob.enc_identity()),
            "encrypted_secret": hex::encode(blob.encrypted_secret()),
            "keylime_blob": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                blob.to_tpm2_tools()
            ),
        }))?;
    } else {
        let mut out = anstream::stdout().lock();
        let (em, r) = (EM.render(), EM.render_reset());
        writeln!(
            out,
            "{em}integrity HMAC{r} ({} bytes): {}",
            blob.integrity().len(),
            hex::encode(blob.integrity())
        )?;
        writeln!(
            out,
            "{em}encrypted identity{r} ({} bytes, a {}-byte secret): {}",
            blob.enc_identity().len(),
            blob.enc_identity().len() - 2,
            hex::encode(blob.enc_identity())
        )?;
        writeln!(
            out,
            "{em}encrypted seed{r} ({} bytes): {}",
            blob.encrypted_secret().len(),
            hex::encode(blob.encrypted_secret())
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
