//! The one canonical form of a request path, computed once per request
//! before anything reads the path (auth endpoints, route match, role rules,
//! CSRF, static files) and forwarded upstream as is, so the gateway and every
//! upstream framework agree on which route a request belongs to.
//!
//! The rule (docs/security.md section 11):
//! - escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded,
//!   every other escape is kept with its hex in upper case;
//! - refused: a path not starting with `/`; malformed escapes; escapes that
//!   do not decode to UTF-8; encoded `/`, `\`, `;`, control characters; raw
//!   `\`, `;`, control or non-ASCII bytes; `%25` followed by two hex digits
//!   (a second decoding would make it another character); empty segments
//!   (`//`); `.` and `..` segments, whatever their spelling.
//!
//! Anything an upstream could read as another path is thus refused rather
//! than guessed at: only case and non-ASCII letters are left, which
//! [`fold_matches`] covers.

use std::borrow::Cow;

/// The canonical form of `path`, borrowed when it is already canonical (the
/// usual case: one byte scan, no allocation); the reason it is refused otherwise.
pub(crate) fn canonical(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if is_plain(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let out = decode_unreserved(path)?;
    check_canonical(&out)?;
    // Unchanged (e.g. only an escaped space): the caller need not rebuild the URI.
    if out == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(out))
}

/// Characters that never need the slow path: unreserved, sub-delimiters but
/// `;`, `:`, `@` and `/`. A table: one load per byte on the hot path.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        b += 1;
    }
    t
};

/// One scan: starts with `/`, only plain bytes, no empty and no dot segment.
fn is_plain(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    // Length of the current segment, and whether it is dots only so far.
    let mut len = 0usize;
    let mut dots = true;
    for &b in &path[1..] {
        if b == b'/' {
            if len == 0 || (dots && len <= 2) {
                return false;
            }
            len = 0;
            dots = true;
        } else if PLAIN[usize::from(b)] {
            len += 1;
            dots &= b == b'.';
        } else {
            return false;
        }
    }
    // The last segment may be empty (`/api/`), not `.` or `..`.
    !(dots && (1..=2).contains(&len))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decode escapes of unreserved characters, upper-case the rest; refuse the
/// characters no path may carry, raw or encoded.
fn decode_unreserved(path: &str) -> Result<String, &'static str> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    // The decoded bytes of a run of non-ASCII escapes, checked for UTF-8.
    let mut utf8 = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let v = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) => match (hex_value(h), hex_value(l)) {
                    (Some(h), Some(l)) => h << 4 | l,
                    _ => return Err("malformed percent-encoding in path"),
                },
                _ => return Err("malformed percent-encoding in path"),
            };
            i += 3;
            if v >= 0x80 {
                utf8.push(v);
            } else {
                check_utf8(&mut utf8)?;
            }
            match v {
                b'/' | b'\\' => return Err("encoded / or \\ in path"),
                b';' => return Err("encoded ; in path"),
                0..0x20 | 0x7f => return Err("control character in path"),
                v if is_unreserved(v) => out.push(char::from(v)),
                v => {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(v >> 4)]));
                    out.push(char::from(HEX[usize::from(v & 0xf)]));
                }
            }
            continue;
        }
        check_utf8(&mut utf8)?;
        match b {
            b';' => return Err("path parameters (;) are not allowed"),
            b'\\' => return Err("backslash in path"),
            0..0x20 | 0x7f.. => return Err("invalid character in path"),
            _ => out.push(char::from(b)),
        }
        i += 1;
    }
    check_utf8(&mut utf8)?;
    Ok(out)
}

/// A finished run of encoded non-ASCII bytes must be UTF-8.
fn check_utf8(run: &mut Vec<u8>) -> Result<(), &'static str> {
    if run.is_empty() {
        return Ok(());
    }
    let ok = std::str::from_utf8(run).is_ok();
    run.clear();
    if ok {
        Ok(())
    } else {
        Err("percent-encoding in path is not UTF-8")
    }
}

/// What the decoded form may still hide: empty and dot segments, `%25`
/// before two hex digits or before `u` (also when these were themselves
/// encoded): an upstream that decodes again reads `%2561` as `a`, and one
/// with `%uXXXX` escapes (.NET's `HttpUtility.UrlDecode`) reads `%25u0061`
/// as `a` too.
fn check_canonical(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("path must start with /");
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg == "." || seg == ".." {
            return Err("dot segments are not allowed in paths");
        }
        if seg.is_empty() && segments.peek().is_some() {
            return Err("empty path segments (//) are not allowed");
        }
    }
    let b = path.as_bytes();
    // One comparison per byte: paths rarely hold a `%`.
    let double = b.iter().enumerate().any(|(i, &c)| {
        let rest = &b[i..];
        c == b'%'
            && rest.starts_with(b"%25")
            && match rest.get(3) {
                Some(b'u' | b'U') => true,
                Some(&hi) => {
                    hex_value(hi).is_some()
                        && rest.get(4).is_some_and(|&lo| hex_value(lo).is_some())
                }
                None => false,
            }
    });
    if double {
        return Err("double percent-encoding in path");
    }
    Ok(())
}

/// Does `path` (canonical) match `prefix` (ASCII, as in config) when ASCII
/// case is ignored and every encoded non-ASCII character may stand for any
/// letter? The latter because some upstreams fold it onto one: .NET's
/// `OrdinalIgnoreCase` takes `ı` for `I` and `ſ` for `S`, Python's `lower()`
/// takes the Kelvin sign for `k`. The same segment-boundary rule as an exact
/// match; no allocation.
pub(crate) fn fold_matches(prefix: &str, path: &str) -> bool {
    match prefix.strip_suffix('/') {
        Some(bare) => fold_strip(prefix, path).is_some() || fold_strip(bare, path) == Some(""),
        None => {
            fold_strip(prefix, path).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
    }
}

/// Could an upstream take `path` (canonical) for the route `prefix`? As
/// [`fold_matches`], and also `<prefix>.<ext>` in the last segment: Spring
/// MVC before 5.3 matches `/api/admin` for `/api/admin.json` (suffix
/// pattern matching). For the refusal check only, never to pick a route.
pub(crate) fn shadow_matches(prefix: &str, path: &str) -> bool {
    fold_matches(prefix, path)
        || fold_strip(prefix.trim_end_matches('/'), path)
            .is_some_and(|rest| rest.starts_with('.') && !rest.contains('/'))
}

/// The rest of `path` after a part that folds onto `prefix` (see
/// [`fold_matches`]); `None` when it does not start with one.
pub(crate) fn fold_strip<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let s = path.as_bytes();
    let mut i = 0;
    for &want in prefix.as_bytes() {
        let got = *s.get(i)?;
        if got == b'%'
            && want.is_ascii_alphabetic()
            && let Some(len) = encoded_non_ascii_len(&s[i..])
        {
            i += len;
            continue;
        }
        if !got.eq_ignore_ascii_case(&want) {
            return None;
        }
        i += 1;
    }
    // `i` follows an ASCII byte, so it is a char boundary.
    path.get(i..)
}

/// Length in bytes of the escaped UTF-8 character `%XX%XX…` at the start of
/// `s` when it is non-ASCII.
fn encoded_non_ascii_len(s: &[u8]) -> Option<usize> {
    let byte = |k: usize| -> Option<u8> {
        match s.get(3 * k..3 * k + 3)? {
            [b'%', h, l] => Some(hex_value(*h)? << 4 | hex_value(*l)?),
            _ => None,
        }
    };
    let lead = byte(0)?;
    let n = match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return None,
    };
    (1..n)
        .all(|k| byte(k).is_some_and(|b| b & 0xc0 == 0x80))
        .then_some(3 * n)
}

#[cfg(test)]
mod tests;
