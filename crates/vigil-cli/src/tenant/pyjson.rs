//! JSON text as Python's `json.dumps` writes it with its defaults (`", "` and `": "`
//! separators, non-ASCII escaped as `\uXXXX`). Keylime's tenant sends several fields
//! as JSON *strings* made by `json.dumps` (`tpm_policy`, `metadata`, `mb_policy`), and
//! the verifier stores and echoes them verbatim, so Vigil writes them the same way.

use serde_json::Value;

/// `json.dumps(value)` (the writer `vigil policy create` uses for its documents).
pub(crate) fn dumps(value: &Value) -> String {
    crate::policy_create::python_json(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| unreachable!("a JSON value always serialises to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        // Expected texts are what CPython 3.11's json.dumps prints for these values.
        assert_eq!(dumps(&json!({"mask": "0x400"})), r#"{"mask": "0x400"}"#);
        assert_eq!(
            dumps(&json!({"22": ["ff", "00"], "mask": "0x400000"})),
            r#"{"22": ["ff", "00"], "mask": "0x400000"}"#
        );
        assert_eq!(
            dumps(&json!({"cert_serial": 3, "subject": "CN=a\"b"})),
            r#"{"cert_serial": 3, "subject": "CN=a\"b"}"#
        );
        assert_eq!(dumps(&json!({})), "{}");
        assert_eq!(dumps(&json!([])), "[]");
        assert_eq!(
            dumps(&json!([null, true, 1.5, -2])),
            "[null, true, 1.5, -2]"
        );
        assert_eq!(
            dumps(&json!("é\u{1F600}\u{7f}\n")),
            r#""\u00e9\ud83d\ude00\u007f\n""#
        );
    }
}
