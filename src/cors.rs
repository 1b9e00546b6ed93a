//! Browser clients (opt-in, `cors:` in the config). A CORS preflight (`OPTIONS` with `Origin`
//! and `Access-Control-Request-Method`) is answered by the gateway itself, without a key and
//! without reaching the KB: 204 with the allowed methods, headers and max age for a listed
//! origin, 403 `origin_not_allowed` for any other. Every response to a listed origin, refusals
//! included, carries `Access-Control-Allow-Origin: <origin>`; every response carries
//! `Vary: Origin`. The KB's own `Access-Control-*` headers are replaced: the gateway decides.
//!
//! No `Access-Control-Allow-Credentials` is ever sent (kbgate keys are headers, not cookies)
//! and `*` is not an origin the config accepts: keys belong on servers, and a page that holds
//! one should at least be one the operator listed.
//!
//! With `cors:` absent the gateway holds no [`Cors`] and does no per-request work for it.

use crate::body::{self, Body};
use crate::rejection::Rejection;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use std::time::Duration;

/// Response headers a page may read besides the CORS-safelisted ones: the request id to quote
/// in support requests, validators and links for caching and paging, rate-limit state.
const EXPOSE_HEADERS: &str =
    "X-Request-Id, ETag, Link, Location, Retry-After, RateLimit, RateLimit-Policy";

/// The CORS headers a KB may send; with `cors:` on they are the gateway's to set.
const UPSTREAM_CORS_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// The validated `cors:` section, with every response header value built once.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Serialized origins (`scheme://host[:port]`, lowercase, no default port).
    origins: Box<[String]>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    max_age: HeaderValue,
}

/// What the CORS step saw in one request, taken before the request is consumed.
#[derive(Debug)]
pub struct Seen {
    /// The request's `Origin`, when it is a listed one.
    origin: Option<HeaderValue>,
    /// `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub preflight: bool,
}

impl Cors {
    /// Builds the section from its fields; each error is `(field, reason)`.
    pub fn new(
        origins: &[String],
        headers: &[String],
        max_age: Duration,
        methods: impl IntoIterator<Item = Method>,
    ) -> Result<Cors, (String, String)> {
        if origins.is_empty() {
            return Err((
                "cors.allowed_origins".into(),
                "list at least one origin (remove `cors:` to switch CORS off)".into(),
            ));
        }
        let origins = origins
            .iter()
            .enumerate()
            .map(|(i, o)| parse_origin(o).map_err(|r| (format!("cors.allowed_origins[{i}]"), r)))
            .collect::<Result<Box<[String]>, _>>()?;
        for (i, name) in headers.iter().enumerate() {
            if name == "*" || HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err((
                    format!("cors.allowed_headers[{i}]"),
                    format!("{name:?} is not a header name (and `*` is not accepted: list them)"),
                ));
            }
        }
        if max_age > MAX_AGE_LIMIT {
            return Err((
                "cors.max_age".into(),
                "must be at most 24h (browsers cap it lower anyway)".into(),
            ));
        }
        let mut unique: Vec<Method> = Vec::new();
        for method in methods {
            if !unique.contains(&method) {
                unique.push(method);
            }
        }
        let methods: Vec<&str> = unique.iter().map(Method::as_str).collect();
        let value = |s: String| HeaderValue::try_from(s).expect("validated header text");
        Ok(Cors {
            origins,
            allow_methods: value(methods.join(", ")),
            allow_headers: value(headers.join(", ")),
            max_age: HeaderValue::from(max_age.as_secs()),
        })
    }

    /// Looks at the request's `Origin` and whether it is a preflight; no allocation.
    pub fn inspect<B>(&self, request: &Request<B>) -> Seen {
        let headers = request.headers();
        let origin = headers.get(header::ORIGIN);
        let preflight = request.method() == Method::OPTIONS
            && origin.is_some()
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let origin = origin.filter(|o| self.allows(o.as_bytes())).cloned();
        Seen { origin, preflight }
    }

    fn allows(&self, origin: &[u8]) -> bool {
        self.origins
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
    }

    /// The gateway's answer to a preflight: 204 for a listed origin (its CORS headers are added
    /// by [`Cors::finish`]), 403 `origin_not_allowed` for any other.
    pub fn preflight(&self, seen: &Seen) -> Result<Response<Body>, Rejection> {
        if seen.origin.is_none() {
            return Err(Rejection::OriginNotAllowed);
        }
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        if !self.allow_headers.is_empty() {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                self.allow_headers.clone(),
            );
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Ok(response)
    }

    /// Sets the CORS headers of any response, forwarded or refused.
    pub fn finish(&self, seen: Seen, response: &mut Response<Body>) {
        let headers = response.headers_mut();
        if !seen.preflight {
            for name in &UPSTREAM_CORS_HEADERS {
                headers.remove(name);
            }
        }
        add_vary_origin(headers);
        if let Some(origin) = seen.origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if !seen.preflight {
                headers.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static(EXPOSE_HEADERS),
                );
            }
        }
    }
}

/// Chrome caps a preflight's cache at 2 h, Firefox at 24 h.
const MAX_AGE_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Adds `Origin` to `Vary` unless the response already varies on it (or on everything).
fn add_vary_origin(headers: &mut HeaderMap) {
    let varies = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|f| f == "*" || f.eq_ignore_ascii_case("origin"))
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// `scheme://host[:port]` as a browser serializes it: lowercase, no default port, nothing else.
fn parse_origin(text: &str) -> Result<String, String> {
    let example = "write it as scheme://host[:port], e.g. \"https://app.example.com\"";
    if text == "*" {
        return Err(format!(
            "`*` is not accepted: list each origin (a wildcard would let any web page use a key \
             it gets hold of); {example}"
        ));
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not an origin: {example}"))?;
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        _ => {
            return Err(format!(
                "{text:?} is not an origin: the scheme must be http or https; {example}"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} is not an origin: {example}"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{text:?}: an origin has no user info; {example}"));
    }
    // `Uri` reads "https://a.example/" and "https://a.example" alike: look at the text.
    let after_authority = &text[scheme.len() + 3 + authority.as_str().len()..];
    if !after_authority.is_empty() {
        return Err(format!(
            "{text:?}: an origin has no path, query or trailing slash; {example}"
        ));
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("{text:?} is not an origin: {example}"));
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    Ok(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        None if authority.as_str().ends_with(':') => {
            return Err(format!("{text:?}: the port is empty; {example}"));
        }
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_serialized_as_browsers_send_them() {
        let ok = [
            ("https://app.example.com", "https://app.example.com"),
            ("HTTPS://App.Example.COM:443", "https://app.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://127.0.0.1:80", "http://127.0.0.1"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ];
        for (text, origin) in ok {
            assert_eq!(parse_origin(text).as_deref(), Ok(origin), "{text}");
        }
        let refused = [
            ("*", "`*` is not accepted"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/app", "no path"),
            ("https://app.example.com?x=1", "no path"),
            ("app.example.com", "not an origin"),
            ("ftp://app.example.com", "scheme must be http or https"),
            ("https://user@app.example.com", "no user info"),
            ("null", "not an origin"),
            ("", "not an origin"),
        ];
        for (text, reason) in refused {
            let error = parse_origin(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn vary_gains_origin_once() {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        add_vary_origin(&mut headers);
        add_vary_origin(&mut headers);
        let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    }
}
