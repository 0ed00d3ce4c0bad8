//! Keylime's protocol constants and rules that every layer shares: the API versions
//! the verifier serves and talks to nodes with, version negotiation, and which ids and
//! names are valid (compat §1.2, §1.6). Depends on nothing else in the crate.

/// The API version Keylime 7.14.3 calls current.
pub const CURRENT_VERSION: &str = "2.6";
/// The versions served (the v2 routes; Vigil's verifier has no push mode).
pub const SUPPORTED_VERSIONS: [&str; 7] = ["2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];
/// The agent API versions the verifier can talk (for negotiation with a node).
pub(crate) const AGENT_VERSIONS: [&str; 6] = ["2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];

/// `v2`, `v2.0`…`v2.6`: a path prefix this verifier serves.
pub(crate) fn served_prefix(prefix: &str) -> bool {
    prefix
        .strip_prefix('v')
        .is_some_and(|v| v == "2" || SUPPORTED_VERSIONS.contains(&v))
}

/// Keylime's version negotiation: the highest version both sides list.
pub(crate) fn negotiate(ours: &[&str], theirs: &[String]) -> Option<String> {
    let key = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').unwrap_or((v, "0"));
        (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
    };
    theirs
        .iter()
        .filter(|v| ours.contains(&v.as_str()))
        .max_by_key(|v| key(v))
        .cloned()
}

/// `major.minor`, digits only: the shape of every API version.
pub(crate) fn is_version_number(v: &str) -> bool {
    v.split_once('.').is_some_and(|(a, b)| {
        [a, b]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|c| c.is_ascii_digit()))
    })
}

/// Keylime's `valid_agent_id` (letters, digits, `_`, `.`, `-`), without names made
/// only of dots: `.` and `..` are rewritten by every HTTP client, so such a record
/// could never be reached again.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !id.bytes().all(|b| b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_highest_common_version() {
        let theirs = ["2.1", "2.2", "2.10", "3.0"].map(String::from);
        assert_eq!(
            negotiate(&["2.1", "2.2", "2.10"], &theirs).as_deref(),
            Some("2.10")
        );
        assert_eq!(negotiate(&["2.5"], &theirs), None);
    }

    #[test]
    fn ids_and_prefixes() {
        assert!(valid_id("d432fbb3-d2f1-4a97-9ef7-75bd81c00000"));
        assert!(!valid_id("a/b") && !valid_id("") && !valid_id("a b"));
        assert!(!valid_id(".") && !valid_id("..") && !valid_id("..."));
        assert!(valid_id("a.b") && valid_id(".a"));
        for ok in ["2.6", "9.9", "10.12"] {
            assert!(is_version_number(ok), "{ok}");
        }
        for bad in [
            "abc/../",
            "2.6/../../version?",
            "2.6\r\nX: y",
            "2",
            "2.",
            ".6",
            "v2.6",
            "",
        ] {
            assert!(!is_version_number(bad), "{bad}");
        }
        for ok in ["v2", "v2.0", "v2.6"] {
            assert!(served_prefix(ok), "{ok}");
        }
        for bad in ["v1.0", "v2.7", "v3.0", "2.6", ""] {
            assert!(!served_prefix(bad), "{bad}");
        }
    }
}
