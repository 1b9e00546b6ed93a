//! Links and redirects that lead back through the gateway (nginx's `proxy_redirect default`).
//!
//! A KB builds absolute URLs from its own origin or from the `Host` it was sent. Followed as
//! they are, they take a client (and its kbgate key) straight to the KB. The `Location`,
//! `Content-Location` and `Link` response headers that point at the KB are rewritten to the
//! gateway's public origin, with the upstream's path prefix taken off:
//!
//! - "points at the KB": the origin of `upstream.url` (scheme, host, port; a default port may be
//!   written or not), and, with `upstream.preserve_host`, the client's `Host` the KB was sent
//!   (by `http` or `https`: a KB behind the gateway rarely knows the scheme the client used);
//! - only URLs under the upstream's path prefix (`upstream.url`'s path) are rewritten: the rest
//!   of the KB is not served through the gateway, so such links are left as they are;
//! - the public origin is `public_url`, else the request's own (`https` on the TLS listener,
//!   else `http`, and the client's `Host`); a request without a `Host` gets a path-absolute
//!   reference (`/v1/...`);
//! - relative references and links elsewhere are left alone. Bodies are never rewritten.

use http::header::{self, HeaderMap, HeaderValue};

/// What the rewriting needs to know, built once from the config.
#[derive(Debug, Clone)]
pub struct LinkRewriter {
    upstream: Origin,
    /// The upstream's path prefix, without a trailing slash ("" for none).
    base_path: String,
    /// The KB was sent the client's `Host`, so it may have built links from it.
    preserve_host: bool,
    /// `public_url`: scheme and authority, no trailing slash.
    public: Option<String>,
}

/// A scheme, a lowercase host and a port, `None` for the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String,
    port: Option<u16>,
}

impl LinkRewriter {
    /// `upstream` is `scheme://authority` of `upstream.url`; `public` is `public_url`.
    pub fn new(
        upstream: &http::Uri,
        base_path: &str,
        preserve_host: bool,
        public: Option<String>,
    ) -> LinkRewriter {
        let https = upstream.scheme_str() == Some("https");
        let authority = upstream.authority().map_or("", |a| a.as_str());
        let (host, port) = host_and_port(authority, https).unwrap_or_default();
        LinkRewriter {
            upstream: Origin {
                https,
                host: host.to_ascii_lowercase(),
                port,
            },
            base_path: base_path.to_string(),
            preserve_host,
            public,
        }
    }

    /// Rewrites the response's `Location`, `Content-Location` and `Link` headers that lead to
    /// the KB. `https` and `host` are the client's request: its scheme and `Host`. One pass over
    /// the header names; nothing is allocated unless a header is rewritten.
    pub fn rewrite(&self, headers: &mut HeaderMap, https: bool, host: Option<&HeaderValue>) {
        for (name, value) in headers.iter_mut() {
            let rewritten = if name == header::LOCATION || name == header::CONTENT_LOCATION {
                value
                    .to_str()
                    .ok()
                    .and_then(|url| self.rewrite_url(url.trim(), https, host))
            } else if name == header::LINK {
                value
                    .to_str()
                    .ok()
                    .and_then(|links| self.rewrite_link(links, https, host))
            } else {
                continue;
            };
            if let Some(new) = rewritten.and_then(|new| HeaderValue::from_str(&new).ok()) {
                *value = new;
            }
        }
    }

    /// The URL on the gateway for `url`, when it is an absolute (or scheme-relative) URL on
    /// the KB under its path prefix.
    fn rewrite_url(&self, url: &str, https: bool, host: Option<&HeaderValue>) -> Option<String> {
        let (scheme, authority, rest) = split_url(url)?;
        let on_upstream = {
            let url_https = scheme.map_or(self.upstream.https, |s| s.eq_ignore_ascii_case("https"));
            host_and_port(authority, url_https).is_some_and(|(h, port)| {
                url_https == self.upstream.https
                    && port == self.upstream.port
                    && h.eq_ignore_ascii_case(&self.upstream.host)
            })
        };
        let on_client_host = || {
            let client = host.and_then(|h| h.to_str().ok())?;
            let (client_host, client_port) = host_and_port(client, https)?;
            let url_https = scheme.map_or(https, |s| s.eq_ignore_ascii_case("https"));
            let (h, port) = host_and_port(authority, url_https)?;
            Some(port == client_port && h.eq_ignore_ascii_case(client_host))
        };
        if !(on_upstream || self.preserve_host && on_client_host() == Some(true)) {
            return None;
        }
        let rest = rest.strip_prefix(self.base_path.as_str())?;
        if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            return None; // `/apiary` is not under `/api`
        }
        let mut new = String::with_capacity(url.len() + 32);
        match (&self.public, host.and_then(|h| h.to_str().ok())) {
            (Some(public), _) => new.push_str(public),
            (None, Some(host)) => {
                new.push_str(if https { "https://" } else { "http://" });
                new.push_str(host);
            }
            (None, None) => {}
        }
        if !rest.starts_with('/') {
            new.push('/');
        }
        new.push_str(rest);
        Some(new)
    }

    /// A `Link` value with each `<URI-reference>` that leads to the KB rewritten (RFC 8288);
    /// `<` inside quoted parameters is not a link.
    fn rewrite_link(&self, value: &str, https: bool, host: Option<&HeaderValue>) -> Option<String> {
        let mut out = String::new();
        let mut copied = 0;
        let mut quoted = false;
        let mut i = 0;
        let bytes = value.as_bytes();
        while i < bytes.len() {
            match bytes[i] {
                b'"' => quoted = !quoted,
                b'\\' if quoted => i += 1,
                b'<' if !quoted => {
                    let Some(len) = value[i + 1..].find('>') else {
                        break;
                    };
                    let (start, end) = (i + 1, i + 1 + len);
                    if let Some(new) = self.rewrite_url(value[start..end].trim(), https, host) {
                        out.push_str(&value[copied..start]);
                        out.push_str(&new);
                        copied = end;
                    }
                    i = end;
                }
                _ => {}
            }
            i += 1;
        }
        if copied == 0 {
            return None;
        }
        out.push_str(&value[copied..]);
        Some(out)
    }
}

/// `scheme://authority rest` or `//authority rest` (scheme `None`) for `http` and `https`;
/// `rest` is the path, query and fragment. None for anything else (relative references).
fn split_url(url: &str) -> Option<(Option<&str>, &str, &str)> {
    let (scheme, after) = match url.strip_prefix("//") {
        Some(after) => (None, after),
        None => {
            let (scheme, after) = url.split_once("://")?;
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return None;
            }
            (Some(scheme), after)
        }
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some((scheme, &after[..end], &after[end..]))
}

/// The host and port of an authority, the port `None` when it is absent or the default of the
/// scheme. None for user information or a port that is not a number.
fn host_and_port(authority: &str, https: bool) -> Option<(&str, Option<u16>)> {
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        // `[::1]` alone: the colon is inside the brackets.
        Some(colon) if !authority[colon..].contains(']') => {
            (&authority[..colon], Some(&authority[colon + 1..]))
        }
        _ => (authority, None),
    };
    let default = if https { 443 } else { 80 };
    let port = match port {
        None | Some("") => None,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(digits.parse::<u16>().ok()?).filter(|&p| p != default)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter(upstream: &str, base: &str, preserve: bool, public: Option<&str>) -> LinkRewriter {
        LinkRewriter::new(
            &upstream.parse().unwrap(),
            base,
            preserve,
            public.map(str::to_string),
        )
    }

    #[test]
    fn urls_on_the_upstream_under_its_prefix_are_rewritten() {
        let r = rewriter("http://kb.internal:8081/", "/api", false, None);
        let host = HeaderValue::from_static("gw.example:8080");
        let url = |u: &str| r.rewrite_url(u, false, Some(&host));
        assert_eq!(
            url("http://kb.internal:8081/api/v1/a?page=2#x").as_deref(),
            Some("http://gw.example:8080/v1/a?page=2#x")
        );
        assert_eq!(
            url("HTTP://KB.Internal:8081/api").as_deref(),
            Some("http://gw.example:8080/")
        );
        assert_eq!(
            url("http://kb.internal:8081/api?q=1").as_deref(),
            Some("http://gw.example:8080/?q=1")
        );
        assert_eq!(
            url("//kb.internal:8081/api/x").as_deref(),
            Some("http://gw.example:8080/x")
        );
        for left_alone in [
            "/api/v1/a",
            "v1/a",
            "http://kb.internal:8081/apiary",
            "http://kb.internal:8081/login",
            "http://kb.internal/api/v1/a",
            "https://kb.internal:8081/api/v1/a",
            "http://other:8081/api/v1/a",
            "http://user@kb.internal:8081/api/v1/a",
            "ftp://kb.internal:8081/api/v1/a",
            "http://gw.example:8080/api/v1/a",
        ] {
            assert_eq!(url(left_alone), None, "{left_alone}");
        }
        // Over TLS, with no Host, with a public URL.
        assert_eq!(
            r.rewrite_url("http://kb.internal:8081/api/x", true, Some(&host))
                .as_deref(),
            Some("https://gw.example:8080/x")
        );
        assert_eq!(
            r.rewrite_url("http://kb.internal:8081/api/x", false, None)
                .as_deref(),
            Some("/x")
        );
        let public = rewriter(
            "http://kb.internal:8081/",
            "/api",
            false,
            Some("https://kb.example.com"),
        );
        assert_eq!(
            public
                .rewrite_url("http://kb.internal:8081/api/x", false, Some(&host))
                .as_deref(),
            Some("https://kb.example.com/x")
        );
    }

    #[test]
    fn default_ports_may_be_written_or_not() {
        let r = rewriter("https://kb.internal/", "", false, Some("https://gw"));
        for url in [
            "https://kb.internal/x",
            "https://kb.internal:443/x",
            "https://kb.internal:/x",
        ] {
            assert_eq!(
                r.rewrite_url(url, false, None).as_deref(),
                Some("https://gw/x"),
                "{url}"
            );
        }
        assert_eq!(
            r.rewrite_url("https://kb.internal:8443/x", false, None),
            None
        );
        let v6 = rewriter("http://[::1]:8081/", "", false, Some("https://gw"));
        assert_eq!(
            v6.rewrite_url("http://[::1]:8081/x", false, None)
                .as_deref(),
            Some("https://gw/x")
        );
        assert_eq!(v6.rewrite_url("http://[::1]/x", false, None), None);
    }

    #[test]
    fn with_preserve_host_links_built_from_the_clients_host_are_rewritten() {
        let host = HeaderValue::from_static("gw.example");
        let off = rewriter("http://kb.internal:8081/", "/api", false, None);
        let on = rewriter("http://kb.internal:8081/", "/api", true, None);
        for url in [
            "http://gw.example/api/v1/a",
            "https://gw.example/api/v1/a",
            "http://gw.example:80/api/v1/a",
        ] {
            assert_eq!(off.rewrite_url(url, true, Some(&host)), None, "{url}");
            assert_eq!(
                on.rewrite_url(url, true, Some(&host)).as_deref(),
                Some("https://gw.example/v1/a"),
                "{url}"
            );
        }
        assert_eq!(
            on.rewrite_url("http://gw.example:9999/api/v1/a", true, Some(&host)),
            None
        );
    }

    #[test]
    fn link_headers_are_rewritten_link_by_link() {
        let r = rewriter("http://kb:81/", "", false, Some("https://gw"));
        let link = |v: &str| r.rewrite_link(v, false, None);
        assert_eq!(
            link(r#"<http://kb:81/a?page=2>; rel="next", <https://cdn/x>; rel=preload, < http://kb:81/a?page=1 >; rel="prev""#).as_deref(),
            Some(r#"<https://gw/a?page=2>; rel="next", <https://cdn/x>; rel=preload, <https://gw/a?page=1>; rel="prev""#)
        );
        assert_eq!(
            link(r#"<http://kb:81/b>; title="a <http://kb:81/c> \"<q>\"", <http://kb:81/d>"#)
                .as_deref(),
            Some(r#"<https://gw/b>; title="a <http://kb:81/c> \"<q>\"", <https://gw/d>"#)
        );
        assert_eq!(link("<https://cdn/x>; rel=next"), None);
        assert_eq!(link("<http://kb:81/unterminated"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("http://kb:81/new"),
        );
        headers.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("http://kb:81/here"),
        );
        headers.insert(
            header::LINK,
            HeaderValue::from_static("<http://kb:81/n>; rel=next"),
        );
        headers.insert(
            header::REFERER,
            HeaderValue::from_static("http://kb:81/untouched"),
        );
        r.rewrite(&mut headers, false, None);
        assert_eq!(headers[header::LOCATION], "https://gw/new");
        assert_eq!(headers[header::CONTENT_LOCATION], "https://gw/here");
        assert_eq!(headers[header::LINK], "<https://gw/n>; rel=next");
        assert_eq!(headers[header::REFERER], "http://kb:81/untouched");
    }
}
