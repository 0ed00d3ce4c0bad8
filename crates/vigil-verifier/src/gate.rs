//! The provisioning trust gate's rules that need no service: what a class name and a
//! node's labels may hold, the gate's query, when stored evidence is fresh enough, and
//! the verifier's attestation-results key (created at the first start).
//!
//! The operations themselves (classes, a node's class and labels, "is this node
//! trusted with evidence no older than T") are in `service::gate`; the routes under
//! `/vigil/v1/` in `http::gate`. See `docs/trust-gate.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use vigil_core::attestation::{NodeAttestation, OperationalState};
use vigil_core::results::{ResultsKey, NONCE_LEN};

use crate::protocol::valid_id;

/// Labels a node may carry.
const MAX_LABELS: usize = 32;
/// Longest label key or value, and class name.
const MAX_NAME: usize = 63;
/// The largest key file read.
const MAX_KEY_FILE: u64 = 16 * 1024;
/// The longest `timeout` a gate query may ask for.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// `timeout` when the query gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `max_age` when the query gives none (seconds).
const DEFAULT_MAX_AGE: u64 = 60;

/// A class name: letters, digits, `_`, `.`, `-`, at most 63 characters.
pub(crate) fn check_class_name(name: &str) -> Result<(), String> {
    if name.len() <= MAX_NAME && valid_id(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a class name (letters, digits, '_', '.', '-'; at most {MAX_NAME})"
        ))
    }
}

fn check_label_part(what: &str, s: &str) -> Result<(), String> {
    if s.len() <= MAX_NAME && valid_id(s) {
        Ok(())
    } else {
        Err(format!(
            "label {what} {s:?} must be letters, digits, '_', '.', '-' (at most {MAX_NAME})"
        ))
    }
}

/// A node's labels from a JSON object of string values (at most 32).
pub(crate) fn labels(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let map = v.as_object().ok_or("must be an object of string values")?;
    if map.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    map.iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .ok_or_else(|| format!("label {k:?} is not a string"))?;
            check_label_part("key", k)?;
            check_label_part("value", v)?;
            Ok((k.clone(), v.to_owned()))
        })
        .collect()
}

/// A label selector `key=value`.
pub(crate) fn selector(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("label selector {text:?} is not key=value"))?;
    check_label_part("key", k)?;
    check_label_part("value", v)?;
    Ok((k.to_owned(), v.to_owned()))
}

/// `GET /vigil/v1/trust/{id}`'s query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustQuery {
    /// How old the last successful attestation may be (seconds).
    pub(crate) max_age: u64,
    /// The caller's nonce, echoed in the token.
    pub(crate) nonce: Option<String>,
    /// How long an on-demand round may take.
    pub(crate) timeout: Duration,
}

impl TrustQuery {
    /// From the query's `max_age`, `nonce` and `timeout`; errors name the parameter.
    pub(crate) fn parse(
        max_age: Option<&str>,
        nonce: Option<&str>,
        timeout: Option<&str>,
    ) -> Result<Self, String> {
        let max_age = match max_age {
            None => DEFAULT_MAX_AGE,
            Some(s) => s
                .parse()
                .map_err(|_| format!("max_age {s:?} is not a number of seconds"))?,
        };
        let timeout = match timeout {
            None => DEFAULT_TIMEOUT,
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|t| *t > 0.0)
                .and_then(|t| Duration::try_from_secs_f64(t).ok())
                .filter(|t| *t <= MAX_TIMEOUT)
                .ok_or_else(|| {
                    format!(
                        "timeout {s:?} is not a number of seconds from 0 to {}",
                        MAX_TIMEOUT.as_secs()
                    )
                })?,
        };
        if let Some(n) = nonce {
            // URL-safe characters only, so that a caller need not encode it.
            let url_safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            if !NONCE_LEN.contains(&n.len()) || !n.bytes().all(url_safe) {
                return Err(format!(
                    "nonce must be {}–{} characters of A-Z a-z 0-9 - . _ ~",
                    NONCE_LEN.start(),
                    NONCE_LEN.end()
                ));
            }
        }
        Ok(Self {
            max_age,
            nonce: nonce.map(str::to_owned),
            timeout,
        })
    }
}

/// When the node's stored evidence answers the gate without a new round: its last
/// round passed (it is polling, not failed or retrying), is younger than `max_age` at
/// `now` (whole seconds, so `max_age` 0 always asks for a round), and came after
/// `not_before` (when its class, or the class's values, last changed). Returns the
/// evidence time.
pub(crate) fn fresh(
    node: &NodeAttestation,
    now: u64,
    max_age: u64,
    not_before: u64,
) -> Option<u64> {
    let passed = node.last_successful_attestation();
    let polling = matches!(
        node.state(),
        OperationalState::GetQuote | OperationalState::ProvideV
    );
    (polling
        && passed > 0
        && passed >= node.last_received_quote()
        && passed > not_before
        && now.saturating_sub(passed) < max_age)
        .then_some(passed)
}

/// Why the attestation-results key cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("attestation-results key {path}: {reason}")]
pub(crate) struct KeyFileError {
    path: String,
    reason: String,
}

/// Reads the key at `path`, or creates one there (mode 0600, its directory too) when
/// there is no file.
pub(crate) fn load_or_create_key(path: &Path) -> Result<ResultsKey, KeyFileError> {
    use std::io::{Read, Write};
    let err = |reason: String| KeyFileError {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::File::open(path) {
        Ok(f) => {
            let mut text = String::new();
            f.take(MAX_KEY_FILE)
                .read_to_string(&mut text)
                .map_err(|e| err(e.to_string()))?;
            ResultsKey::from_pem(&text).map_err(|e| err(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ResultsKey::generate(&mut rand_core::OsRng);
            let pem = key.to_pem().map_err(|e| err(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(path).map_err(|e| err(e.to_string()))?;
            f.write_all(pem.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "created the attestation-results key");
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_labels_and_queries_are_checked() {
        assert!(check_class_name("r650-fw2.1").is_ok());
        assert!(check_class_name("a b").is_err());
        assert!(check_class_name(&"x".repeat(64)).is_err());
        let l = labels(&json!({"rack": "7", "row": "b"})).unwrap();
        assert_eq!(l["rack"], "7");
        assert!(labels(&json!({"rack": 7})).unwrap_err().contains("rack"));
        assert!(labels(&json!({"ra ck": "7"})).is_err());
        assert_eq!(selector("rack=7").unwrap(), ("rack".into(), "7".into()));
        assert!(selector("rack").is_err());
        let q = TrustQuery::parse(Some("60"), Some("abcdefgh"), Some("2.5")).unwrap();
        assert_eq!(q.timeout, Duration::from_millis(2500));
        assert_eq!(TrustQuery::parse(None, None, None).unwrap().max_age, 60);
        assert!(TrustQuery::parse(Some("-1"), None, None).is_err());
        assert!(TrustQuery::parse(None, Some("short"), None).is_err());
        assert!(TrustQuery::parse(None, Some("a&b=c;d#e"), None).is_err());
        assert!(TrustQuery::parse(None, None, Some("1000")).is_err());
    }

    /// Stored evidence answers only when the last round passed, is younger than
    /// `max_age` and came after the class last changed.
    #[test]
    fn fresh_evidence_is_a_recent_passed_round_after_the_class_changed() {
        use std::sync::Arc;
        use vigil_core::attestation::{Action, AttestationConfig, RoundOutcome, UnixTime};
        let mut node = NodeAttestation::new(Arc::new(AttestationConfig::default()), false);
        assert_eq!(fresh(&node, 100, 60, 0), None, "never attested");
        node.start(UnixTime::from_secs(100)).unwrap();
        let Some(Action::GetQuote { id, .. }) = node.poll_action(UnixTime::from_secs(100)) else {
            panic!("a quote request");
        };
        node.quote_received(
            UnixTime::from_secs(100),
            id,
            RoundOutcome::passed().with_public_key("k"),
        )
        .unwrap();
        assert_eq!(fresh(&node, 130, 60, 0), Some(100));
        assert_eq!(fresh(&node, 160, 60, 0), None, "60 s old is stale");
        assert_eq!(fresh(&node, 130, 0, 0), None, "max_age 0 always attests");
        assert_eq!(
            fresh(&node, 130, 60, 100),
            None,
            "judged before the class changed"
        );
        assert_eq!(fresh(&node, 130, 60, 99), Some(100));
        node.stop(UnixTime::from_secs(101)).unwrap();
        assert_eq!(fresh(&node, 130, 60, 0), None, "stopped by the tenant");
    }

    #[test]
    fn the_key_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.pem");
        let created = load_or_create_key(&path).unwrap();
        let read = load_or_create_key(&path).unwrap();
        assert_eq!(created.public_pem().unwrap(), read.public_pem().unwrap());
        std::fs::write(&path, "junk").unwrap();
        assert!(load_or_create_key(&path)
            .unwrap_err()
            .to_string()
            .contains("key.pem"));
    }
}
