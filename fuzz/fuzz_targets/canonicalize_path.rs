//! `canonicalize_path` on any string: it never panics, and whatever it accepts comes out
//! canonical: absolute, a fixed point, no longer than the input, with no empty segment but a
//! trailing one, no dot segment, and only bytes a path may carry unescaped.
#![no_main]

use kbgate::path::canonicalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(canonical) = canonicalize_path(raw) else {
        return;
    };
    assert!(canonical.starts_with('/'), "{raw:?} -> {canonical:?}");
    assert!(canonical.len() <= raw.len(), "{raw:?} -> {canonical:?}");
    assert_eq!(
        canonicalize_path(&canonical).as_deref(),
        Ok(canonical.as_str()),
        "not a fixed point: {raw:?}"
    );
    let segments: Vec<&str> = canonical[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(!segment.is_empty() || last, "empty segment: {raw:?} -> {canonical:?}");
        assert!(*segment != "." && *segment != "..", "dot segment: {raw:?}");
    }
    assert!(
        canonical.bytes().all(|b| b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,=:@/%".contains(&b)),
        "{raw:?} -> {canonical:?}"
    );
    // It is also a path `http` accepts, so it can be forwarded as it was authorized.
    assert!(
        http::uri::PathAndQuery::try_from(canonical.as_str()).is_ok_and(|p| p.path() == canonical),
        "{raw:?} -> {canonical:?}"
    );
});
