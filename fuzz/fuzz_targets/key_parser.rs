//! The key parser on any headers and query: `extract_key` and `is_well_formed` never panic; a
//! key taken from the query never stays in the query forwarded; a well-formed key has the
//! prefix and length of a kbgate secret.
#![no_main]

use http::{HeaderMap, HeaderValue};
use kbgate::keys::KeySources;
use kbgate::gateway::extract_key;
use kbgate::keys::secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Three fields separated by 0xFF: Authorization, X-Api-Key, query (each may be absent).
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let (authorization, api_key, query) = (parts.next(), parts.next(), parts.next());
    let mut headers = HeaderMap::new();
    for (name, value) in [("authorization", authorization), ("x-api-key", api_key)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.append(name, value);
        }
    }
    let query = query.and_then(|q| std::str::from_utf8(q).ok());
    for candidate in [authorization, api_key, query.map(str::as_bytes)].into_iter().flatten() {
        if let Ok(candidate) = std::str::from_utf8(candidate) {
            check_format(candidate);
        }
    }
    let Ok((key, forwarded)) = extract_key(&headers, query, &KeySources::DEFAULT) else {
        return;
    };
    check_format(&key);
    if let Some(forwarded) = forwarded {
        for pair in forwarded.split('&') {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name).replace('+', " ");
            let name = percent_decode(&name);
            assert_ne!(name, "key", "the key parameter was forwarded: {forwarded:?}");
        }
    }
});

fn check_format(candidate: &str) {
    if secret::is_well_formed(candidate) {
        assert_eq!(candidate.len(), secret::SECRET_LEN);
        assert!(candidate.starts_with(secret::PREFIX));
        assert!(candidate.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }
}

/// Percent-decoding as the gateway does it (lossy UTF-8), written out independently.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
