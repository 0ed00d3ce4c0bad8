//! Legacy inputs: flat allowlists, pre-6.6 JSON allowlists and exclude lists, converted
//! to a v1 document the way Keylime's `convert_runtime_policy` does.
//!
//! Where Vigil is stricter: a flat-allowlist line that is not `<digest> <path>` is an
//! error naming the line (Keylime prints a warning and drops it), and a digest with a
//! known `alg:` prefix (`sha256:…`, as in Keylime's own sample allowlist) is read
//! without the prefix (Keylime copies the prefix into the policy, which its schema then
//! rejects).

use serde_json::{json, Map, Value};

use super::PolicyError;

/// Builds the v1 document for an allowlist and an exclude list.
pub(super) fn convert(
    allowlist: Option<&str>,
    excludelist: Option<&str>,
) -> Result<Value, PolicyError> {
    let mut doc = json!({
        "meta": {"version": super::CURRENT_VERSION, "generator": 3},
        "release": 0,
        "digests": {},
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    });
    if let Some(text) = allowlist {
        match serde_json::from_str::<Value>(text) {
            Ok(json) => convert_json_allowlist(&json, &mut doc)?,
            Err(_) => convert_flat_allowlist(text, &mut doc)?,
        }
    }
    if let Some(text) = excludelist {
        let excludes = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| json!(l));
        // Appended to a JSON allowlist's own excludes, as Keylime's converter does; an
        // `excludes` that is not a list is left for the schema check to name.
        if let Some(list) = doc["excludes"].as_array_mut() {
            list.extend(excludes);
        }
    }
    Ok(doc)
}

fn convert_json_allowlist(json: &Value, doc: &mut Value) -> Result<(), PolicyError> {
    let not_allowlist = |message: &str| PolicyError::Legacy {
        file: "allowlist",
        line: 1,
        message: message.to_owned(),
    };
    if json.get("digests").is_some() {
        return Err(not_allowlist(
            "this is already a runtime policy; pass it with --policy",
        ));
    }
    let hashes = json
        .get("hashes")
        .filter(|h| h.as_object().is_some_and(|o| !o.is_empty()))
        .ok_or_else(|| not_allowlist("a JSON allowlist needs a non-empty \"hashes\" object"))?;
    doc["digests"] = hashes.clone();
    for key in [
        "release",
        "excludes",
        "keyrings",
        "ima-buf",
        "verification-keys",
    ] {
        if let Some(v) = json.get(key).filter(|v| is_truthy(v)) {
            doc[key] = v.clone();
        }
    }
    // Older allowlists carry only some of the `ima` keys; keep the defaults for the rest.
    if let Some(ima) = json.get("ima").and_then(Value::as_object) {
        for (k, v) in ima {
            doc["ima"][k] = v.clone();
        }
    }
    Ok(())
}

fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

fn convert_flat_allowlist(text: &str, doc: &mut Value) -> Result<(), PolicyError> {
    let mut digests = Map::new();
    let mut keyrings = Map::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |message: String| PolicyError::Legacy {
            file: "allowlist",
            line: index + 1,
            message,
        };
        let Some((digest, path)) = line.split_once(char::is_whitespace) else {
            return Err(bad(format!("expected '<digest> <path>', got '{line}'")));
        };
        let path = path.trim_start();
        let digest = match digest.split_once(':') {
            Some((alg, hex)) if vigil_alg(alg) => hex,
            _ => digest,
        };
        let (table, name) = match path.strip_prefix("%keyring:") {
            Some(keyring) => (&mut keyrings, keyring),
            None => (&mut digests, path),
        };
        let entry = table
            .entry(name.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!(digest));
        }
    }
    doc["digests"] = Value::Object(digests);
    doc["keyrings"] = Value::Object(keyrings);
    Ok(())
}

fn vigil_alg(name: &str) -> bool {
    crate::hash::HashAlg::from_name(name).is_some()
}
