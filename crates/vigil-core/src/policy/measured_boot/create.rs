//! Reference states made from a known-good log, as `keylime-policy create measured-boot`
//! makes them: the log's own S-CRTM and firmware digests, Secure Boot keys, MOK list
//! digests and boot chain become the only allowed values.
//!
//! The output is Keylime's, field for field, including where Keylime's output is
//! incomplete: when the log does not boot the expected number of applications (shim,
//! grub and the kernel with Secure Boot; shim and grub without), the reference state has
//! no `kernels` and [`CreatedRefState::warnings`] says why.

use serde_json::{json, Map, Value};

use super::LogView;

/// Why no reference state could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The log has no events.
    #[error("the event log has no events")]
    NoEvents,
    /// Secure Boot is off (or not measured) and `without_secureboot` was not given.
    #[error("the event log has Secure Boot disabled; create the reference state without Secure Boot to accept that")]
    SecureBootDisabled,
    /// A boot application that must be in the reference state has no SHA-256 digest.
    #[error("event {event} ({what}) has no sha256 digest")]
    NoSha256 {
        /// The event's `EventNum` (or index).
        event: u64,
        /// What the event is.
        what: &'static str,
    },
}

/// A reference state and what was odd about the log it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedRefState {
    /// The reference state, in Keylime's field order.
    pub refstate: Value,
    /// Whether the log had Secure Boot on.
    pub has_secureboot: bool,
    /// Problems Keylime only logs (the reference state is still written).
    pub warnings: Vec<String>,
}

fn event_type(e: &Value) -> &str {
    e.get("EventType")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn event_field<'a>(e: &'a Value, name: &str) -> Option<&'a Value> {
    e.get("Event").and_then(|ev| ev.get(name))
}

fn event_string(e: &Value) -> &str {
    event_field(e, "String")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `{"sha256": "0x…"}`, or `{}` when the event has no SHA-256 digest.
fn sha256(e: &Value) -> Value {
    let found = e
        .get("Digests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| d.get("AlgorithmId").and_then(Value::as_str) == Some("sha256"))
        .and_then(|d| d.get("Digest"));
    match found {
        Some(Value::String(h)) => json!({ "sha256": format!("0x{h}") }),
        Some(other) => json!({ "sha256": format!("0x{}", super::pyrepr::repr(other, false)) }),
        None => json!({}),
    }
}

fn secureboot_enabled(events: &[Value]) -> bool {
    for e in events {
        if event_type(e) != "EV_EFI_VARIABLE_DRIVER_CONFIG"
            || event_field(e, "UnicodeName").and_then(Value::as_str) != Some("SecureBoot")
        {
            continue;
        }
        if let Some(enabled) = event_field(e, "VariableData").and_then(|d| d.get("Enabled")) {
            return enabled.as_str() == Some("Yes");
        }
    }
    false
}

fn signatures(entries: &[Value]) -> Vec<Value> {
    entries
        .iter()
        .filter_map(|k| {
            let owner = k.get("SignatureOwner")?;
            let data = k.get("SignatureData")?;
            Some(json!({
                "SignatureOwner": owner,
                "SignatureData": format!("0x{}", data.as_str().unwrap_or_default()),
            }))
        })
        .collect()
}

fn keys(events: &[Value], out: &mut Map<String, Value>) {
    let names = ["pk", "kek", "db", "dbx"];
    for name in names {
        out.insert(name.to_owned(), Value::Array(Vec::new()));
    }
    for e in events {
        if event_type(e) != "EV_EFI_VARIABLE_DRIVER_CONFIG" {
            continue;
        }
        let Some(name) = event_field(e, "UnicodeName").and_then(Value::as_str) else {
            continue;
        };
        let name = name.to_lowercase();
        if !names.contains(&name.as_str()) {
            continue;
        }
        // The last measurement of a variable wins; undecoded data holds no keys.
        let sigs = match event_field(e, "VariableData") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(lists)) => lists
                .iter()
                .filter_map(|l| l.get("Keys").and_then(Value::as_array))
                .flat_map(|keys| signatures(keys))
                .collect(),
            Some(_) => Vec::new(),
        };
        out.insert(name, Value::Array(sigs));
    }
}

fn vendor_db(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| {
            event_type(e) == "EV_EFI_VARIABLE_AUTHORITY"
                && event_field(e, "UnicodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.to_lowercase() == "vendor_db")
        })
        .filter_map(|e| event_field(e, "VariableData").and_then(Value::as_array))
        .flat_map(|entries| signatures(entries))
        .collect()
}

/// A firmware application: `FvVol(<guid>)/FvFile(<guid>)` at the start of its path.
fn is_firmware_app(path: &str) -> bool {
    fn guid(s: &str) -> Option<&str> {
        let groups = [8, 4, 4, 4, 12];
        let mut rest = s;
        for (i, n) in groups.iter().enumerate() {
            let (g, r) = rest.split_at_checked(*n)?;
            if !g.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return None;
            }
            rest = if i + 1 < groups.len() {
                r.strip_prefix('-')?
            } else {
                r
            };
        }
        Some(rest)
    }
    (|| {
        let r = guid(path.strip_prefix("FvVol(")?)?;
        let r = guid(r.strip_prefix(")/FvFile(")?)?;
        r.strip_prefix(')')
    })()
    .is_some()
}

/// Python's `re.escape`.
fn re_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "()[]{}?*+-|^$\\.&~# \t\n\r\u{b}\u{c}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn event_num(e: &Value, index: usize) -> u64 {
    e.get("EventNum")
        .and_then(Value::as_u64)
        .unwrap_or(index as u64)
}

fn kernel(
    events: &[Value],
    secure_boot: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, CreateError> {
    // Firmware may run its boot menu and similar as UEFI applications; there are no
    // reference values for those.
    let apps: Vec<(u64, Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| event_type(e) == "EV_EFI_BOOT_SERVICES_APPLICATION")
        .filter(|(_, e)| {
            !event_field(e, "DevicePath")
                .and_then(Value::as_str)
                .is_some_and(is_firmware_app)
        })
        .map(|(i, e)| (event_num(e, i), sha256(e)))
        .collect();
    let expected: &[usize] = if secure_boot { &[3, 4] } else { &[2] };
    if !expected.contains(&apps.len()) {
        warnings.push(if secure_boot {
            format!(
                "expected 3 different UEFI applications to be booted (shim, grub, Linux); got {}",
                apps.len()
            )
        } else {
            format!(
                "expected 2 different UEFI applications to be booted (shim, grub); got {}",
                apps.len()
            )
        });
        return Ok(None);
    }
    let digest = |i: usize, what: &'static str| {
        apps[i]
            .1
            .get("sha256")
            .cloned()
            .ok_or(CreateError::NoSha256 {
                event: apps[i].0,
                what,
            })
    };
    let mut k = Map::new();
    if secure_boot {
        k.insert(
            "kernel_authcode_sha256".to_owned(),
            digest(2, "the kernel")?,
        );
    }
    k.insert("shim_authcode_sha256".to_owned(), digest(0, "shim")?);
    k.insert("grub_authcode_sha256".to_owned(), digest(1, "grub")?);
    let pcr = |e: &Value, n: u64| e.get("PCRIndex").and_then(Value::as_u64) == Some(n);
    let ipl9 = || {
        events
            .iter()
            .enumerate()
            .filter(move |(_, e)| event_type(e) == "EV_IPL" && pcr(e, 9))
    };
    let plain = |needles: &[&str], what: &'static str| -> Result<Option<Value>, CreateError> {
        match ipl9().find(|(_, e)| needles.iter().any(|n| event_string(e).contains(n))) {
            Some((i, e)) => {
                sha256(e)
                    .get("sha256")
                    .cloned()
                    .map(Some)
                    .ok_or(CreateError::NoSha256 {
                        event: event_num(e, i),
                        what,
                    })
            }
            None => Ok(None),
        }
    };
    if let Some(d) = plain(&["initrd", "initramfs"], "the initrd")? {
        k.insert("initrd_plain_sha256".to_owned(), d);
    }
    if !secure_boot {
        if let Some(d) = plain(&["vmlinuz"], "the kernel file")? {
            k.insert("vmlinuz_plain_sha256".to_owned(), d);
        }
    }
    if let Some(e) = events.iter().find(|e| {
        event_type(e) == "EV_IPL" && pcr(e, 8) && event_string(e).contains("kernel_cmdline")
    }) {
        let s = event_string(e);
        let rest: String = s.chars().skip("kernel_cmdline: ".len()).collect();
        k.insert("kernel_cmdline".to_owned(), Value::from(re_escape(&rest)));
    }
    Ok(Some(Value::Object(k)))
}

fn mok(events: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let (mut mokdig, mut mokxdig) = (Vec::new(), Vec::new());
    for e in events.iter().filter(|e| event_type(e) == "EV_IPL") {
        match event_field(e, "String").and_then(Value::as_str) {
            Some("MokList") => mokdig.push(sha256(e)),
            Some("MokListX") => mokxdig.push(sha256(e)),
            _ => {}
        }
    }
    (mokdig, mokxdig)
}

/// Makes the reference state for the `example` policy that accepts exactly this log's
/// boot. A log without Secure Boot is refused unless `without_secureboot` is set (the
/// reference state then requires Secure Boot to stay off).
pub fn create_refstate(
    log: &LogView,
    without_secureboot: bool,
) -> Result<CreatedRefState, CreateError> {
    let events = log.events();
    if events.is_empty() {
        return Err(CreateError::NoEvents);
    }
    let has_secureboot = secureboot_enabled(events);
    let mut warnings = Vec::new();
    if !has_secureboot && !without_secureboot {
        return Err(CreateError::SecureBootDisabled);
    }
    if has_secureboot && without_secureboot {
        warnings.push(
            "the event log has Secure Boot enabled: making a reference state with Secure Boot"
                .to_owned(),
        );
    }
    let mut scrtm = Map::new();
    if let Some(e) = events.iter().find(|e| event_type(e) == "EV_S_CRTM_VERSION") {
        scrtm.insert("scrtm".to_owned(), sha256(e));
    }
    let firmware: Vec<Value> = events
        .iter()
        .filter(|e| {
            matches!(
                event_type(e),
                "EV_EFI_PLATFORM_FIRMWARE_BLOB" | "EV_EFI_PLATFORM_FIRMWARE_BLOB2"
            )
        })
        .map(sha256)
        .collect();
    scrtm.insert("platform_firmware".to_owned(), Value::Array(firmware));

    let mut out = Map::new();
    out.insert("has_secureboot".to_owned(), Value::Bool(has_secureboot));
    out.insert(
        "scrtm_and_bios".to_owned(),
        Value::Array(vec![Value::Object(scrtm)]),
    );
    keys(events, &mut out);
    out.insert("vendor_db".to_owned(), Value::Array(vendor_db(events)));
    let (mokdig, mokxdig) = mok(events);
    out.insert("mokdig".to_owned(), Value::Array(mokdig));
    out.insert("mokxdig".to_owned(), Value::Array(mokxdig));
    if let Some(k) = kernel(events, has_secureboot, &mut warnings)? {
        out.insert("kernels".to_owned(), Value::Array(vec![k]));
    }
    Ok(CreatedRefState {
        refstate: Value::Object(out),
        has_secureboot,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_apps_and_escaping() {
        assert!(is_firmware_app(
            "FvVol(8fc151ae-c96f-4bc9-8c33-107992c7735b)/FvFile(821aca26-29ea-4993-839f-597fc021708d)"
        ));
        assert!(!is_firmware_app("File(\\EFI\\BOOT\\BOOTX64.EFI)"));
        assert_eq!(re_escape("ro quiet a=b.c-1"), "ro\\ quiet\\ a=b\\.c\\-1");
    }
}
