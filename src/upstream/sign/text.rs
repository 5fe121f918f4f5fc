//! The text pieces of a signature: canonical query and path (percent
//! coding as Huawei's SDK does it), value checks, hex and digits written
//! into a string without formatting machinery.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but `A-Za-z0-9-_.~` is escaped (Python's `quote(s, safe='~')`).
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The canonical form of a raw query (without `?`); see the module docs.
pub fn canonical_query(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> = raw
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            (decode(k), decode(v))
        })
        .collect();
    pairs.sort_unstable();
    let mut out = String::with_capacity(raw.len() + raw.len() / 2);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, ESCAPED));
        out.push('=');
        out.extend(utf8_percent_encode(v, ESCAPED));
    }
    out
}

/// The canonical form of a request path; see the module docs.
pub fn canonical_uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    push_canonical_uri(&mut out, path);
    out
}

pub(super) fn push_canonical_uri(out: &mut String, path: &str) {
    let start = out.len();
    for (i, segment) in decode(path).split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(segment, ESCAPED));
    }
    if out.len() == start || !out.ends_with('/') {
        out.push('/');
    }
}

/// Percent-decodes `s`; invalid UTF-8 becomes U+FFFD (Python's `unquote`).
pub(super) fn decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let bytes: Vec<u8> = percent_decode_str(s).collect();
    match String::from_utf8(bytes) {
        Ok(decoded) => std::borrow::Cow::Owned(decoded),
        Err(e) => std::borrow::Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Strips surrounding whitespace the way Python's `str.strip()` does.
pub(super) fn strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

pub(super) fn has_control(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

pub(super) fn valid_sdk_date(d: &str) -> bool {
    let b = d.as_bytes();
    b.len() == 16
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 => c == b'T',
            15 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(super) fn hex_into(bytes: &[u8; 32], out: &mut [u8; 64]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

pub(super) fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

pub(super) fn push_num(out: &mut String, n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut len = 0;
    let mut n = n;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push('0');
    }
    for d in digits[..len].iter().rev() {
        out.push(char::from(*d));
    }
}
