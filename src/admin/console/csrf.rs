//! Cross-site request forgery: every POST must come from a console page (its Origin and
//! Sec-Fetch-Site say so, where the browser sends them) and carry the session's CSRF token.
//! SameSite=Strict on the cookie is a third line, not the only one.

use http::{HeaderMap, header};

/// Is this request from the console's own pages? Browsers send `Sec-Fetch-Site`, which says
/// so whatever the referrer policy; `Origin` is the fallback (with `Referrer-Policy:
/// no-referrer` a browser sends `Origin: null` even from the same origin, so it is read only
/// without `Sec-Fetch-Site`). A request with neither (curl, a test) is judged by its CSRF
/// token alone.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("invalid"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return matches!(site, "same-origin" | "none");
    }
    match text(header::ORIGIN) {
        None => true,
        Some(origin) => {
            let host = text(header::HOST).unwrap_or_default();
            !host.is_empty()
                && (origin == format!("http://{host}") || origin == format!("https://{host}"))
        }
    }
}

/// Does the form's token match the session's? Compared as blake3 hashes, whose equality is
/// constant-time, so the comparison leaks nothing of the expected token.
pub(super) fn token_matches(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|given| blake3::hash(expected.as_bytes()) == blake3::hash(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn origins() {
        let host = ("host", "127.0.0.1:9090");
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:9090")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://127.0.0.1:9090")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        // What Chrome sends from a console page under Referrer-Policy: no-referrer.
        let own_page = [host, ("sec-fetch-site", "same-origin"), ("origin", "null")];
        assert!(same_origin(&headers(&own_page)));
        let forged = [
            host,
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://127.0.0.1:9090"),
        ];
        assert!(!same_origin(&headers(&forged)));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:9090"
        )])));
        for site in ["cross-site", "same-site"] {
            assert!(!same_origin(&headers(&[host, ("sec-fetch-site", site)])));
        }
    }

    #[test]
    fn tokens() {
        assert!(token_matches("abc", Some("abc")));
        assert!(!token_matches("abc", Some("abd")));
        assert!(!token_matches("abc", Some("")));
        assert!(!token_matches("abc", None));
    }
}
