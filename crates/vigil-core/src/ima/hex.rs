//! Hexadecimal decoding with the exact acceptance rules Keylime inherits from Python's
//! `bytes.fromhex`, plus Python's `repr()` of a byte string (Keylime puts it in the
//! context of `ima.validation.ima_hash` events).
//!
//! `bytes.fromhex` accepts upper- and lowercase digits and skips runs of ASCII whitespace
//! (space, `\t`, `\n`, `\v`, `\f`, `\r`) *between* byte pairs, never inside one. The
//! kernel never writes whitespace there, so the strict fast path handles every real log;
//! the lenient path only runs when the fast path rejects its input, so a hostile or
//! hand-edited log is judged the way Keylime judges it.
//!
//! Non-ASCII text is always rejected. (CPython would first map Unicode decimal digits
//! and spaces to ASCII; no kernel emits such text and Vigil does not follow it there.)

/// Marks a byte that is not a hex digit in [`HEX_VALUE`].
const INVALID: u8 = 0xff;
/// Marks ASCII whitespace that `bytes.fromhex` skips between pairs.
const SPACE: u8 = 0xfe;

/// Value of each byte as a hex digit, or [`INVALID`] / [`SPACE`].
static HEX_VALUE: [u8; 256] = build_table();

const fn build_table() -> [u8; 256] {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t[0x0b] = SPACE;
    t[0x0c] = SPACE;
    t[b'\r' as usize] = SPACE;
    t
}

/// Why a string is not hex in `bytes.fromhex`'s sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("non-hexadecimal character at offset {offset}")]
pub struct HexError {
    /// Byte offset of the first offending character in the field.
    pub offset: usize,
}

/// True when `src` is an even number of plain ASCII hex digits: the kernel's format,
/// decodable by [`decode_plain`].
#[inline]
pub(crate) fn is_plain_hex(src: &[u8]) -> bool {
    // Branch-free over each byte so the compiler vectorizes it.
    let mut bad = 0u8;
    for &c in src {
        let digit = c.wrapping_sub(b'0') < 10;
        let alpha = (c | 0x20).wrapping_sub(b'a') < 6;
        bad |= u8::from(!(digit | alpha));
    }
    bad == 0 && src.len() % 2 == 0
}

const HIGH: u64 = 0x8080_8080_8080_8080;

/// Per byte lane of `x` (every lane below 0x80): high bit set iff the lane is >= `n`.
/// Adding `0x80 - n` cannot carry into the next lane because lanes are below 0x80.
#[inline(always)]
const fn lanes_ge(x: u64, n: u8) -> u64 {
    x.wrapping_add(ONES * (0x80 - n as u64)) & HIGH
}

/// High bit set in every lane of `x` that is not an ASCII hex digit.
#[inline(always)]
const fn non_hex_lanes(x: u64) -> u64 {
    let high = x & HIGH;
    let y = x & !HIGH;
    let digit = lanes_ge(y, b'0') & !lanes_ge(y, b'9' + 1);
    let lower = y | (ONES * 0x20);
    let alpha = lanes_ge(lower, b'a') & !lanes_ge(lower, b'f' + 1);
    (!(digit | alpha) & HIGH) | high
}

/// Length of the run of ASCII hex digits at the start of `src`, eight bytes at a time.
/// The parser uses it to find the end of a hex field and validate it in one pass.
#[inline]
pub(crate) fn hex_run(src: &[u8]) -> usize {
    let mut chunks = src.chunks_exact(8);
    let mut n = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let bad = non_hex_lanes(u64::from_le_bytes(w));
        if bad != 0 {
            return n + (bad.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + chunks
        .remainder()
        .iter()
        .take_while(|&&c| HEX_VALUE[c as usize] < 16)
        .count()
}

/// The value of a hex digit already known to be valid: digits have bit 6 clear,
/// letters have it set and a low nibble 9 below their value.
#[inline(always)]
const fn nibble(c: u8) -> u8 {
    (c & 0x0f) + ((c >> 6) & 1) * 9
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// Decodes eight hex digits (known valid) into four bytes, eight lanes at a time.
#[inline(always)]
const fn decode8(x: u64) -> [u8; 4] {
    let nib = (x & (ONES * 0x0f)) + ((x >> 6) & ONES) * 9;
    // Lane 2k holds the high nibble of output byte k (little-endian lanes).
    let pairs = ((nib << 4) | (nib >> 8)) & 0x00ff_00ff_00ff_00ff;
    let packed = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    ((packed | (packed >> 16)) as u32).to_le_bytes()
}

/// Decodes plain hex already accepted by [`is_plain_hex`] into `dst`
/// (`dst.len() == src.len() / 2`). Given other input it writes garbage but stays
/// memory-safe and panic-free.
#[inline]
pub(crate) fn decode_plain(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(4);
    for (c, out) in (&mut s).zip(&mut d) {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        out.copy_from_slice(&decode8(u64::from_le_bytes(w)));
    }
    for (out, pair) in d
        .into_remainder()
        .iter_mut()
        .zip(s.remainder().chunks_exact(2))
    {
        *out = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
}

/// Walks `src` with `bytes.fromhex` rules, calling `sink` with each decoded byte.
/// Stops at the first error.
#[inline]
fn walk_lenient(src: &[u8], mut sink: impl FnMut(u8)) -> Result<(), HexError> {
    let mut i = 0;
    while i < src.len() {
        let c = HEX_VALUE[src[i] as usize];
        if c == SPACE {
            i += 1;
            continue;
        }
        if c == INVALID {
            return Err(HexError { offset: i });
        }
        let lo = match src.get(i + 1) {
            Some(&b) => HEX_VALUE[b as usize],
            // An odd digit at the end: Python reports the position just past it.
            None => return Err(HexError { offset: i + 1 }),
        };
        if lo >= 16 {
            return Err(HexError { offset: i + 1 });
        }
        sink((c << 4) | lo);
        i += 2;
    }
    Ok(())
}

/// Number of bytes `src` decodes to under `bytes.fromhex` rules, or where it stops
/// being hex.
pub(crate) fn decoded_len(src: &str) -> Result<usize, HexError> {
    let b = src.as_bytes();
    if is_plain_hex(b) {
        return Ok(b.len() / 2);
    }
    let mut n = 0usize;
    walk_lenient(b, |_| n += 1)?;
    Ok(n)
}

/// Decodes with `bytes.fromhex` rules into the front of `dst`, returning the decoded
/// length, or `None` if it is not hex or does not fit. Bytes past `dst` are not
/// written, so a header can be read from the front of a longer field: on overflow
/// `dst` is full and `Err(len)` gives the full length.
pub(crate) fn decode_front(src: &str, dst: &mut [u8]) -> Result<usize, Option<usize>> {
    let b = src.as_bytes();
    if is_plain_hex(b) && b.len() / 2 <= dst.len() {
        let n = b.len() / 2;
        decode_plain(b, dst.get_mut(..n).unwrap_or_default());
        return Ok(n);
    }
    let mut n = 0usize;
    walk_lenient(b, |v| {
        if let Some(slot) = dst.get_mut(n) {
            *slot = v;
        }
        n += 1;
    })
    .map_err(|_| None)?;
    if n > dst.len() {
        return Err(Some(n));
    }
    Ok(n)
}

/// Appends the bytes `src` decodes to onto `out` with `bytes.fromhex` rules; `plain`
/// says `src` passed [`is_plain_hex`]. On error `out` may hold part of the field.
pub(crate) fn append_decoded(src: &str, plain: bool, out: &mut Vec<u8>) -> Result<(), HexError> {
    let b = src.as_bytes();
    if plain {
        let start = out.len();
        out.resize(start + b.len() / 2, 0);
        decode_plain(b, out.get_mut(start..).unwrap_or_default());
        return Ok(());
    }
    walk_lenient(b, |v| out.push(v))
}

/// Python's `repr()` of a `bytes` value, e.g. `b'\x00ab\\'`, as Keylime writes byte
/// strings into event contexts.
pub(crate) fn py_bytes_repr(data: &[u8]) -> String {
    use std::fmt::Write as _;
    // Python picks double quotes only when the data holds a single quote and no double.
    let quote = if data.contains(&b'\'') && !data.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut s = String::with_capacity(data.len() + 3);
    s.push('b');
    s.push(quote as char);
    for &c in data {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            c if c == quote => {
                s.push('\\');
                s.push(c as char);
            }
            0x20..=0x7e => s.push(c as char),
            c => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s.push(quote as char);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenient(s: &str) -> Result<Vec<u8>, HexError> {
        let mut v = Vec::new();
        append_decoded(s, is_plain_hex(s.as_bytes()), &mut v).map(|()| v)
    }

    #[test]
    fn follows_python_fromhex() {
        // Expectations are what CPython 3.11's bytes.fromhex returns for the same input.
        assert_eq!(lenient("abCD").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(lenient("ab cd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(lenient(" ab\t\r\n\x0b\x0ccd ").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(lenient("").unwrap(), Vec::<u8>::new());
        assert_eq!(lenient("   ").unwrap(), Vec::<u8>::new());
        assert_eq!(lenient("a b"), Err(HexError { offset: 1 }));
        assert_eq!(lenient("a"), Err(HexError { offset: 1 }));
        assert_eq!(lenient("abc"), Err(HexError { offset: 3 }));
        assert_eq!(lenient("xy"), Err(HexError { offset: 0 }));
        assert_eq!(lenient("é0"), Err(HexError { offset: 0 }));
        assert_eq!(decoded_len("ab cd ef"), Ok(3));
        assert_eq!(decoded_len("0g"), Err(HexError { offset: 1 }));
    }

    #[test]
    fn front_decoding_reports_overflow() {
        let mut buf = [0u8; 2];
        assert_eq!(decode_front("0102", &mut buf), Ok(2));
        assert_eq!(buf, [1, 2]);
        assert_eq!(decode_front("0a 0B", &mut buf), Ok(2));
        assert_eq!(buf, [10, 11]);
        assert_eq!(decode_front("030405", &mut buf), Err(Some(3)));
        assert_eq!(buf, [3, 4]);
        assert_eq!(decode_front("01zz", &mut buf), Err(None));
    }

    #[test]
    fn hex_run_stops_at_the_first_non_digit() {
        for len in 0..40 {
            for c in [b' ', b'g', b':', 0x80, 0xff, b'/', b'@', b'`', b'G'] {
                let mut v = b"0123456789abcdefABCDEF0123456789abcdefAB".to_vec();
                v.truncate(len);
                let full = v.len();
                v.push(c);
                v.extend_from_slice(b"00");
                assert_eq!(hex_run(&v), full, "{len} {c}");
            }
        }
        assert_eq!(hex_run(b""), 0);
    }

    #[test]
    fn swar_paths_agree_with_the_table() {
        // Every byte value in every lane position, against a per-character reference.
        for pos in 0..8 {
            for c in 0u8..=255 {
                let mut src = *b"0123456789abcdef";
                src[pos] = c;
                let valid = c.is_ascii_hexdigit();
                assert_eq!(is_plain_hex(&src), valid, "{c} at {pos}");
                if valid {
                    let mut out = [0u8; 8];
                    decode_plain(&src, &mut out);
                    let want = hex::decode(src).unwrap();
                    assert_eq!(out.to_vec(), want);
                }
            }
        }
        let mut out = [0u8; 11];
        let src = b"00112233445566778899AaBbCcDdEeFf0a1B2c";
        assert!(is_plain_hex(&src[..22]));
        decode_plain(&src[..22], &mut out);
        assert_eq!(out.to_vec(), hex::decode(&src[..22]).unwrap());
        assert!(!is_plain_hex(b"abc"));
    }

    #[test]
    fn repr_matches_python() {
        // Expected strings are CPython's repr() of the same bytes.
        assert_eq!(py_bytes_repr(b"it's"), "b\"it's\"");
        assert_eq!(py_bytes_repr(b"a\"b'c"), "b'a\"b\\'c'");
        assert_eq!(py_bytes_repr(b"\x7f\x80\\"), "b'\\x7f\\x80\\\\'");
        assert_eq!(
            py_bytes_repr(b"\x00\x08\t\n\x0b\x0c\r\x1f !~"),
            "b'\\x00\\x08\\t\\n\\x0b\\x0c\\r\\x1f !~'"
        );
    }
}
