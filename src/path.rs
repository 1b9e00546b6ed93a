//! Path canonicalization: the path that is authorized must be exactly the path that is
//! forwarded upstream, so [`canonicalize_path`] rejects anything an upstream server might read
//! differently (dot segments, encoded slashes, path parameters, ...) instead of trying to
//! repair it.

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path must start with \"/\"")]
    NotAbsolute,
    #[error("malformed percent-escape (\"%\" must be followed by two hex digits)")]
    MalformedEscape,
    #[error("encoded slash (%2F) is not allowed in a path")]
    EncodedSlash,
    #[error("encoded backslash (%5C) is not allowed in a path")]
    EncodedBackslash,
    #[error("encoded NUL (%00) is not allowed in a path")]
    EncodedNul,
    #[error("backslash is not allowed in a path")]
    Backslash,
    #[error("\";\" (path parameters) is not allowed in a path")]
    Semicolon,
    #[error("path contains a character that must be percent-encoded")]
    InvalidChar,
    #[error("\".\" and \"..\" segments are not allowed in a path")]
    DotSegment,
    #[error("percent-escapes must decode to UTF-8 (no overlong or partial sequences)")]
    InvalidUtf8,
}

/// Canonicalize the raw path of a request URI (as `http::Uri::path()` gives it, no query).
///
/// The result is what gets both authorized and forwarded: unreserved escapes decoded once,
/// other escapes in upper-case hex, `//` merged (a single trailing slash kept), and anything
/// ambiguous refused. The output is never longer than the input, so it is allocated once.
pub fn canonicalize_path(raw: &str) -> Result<String, PathError> {
    if is_canonical(raw.as_bytes()) {
        return Ok(raw.to_owned());
    }
    rebuild(raw)
}

/// Is `raw` already its own canonical form? Most request paths are (no escape, no empty or dot
/// segment, only bytes a segment may hold as they are): one pass over the bytes then spares
/// the byte-by-byte rebuild, which costs about three times as much.
fn is_canonical(raw: &[u8]) -> bool {
    let Some((b'/', rest)) = raw.split_first() else {
        return false;
    };
    let is_dot = |segment: &[u8]| matches!(segment, b"." | b"..");
    // Every segment but the last non-empty; the last may be empty (a single trailing slash).
    let mut start = 0;
    for (i, &byte) in rest.iter().enumerate() {
        if byte == b'/' {
            let segment = &rest[start..i];
            if segment.is_empty() || is_dot(segment) {
                return false;
            }
            start = i + 1;
        } else if !PLAIN[usize::from(byte)] {
            return false;
        }
    }
    !is_dot(&rest[start..])
}

/// The bytes a segment holds as they are ([`check_raw_byte`] passes them, and they are not
/// `%`). A table: every request's path is checked byte by byte (the checks one by one cost
/// ~30 instructions a byte; callgrind, benches/load).
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = is_unreserved(byte) || is_sub_delim(byte) || byte == b':' || byte == b'@';
        b += 1;
    }
    table
};

/// The canonical form of a path that is not yet canonical, or why it cannot have one.
fn rebuild(raw: &str) -> Result<String, PathError> {
    let rest = match raw.strip_prefix('/') {
        Some(rest) => rest,
        None if raw.is_empty() => return Err(PathError::Empty),
        None => return Err(PathError::NotAbsolute),
    };
    let mut out = String::with_capacity(raw.len());
    let mut parts = rest.split('/').peekable();
    while let Some(part) = parts.next() {
        if part.is_empty() {
            // Merge "//"; keep a single trailing slash (and the root "/").
            if parts.peek().is_none() {
                out.push('/');
            }
            continue;
        }
        out.push('/');
        let start = out.len();
        push_segment(&mut out, part)?;
        if matches!(out.get(start..), Some("." | "..")) {
            return Err(PathError::DotSegment);
        }
    }
    Ok(out)
}

/// Appends one raw segment to `out`, normalising its percent-escapes.
fn push_segment(out: &mut String, part: &str) -> Result<(), PathError> {
    let mut rest = part.as_bytes();
    let mut non_ascii = false;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let (value, after) = take_escape(tail)?;
            non_ascii |= !value.is_ascii();
            push_escaped(out, value)?;
            rest = after;
        } else {
            check_raw_byte(byte)?;
            out.push(char::from(byte));
            rest = tail;
        }
    }
    // Escaped bytes must spell UTF-8: an overlong `%C0%AE` is a "." to a lax decoder upstream.
    if non_ascii {
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(part).collect();
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::InvalidUtf8);
        }
    }
    Ok(())
}

/// Reads the two hex digits after a '%'.
fn take_escape(tail: &[u8]) -> Result<(u8, &[u8]), PathError> {
    match tail {
        [high, low, after @ ..] => match (hex_value(*high), hex_value(*low)) {
            (Some(high), Some(low)) => Ok(((high << 4) | low, after)),
            _ => Err(PathError::MalformedEscape),
        },
        _ => Err(PathError::MalformedEscape),
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Decodes an escaped unreserved character; keeps any other escape, in upper-case hex.
/// Decoding only unreserved characters, and only once, means the result never decodes
/// to anything new (so `%252e` stays `%252e`, never `.`).
fn push_escaped(out: &mut String, value: u8) -> Result<(), PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    match value {
        0 => Err(PathError::EncodedNul),
        b'/' => Err(PathError::EncodedSlash),
        b'\\' => Err(PathError::EncodedBackslash),
        v if is_unreserved(v) => {
            out.push(char::from(v));
            Ok(())
        }
        v => {
            out.push('%');
            out.push(char::from(HEX[usize::from(v >> 4)]));
            out.push(char::from(HEX[usize::from(v & 0x0f)]));
            Ok(())
        }
    }
}

/// A byte that may appear unescaped in a segment: RFC 3986 pchar, minus ';' and '%'.
fn check_raw_byte(byte: u8) -> Result<(), PathError> {
    match byte {
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::Semicolon),
        b if is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@' => Ok(()),
        _ => Err(PathError::InvalidChar),
    }
}

/// RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
pub(crate) const fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 sub-delims, without ';' (refused as a path parameter marker).
pub(crate) const fn is_sub_delim(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[(&str, &str)] = &[
        ("/", "/"),
        ("/v1/article", "/v1/article"),
        ("/v1/article/", "/v1/article/"),
        ("/v1/article//", "/v1/article/"),
        ("/v1//article", "/v1/article"),
        ("//v1///article", "/v1/article"),
        ("//", "/"),
        ("/v1/article/%41", "/v1/article/A"),
        ("/v1/%7e", "/v1/~"),
        ("/v1/%7E%2d%5f%2E%30", "/v1/~-_.0"),
        ("/v1/a%3ab", "/v1/a%3Ab"),
        ("/v1/%252e", "/v1/%252e"),
        ("/v1/%252e%252e", "/v1/%252e%252e"),
        ("/v1/%25", "/v1/%25"),
        ("/v1/caf%c3%a9", "/v1/caf%C3%A9"),
        ("/v1/...", "/v1/..."),
        ("/v1/.well-known", "/v1/.well-known"),
        ("/v1/a.b", "/v1/a.b"),
        ("/v1/%2e%2e%2e", "/v1/..."),
        ("/v1/user@example.com", "/v1/user@example.com"),
        ("/v1/a:b!$&'()*+,=", "/v1/a:b!$&'()*+,="),
        ("/v1/Article", "/v1/Article"),
    ];

    const BAD: &[(&str, PathError)] = &[
        ("", PathError::Empty),
        ("v1/article", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("/v1/%2e%2e/admin", PathError::DotSegment),
        ("/v1/%2E", PathError::DotSegment),
        ("/v1/.%2e/admin", PathError::DotSegment),
        ("/v1/%2e./admin", PathError::DotSegment),
        ("/v1/../admin", PathError::DotSegment),
        ("/v1/./article", PathError::DotSegment),
        ("/..", PathError::DotSegment),
        ("/v1/article/.", PathError::DotSegment),
        ("/v1/a%2Fb", PathError::EncodedSlash),
        ("/v1/a%2fb", PathError::EncodedSlash),
        ("/v1/a%5Cb", PathError::EncodedBackslash),
        ("/v1/a%5cb", PathError::EncodedBackslash),
        ("/v1/a\\b", PathError::Backslash),
        ("/v1/article;jsessionid=1", PathError::Semicolon),
        ("/v1/;/article", PathError::Semicolon),
        ("/v1/%", PathError::MalformedEscape),
        ("/v1/%4", PathError::MalformedEscape),
        ("/v1/%zz", PathError::MalformedEscape),
        ("/v1/%4g", PathError::MalformedEscape),
        ("/v1/%%41", PathError::MalformedEscape),
        ("/v1/a%00", PathError::EncodedNul),
        ("/v1/a b", PathError::InvalidChar),
        ("/v1/caf\u{e9}", PathError::InvalidChar),
        ("/v1/\"x\"", PathError::InvalidChar),
        ("/v1/<x>", PathError::InvalidChar),
        ("/v1/{id}", PathError::InvalidChar),
        ("/v1/a|b", PathError::InvalidChar),
        ("/v1/a^b", PathError::InvalidChar),
        ("/v1/a`b", PathError::InvalidChar),
        ("/v1/a\tb", PathError::InvalidChar),
        ("/v1/a\nb", PathError::InvalidChar),
        ("/v1/a\u{7f}", PathError::InvalidChar),
        ("/v1/a?b", PathError::InvalidChar),
        ("/v1/a#b", PathError::InvalidChar),
        ("/v1/a\0b", PathError::InvalidChar),
        ("/v1/%c0%ae%c0%ae/admin", PathError::InvalidUtf8),
        ("/v1/%e0%80%ae", PathError::InvalidUtf8),
        ("/v1/caf%e9", PathError::InvalidUtf8),
        ("/v1/%c3", PathError::InvalidUtf8),
        ("/v1/%ff%fe", PathError::InvalidUtf8),
        ("/v1/%ed%a0%80", PathError::InvalidUtf8),
    ];

    #[test]
    fn canonicalize_accepts_and_normalises() {
        for (raw, expected) in GOOD {
            assert_eq!(canonicalize_path(raw).as_deref(), Ok(*expected), "{raw:?}");
        }
    }

    #[test]
    fn canonicalize_rejects() {
        for (raw, expected) in BAD {
            assert_eq!(canonicalize_path(raw), Err(*expected), "{raw:?}");
        }
    }

    #[test]
    fn canonicalize_is_idempotent() {
        for (raw, _) in GOOD {
            let once = canonicalize_path(raw).expect("good path");
            assert_eq!(
                canonicalize_path(&once).as_deref(),
                Ok(once.as_str()),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn canonicalize_keeps_common_paths_in_one_allocation() {
        let raw = "/v1/article/12345/translations";
        let out = canonicalize_path(raw).expect("good path");
        assert_eq!(out, raw);
        assert_eq!(out.capacity(), raw.len());
    }

    #[test]
    fn canonicalize_survives_every_short_input() {
        // No panic for any one- or two-byte segment, and every Ok result is a fixed point.
        for a in 0u8..=255 {
            for b in 0u8..=255 {
                let raw = String::from_utf8_lossy(&[b'/', a, b, b'%', a, b]).into_owned();
                if let Ok(once) = canonicalize_path(&raw) {
                    assert_eq!(canonicalize_path(&once).as_deref(), Ok(once.as_str()));
                }
            }
        }
    }

    #[test]
    fn a_path_taken_as_canonical_is_what_the_rebuild_makes() {
        // Every path of up to four bytes after the '/' over the bytes that matter.
        let alphabet = [b'a', b'.', b'/', b'%', b'2', b'F', b';', b'~', b' ', b'\\'];
        let mut raw = vec![b'/'];
        let mut taken = 0;
        for n in 0..=alphabet.len().pow(4) {
            raw.truncate(1);
            let mut rest = n;
            while rest > 0 {
                raw.push(alphabet[rest % alphabet.len()]);
                rest /= alphabet.len();
            }
            let Ok(text) = std::str::from_utf8(&raw) else {
                continue;
            };
            if is_canonical(&raw) {
                taken += 1;
                assert_eq!(rebuild(text).as_deref(), Ok(text), "{text:?}");
            }
        }
        assert!(taken > 500, "the fast path is taken ({taken})");
        for b in 0..=255u8 {
            let plain = b != b'%' && check_raw_byte(b).is_ok();
            assert_eq!(PLAIN[usize::from(b)], plain, "byte {b}");
        }
        assert!(!is_canonical(b""));
        assert!(is_canonical(b"/"));
        assert!(is_canonical(b"/v1/article/"));
        assert!(!is_canonical(b"/v1//article"));
    }

    #[test]
    fn path_errors_are_sentences() {
        assert_eq!(
            PathError::EncodedSlash.to_string(),
            "encoded slash (%2F) is not allowed in a path"
        );
        assert_eq!(
            PathError::DotSegment.to_string(),
            "\".\" and \"..\" segments are not allowed in a path"
        );
    }
}
