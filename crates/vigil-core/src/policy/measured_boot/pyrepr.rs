//! Python's `repr()`/`ascii()` of JSON data, for failure reasons.
//!
//! Keylime's reasons embed Python reprs of the log's events and of the refstate
//! (`{'PCRIndex': 7, 'EventType': 'EV_SEPARATOR', …}`); operators grep for them, so Vigil
//! prints the same text. JSON maps to Python as `json.load` maps it: objects to dicts (in
//! document order), arrays to lists, `true`/`false`/`null` to `True`/`False`/`None`.

use std::fmt::Write;

use serde_json::Value;

/// `repr(value)` (`ascii` false) or `ascii(value)` (`ascii` true).
pub(crate) fn repr(value: &Value, ascii: bool) -> String {
    let mut out = String::new();
    write_value(&mut out, value, ascii);
    out
}

/// `repr(s)` of a Python string.
pub(crate) fn repr_str(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_str(&mut out, s, ascii);
    out
}

/// `repr` of a tuple of values: `(a, b)`, or `(a,)` for one.
pub(crate) fn repr_tuple<'a>(items: impl IntoIterator<Item = &'a Value>, ascii: bool) -> String {
    let mut out = String::from("(");
    let mut n = 0;
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_value(&mut out, v, ascii);
        n += 1;
    }
    if n == 1 {
        out.push(',');
    }
    out.push(')');
    out
}

fn write_value(out: &mut String, value: &Value, ascii: bool) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or_default();
                let text = f.to_string();
                out.push_str(&text);
                // Python always shows a float as one.
                if !text.contains(['.', 'e', 'E', 'i', 'N']) {
                    out.push_str(".0");
                }
            } else {
                let _ = write!(out, "{n}");
            }
        }
        Value::String(s) => write_str(out, s, ascii),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, v, ascii);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k, ascii);
                out.push_str(": ");
                write_value(out, v, ascii);
            }
            out.push('}');
        }
    }
}

/// Characters Python's `str.isprintable()` rejects, approximated without Unicode tables:
/// controls, separators other than the space, and the common format characters.
fn unprintable(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

fn write_str(out: &mut String, s: &str, ascii: bool) {
    // Python prefers single quotes, and switches to double quotes only to avoid escaping.
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x7f && !c.is_control() => out.push(c),
            c if !ascii && (c as u32) >= 0xa0 && !unprintable(c) => out.push(c),
            c => {
                let n = c as u32;
                let _ = if n < 0x100 {
                    write!(out, "\\x{n:02x}")
                } else if n < 0x10000 {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python() {
        let v = json!({"a": [1, true, null, 1.5, 2.0], "b'": "it's", "c": "x\"y'z\u{0}\u{e9}"});
        assert_eq!(
            repr(&v, false),
            r#"{'a': [1, True, None, 1.5, 2.0], "b'": "it's", 'c': 'x"y\'z\x00é'}"#
        );
        assert_eq!(
            repr(&v, true),
            r#"{'a': [1, True, None, 1.5, 2.0], "b'": "it's", 'c': 'x"y\'z\x00\xe9'}"#
        );
        assert_eq!(repr_tuple(&[json!(7)], false), "(7,)");
        assert_eq!(repr_tuple(&[json!(7), json!("EV_X")], false), "(7, 'EV_X')");
        assert_eq!(repr_str("\u{20ac}\u{1f600}", true), r"'\u20ac\U0001f600'");
    }
}
