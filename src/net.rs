//! Client addresses behind proxies: a list of networks (`trusted_proxies`, and later per-key
//! address limits) and the client's address read from `X-Forwarded-For` through them.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Networks written as CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList {
    nets: Vec<IpNet>,
}

impl CidrList {
    /// Parses each item; the error gives the index of the first bad one and why.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<CidrList, (usize, String)> {
        let nets = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item = item.as_ref().trim();
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        (
                            i,
                            format!(
                                "{item:?} is not an IP address or network (e.g. 10.0.0.0/8, 2001:db8::/32)"
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(CidrList { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is in one of the networks; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.nets.is_empty() {
            return false;
        }
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// The client's address: the peer, unless it is a trusted proxy; then `X-Forwarded-For` read
/// right to left (its lines in order, each a comma-separated list), skipping trusted proxies,
/// up to the first address that is not one. An entry that is not an address ends the walk at
/// the last trusted hop: nothing left of it can be believed. A forged header from a peer that is
/// not trusted changes nothing.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &CidrList) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let lines = headers.get_all(X_FORWARDED_FOR).iter().rev();
    for line in lines {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for entry in line.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip.to_canonical();
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// The `X-Forwarded-For` to send upstream when the peer is a trusted proxy that sent one: its
/// chain with the peer appended (`a, b, peer`). None otherwise: the peer's address alone
/// replaces whatever the client sent.
pub fn forwarded_chain(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &CidrList,
) -> Option<HeaderValue> {
    if !trusted.contains(peer) {
        return None;
    }
    let mut chain = Vec::new();
    for line in headers.get_all(X_FORWARDED_FOR) {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            chain.extend_from_slice(line);
            chain.extend_from_slice(b", ");
        }
    }
    if chain.is_empty() {
        return None;
    }
    chain.extend_from_slice(peer.to_canonical().to_string().as_bytes());
    HeaderValue::from_maybe_shared(Bytes::from(chain)).ok()
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, with or without
/// a `:port`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> CidrList {
        CidrList::parse(items).unwrap()
    }

    fn xff(lines: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_static(line));
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_single_addresses_parse() {
        let nets = list(&[
            "10.0.0.0/8",
            "192.168.1.7",
            "2001:db8::/32",
            " ::1 ",
            "172.16.5.9/12",
        ]);
        for inside in [
            "10.255.0.1",
            "192.168.1.7",
            "2001:db8:1::5",
            "::1",
            "172.31.0.1",
            "::ffff:10.1.1.1",
        ] {
            assert!(nets.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "11.0.0.1",
            "192.168.1.8",
            "2001:db9::1",
            "::2",
            "172.32.0.1",
            "::ffff:11.1.1.1",
        ] {
            assert!(!nets.contains(ip(outside)), "{outside}");
        }
        assert!(!CidrList::default().contains(ip("10.0.0.1")));
        for bad in [
            "10.0.0.0/33",
            "10.0.0",
            "example.com",
            "",
            "::/129",
            "10.0.0.0/-1",
        ] {
            let error = CidrList::parse(&["10.0.0.0/8", bad]).unwrap_err();
            assert_eq!(error.0, 1, "{bad}");
            assert!(
                error.1.contains("is not an IP address or network"),
                "{bad}: {}",
                error.1
            );
        }
    }

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let trusted = list(&["10.0.0.0/8", "::1"]);
        let headers = xff(&["6.6.6.6, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers, &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("::1"), &headers, &trusted),
            ip("203.0.113.7")
        );
        // Not trusted: the header is the peer's to forge.
        assert_eq!(
            client_address(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers, &CidrList::default()),
            ip("10.0.0.1")
        );
        // Only trusted hops: the leftmost; none at all: the peer.
        let all = xff(&["10.9.9.9,10.0.0.3"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &all, &trusted),
            ip("10.9.9.9")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        // Garbage stops the walk at the last trusted hop.
        let garbage = xff(&["203.0.113.7, unknown, 10.0.0.4"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &garbage, &trusted),
            ip("10.0.0.4")
        );
        // Ports, brackets, IPv6, IPv4-mapped, empty entries.
        let forms = xff(&["[2001:db8::7]:443, , 10.0.0.5:8080"]);
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), &forms, &trusted),
            ip("2001:db8::7")
        );
        let bracketed = xff(&["[2001:db8::8]"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &bracketed, &trusted),
            ip("2001:db8::8")
        );
        let mapped = xff(&["::ffff:203.0.113.9"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &mapped, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_chain_is_appended_to_only_behind_a_trusted_proxy() {
        let trusted = list(&["10.0.0.0/8"]);
        let headers = xff(&["203.0.113.7, 10.0.0.9", " 10.0.0.8 "]);
        assert_eq!(
            forwarded_chain(ip("10.0.0.1"), &headers, &trusted).unwrap(),
            "203.0.113.7, 10.0.0.9, 10.0.0.8, 10.0.0.1"
        );
        assert_eq!(forwarded_chain(ip("11.0.0.1"), &headers, &trusted), None);
        assert_eq!(
            forwarded_chain(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            None
        );
        assert_eq!(
            forwarded_chain(ip("10.0.0.1"), &headers, &CidrList::default()),
            None
        );
    }
}
