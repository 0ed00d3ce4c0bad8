//! Calendar arithmetic for certificate validity: ASN.1 UTCTime/GeneralizedTime and
//! RFC 3339 to Unix seconds and back. Pure functions; the clock is the caller's.

use super::ber::{tag, Notes, Tlv};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Unix seconds of a calendar time, or `None` when a field is out of range.
fn to_unix(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let ok = (1..=12).contains(&mo)
        && (1..=days_in_month(y, mo)).contains(&d)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        // 60 is a leap second; it is counted as the next second.
        && (0..=60).contains(&s);
    ok.then(|| days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |a, &b| a * 10 + i64::from(b - b'0')))
}

/// Reads a `Time` (UTCTime or GeneralizedTime) to Unix seconds. DER fixes one form
/// (seconds present, `Z`, no fraction); other forms are accepted and noted.
pub(crate) fn parse_asn1_time(t: &Tlv<'_>, notes: &mut Notes, what: &str) -> Option<i64> {
    let c = t.content;
    let (year, rest) = match t.tag {
        tag::UTC_TIME => {
            let yy = digits(c.get(..2)?)?;
            // RFC 5280: two-digit years 50..99 are 19xx, 00..49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &c[2..])
        }
        tag::GENERALIZED_TIME => (digits(c.get(..4)?)?, &c[4..]),
        _ => return None,
    };
    let two = |i: usize| rest.get(i..i + 2).and_then(digits);
    let (mo, d, h, mi) = (two(0)?, two(2)?, two(4)?, two(6)?);
    let mut i = 8;
    let s = match two(8) {
        Some(s) => {
            i = 10;
            s
        }
        None => {
            notes.push(t.offset, format!("{what}: time without seconds"));
            0
        }
    };
    if t.tag == tag::GENERALIZED_TIME && rest.get(i) == Some(&b'.') {
        notes.push(t.offset, format!("{what}: time with fractional seconds"));
        i += 1;
        while rest.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let base = to_unix(year, mo, d, h, mi, s)?;
    match &rest[i..] {
        b"Z" => Some(base),
        [sign @ (b'+' | b'-'), off @ ..] if off.len() == 4 => {
            notes.push(t.offset, format!("{what}: time with a UTC offset"));
            let (oh, om) = (digits(&off[..2])?, digits(&off[2..])?);
            let off = oh * 3600 + om * 60;
            Some(if *sign == b'+' {
                base - off
            } else {
                base + off
            })
        }
        _ => None,
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2030-10-24T23:59:59Z`).
pub fn format_unix_time(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses an RFC 3339 timestamp (`2026-01-02T03:04:05Z`, `…+01:00`, fractions
/// ignored) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| b.get(r).and_then(digits);
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let base = to_unix(
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    )?;
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    match &b[i..] {
        b"Z" | b"z" => Some(base),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let off = digits(&[*h1, *h2])? * 3600 + digits(&[*m1, *m2])? * 60;
            Some(if *sign == b'+' {
                base - off
            } else {
                base + off
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::ek_cert::ber::Reader;

    fn asn1(der: &[u8]) -> (Option<i64>, Vec<String>) {
        let mut notes = Notes::default();
        let t = Reader::new(der).next(&mut notes).unwrap();
        let v = parse_asn1_time(&t, &mut notes, "t");
        (v, notes.0)
    }

    #[test]
    fn asn1_times() {
        // 301024235959Z
        let utc = [&[0x17, 13][..], b"301024235959Z"].concat();
        assert_eq!(asn1(&utc), (Some(1_919_116_799), vec![]));
        let gen = [&[0x18, 15][..], b"99991231235959Z"].concat();
        assert_eq!(asn1(&gen).0, Some(253_402_300_799));
        let old = [&[0x17, 13][..], b"700101000000Z"].concat();
        assert_eq!(asn1(&old).0, Some(0));
        let no_secs = [&[0x17, 11][..], b"0501010000Z"].concat();
        let (v, notes) = asn1(&no_secs);
        assert_eq!(v, Some(1_104_537_600));
        assert_eq!(notes.len(), 1);
        let offset = [&[0x17, 17][..], b"050101010000+0100"].concat();
        assert_eq!(asn1(&offset).0, Some(1_104_537_600));
        for bad in [
            &b"051301000000Z"[..],
            b"050230000000Z",
            b"05010100000",
            b"0501010000000",
        ] {
            let der = [&[0x17, bad.len() as u8][..], bad].concat();
            assert_eq!(asn1(&der).0, None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        for t in [0, 951_782_400, 1_919_116_799, 253_402_300_799, -1] {
            assert_eq!(parse_rfc3339(&format_unix_time(t)), Some(t));
        }
        assert_eq!(format_unix_time(1_919_116_799), "2030-10-24T23:59:59Z");
        assert_eq!(
            parse_rfc3339("2030-10-25T01:59:59.5+02:00"),
            Some(1_919_116_799)
        );
        for bad in [
            "2030-10-24",
            "2030-13-01T00:00:00Z",
            "2030-10-24T23:59:59",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
