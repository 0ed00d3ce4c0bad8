//! `vigil policy sign|convert|validate`: offline work on policy files before they are
//! pushed — DSSE signing as `keylime-policy sign runtime` does it, legacy allowlist
//! conversion as `keylime_convert_runtime_policy` does it, and validation of runtime
//! policies (plain, DSSE-signed or legacy) and measured-boot reference states.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::Args;
use serde_json::{json, Value};
use vigil_core::ima::keyring::{parse_ima_key, ImaKeyring};
use vigil_core::policy::measured_boot::RefState;
use vigil_core::policy::runtime::{
    dsse_payload, sign_dsse, verify_dsse, DsseSigningKey, RuntimePolicy,
};

use super::style::{ERROR, OK, WARN};
use crate::policy_create::{python_json, timestamp};

/// Where `keylime-policy sign` writes a key it generates when not told otherwise.
const DEFAULT_KEY_FILE: &str = "keylime-ecdsa-key.pem";

/// The DSSE backends of `keylime-policy sign runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    /// `keyid` is the SHA-256 of the public key; verifiers need the public key.
    Ecdsa,
    /// A self-signed certificate for the key is written with -c and carried in `keyid`.
    X509,
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The runtime policy (format v1 JSON) to sign.
    #[arg(short = 'r', long = "runtime-policy", value_name = "FILE")]
    policy: PathBuf,
    /// The EC private key (PEM, P-256, P-384 or P-521) to sign with; without it a P-256
    /// key is generated and written to --keypath.
    #[arg(
        short = 'k',
        long = "keyfile",
        value_name = "KEY",
        conflicts_with = "keypath"
    )]
    keyfile: Option<PathBuf>,
    /// Where to write the generated key [default: keylime-ecdsa-key.pem]; an existing
    /// file is not overwritten.
    #[arg(short = 'p', long = "keypath", value_name = "FILE")]
    keypath: Option<PathBuf>,
    /// The DSSE backend.
    #[arg(
        short = 'b',
        long,
        value_enum,
        default_value = "ecdsa",
        ignore_case = true
    )]
    backend: Backend,
    /// Where to write the self-signed certificate (required with --backend x509).
    #[arg(short = 'c', long = "cert-outfile", value_name = "FILE")]
    cert_outfile: Option<PathBuf>,
    /// Where to write the signed policy ('-' for stdout).
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// A legacy allowlist: `<digest> <path>` lines (sha256sum output), or a pre-6.6 JSON
    /// allowlist with `hashes`.
    #[arg(short = 'a', long, value_name = "FILE")]
    allowlist: PathBuf,
    /// An exclude list: one Python regular expression per line (blank lines and `#`
    /// lines skipped).
    #[arg(short = 'e', long, value_name = "FILE")]
    excludelist: Option<PathBuf>,
    /// Public keys (or certificates) to add to `verification-keys`, the keyring ima-sig
    /// signatures are checked with.
    #[arg(short = 'v', long = "verification-keys", alias = "verification_keys", value_name = "KEY", num_args = 1..)]
    verification_keys: Vec<PathBuf>,
    /// Where to write the v1 policy ('-' for stdout).
    #[arg(short, long = "output", alias = "output_file", default_value = "-")]
    output: PathBuf,
}

/// What `validate` reads the file as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Guess from the content.
    Auto,
    /// A runtime policy: v1 JSON, or a DSSE envelope holding one.
    Runtime,
    /// A legacy allowlist (flat or JSON with `hashes`).
    Allowlist,
    /// A measured-boot reference state (for the `example` policy).
    MeasuredBoot,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The policy file.
    file: PathBuf,
    /// What the file is.
    #[arg(long, value_enum, default_value = "auto")]
    kind: Kind,
    /// For a DSSE envelope: the EC public key (PEM) or certificate to verify it with.
    #[arg(short = 'k', long, value_name = "KEY")]
    key: Option<PathBuf>,
    /// For a legacy allowlist: its exclude list.
    #[arg(short = 'e', long, value_name = "FILE")]
    excludelist: Option<PathBuf>,
    /// Also fail on what Vigil reads but Keylime's verifier refuses (warnings otherwise).
    #[arg(long)]
    strict: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Reads a policy, key or exclude list (bounded: runtime policies are the largest).
fn read(path: &Path) -> Result<Vec<u8>> {
    super::read_file(path, super::MAX_POLICY_FILE)
}

fn write_out(path: &Path, text: &[u8]) -> Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(text)?;
        writeln!(out)?;
        Ok(())
    } else {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

pub(crate) fn sign(a: &SignArgs) -> Result<ExitCode> {
    let text = read(&a.policy)?;
    let doc: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", a.policy.display()))?;
    if doc.get("payload").is_some() {
        bail!(
            "{} is already a DSSE envelope; sign the policy inside it",
            a.policy.display()
        );
    }
    // Keylime validates before it signs; so does Vigil, and it also refuses what only
    // Vigil reads, since the signed policy is meant for Keylime's verifier too.
    RuntimePolicy::from_json(&text)
        .with_context(|| format!("{} is not a valid runtime policy", a.policy.display()))?;
    if let Some(problem) = keylime_refusals(&doc).into_iter().next() {
        bail!(
            "{}: {problem} (Keylime's verifier would refuse the signed policy)",
            a.policy.display()
        );
    }
    if a.backend == Backend::X509 && a.cert_outfile.is_none() {
        bail!("the x509 backend needs --cert-outfile for the certificate");
    }
    let key = match &a.keyfile {
        Some(path) => {
            let pem = String::from_utf8(read(path)?)
                .with_context(|| format!("{} is not a PEM file", path.display()))?;
            DsseSigningKey::from_pem(&pem).with_context(|| path.display().to_string())?
        }
        None => {
            let path = a
                .keypath
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_FILE));
            if path.exists() {
                bail!(
                    "{} exists: pass it with --keyfile, or choose another --keypath",
                    path.display()
                );
            }
            let key = DsseSigningKey::generate_p256(&mut rand_core::OsRng);
            vigil_tls::ca::write(&path, &key.to_pkcs8_pem()?, true)?;
            anstream::eprintln!("wrote the new signing key to {}", path.display());
            key
        }
    };
    let keyid = match (a.backend, &a.cert_outfile) {
        (Backend::X509, Some(cert_path)) => {
            let pem = vigil_tls::ca::dsse_certificate(&key.to_pkcs8_der()?)?;
            vigil_tls::ca::write(cert_path, &pem, false)?;
            base64::engine::general_purpose::STANDARD.encode(pem)
        }
        _ => key.ecdsa_keyid()?,
    };
    // What Keylime signs: `json.dumps(json.load(f))`, keys in the file's order.
    let payload = python_json(&doc)?;
    let envelope = sign_dsse(&payload, &key, Some(&keyid));
    write_out(&a.output, envelope.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn convert(a: &ConvertArgs) -> Result<ExitCode> {
    let text = |p: &Path| -> Result<String> {
        String::from_utf8(read(p)?).with_context(|| format!("{} is not UTF-8 text", p.display()))
    };
    let allowlist = text(&a.allowlist)?;
    let excludes = a.excludelist.as_deref().map(text).transpose()?;
    let policy = RuntimePolicy::from_legacy(Some(&allowlist), excludes.as_deref())
        .context("cannot convert")?;
    let mut doc = policy.to_json();
    if !a.verification_keys.is_empty() {
        // Added to the keyring a JSON allowlist may already carry, as Keylime does.
        let mut ring = ImaKeyring::from_keylime_json(policy.verification_keys())
            .context("the allowlist's verification-keys")?
            .unwrap_or_default();
        for path in &a.verification_keys {
            let (key, keyid) = parse_ima_key(&read(path)?)
                .with_context(|| path.display().to_string())?
                .with_context(|| format!("{} holds no public key", path.display()))?;
            ring.add(key, keyid);
        }
        doc["verification-keys"] = json!(ring.to_keylime_json());
    }
    // `keylime_convert_runtime_policy` stamps the conversion time.
    doc["meta"]["timestamp"] = json!(timestamp(SystemTime::now()));
    write_out(&a.output, &python_json(&doc)?)?;
    anstream::eprintln!(
        "converted: {} paths, {} keyrings, {} excludes",
        policy.len(),
        doc["keyrings"].as_object().map_or(0, |k| k.len()),
        policy.excludes().len()
    );
    Ok(ExitCode::SUCCESS)
}

/// What Vigil reads but Keylime's verifier refuses (its JSON schema, and the
/// `verification-keys` keyring schema), each naming the field.
fn keylime_refusals(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["digests", "keyrings", "ima-buf"] {
        let Some(entries) = doc.get(table).and_then(Value::as_object) else {
            continue;
        };
        for (name, list) in entries {
            for (i, d) in list.as_array().into_iter().flatten().enumerate() {
                if d.as_str().is_some_and(|d| d.contains(':')) {
                    out.push(format!(
                        "{table}.{name}[{i}]: an algorithm prefix; Keylime's schema allows only \
                         bare lowercase hex"
                    ));
                }
            }
        }
    }
    if let Some(keys) = doc.get("verification-keys").and_then(Value::as_str) {
        if let Err(e) = ImaKeyring::from_keylime_json(keys) {
            out.push(format!("verification-keys: {e}"));
        }
    }
    out
}

/// The outcome of one validation.
struct Report {
    kind: &'static str,
    errors: Vec<String>,
    warnings: Vec<String>,
    summary: Value,
}

impl Report {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            errors: Vec::new(),
            warnings: Vec::new(),
            summary: Value::Null,
        }
    }
}

pub(crate) fn validate(a: &ValidateArgs) -> Result<ExitCode> {
    let bytes = read(&a.file)?;
    if bytes.trim_ascii().is_empty() {
        // It would read as a legacy allowlist with no entries: valid, and trusting
        // nothing. An empty file is a wrong path or a failed download, not a policy.
        bail!(
            "{} is empty: not a runtime policy, allowlist or reference state",
            a.file.display()
        );
    }
    let key = a.key.as_deref().map(read).transpose()?;
    let excludes = match &a.excludelist {
        Some(p) => Some(
            String::from_utf8(read(p)?)
                .with_context(|| format!("{} is not UTF-8 text", p.display()))?,
        ),
        None => None,
    };
    let json = serde_json::from_slice::<Value>(&bytes).ok();
    let kind = match (a.kind, &json) {
        (Kind::Auto, Some(v)) if v.get("hashes").is_some() => Kind::Allowlist,
        (Kind::Auto, Some(v)) if v.get("scrtm_and_bios").is_some() || v.get("mokdig").is_some() => {
            Kind::MeasuredBoot
        }
        (Kind::Auto, Some(_)) => Kind::Runtime,
        (Kind::Auto, None) => Kind::Allowlist,
        (k, _) => k,
    };
    let mut r = match kind {
        Kind::Runtime | Kind::Auto => validate_runtime(&bytes, json.as_ref(), key.as_deref()),
        Kind::Allowlist => {
            let mut r = Report::new("legacy allowlist");
            match std::str::from_utf8(&bytes) {
                Err(e) => r.errors.push(format!("not UTF-8 text: {e}")),
                Ok(text) => match RuntimePolicy::from_legacy(Some(text), excludes.as_deref()) {
                    Ok(p) => r.summary = runtime_summary(&p),
                    Err(e) => r.errors.push(e.to_string()),
                },
            }
            r
        }
        Kind::MeasuredBoot => {
            let mut r = Report::new("measured-boot reference state");
            match &json {
                None => r.errors.push("not JSON".into()),
                Some(v) => match RefState::from_json(v) {
                    Ok(s) => {
                        r.summary = json!({
                            "has_secureboot": s.has_secureboot,
                            "scrtm_and_bios": s.scrtm_and_bios.len(),
                            "kernels": s.kernels.len(),
                        })
                    }
                    Err(e) => r.errors.push(e.to_string()),
                },
            }
            r
        }
    };
    if kind != Kind::Allowlist && excludes.is_some() {
        r.warnings
            .push("--excludelist is only read with a legacy allowlist".into());
    }
    if a.strict {
        r.errors.append(&mut r.warnings);
    }
    let valid = r.errors.is_empty();
    if a.json {
        super::print_json(&json!({
            "file": a.file.display().to_string(),
            "kind": r.kind,
            "valid": valid,
            "errors": r.errors,
            "warnings": r.warnings,
            "summary": r.summary,
        }))?;
    } else {
        let mut out = anstream::stdout().lock();
        for w in &r.warnings {
            writeln!(out, "{}warning{}: {w}", WARN.render(), WARN.render_reset())?;
        }
        for e in &r.errors {
            writeln!(out, "{}error{}: {e}", ERROR.render(), ERROR.render_reset())?;
        }
        if valid {
            writeln!(
                out,
                "{}valid{}: {} is a {} ({})",
                OK.render(),
                OK.render_reset(),
                a.file.display(),
                r.kind,
                summary_text(&r.summary)
            )?;
        } else {
            writeln!(
                out,
                "{}invalid{}: {} ({})",
                ERROR.render(),
                ERROR.render_reset(),
                a.file.display(),
                r.kind
            )?;
        }
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn summary_text(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", v.as_str().map_or(v.to_string(), str::to_owned)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn runtime_summary(p: &RuntimePolicy) -> Value {
    json!({
        "paths": p.len(),
        "excludes": p.excludes().len(),
        "generator": p.generator(),
        "log_hash_alg": p.log_hash_alg().to_string(),
    })
}

fn validate_runtime(bytes: &[u8], json: Option<&Value>, key: Option<&[u8]>) -> Report {
    let envelope = json.filter(|v| v.get("payload").is_some_and(|p| !p.is_null()));
    let mut r = Report::new(if envelope.is_some() {
        "DSSE-signed runtime policy"
    } else {
        "runtime policy"
    });
    let parsed = match (envelope, key) {
        (Some(_), Some(key)) => {
            let p = verify_dsse(bytes, key);
            if p.is_ok() {
                r.summary = json!({"signature": "verified with the given key"});
            }
            p
        }
        (Some(env), None) => {
            // As Keylime's verifier does without a key: the x509 backend carries its
            // certificate in `keyid`. That proves the envelope is intact, not who made it.
            match embedded_certificate(env).map(|cert| verify_dsse(bytes, &cert)) {
                Some(Ok(p)) => {
                    r.warnings.push(
                        "verified only with the certificate the envelope carries; give --key \
                         to check who signed it"
                            .into(),
                    );
                    Ok(p)
                }
                Some(Err(e)) => Err(e),
                None => {
                    r.warnings
                        .push("the signature was not checked: give --key".into());
                    RuntimePolicy::from_json(bytes)
                }
            }
        }
        (None, Some(_)) => {
            r.errors
                .push("--key was given, but the policy is not a DSSE envelope".into());
            RuntimePolicy::from_json(bytes)
        }
        (None, None) => RuntimePolicy::from_json(bytes),
    };
    match parsed {
        Ok(p) => {
            let mut summary = runtime_summary(&p);
            if let (Some(m), Some(s)) = (summary.as_object_mut(), r.summary.get("signature")) {
                m.insert("signature".into(), s.clone());
            }
            r.summary = summary;
            // The schema-level differences are judged on the document itself.
            let doc = match envelope {
                Some(_) => dsse_payload(bytes)
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice(&b).ok()),
                None => json.cloned(),
            };
            if let Some(doc) = doc {
                r.warnings.extend(keylime_refusals(&doc));
            }
        }
        Err(e) => r.errors.push(e.to_string()),
    }
    r
}

/// The PEM certificate an x509-backend envelope carries as base64 in its `keyid`.
fn embedded_certificate(env: &Value) -> Option<Vec<u8>> {
    env["signatures"].as_array()?.iter().find_map(|s| {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(s["keyid"].as_str()?)
            .ok()?;
        pem.starts_with(b"-----BEGIN CERTIFICATE").then_some(pem)
    })
}
