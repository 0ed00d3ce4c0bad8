//! Times for certificate validity: ASN.1 UTCTime/GeneralizedTime and RFC 3339 to Unix
//! seconds and back. The text forms are read here; the calendar is the `time` crate's.
//! Pure functions; the clock is the caller's.

use time::{Date, Month, OffsetDateTime, Time};

use super::ber::{tag, Notes, Tlv};

/// Unix seconds of a UTC calendar time, or `None` when a field is out of range.
fn to_unix(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    // 60 is a leap second; it is counted as the next second.
    let (s, leap) = if s == 60 { (59, 1) } else { (s, 0) };
    let date = Date::from_calendar_date(
        i32::try_from(y).ok()?,
        Month::try_from(u8::try_from(mo).ok()?).ok()?,
        u8::try_from(d).ok()?,
    )
    .ok()?;
    let time = Time::from_hms(
        u8::try_from(h).ok()?,
        u8::try_from(mi).ok()?,
        u8::try_from(s).ok()?,
    )
    .ok()?;
    Some(date.with_time(time).assume_utc().unix_timestamp() + leap)
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

/// Formats Unix seconds as RFC 3339 UTC (`2030-10-24T23:59:59Z`). A time outside the
/// years -9999 to 9999, which no certificate or RFC 3339 text can hold, is shown as
/// its number of seconds.
pub fn format_unix_time(t: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(t) {
        Ok(u) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            u.year(),
            u8::from(u.month()),
            u.day(),
            u.hour(),
            u.minute(),
            u.second()
        ),
        Err(_) => format!("{t} s since 1970-01-01T00:00:00Z"),
    }
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
        // A leap second counts as the next second.
        let leap = [&[0x17, 13][..], b"301024235960Z"].concat();
        assert_eq!(asn1(&leap).0, Some(1_919_116_800));
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
            format_unix_time(i64::MIN),
            format!("{} s since 1970-01-01T00:00:00Z", i64::MIN)
        );
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
