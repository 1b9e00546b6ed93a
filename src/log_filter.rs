//! Log filters (`log.level`, `RUST_LOG`) checked before use.
//!
//! tracing's `EnvFilter` reads a word it does not know as a *target* name: `warning` or
//! `verbose` is a valid filter that enables only events of a target called `warning`, so the
//! gateway would log nothing at all. [`normalize`] accepts a level word (`warning` meaning
//! `warn`) or `target=level` directives, and refuses any other word.

/// The level words, as an error message lists them.
const LEVELS: &str = "error, warn, info, debug, trace, off";

/// Checks a filter: comma-separated directives, each a level word or `target=level`
/// (`target[span{field}]=level` too). Level words are case-insensitive; `warning` is `warn`.
/// Returns the filter with its level words normalized, or why it was refused.
pub fn normalize(filter: &str) -> Result<String, String> {
    let mut directives = Vec::new();
    for directive in filter.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        let normalized = match directive.rsplit_once('=') {
            // `=` inside a span's field filter (`t[s{f=v}]`) is not the level separator.
            Some((_, level)) if level.contains([']', '}']) => directive.to_owned(),
            Some((target, level)) => format!("{target}={}", level_word(level)?),
            None if directive.contains('[') => directive.to_owned(),
            None => level_word(directive)?.to_owned(),
        };
        directives.push(normalized);
    }
    if directives.is_empty() {
        return Err(format!("is empty (expected one of {LEVELS})"));
    }
    let normalized = directives.join(",");
    normalized
        .parse::<tracing_subscriber::EnvFilter>()
        .map_err(|e| format!("{filter:?} is not a log filter: {e}"))?;
    Ok(normalized)
}

fn level_word(word: &str) -> Result<&'static str, String> {
    Ok(match word.trim().to_ascii_lowercase().as_str() {
        "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        "off" => "off",
        _ => return Err(format!("unknown level {word:?} (expected one of {LEVELS})")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_words_and_directives() {
        assert_eq!(normalize("info").unwrap(), "info");
        assert_eq!(normalize("warning").unwrap(), "warn");
        assert_eq!(normalize("WARN").unwrap(), "warn");
        assert_eq!(
            normalize("info, kbgate::access=Warning").unwrap(),
            "info,kbgate::access=warn"
        );
        assert_eq!(
            normalize("hyper=off,kbgate=trace").unwrap(),
            "hyper=off,kbgate=trace"
        );
        assert_eq!(
            normalize("kbgate[conn{peer=1}]").unwrap(),
            "kbgate[conn{peer=1}]"
        );
    }

    #[test]
    fn unknown_words_are_refused() {
        assert_eq!(
            normalize("verbose").unwrap_err(),
            "unknown level \"verbose\" (expected one of error, warn, info, debug, trace, off)"
        );
        assert!(normalize("kbgate=loud").unwrap_err().contains("\"loud\""));
        assert!(normalize("info,chatty").unwrap_err().contains("\"chatty\""));
        assert!(normalize(" , ").unwrap_err().contains("is empty"));
    }
}
