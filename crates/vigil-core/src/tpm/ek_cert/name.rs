//! Distinguished names, compared as Keylime compares them: by attribute (OID and
//! decoded text), whatever string type each side was written with, so an issuer in a
//! UTF8String matches a subject in a PrintableString. Vendors write names loosely;
//! values outside their type's alphabet are read and noted, not refused.

use std::fmt;

use super::ber::{oid_to_string, tag, BerError, Notes, Tlv};

/// One attribute value of a name, compared as Python's `cryptography` does: by OID and
/// decoded text, whatever the string type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum AttrValue {
    Text(String),
    /// A value that is not a string: its TLV bytes.
    Other(Vec<u8>),
}

/// An X.509 distinguished name. Equality is by the attributes (OID and decoded value;
/// order within a multi-valued RDN does not matter), not by bytes, so an issuer written
/// as UTF8String matches a subject written as PrintableString, as in Keylime.
#[derive(Debug, Clone)]
pub struct Name {
    key: Vec<Vec<(String, AttrValue)>>,
    display: String,
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Name {}
impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

fn attr_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

pub(super) fn parse_name(t: &Tlv<'_>, notes: &mut Notes, what: &str) -> Result<Name, BerError> {
    let t = t.check_tag(tag::SEQUENCE, what)?;
    let mut key = Vec::new();
    let mut shown = Vec::new();
    let mut rdns = t.reader();
    while !rdns.is_empty() {
        let rdn = rdns.next_tagged(notes, tag::SET, what)?;
        let mut attrs = Vec::new();
        let mut shown_rdn = Vec::new();
        let mut r = rdn.reader();
        while !r.is_empty() {
            let atv = r.next_tagged(notes, tag::SEQUENCE, what)?;
            let mut a = atv.reader();
            let oid = oid_to_string(a.next_tagged(notes, tag::OID, what)?.content);
            let v = a.next(notes)?;
            a.finish(what)?;
            let value = decode_string(&v, notes, what);
            let label = attr_short_name(&oid).map_or_else(|| oid.clone(), str::to_string);
            shown_rdn.push(match &value {
                AttrValue::Text(s) => format!("{label}={}", escape_name_value(s)),
                AttrValue::Other(raw) => format!("{label}=#{}", hex::encode(raw)),
            });
            attrs.push((oid, value));
        }
        if attrs.is_empty() {
            return Err(rdn.error(format!("{what}: empty RDN")));
        }
        // An RDN is a SET: its order carries no meaning.
        attrs.sort();
        key.push(attrs);
        shown.push(shown_rdn.join(" + "));
    }
    Ok(Name {
        key,
        display: shown.join(", "),
    })
}

fn escape_name_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | '+' | '\\' | '"' | '<' | '>' | ';') {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes a directory string; a value outside its type's alphabet is noted (vendors
/// put `@` or `_` in PrintableStrings) and still read.
fn decode_string(v: &Tlv<'_>, notes: &mut Notes, what: &str) -> AttrValue {
    let c = v.content;
    let mut bad =
        |kind: &str| notes.push(v.offset, format!("{what}: {kind} with invalid characters"));
    let text = match v.tag {
        tag::PRINTABLE_STRING => {
            let ok = c
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
            if !ok {
                bad("PrintableString");
            }
            String::from_utf8_lossy(c).into_owned()
        }
        tag::IA5_STRING | tag::VISIBLE_STRING | tag::NUMERIC_STRING => {
            if !c.is_ascii() {
                bad("ASCII string");
            }
            String::from_utf8_lossy(c).into_owned()
        }
        tag::UTF8_STRING => match std::str::from_utf8(c) {
            Ok(s) => s.to_string(),
            Err(_) => {
                bad("UTF8String");
                String::from_utf8_lossy(c).into_owned()
            }
        },
        // T.61 in theory; Latin-1 in practice.
        tag::TELETEX_STRING => c.iter().map(|&b| char::from(b)).collect(),
        tag::BMP_STRING if c.len() % 2 == 0 => {
            let units: Vec<u16> = c
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        tag::UNIVERSAL_STRING if c.len() % 4 == 0 => c
            .chunks_exact(4)
            .map(|p| {
                char::from_u32(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => return AttrValue::Other(v.raw.to_vec()),
    };
    AttrValue::Text(text)
}
