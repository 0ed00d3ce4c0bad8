//! API version negotiation, as Keylime's tenant does it: the highest version both sides
//! list, the tenant's own list being every 2.x version (it does not speak v3).

/// The API versions the tenant speaks, oldest first (Keylime 7.14.3's 2.x list).
pub(crate) const TENANT_VERSIONS: [&str; 7] = ["2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6"];

/// The version used when a server does not say (Keylime's `current_version`).
pub(crate) const CURRENT: &str = "2.6";

fn parse(v: &str) -> Option<(u32, u32)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The highest version in both `remote` and the tenant's list, compared numerically
/// (so 2.10 would beat 2.9); `None` when they share none.
pub(crate) fn negotiate<S: AsRef<str>>(remote: &[S]) -> Option<&'static str> {
    TENANT_VERSIONS
        .iter()
        .filter(|local| {
            remote
                .iter()
                .any(|r| parse(r.as_ref()).is_some() && parse(r.as_ref()) == parse(local))
        })
        .max_by_key(|v| parse(v))
        .copied()
}

/// The versions a `/version` answer lists: `supported_versions`, or the single
/// `supported_version` older agents send.
pub(crate) fn listed(results: &serde_json::Value) -> Vec<String> {
    if let Some(list) = results.get("supported_versions").and_then(|v| v.as_array()) {
        return list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
    }
    results
        .get("supported_version")
        .and_then(|v| v.as_str())
        .map(|v| vec![v.to_owned()])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_highest_common_2x_version() {
        let keylime = [
            "1.0", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0",
        ];
        assert_eq!(negotiate(&keylime), Some("2.6"));
        assert_eq!(negotiate(&["2.1", "2.2"]), Some("2.2"));
        assert_eq!(negotiate(&["v2.3"]), Some("2.3"));
        assert_eq!(negotiate(&["3.0"]), None);
        assert_eq!(negotiate(&["1.0", "garbage"]), None);
        assert_eq!(negotiate::<&str>(&[]), None);
    }

    #[test]
    fn reads_both_version_answer_shapes() {
        assert_eq!(
            listed(&json!({"supported_version": "2.6", "supported_versions": ["2.5", "2.6"]})),
            ["2.5", "2.6"]
        );
        assert_eq!(listed(&json!({"supported_version": "2.1"})), ["2.1"]);
        assert!(listed(&json!({})).is_empty());
    }
}
