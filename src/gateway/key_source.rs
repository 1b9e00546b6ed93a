//! Where the client's key is read from: `Authorization: Bearer`, `X-Api-Key`, `?key=`.

use crate::keys::KeySources;
use crate::rejection::Rejection;
use http::header::{self, HeaderMap, HeaderName};
use std::borrow::Cow;

/// Built once: looking a header up by a string literal parses the name on every request.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The token of `Authorization: Bearer <token>`, the scheme in any case: what follows the
/// first space when what precedes it is `bearer`. Compared in place, as searching the value
/// for its first space cost ~150 instructions a request (callgrind, benches/load).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_at_checked("bearer".len())?;
    let token = token.strip_prefix(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Finds the client's key in the configured sources (by default `Authorization: Bearer`,
/// `X-Api-Key` and `?key=`). Returns the key and the query to forward (without the key's
/// parameter, when the query is a source). Two different keys in one request are ambiguous;
/// the same key twice is fine; an empty value is no key at all.
pub fn extract_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    sources: &KeySources,
) -> Result<(Cow<'a, str>, Option<Cow<'a, str>>), Rejection> {
    let mut found: Option<Cow<'a, str>> = None;
    let mut offer = |candidate: Cow<'a, str>| match &found {
        _ if candidate.is_empty() => Ok(()),
        Some(existing) if *existing != candidate => Err(Rejection::AmbiguousKey),
        Some(_) => Ok(()),
        None => {
            found = Some(candidate);
            Ok(())
        }
    };
    // One pass over the headers rather than a lookup by name for each source: the
    // `Authorization` values are offered in order as they come, `X-Api-Key` ones after them.
    // `to_str` lets through visible ASCII, spaces and tabs only, so `trim_ascii` trims what
    // `trim` would, without `trim`'s Unicode whitespace test of each end.
    let mut api_key_sent = false;
    for (name, value) in headers {
        if name == header::AUTHORIZATION && sources.authorization {
            let value = value.to_str().map_err(|_| Rejection::InvalidKey)?;
            if let Some(token) = bearer_token(value) {
                offer(Cow::Borrowed(token.trim_ascii()))?;
            }
        } else if name == X_API_KEY {
            api_key_sent = true;
        }
    }
    if sources.x_api_key && api_key_sent {
        for value in headers.get_all(X_API_KEY) {
            offer(Cow::Borrowed(
                value
                    .to_str()
                    .map_err(|_| Rejection::InvalidKey)?
                    .trim_ascii(),
            ))?;
        }
    }
    let mut query_has_key = false;
    if let Some(param) = sources.query.as_deref() {
        for (name, value) in query_pairs(query.unwrap_or("")) {
            if decode(name) == param {
                query_has_key = true;
                offer(decode(value))?;
            }
        }
    }
    let secret = found.ok_or(Rejection::MissingKey)?;
    let forwarded_query = match (query, sources.query.as_deref()) {
        (Some(q), Some(param)) if query_has_key => Some(query_without(q, param))
            .filter(|q| !q.is_empty())
            .map(Cow::Owned),
        (other, _) => other.map(Cow::Borrowed),
    };
    Ok((secret, forwarded_query))
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The query without the parameter `param` (compared decoded).
fn query_without(query: &str, param: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| decode(pair.split_once('=').map_or(*pair, |(n, _)| n)) != param)
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes a query component (`+` is a space); bytes that are not UTF-8 are replaced.
fn decode(component: &str) -> Cow<'_, str> {
    if !component.contains(['%', '+']) {
        return Cow::Borrowed(component);
    }
    let spaced = component.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use http::HeaderValue;

    /// A header map of `pairs`, repeated names appended.
    pub(in crate::gateway) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    type Extracted<'a> = Result<(Cow<'a, str>, Option<Cow<'a, str>>), Rejection>;

    fn default_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Extracted<'a> {
        extract_key(headers, query, &KeySources::DEFAULT)
    }

    #[test]
    fn bearer_tokens_are_split_as_at_the_first_space() {
        let by_search = |value: &'static str| {
            value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token)
        };
        for value in [
            "Bearer kb_a",
            "bearer  kb_a ",
            "BEARER x",
            "Bearer ",
            "Bearer",
            "Bearerx kb",
            "Bear er kb",
            " Bearer kb",
            "Basic a2I6",
            "Bearer\tkb",
            "",
            "beare",
        ] {
            assert_eq!(bearer_token(value), by_search(value), "{value:?}");
        }
    }

    #[test]
    fn key_sources() {
        let h = headers(&[("authorization", "Bearer kb_a")]);
        assert_eq!(default_key(&h, None).unwrap().0, "kb_a");
        let h = headers(&[("authorization", "bearer  kb_a ")]);
        assert_eq!(default_key(&h, None).unwrap().0, "kb_a");
        let h = headers(&[
            ("authorization", "Bearer \tkb_a\t "),
            ("x-api-key", " kb_a\t"),
        ]);
        assert_eq!(default_key(&h, None).unwrap().0, "kb_a");
        let h = headers(&[("x-api-key", "kb_b")]);
        assert_eq!(default_key(&h, None).unwrap().0, "kb_b");
        let none = HeaderMap::new();
        let (key, query) = default_key(&none, Some("a=1&key=kb_c&b=2")).unwrap();
        assert_eq!(key, "kb_c");
        assert_eq!(query.as_deref(), Some("a=1&b=2"));
        let (_, query) = default_key(&none, Some("k%65y=kb_c")).unwrap();
        assert_eq!(query, None, "an encoded key name is still the key");
    }

    #[test]
    fn missing_and_ambiguous_keys() {
        assert_eq!(
            default_key(&HeaderMap::new(), Some("q=1")).unwrap_err(),
            Rejection::MissingKey
        );
        let h = headers(&[("authorization", "Basic abc")]);
        assert_eq!(default_key(&h, None).unwrap_err(), Rejection::MissingKey);
        let h = headers(&[("authorization", "Bearer kb_a"), ("x-api-key", "kb_b")]);
        assert_eq!(default_key(&h, None).unwrap_err(), Rejection::AmbiguousKey);
        let h = headers(&[("x-api-key", "kb_a"), ("x-api-key", "kb_b")]);
        assert_eq!(default_key(&h, None).unwrap_err(), Rejection::AmbiguousKey);
        let h = headers(&[("x-api-key", "kb_a")]);
        assert_eq!(
            default_key(&h, Some("key=kb_b")).unwrap_err(),
            Rejection::AmbiguousKey
        );
        let (key, query) = default_key(&h, Some("key=kb_a")).unwrap();
        assert_eq!(
            (key.as_ref(), query),
            ("kb_a", None),
            "the same key twice is fine"
        );
    }

    #[test]
    fn empty_values_are_no_key() {
        let h = headers(&[("authorization", "Bearer kb_a"), ("x-api-key", "")]);
        let (key, query) = default_key(&h, Some("key=&q=1")).unwrap();
        assert_eq!(
            (key.as_ref(), query.as_deref()),
            ("kb_a", Some("q=1")),
            "an empty X-Api-Key or ?key= is not a second key"
        );
        let h = headers(&[("x-api-key", "kb_a"), ("authorization", "Bearer  ")]);
        assert_eq!(default_key(&h, Some("key")).unwrap().0, "kb_a");
        let h = headers(&[("authorization", "Bearer "), ("x-api-key", " ")]);
        assert_eq!(
            default_key(&h, Some("key=&key")).unwrap_err(),
            Rejection::MissingKey
        );
    }

    #[test]
    fn configured_sources_only() {
        let h = headers(&[("authorization", "Bearer kb_a"), ("x-api-key", "kb_b")]);
        let bearer_only = KeySources {
            authorization: true,
            x_api_key: false,
            query: None,
        };
        let (key, query) = extract_key(&h, Some("key=name&x=1"), &bearer_only).unwrap();
        assert_eq!(
            (key.as_ref(), query.as_deref()),
            ("kb_a", Some("key=name&x=1")),
            "no query source: ?key= is the KB's, untouched, never a key"
        );
        let renamed = KeySources {
            authorization: false,
            x_api_key: false,
            query: Some("kbgate_key".into()),
        };
        let (key, query) = extract_key(&h, Some("key=1&kbgate%5Fkey=kb_c"), &renamed).unwrap();
        assert_eq!((key.as_ref(), query.as_deref()), ("kb_c", Some("key=1")));
        assert_eq!(
            extract_key(&h, Some("key=kb_a"), &renamed).unwrap_err(),
            Rejection::MissingKey,
            "headers that are not sources are not read"
        );
    }
}
