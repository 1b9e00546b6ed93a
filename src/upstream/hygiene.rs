//! Header hygiene: which headers never cross the gateway. Hop-by-hop headers describe one
//! connection and are dropped both ways; a client's credentials and the headers the gateway
//! sets itself never reach the KB from the client.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop, never the message: dropped in both directions (RFC 9110 §7.6.1).
static HOP_BY_HOP: NameSet = NameSet::new(&[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // The settings of an `Upgrade: h2c` offer, which the gateway ignores (RFC 7540 §3.2.1).
    "http2-settings",
]);

/// Client-sent headers that would leak the key or let a client pose as the gateway, and
/// `Expect`: the gateway itself answered the client's `100-continue`.
static CLIENT_ONLY: NameSet = NameSet::new(&[
    "authorization",
    "x-api-key",
    "host",
    "forwarded",
    "x-request-id",
    "expect",
]);

#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name.as_str())
}

/// What the upstream must not see of a client's headers: hop-by-hop ones, [`CLIENT_ONLY`] ones,
/// and `X-Kbgate-*` and `X-Forwarded-*`, which are the gateway's to set. The name's text is
/// taken once (for a standard name, a lookup by `http`; taken for each test, it was three
/// or four a header) and most names are told by their length or first two bytes.
pub(super) fn is_client_only(name: &HeaderName) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(name)
        || CLIENT_ONLY.contains(name)
        || name.starts_with("x-")
            && (name.starts_with("x-kbgate-") || name.starts_with("x-forwarded-"))
}

/// A name with underscores that a KB folding `_` into `-` (CGI, WSGI) would read as one the
/// upstream must not see from a client, e.g. `X_Api_Key`: dropped even when underscores pass.
pub(super) fn folds_to_client_only(name: &HeaderName) -> bool {
    HeaderName::from_bytes(name.as_str().replace('_', "-").as_bytes())
        .is_ok_and(|folded| is_client_only(&folded))
}

/// A fixed set of lowercase header names, matched by length first: these checks run for every
/// header of every message, and most names are ruled out by their length alone.
struct NameSet {
    names: &'static [&'static str],
    /// Bit `n` is set when a name in the set is `n` bytes long.
    lengths: u64,
}

impl NameSet {
    const fn new(names: &'static [&'static str]) -> NameSet {
        let mut lengths = 0;
        let mut i = 0;
        while i < names.len() {
            assert!(names[i].len() < 64, "a name too long for the length mask");
            lengths |= 1 << names[i].len();
            i += 1;
        }
        NameSet { names, lengths }
    }

    #[inline]
    fn contains(&self, name: &str) -> bool {
        name.len() < 64 && self.lengths & (1 << name.len()) != 0 && self.names.contains(&name)
    }
}

/// The headers a message's `Connection` lines name (hop-by-hop for this message only), those
/// present and not hop-by-hop anyway: the usual `keep-alive` and `close` cost no allocation.
pub(super) fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(listed_names)
        .filter(|name| headers.contains_key(*name))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

/// Removes the `Connection` lines and the headers they name, the lines read as they are taken
/// out: one lookup, where reading them first and removing them after took two.
fn remove_connection(headers: &mut HeaderMap) {
    let header::Entry::Occupied(lines) = headers.entry(header::CONNECTION) else {
        return;
    };
    // Nearly always empty (a KB's `keep-alive`), and then not allocated.
    let naming: Vec<HeaderValue> = lines
        .remove_entry_mult()
        .1
        .filter(|line| !is_usual(line))
        .collect();
    for name in naming.iter().flat_map(listed_names) {
        headers.remove(name);
    }
}

/// The usual `Connection` values, alone on their line, name no other header.
fn is_usual(line: &HeaderValue) -> bool {
    let line = line.as_bytes();
    // Compared exactly first: nearly every KB writes them in lowercase, and
    // `eq_ignore_ascii_case` goes byte by byte (~85 instructions for `keep-alive`).
    matches!(line, b"keep-alive" | b"close")
        || line.eq_ignore_ascii_case(b"keep-alive")
        || line.eq_ignore_ascii_case(b"close")
}

/// The names one `Connection` line lists, but those hop-by-hop anyway (removed by their own
/// rule, which also notes a `Transfer-Encoding`).
fn listed_names(line: &HeaderValue) -> impl Iterator<Item = &str> {
    let listed = if is_usual(line) {
        ""
    } else {
        line.to_str().unwrap_or("")
    };
    listed.split(',').map(str::trim).filter(|name| {
        !name.is_empty()
            && !HOP_BY_HOP
                .names
                .iter()
                .any(|hop| hop.eq_ignore_ascii_case(name))
    })
}

/// Removes hop-by-hop headers, including every header a `Connection` line names. Found by one
/// scan of the names, a few at a time: a message holds few (often only a KB's `Connection:
/// keep-alive`), most names are ruled out by their length alone, and nothing is allocated.
/// (Looking up each hop-by-hop name, present or not, cost about a thousand instructions per
/// message; callgrind, benches/load profile.) Says whether `Transfer-Encoding` was among
/// them, which a response's framing depends on, so that it need not be looked up again.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) -> Removed {
    const AT_ONCE: usize = 4;
    let mut removed = Removed::Other;
    loop {
        let mut found: [Option<HeaderName>; AT_ONCE] = Default::default();
        let mut count = 0;
        for name in headers.keys().filter(|name| is_hop_by_hop(name)) {
            found[count] = Some(name.clone());
            count += 1;
            if count == AT_ONCE {
                break;
            }
        }
        for name in found.into_iter().flatten() {
            if name == header::CONNECTION {
                remove_connection(headers);
                continue;
            }
            if name == header::TRANSFER_ENCODING {
                removed = Removed::TransferEncoding;
            }
            headers.remove(name);
        }
        if count < AT_ONCE {
            return removed;
        }
    }
}

/// What [`remove_hop_by_hop`] took out that matters beyond the hop.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Removed {
    /// `Transfer-Encoding`, with whatever else.
    TransferEncoding,
    /// Other hop-by-hop headers, or none.
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names left in `headers`, in order.
    fn names(headers: &HeaderMap) -> Vec<&str> {
        headers.keys().map(|k| k.as_str()).collect()
    }

    #[test]
    fn every_connection_line_is_honoured() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-one"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("X-Two"));
        headers.insert("x-one", HeaderValue::from_static("1"));
        headers.insert("x-two", HeaderValue::from_static("2"));
        headers.insert("x-three", HeaderValue::from_static("3"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(remove_hop_by_hop(&mut headers), Removed::TransferEncoding);
        assert_eq!(names(&headers), vec!["x-three"]);

        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        assert_eq!(remove_hop_by_hop(&mut headers), Removed::Other);
        assert_eq!(names(&headers), vec!["content-length"]);

        // Names that are no header names, empty ones and a long one are passed over.
        let long = "x-".to_string() + &"l".repeat(100);
        let mut headers = HeaderMap::new();
        let line = format!("x one, , \"q\", {long}, X-Kept-Not");
        headers.insert(header::CONNECTION, HeaderValue::from_str(&line).unwrap());
        headers.insert(
            HeaderName::from_bytes(long.as_bytes()).unwrap(),
            HeaderValue::from_static("1"),
        );
        headers.insert("x-kept", HeaderValue::from_static("2"));
        assert_eq!(remove_hop_by_hop(&mut headers), Removed::Other);
        assert_eq!(names(&headers), vec!["x-kept"]);
    }

    #[test]
    fn more_hop_by_hop_headers_than_one_scan_holds_all_go() {
        let mut headers = HeaderMap::new();
        for name in HOP_BY_HOP.names {
            headers.append(*name, HeaderValue::from_static("1"));
            headers.append(*name, HeaderValue::from_static("2"));
        }
        headers.append(header::CONNECTION, HeaderValue::from_static("x-listed"));
        headers.insert("x-listed", HeaderValue::from_static("gone"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        // Transfer-Encoding is not in the first scan's four: it is still reported.
        assert_eq!(remove_hop_by_hop(&mut headers), Removed::TransferEncoding);
        assert_eq!(names(&headers), vec!["accept"]);
    }

    #[test]
    fn client_only_headers_are_told_from_the_rest() {
        let client_only = [
            "authorization",
            "x-api-key",
            "host",
            "forwarded",
            "x-request-id",
            "expect",
            "x-kbgate-key-id",
            "x-kbgate-anything",
            "x-forwarded-for",
            "x-forwarded-host",
            "proxy-authorization",
            "te",
            "connection",
        ];
        for name in client_only {
            assert!(is_client_only(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            "accept",
            "user-agent",
            "x-other",
            "x-kbgate",
            "forwarded-by",
        ] {
            assert!(!is_client_only(&HeaderName::from_static(name)), "{name}");
        }
    }
}
