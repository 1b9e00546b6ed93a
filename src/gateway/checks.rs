//! The checks of the request itself that hyper leaves to the application (see [`check_request`]).

use crate::path::{is_sub_delim, is_unreserved};
use crate::rejection::Rejection;
use crate::server::Limits;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};

/// The checks of the request itself that hyper leaves to the application: no tunnels or
/// upgrades (but `Upgrade: h2c` alone, which is ignored), sizes within the limits, one Host
/// that agrees with the target (RFC 9112 §3.2), and a Transfer-Encoding that is exactly
/// `chunked` (anything else cannot be forwarded as it was meant: the gateway re-frames every
/// body).
pub(super) fn check_request<B>(request: &Request<B>, limits: &Limits) -> Result<(), Rejection> {
    if request.method() == Method::CONNECT {
        return Err(Rejection::ConnectNotAllowed);
    }
    let headers = request.headers();
    let seen = HeadScan::of(headers);
    if seen.upgrade && !only_h2c(headers) {
        return Err(Rejection::UpgradeNotAllowed);
    }
    let uri = request.uri();
    let uri_length = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if uri_length > limits.max_uri_length {
        return Err(Rejection::UriTooLong);
    }
    if seen.size > limits.max_header_size {
        return Err(Rejection::HeadersTooLarge);
    }
    check_host(request.version(), uri, seen.hosts)?;
    match seen.codings {
        [None, _] => Ok(()),
        [Some(coding), None] if coding.as_bytes().eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(Rejection::BadRequest),
    }
}

/// What the checks need of the headers, found in one pass over them rather than a lookup
/// by name for each (a few hundred instructions per request; callgrind, benches/load).
struct HeadScan<'h> {
    /// As on the wire: `name: value\r\n` for each.
    size: usize,
    upgrade: bool,
    /// The first two `Host` values, and the first two `Transfer-Encoding` ones.
    hosts: [Option<&'h HeaderValue>; 2],
    codings: [Option<&'h HeaderValue>; 2],
}

impl<'h> HeadScan<'h> {
    fn of(headers: &'h HeaderMap) -> HeadScan<'h> {
        let mut seen = HeadScan {
            size: 0,
            upgrade: false,
            hosts: [None; 2],
            codings: [None; 2],
        };
        for (name, value) in headers {
            seen.size += name.as_str().len() + value.len() + 4;
            if name == header::HOST {
                keep_two(&mut seen.hosts, value);
            } else if name == header::TRANSFER_ENCODING {
                keep_two(&mut seen.codings, value);
            } else if name == header::UPGRADE {
                seen.upgrade = true;
            }
        }
        seen
    }
}

/// Keeps the first two values of a name: one more says only that there are several.
fn keep_two<'h>(kept: &mut [Option<&'h HeaderValue>; 2], value: &'h HeaderValue) {
    if let Some(slot) = kept.iter_mut().find(|slot| slot.is_none()) {
        *slot = Some(value);
    }
}

/// Whether every protocol the `Upgrade` lines offer is `h2c`, as `curl --http2 http://…`
/// sends. The gateway does not switch to it; RFC 9110 §7.8 lets a server ignore an upgrade
/// and answer over HTTP/1.1, and the upstream never sees the offer (`Upgrade`, `Connection`
/// and `HTTP2-Settings` are hop-by-hop). Any other protocol (WebSocket…) is refused.
fn only_h2c(headers: &HeaderMap) -> bool {
    let mut offered = false;
    for value in headers.get_all(header::UPGRADE) {
        for protocol in value.as_bytes().split(|&b| b == b',') {
            match protocol.trim_ascii() {
                b"" => {}
                p if p.eq_ignore_ascii_case(b"h2c") => offered = true,
                _ => return false,
            }
        }
    }
    offered
}

/// HTTP/1.1 needs exactly one Host; no version may carry two, one that is not a host (empty
/// included), or one that disagrees with the authority of an absolute-form target or HTTP/2
/// `:authority`, which must be a host too: credentials (`user:pw@`) are refused wherever they
/// come from (RFC 9113 §8.3.1).
fn check_host(
    version: Version,
    uri: &http::Uri,
    [host, second]: [Option<&HeaderValue>; 2],
) -> Result<(), Rejection> {
    if let Some(authority) = uri.authority()
        && !is_host(authority.as_str().as_bytes())
    {
        return Err(Rejection::BadRequest);
    }
    match (host, second, uri.authority()) {
        (_, Some(_), _) => Err(Rejection::BadRequest),
        (None, None, _) if version == Version::HTTP_11 => Err(Rejection::BadRequest),
        (Some(host), None, _) if !is_host(host.as_bytes()) => Err(Rejection::BadRequest),
        (Some(host), None, Some(authority))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(Rejection::BadRequest)
        }
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2-3): a registered name or IPv4
/// address, or an IPv6 address in brackets, then a port of digits only. An empty host is not
/// one: an `http` URI must not have one (RFC 9110 §4.2.1), and with origin-form an empty
/// `Host` would leave the target URI without its authority (RFC 9112 §3.3). Userinfo is not
/// part of the grammar. No allocation: this runs on every request.
fn is_host(value: &[u8]) -> bool {
    // Nearly every host is a name or IPv4 address of plain bytes, then `:` and a port or
    // nothing: told in one pass (the grammar below took ~260 instructions a request).
    // Anything else (brackets, `%` escapes, what is not a host) goes by the grammar.
    let plain = value
        .iter()
        .position(|&b| !REG_NAME[usize::from(b)])
        .unwrap_or(value.len());
    let (name, rest) = value.split_at(plain);
    let plain_with_port = match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    (!name.is_empty() && plain_with_port) || is_host_by_grammar(value)
}

/// [`is_host`] by the grammar, for every host.
fn is_host_by_grammar(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        Some(colon) if !value[colon..].contains(&b']') => (&value[..colon], &value[colon + 1..]),
        _ => (value, &[][..]),
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    match host {
        [b'[', literal @ .., b']'] => std::str::from_utf8(literal)
            .is_ok_and(|literal| literal.parse::<std::net::Ipv6Addr>().is_ok()),
        [] => false,
        _ => is_reg_name(host),
    }
}

/// The bytes a reg-name holds as they are: unreserved and sub-delims (the path's classes, with
/// the `;` a path refuses). A table, as every request's `Host` is checked byte by byte.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = is_unreserved(byte) || is_sub_delim(byte) || byte == b';';
        b += 1;
    }
    table
};

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (RFC 3986 §3.2.2).
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                if !name
                    .get(i + 1..i + 3)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            b if REG_NAME[usize::from(b)] => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_told_from_what_is_not_a_host() {
        for host in [
            "kb.test",
            "KB.Test:8080",
            "kb.test:",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--bcher-kva.example",
            "a%41b.test",
            "under_score.test",
        ] {
            assert!(is_host(host.as_bytes()), "{host}");
        }
        for not_a_host in [
            "",
            ":80",
            "kb.test:-1",
            "kb.test:8o",
            "kb.test:+80",
            "kb.test:0x50",
            "kb.test: 80",
            "kb.test:80:80",
            "[zzz]",
            "[zzz]:80",
            "[::1",
            "::1",
            "[::1]x",
            "[::1]:8o",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "user:pw@kb.test",
            "user@kb.test",
            "kb test",
            "kb.test/x",
            "kb%4.test",
            "kb%zz.test",
            "k\\b.test",
        ] {
            assert!(!is_host(not_a_host.as_bytes()), "{not_a_host:?}");
        }
        // The one-pass common case says what the grammar says, around every byte.
        for byte in 0..=255u8 {
            for template in [
                "kb.test:8080",
                "127.0.0.1",
                "[::1]:80",
                "a%41b:1",
                ":",
                "k:",
            ] {
                for at in 0..=template.len() {
                    let mut value = template.as_bytes().to_vec();
                    value.insert(at, byte);
                    for value in [value.clone(), value[..at].to_vec(), value[at..].to_vec()] {
                        assert_eq!(
                            is_host(&value),
                            is_host_by_grammar(&value),
                            "{:?}",
                            String::from_utf8_lossy(&value)
                        );
                    }
                }
            }
        }
        // Every byte in a name, against RFC 3986's unreserved and sub-delims as it spells them.
        let rfc = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=";
        for byte in 0..=255u8 {
            let name = [b'k', byte, b'b'];
            assert_eq!(
                is_reg_name(&name),
                rfc.as_bytes().contains(&byte),
                "{byte:#04x}"
            );
        }
    }
}
