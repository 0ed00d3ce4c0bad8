//! Differential test of `vigil_core::eventlog::to_yaml` against `tpm2_eventlog`:
//!
//! 1. tpm2-tools' own expected output (`../shared/testdata/tpm2-tools`, tpm2-tools 5.8):
//!    `event-raw/` is tpm2-tools built without libefivar (device paths in hex),
//!    `event-pretty/` with libefivar < 39 (`File(\…)`), `event-pretty-39/` with libefivar
//!    ≥ 39 (bare `\…`); tpm2-tools' test script runs `event-arch-linux` and
//!    `event-sd-boot-fedora37` with `--eventlog-version=2` and the others with the default
//!    version 1. Vigil must print every one of them identically, as YAML documents and
//!    byte for byte.
//! 2. The installed `/usr/bin/tpm2_eventlog` (Debian's tpm2-tools 5.4), run as Keylime
//!    runs it (`--eventlog-version=2`), on every real log in the shared test data. Every
//!    remaining difference is listed in [`Difference`] with its reason, and normalised
//!    explicitly; nothing else may differ.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use vigil_core::eventlog::{self, DevicePathStyle, RenderOptions};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

fn tpm2_tools_logs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(format!("{TESTDATA}/tpm2-tools"))
        .expect("tpm2-tools test data")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    out.sort();
    out
}

fn all_logs() -> Vec<PathBuf> {
    let mut out = tpm2_tools_logs();
    for p in [
        "keylime/test/data/create-mb-policy/binary_bios_measurements",
        "rust-keylime/keylime/test-data/uefi_log.bin",
        "rust-keylime/keylime-push-model-agent/test-data/uefi_log.bin",
    ] {
        out.push(Path::new(TESTDATA).join(p));
    }
    out
}

fn vigil_yaml(log: &Path, version: u32, device_paths: DevicePathStyle) -> String {
    let bytes = std::fs::read(log).unwrap();
    let parsed = eventlog::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    eventlog::to_yaml(
        &parsed,
        RenderOptions {
            version,
            device_paths,
        },
    )
}

/// The `--eventlog-version` tpm2-tools' test script uses for a fixture.
fn fixture_version(name: &str) -> u32 {
    if name.starts_with("event-arch-linux") || name.starts_with("event-sd-boot") {
        2
    } else {
        1
    }
}

#[test]
fn matches_tpm2_tools_expected_yaml() {
    let mut compared = 0;
    for log in tpm2_tools_logs() {
        let name = log.file_name().unwrap().to_str().unwrap().to_owned();
        let version = fixture_version(&name);
        let mut expectations = vec![
            ("event-raw", DevicePathStyle::Hex),
            ("event-pretty", DevicePathStyle::Efivar),
            ("event-pretty-39", DevicePathStyle::Efivar39),
        ]
        .into_iter()
        .map(|(dir, style)| (format!("{TESTDATA}/tpm2-tools/{dir}/{name}.yaml"), style))
        .collect::<Vec<_>>();
        // event.bin and specid-vendordata.bin have no device paths: one expectation.
        expectations.push((
            format!("{TESTDATA}/tpm2-tools/{name}.yaml"),
            DevicePathStyle::Hex,
        ));
        for (expected_path, style) in expectations {
            let Ok(expected) = std::fs::read_to_string(&expected_path) else {
                continue;
            };
            let ours = vigil_yaml(&log, version, style);
            match serde_yaml::from_str::<Value>(&expected) {
                Ok(expected_doc) => {
                    let ours_doc: Value = serde_yaml::from_str(&ours)
                        .unwrap_or_else(|e| panic!("{name}: Vigil's YAML does not parse: {e}"));
                    assert_eq!(ours_doc, expected_doc, "{expected_path}");
                }
                // Named difference: tpm2-tools prints the events of a legacy SHA-1 log
                // without `- ` list items, so its YAML repeats keys in one mapping, which
                // a strict YAML parser rejects (PyYAML keeps the last). Vigil prints the
                // same text; compare the text.
                Err(e) => assert!(
                    e.to_string().contains("duplicate entry"),
                    "{expected_path}: {e}"
                ),
            }
            assert_eq!(ours, expected, "{expected_path}: not byte-identical");
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} expectations compared");
}

/// Every way the installed tpm2_eventlog (5.4) is known to differ from Vigil (which
/// prints what tpm2-tools 5.8 prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Difference {
    /// Before 5.6, tpm2-tools printed `EV_IPL` and `SbatLevel` strings as `|-` block
    /// scalars holding a double-quoted, escaped string (quotes and `\0` included), which
    /// is why Keylime un-escapes them; 5.6+ prints a real double-quoted YAML string.
    QuotedBlockStrings,
    /// 5.4 prints a string without its final line break (the SBAT CSV's `\n`).
    DropsFinalNewline,
    /// 5.4 extends `EV_NO_ACTION` events and ignores StartupLocality (tpm2-tools#3224,
    /// #3242, fixed in 5.6), so PCRs that such events touch replay differently.
    NoActionReplay,
}

/// 5.4's block text, one `"…\0"` per line, back to the string it stands for.
fn unquote_54(s: &str) -> Option<String> {
    let lines = s
        .split('\n')
        .map(unquote_line_54)
        .collect::<Option<Vec<_>>>()?;
    Some(lines.join("\n"))
}

fn unquote_line_54(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '0' => out.push('\0'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'x' => {
                let code: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&code, 16).ok()?));
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Rewrites the strings of 5.4's document the way 5.8 prints them, noting which named
/// differences applied.
fn normalise_strings(v: &mut Value, seen: &mut Vec<Difference>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                if k.as_str() == Some("String") {
                    if let Some(text) = val.as_str().and_then(unquote_54) {
                        seen.push(Difference::QuotedBlockStrings);
                        *val = Value::String(text);
                    }
                } else {
                    normalise_strings(val, seen);
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(|x| normalise_strings(x, seen)),
        _ => {}
    }
}

fn strip_final_newlines(v: &mut Value, seen: &mut Vec<Difference>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                match (k.as_str(), val.as_str()) {
                    (Some("String"), Some(s)) if s.ends_with('\n') => {
                        seen.push(Difference::DropsFinalNewline);
                        *val = Value::String(s.trim_end_matches('\n').to_owned());
                    }
                    _ => strip_final_newlines(val, seen),
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(|x| strip_final_newlines(x, seen)),
        _ => {}
    }
}

/// Drops, from `pcrs`, the PCRs that an `EV_NO_ACTION` event after the header names.
fn drop_no_action_pcrs(doc: &mut Value, pcrs: &[u64], seen: &mut Vec<Difference>) {
    let Some(Value::Mapping(banks)) = doc.get_mut("pcrs") else {
        return;
    };
    for (_, bank) in banks.iter_mut() {
        if let Value::Mapping(values) = bank {
            for pcr in pcrs {
                if values.remove(Value::from(*pcr)).is_some() {
                    seen.push(Difference::NoActionReplay);
                }
            }
        }
    }
}

fn installed_tpm2_eventlog(log: &Path) -> Option<String> {
    let out = Command::new("tpm2_eventlog")
        .arg("--eventlog-version=2")
        .arg(log)
        .output()
        .expect("tpm2_eventlog is not installed: run scripts/setup.sh");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).expect("tpm2_eventlog printed UTF-8"))
}

#[test]
fn matches_installed_tpm2_eventlog_up_to_named_differences() {
    let mut compared = 0;
    let mut seen = Vec::new();
    for log in all_logs() {
        let Some(theirs) = installed_tpm2_eventlog(&log) else {
            panic!(
                "{}: tpm2_eventlog refuses a log Vigil must parse",
                log.display()
            );
        };
        // Debian's tpm2-tools is built without libefivar: device paths in hex.
        let ours = vigil_yaml(&log, 2, DevicePathStyle::Hex);
        let bytes = std::fs::read(&log).unwrap();
        let parsed = eventlog::parse(&bytes).unwrap();
        let no_action_pcrs: Vec<u64> = parsed.events[1..]
            .iter()
            .filter(|e| e.event_type == eventlog::EV_NO_ACTION)
            .map(|e| u64::from(e.pcr))
            .collect();
        let (Ok(mut theirs_doc), Ok(mut ours_doc)) = (
            serde_yaml::from_str::<Value>(&theirs),
            serde_yaml::from_str::<Value>(&ours),
        ) else {
            // The legacy SHA-1 log: duplicate keys on both sides (see above); 5.4 prints
            // it exactly as Vigil does.
            assert!(
                parsed.spec_id.is_none(),
                "{}: YAML does not parse",
                log.display()
            );
            assert_eq!(ours, theirs, "{}", log.display());
            compared += 1;
            continue;
        };
        normalise_strings(&mut theirs_doc, &mut seen);
        strip_final_newlines(&mut ours_doc, &mut seen);
        strip_final_newlines(&mut theirs_doc, &mut Vec::new());
        drop_no_action_pcrs(&mut ours_doc, &no_action_pcrs, &mut seen);
        drop_no_action_pcrs(&mut theirs_doc, &no_action_pcrs, &mut Vec::new());
        if let (Some(Value::Sequence(a)), Some(Value::Sequence(b))) =
            (ours_doc.get("events"), theirs_doc.get("events"))
        {
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x, y, "{}: first differing event", log.display());
            }
        }
        assert_eq!(ours_doc, theirs_doc, "{}", log.display());
        compared += 1;
    }
    assert!(compared >= 12, "only {compared} logs compared");
    // Each named difference must still be real, or it should be removed from the list.
    for d in [
        Difference::QuotedBlockStrings,
        Difference::DropsFinalNewline,
        Difference::NoActionReplay,
    ] {
        assert!(seen.contains(&d), "{d:?} no longer occurs");
    }
}

#[test]
fn boot_aggregates_follow_keylime() {
    use vigil_core::HashAlg;
    let bytes = std::fs::read(format!(
        "{TESTDATA}/keylime/test/data/create-mb-policy/binary_bios_measurements"
    ))
    .unwrap();
    let banks = eventlog::parse(&bytes).unwrap().replay();
    let aggregates = eventlog::boot_aggregates(&banks);
    for (alg, pcrs) in &banks {
        // Keylime: H over the replayed PCRs 0..7, then 0..9, each zero-padded.
        let expected: Vec<_> = [8u32, 10]
            .iter()
            .filter(|&&n| (0..n).all(|i| pcrs.contains_key(&i)))
            .map(|&n| {
                let mut cat = Vec::new();
                for i in 0..n {
                    cat.extend_from_slice(pcrs[&i].as_bytes());
                }
                alg.hash(&cat)
            })
            .collect();
        assert_eq!(aggregates[alg], expected, "{alg}");
        assert_eq!(expected.len(), 2, "{alg}: the log extends PCRs 0-9");
    }
    assert!(aggregates.contains_key(&HashAlg::Sha1) && aggregates.contains_key(&HashAlg::Sha256));
    // No IMA log in the shared test data comes from this machine (their boot_aggregate
    // lines are zeros or other machines' values), so pin the figures for regressions.
    assert_eq!(
        aggregates[&HashAlg::Sha256][0].to_hex(),
        "aa6edeeffec152e9af0b0539a3716ea882e5043d5043a28998810b888bf6617d"
    );
    assert_eq!(
        aggregates[&HashAlg::Sha1][0].to_hex(),
        "a487eef424f06c172cb00898af18c7f76f924cb8"
    );
}

#[test]
fn damaged_logs_render_without_panics() {
    // Truncations and byte flips of a log rich in decoded events (variables, signature
    // lists, load options, device paths, GPT): decoding and printing never panic.
    let bytes = std::fs::read(format!("{TESTDATA}/tpm2-tools/event-arch-linux.bin")).unwrap();
    let opts = RenderOptions::default();
    let render = |b: &[u8]| {
        if let Ok(log) = eventlog::parse(b) {
            let _ = eventlog::to_yaml(&log, opts);
            let _ = eventlog::to_json(&log, opts);
        }
    };
    for cut in (0..bytes.len()).step_by(61) {
        render(&bytes[..cut]);
    }
    let mut flipped = bytes.clone();
    for i in (0..bytes.len()).step_by(53) {
        flipped[i] ^= 0xff;
        render(&flipped);
        flipped[i] ^= 0xff;
    }
}
