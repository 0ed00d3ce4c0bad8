//! The reference state (`mb_policy`/refstate) of Keylime's `example` policy: what a node's
//! boot is allowed to look like, as `keylime-policy create measured-boot` writes it.
//!
//! ```json
//! {"has_secureboot": true,
//!  "scrtm_and_bios": [{"scrtm": {"sha256": "0x…"}, "platform_firmware": [{"sha256": "0x…"}]}],
//!  "pk": [{"SignatureOwner": "<guid>", "SignatureData": "0x<hex>"}], "kek": […], "db": […],
//!  "dbx": […], "vendor_db": […], "mokdig": [{"sha256": "0x…"}], "mokxdig": […],
//!  "kernels": [{"shim_authcode_sha256": "0x…", "grub_authcode_sha256": "0x…",
//!               "kernel_authcode_sha256": "0x…", "initrd_plain_sha256": "0x…",
//!               "kernel_cmdline": "<Python regex>"}]}
//! ```
//!
//! [`RefState::from_json`] checks it the way the policy does before evaluating anything
//! (and in the same order, so the first problem reported is the one Keylime reports):
//! hex values are `0x` and lowercase hex digits, keys are `{SignatureOwner,
//! SignatureData}` with a `0x` data string, every required field is present, and each
//! `kernel_cmdline` compiles. Without Secure Boot (`has_secureboot` false) a kernel names
//! `vmlinuz_plain_sha256` instead of `kernel_authcode_sha256`, and empty key lists are
//! not checked. `vendor_db` is optional. Unknown fields are ignored.

use serde_json::{Map, Value};

use super::check::{python_type, truthy, Pattern};

/// A reference state that is not what the `example` policy needs; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reference state field {field}: {reason}")]
pub struct RefStateError {
    /// The field, as a path (`kernels[0].shim_authcode_sha256`; `$` for the whole).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> RefStateError {
    RefStateError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A digest: `(algorithm, lowercase hex without 0x)` pairs, in document order.
pub type DigestSet = Vec<(String, String)>;

/// A Secure Boot key: its owner GUID and its data (hex, without `0x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `SignatureOwner`.
    pub owner: String,
    /// `SignatureData` without its `0x`.
    pub data: String,
}

/// An allowed S-CRTM and firmware sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrtmAndBios {
    /// The `EV_S_CRTM_VERSION` digest.
    pub scrtm: DigestSet,
    /// The `EV_EFI_PLATFORM_FIRMWARE_BLOB[2]` digests, in order.
    pub platform_firmware: Vec<DigestSet>,
}

/// An allowed boot chain (hex digests without `0x`).
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Authenticode SHA-256 of shim.
    pub shim_authcode_sha256: String,
    /// Authenticode SHA-256 of grub.
    pub grub_authcode_sha256: String,
    /// Authenticode SHA-256 of the kernel (with Secure Boot).
    pub kernel_authcode_sha256: Option<String>,
    /// Plain SHA-256 of the kernel file grub measured (without Secure Boot).
    pub vmlinuz_plain_sha256: Option<String>,
    /// Plain SHA-256 of the initrd.
    pub initrd_plain_sha256: String,
    /// A Python regular expression the command line must fully match.
    pub kernel_cmdline: String,
    pub(crate) cmdline_re: Pattern,
}

/// A checked reference state.
#[derive(Debug, Clone)]
pub struct RefState {
    /// Whether Secure Boot must be on (`has_secureboot`, true when absent).
    pub has_secureboot: bool,
    /// Allowed S-CRTM and firmware sequences.
    pub scrtm_and_bios: Vec<ScrtmAndBios>,
    /// Allowed PK entries.
    pub pk: Vec<Key>,
    /// Allowed KEK entries.
    pub kek: Vec<Key>,
    /// Allowed db entries.
    pub db: Vec<Key>,
    /// Required dbx entries.
    pub dbx: Vec<Key>,
    /// Allowed shim `vendor_db` entries.
    pub vendor_db: Vec<Key>,
    /// Allowed `MokList` digests.
    pub mokdig: Vec<DigestSet>,
    /// Allowed `MokListX` digests.
    pub mokxdig: Vec<DigestSet>,
    /// Allowed boot chains.
    pub kernels: Vec<Kernel>,
}

fn describe(v: &Value) -> String {
    format!("{} ({})", super::pyrepr::repr(v, false), python_type(v))
}

fn is_hex(s: &str) -> bool {
    s.strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn hex(v: &Value, field: &str) -> Result<String, RefStateError> {
    match v.as_str() {
        Some(s) if is_hex(s) => Ok(s[2..].to_owned()),
        _ => Err(err(
            field,
            format!("{} is not 0x followed by lowercase hex digits", describe(v)),
        )),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, RefStateError> {
    v.as_object()
        .ok_or_else(|| err(field, format!("{} is not an object", describe(v))))
}

fn list<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, RefStateError> {
    v.as_array()
        .ok_or_else(|| err(field, format!("{} is not a list", describe(v))))
}

fn required<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a Value, RefStateError> {
    m.get(key)
        .ok_or_else(|| err(format!("{field}.{key}"), "is missing"))
}

fn digest(v: &Value, field: &str) -> Result<DigestSet, RefStateError> {
    object(v, field)?
        .iter()
        .map(|(alg, h)| Ok((alg.clone(), hex(h, &format!("{field}.{alg}"))?)))
        .collect()
}

fn digests(v: &Value, field: &str) -> Result<Vec<DigestSet>, RefStateError> {
    list(v, field)?
        .iter()
        .enumerate()
        .map(|(i, d)| digest(d, &format!("{field}[{i}]")))
        .collect()
}

fn string<'a>(m: &'a Map<String, Value>, key: &str, field: &str) -> Result<&'a str, RefStateError> {
    let v = required(m, key, field)?;
    v.as_str().ok_or_else(|| {
        err(
            format!("{field}.{key}"),
            format!("{} is not a string", describe(v)),
        )
    })
}

fn keys(v: &Value, field: &str, has_secureboot: bool) -> Result<Vec<Key>, RefStateError> {
    // Without Secure Boot an empty (or null) list accepts whatever the log holds.
    if !has_secureboot && !truthy(v) {
        return Ok(Vec::new());
    }
    list(v, field)?
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let f = format!("{field}[{i}]");
            let m = object(k, &f)?;
            let owner = string(m, "SignatureOwner", &f)?;
            let data = string(m, "SignatureData", &f)?;
            let data = data.strip_prefix("0x").ok_or_else(|| {
                err(
                    format!("{f}.SignatureData"),
                    format!("{data:?} does not start with 0x"),
                )
            })?;
            Ok(Key {
                owner: owner.to_owned(),
                data: data.to_owned(),
            })
        })
        .collect()
}

fn kernel(v: &Value, field: &str, has_secureboot: bool) -> Result<Kernel, RefStateError> {
    let m = object(v, field)?;
    let hex_field = |key: &str| hex(required(m, key, field)?, &format!("{field}.{key}"));
    // Check in Keylime's order: the digests, then the command line.
    let shim = hex_field("shim_authcode_sha256")?;
    let grub = hex_field("grub_authcode_sha256")?;
    let (kernel, vmlinuz) = if has_secureboot {
        (Some(hex_field("kernel_authcode_sha256")?), None)
    } else {
        (None, Some(hex_field("vmlinuz_plain_sha256")?))
    };
    let initrd = hex_field("initrd_plain_sha256")?;
    let cmdline = string(m, "kernel_cmdline", field)?;
    Ok(Kernel {
        shim_authcode_sha256: shim,
        grub_authcode_sha256: grub,
        kernel_authcode_sha256: kernel,
        vmlinuz_plain_sha256: vmlinuz,
        initrd_plain_sha256: initrd,
        kernel_cmdline: cmdline.to_owned(),
        // Compiled later, in the policy's order; a placeholder until then.
        cmdline_re: Pattern::new("", false).map_err(|e| err(field, e))?,
    })
}

type Head = (bool, Vec<Kernel>, Vec<ScrtmAndBios>);

impl RefState {
    /// Whether the checks get as far as Keylime's defaulting of `vendor_db` (which it
    /// writes into the refstate it later prints in the failure context).
    pub(crate) fn reaches_vendor_db_default(v: &Value) -> bool {
        v.as_object().is_some_and(|m| Self::head(m).is_ok())
    }

    /// The checks before the policy is compiled: kernels, S-CRTM, required fields.
    fn head(m: &Map<String, Value>) -> Result<Head, RefStateError> {
        let has_secureboot = m.get("has_secureboot").is_none_or(truthy);
        let kernels_v = m.get("kernels").unwrap_or(&Value::Null);
        let kernels: Vec<Kernel> = list(kernels_v, "kernels")?
            .iter()
            .enumerate()
            .map(|(i, k)| kernel(k, &format!("kernels[{i}]"), has_secureboot))
            .collect::<Result<_, _>>()?;
        let scrtm_v = match m.get("scrtm_and_bios") {
            None | Some(Value::Null) => return Err(err("scrtm_and_bios", "is missing")),
            Some(v) => v,
        };
        let scrtm_and_bios = list(scrtm_v, "scrtm_and_bios")?
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let f = format!("scrtm_and_bios[{i}]");
                let o = object(e, &f)?;
                let scrtm = digest(required(o, "scrtm", &f)?, &format!("{f}.scrtm"))?;
                let platform_firmware = digests(
                    required(o, "platform_firmware", &f)?,
                    &format!("{f}.platform_firmware"),
                )?;
                Ok(ScrtmAndBios {
                    scrtm,
                    platform_firmware,
                })
            })
            .collect::<Result<_, RefStateError>>()?;
        for req in ["pk", "kek", "db", "dbx", "mokdig", "mokxdig"] {
            if !m.contains_key(req) {
                return Err(err(req, "is missing"));
            }
        }
        Ok((has_secureboot, kernels, scrtm_and_bios))
    }

    /// Checks a reference state as the `example` policy does.
    pub fn from_json(v: &Value) -> Result<Self, RefStateError> {
        let m = v
            .as_object()
            .ok_or_else(|| err("$", format!("{} is not a JSON object", describe(v))))?;
        let (has_secureboot, mut kernels, scrtm_and_bios) = Self::head(m)?;
        for (i, k) in kernels.iter_mut().enumerate() {
            k.cmdline_re = Pattern::new(&format!("kernel_cmdline: {}", k.kernel_cmdline), false)
                .map_err(|e| {
                    err(
                        format!("kernels[{i}].kernel_cmdline"),
                        format!("not a valid regular expression: {e}"),
                    )
                })?;
        }
        let empty = Value::Array(Vec::new());
        Ok(Self {
            has_secureboot,
            scrtm_and_bios,
            pk: keys(&m["pk"], "pk", has_secureboot)?,
            kek: keys(&m["kek"], "kek", has_secureboot)?,
            db: keys(&m["db"], "db", has_secureboot)?,
            vendor_db: keys(
                m.get("vendor_db").unwrap_or(&empty),
                "vendor_db",
                has_secureboot,
            )?,
            dbx: keys(&m["dbx"], "dbx", has_secureboot)?,
            mokdig: digests(&m["mokdig"], "mokdig")?,
            mokxdig: digests(&m["mokxdig"], "mokxdig")?,
            kernels,
        })
    }
}
