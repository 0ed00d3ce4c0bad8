//! What the tenant sends about policies (Keylime's `cli/policies.py process_policy`):
//! the `tpm_policy` with the PCR mask the chosen policies imply, the runtime policy
//! (base64 of the file as given, or converted from a legacy allowlist), the
//! measured-boot reference state, and the policy names.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{Map, Value};
use vigil_core::policy::runtime::create::{exclude_list, flat_allowlist, PolicyDraft};
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::{TpmPolicy, IMA_PCR, MEASURED_BOOT_PCRS};

use super::pyjson;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// The policy options of `add`, `update` and `policy push` (Keylime's spellings as
/// aliases).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct PolicyArgs {
    /// A runtime policy file (Keylime format v1, or a DSSE envelope holding one).
    #[arg(long, value_name = "FILE", conflicts_with = "allowlist")]
    pub(crate) runtime_policy: Option<PathBuf>,
    /// Store the runtime policy under this name at the verifier, or (without
    /// --runtime-policy) use the policy already stored under it.
    #[arg(long, value_name = "NAME", alias = "allowlist-name")]
    pub(crate) runtime_policy_name: Option<String>,
    /// The key that signed a DSSE runtime policy (checked here, and sent along).
    #[arg(long, value_name = "FILE", requires = "runtime_policy")]
    pub(crate) runtime_policy_sig_key: Option<PathBuf>,
    /// The expected SHA-256 of the runtime policy file (hex).
    #[arg(long, value_name = "HEX", requires = "runtime_policy")]
    pub(crate) runtime_policy_checksum: Option<String>,
    /// Deprecated in Keylime: a flat allowlist (`<digest> <path>` lines), converted to a
    /// runtime policy.
    #[arg(long, value_name = "FILE")]
    pub(crate) allowlist: Option<PathBuf>,
    /// Deprecated in Keylime: an exclude list (one regular expression a line) for
    /// --allowlist.
    #[arg(long, value_name = "FILE", alias = "exclude", requires = "allowlist")]
    pub(crate) excludelist: Option<PathBuf>,
    /// A measured-boot reference state (JSON), e.g. from `vigil policy create
    /// measured-boot`.
    #[arg(
        long,
        value_name = "FILE",
        alias = "mb_refstate",
        alias = "mb-refstate"
    )]
    pub(crate) mb_policy: Option<PathBuf>,
    /// Store the measured-boot reference state under this name, or (without
    /// --mb-policy) use the one stored under it.
    #[arg(long, value_name = "NAME")]
    pub(crate) mb_policy_name: Option<String>,
    /// Allowed PCR values as JSON: `{"15": ["<hex>", ...], ...}` (PCRs 10 and 16 are
    /// reserved).
    #[arg(long, value_name = "JSON", alias = "tpm_policy")]
    pub(crate) tpm_policy: Option<String>,
}

/// The policy fields of an enrolment (or a policy upload), as Keylime's tenant
/// computes them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policies {
    /// `tpm_policy` with its `mask` (PCR keys in the order given, then `mask`).
    pub(crate) tpm_policy: Map<String, Value>,
    /// base64 of the runtime policy document, or `""`.
    pub(crate) runtime_policy: String,
    /// The runtime policy name, or `""`.
    pub(crate) runtime_policy_name: String,
    /// base64 of the DSSE key, or `""`.
    pub(crate) runtime_policy_key: String,
    /// The measured-boot reference state as a JSON string, or `None`.
    pub(crate) mb_policy: Option<String>,
    /// The measured-boot policy name, or `""`.
    pub(crate) mb_policy_name: String,
}

/// Keylime's `readPolicy`: PCR keys (10 and 16 reserved), a value or a list of values,
/// lowercased; the mask of the keys. Stricter than Keylime where a policy could never
/// pass (PCR 24, values that are no bank's digest): see `TpmPolicy::from_value`.
pub(crate) fn read_tpm_policy(text: &str) -> Result<(Map<String, Value>, u32)> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("--tpm-policy is not JSON: {text}"))?;
    let Value::Object(input) = value else {
        bail!("--tpm-policy must be a JSON object like {{\"15\": [\"<hex>\"]}}");
    };
    if input.contains_key("mask") {
        // Keylime computes the mask itself and refuses a given one.
        bail!("--tpm-policy: do not give a \"mask\"; it is derived from the PCR numbers");
    }
    // Vigil's verifier-side parser checks numbers, reserved PCRs and hex values.
    TpmPolicy::from_value(&Value::Object(input.clone())).context("--tpm-policy")?;
    let mut out = Map::new();
    let mut mask = 0u32;
    for (key, v) in input {
        let pcr: u32 = key.parse().context("--tpm-policy: PCR number")?;
        mask |= 1 << pcr;
        let list = match v {
            Value::String(s) => vec![Value::String(s.to_lowercase())],
            Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Value::String(s) => Ok(Value::String(s.to_lowercase())),
                    other => bail!("--tpm-policy PCR {pcr}: {other} is not a hex string"),
                })
                .collect::<Result<_>>()?,
            other => bail!("--tpm-policy PCR {pcr}: {other} is not a hex string or a list"),
        };
        out.insert(key, Value::Array(list));
    }
    Ok((out, mask))
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// A runtime policy file as the tenant sends it: validated (and its DSSE signature
/// checked when a key is given), checksum compared; returns `(b64 policy, b64 key)`.
pub(crate) fn load_runtime_policy(
    path: &PathBuf,
    sig_key: Option<&PathBuf>,
    checksum: Option<&str>,
) -> Result<(String, String)> {
    let bytes = read(path, "runtime policy")?;
    let key = sig_key.map(|k| read(k, "runtime policy key")).transpose()?;
    match &key {
        Some(k) => {
            vigil_core::policy::runtime::verify_dsse(&bytes, k).with_context(|| {
                format!(
                    "the runtime policy {} is not validly signed",
                    path.display()
                )
            })?;
        }
        None => {
            RuntimePolicy::from_json(&bytes).with_context(|| {
                format!(
                    "the runtime policy {} is not a valid Keylime runtime policy \
                     (create one with `vigil policy create runtime`)",
                    path.display()
                )
            })?;
        }
    }
    if let Some(expected) = checksum {
        let got = vigil_core::HashAlg::Sha256.hash(&bytes).to_hex();
        if !got.eq_ignore_ascii_case(expected) {
            bail!(
                "the runtime policy {} has SHA-256 {got}, not the expected {expected}",
                path.display()
            );
        }
    }
    Ok((
        B64.encode(&bytes),
        key.map(|k| B64.encode(k)).unwrap_or_default(),
    ))
}

/// A legacy allowlist and exclude list converted to a runtime policy (base64).
pub(crate) fn convert_allowlist(allowlist: &PathBuf, exclude: Option<&PathBuf>) -> Result<String> {
    let text = String::from_utf8(read(allowlist, "allowlist")?)
        .with_context(|| format!("{} is not text", allowlist.display()))?;
    let mut draft = PolicyDraft::new();
    draft.add_digests(flat_allowlist(&text));
    if let Some(path) = exclude {
        let text = String::from_utf8(read(path, "exclude list")?)
            .with_context(|| format!("{} is not text", path.display()))?;
        draft.add_excludes(exclude_list(&text).with_context(|| path.display().to_string())?);
    }
    let doc = draft
        .finish(&now_timestamp())
        .with_context(|| format!("cannot convert {}", allowlist.display()))?;
    Ok(B64.encode(serde_json::to_vec(&doc)?))
}

/// The `meta.timestamp` Keylime's converter writes (`str(datetime.now())`).
fn now_timestamp() -> String {
    crate::policy_create::timestamp(std::time::SystemTime::now())
}

/// A measured-boot reference state file as Keylime's tenant sends it:
/// `json.dumps(json.load(file))`.
pub(crate) fn load_mb_policy(path: &PathBuf) -> Result<String> {
    let bytes = read(path, "measured-boot policy")?;
    let value: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the measured-boot policy {} is not JSON", path.display()))?;
    Ok(pyjson::dumps(&value))
}

impl PolicyArgs {
    /// Keylime's `process_policy`.
    pub(crate) fn resolve(&self) -> Result<Policies> {
        let (mut tpm_policy, mut mask) =
            read_tpm_policy(self.tpm_policy.as_deref().unwrap_or("{}"))?;
        let mut runtime_policy = String::new();
        let mut runtime_policy_key = String::new();
        let ima_bit = 1u32 << IMA_PCR;
        let mb_bits = MEASURED_BOOT_PCRS.iter().fold(0u32, |m, p| m | (1 << p));

        if let Some(allowlist) = &self.allowlist {
            mask |= ima_bit;
            runtime_policy = convert_allowlist(allowlist, self.excludelist.as_ref())?;
        }
        if let Some(path) = &self.runtime_policy {
            mask |= ima_bit;
            (runtime_policy, runtime_policy_key) = load_runtime_policy(
                path,
                self.runtime_policy_sig_key.as_ref(),
                self.runtime_policy_checksum.as_deref(),
            )?;
        }
        if self.runtime_policy_name.is_some() {
            mask |= ima_bit;
        }
        let mut mb_policy = None;
        if let Some(path) = &self.mb_policy {
            if let Some(pcr) = tpm_policy
                .keys()
                .filter_map(|k| k.parse::<u32>().ok())
                .find(|p| MEASURED_BOOT_PCRS.contains(p))
            {
                bail!(
                    "--tpm-policy names PCR {pcr}, which measured boot (--mb-policy) checks; \
                     remove it from --tpm-policy"
                );
            }
            mask |= mb_bits;
            mb_policy = Some(load_mb_policy(path)?);
        }
        if self.mb_policy_name.is_some() {
            mask |= mb_bits;
        }
        tpm_policy.insert("mask".into(), Value::String(format!("{mask:#x}")));
        Ok(Policies {
            tpm_policy,
            runtime_policy,
            runtime_policy_name: self.runtime_policy_name.clone().unwrap_or_default(),
            runtime_policy_key,
            mb_policy,
            mb_policy_name: self.mb_policy_name.clone().unwrap_or_default(),
        })
    }
}

impl Policies {
    /// The `tpm_policy` field: the JSON string Keylime's `json.dumps` makes.
    pub(crate) fn tpm_policy_string(&self) -> String {
        pyjson::dumps(&Value::Object(self.tpm_policy.clone()))
    }
}
