//! Which admin API to talk to, and with which token.

use std::fmt::Display;
use std::path::Path;

use crate::config::{self, AdminTarget};

use super::error::CliError;

/// Resolved admin address and token. No `Debug`, so the token cannot end up in a log by accident.
pub struct Target {
    pub url: String,
    pub token: String,
}

/// The config `kbgate serve` reads when given none.
const DEFAULT_CONFIG: &str = "config/kbgate.yaml";

/// Flags and environment win; the config (`--config`, else the default one when it exists)
/// fills only what they leave out.
pub fn resolve(
    url: Option<String>,
    token: Option<String>,
    config: Option<&Path>,
) -> Result<Target, CliError> {
    match config {
        Some(path) => resolve_with(url, token, Some(path), config::admin_target),
        None => {
            let default = Path::new(DEFAULT_CONFIG);
            let config = default.is_file().then_some(default);
            resolve_with(url, token, config, config::admin_target).map_err(|e| match e {
                CliError::Config { path, message, .. } => CliError::Config {
                    path,
                    message,
                    default: true,
                },
                other => other,
            })
        }
    }
}

/// `resolve` with the config reader passed in, so tests need no config file.
fn resolve_with<E: Display>(
    url: Option<String>,
    token: Option<String>,
    config: Option<&Path>,
    read_config: impl FnOnce(&Path) -> Result<AdminTarget, E>,
) -> Result<Target, CliError> {
    let (mut url, mut token) = (non_empty(url), non_empty(token));
    if (url.is_none() || token.is_none())
        && let Some(path) = config
    {
        let from_config = read_config(path).map_err(|e| CliError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
            default: false,
        })?;
        url = url.or(Some(from_config.url));
        token = token.or(Some(from_config.token));
    }
    match (url, token) {
        (Some(url), Some(token)) => Ok(Target { url, token }),
        (None, Some(_)) => Err(CliError::MissingTarget("URL")),
        (Some(_), None) => Err(CliError::MissingTarget("token")),
        (None, None) => Err(CliError::MissingTarget("URL and token")),
    }
}

/// An empty flag or variable (e.g. `KBGATE_ADMIN_TOKEN=`) counts as not given.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    fn from_file(_: &Path) -> Result<AdminTarget, String> {
        Ok(AdminTarget {
            url: "http://127.0.0.1:9090".to_string(),
            token: "file-token".to_string(),
        })
    }

    fn unreadable(_: &Path) -> Result<AdminTarget, String> {
        Err("no such file".to_string())
    }

    fn resolved(
        url: Option<String>,
        token: Option<String>,
        config: Option<&str>,
    ) -> (String, String) {
        let target = resolve_with(url, token, config.map(Path::new), from_file).unwrap();
        (target.url, target.token)
    }

    #[test]
    fn flags_win_over_the_config() {
        let (url, token) = resolved(some("http://admin:1"), some("flag-token"), Some("kb.yaml"));
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("http://admin:1", "flag-token")
        );
    }

    #[test]
    fn config_fills_what_flags_leave_out() {
        let (url, token) = resolved(None, some("flag-token"), Some("kb.yaml"));
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("http://127.0.0.1:9090", "flag-token")
        );

        let (url, token) = resolved(some("http://admin:1"), None, Some("kb.yaml"));
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("http://admin:1", "file-token")
        );

        let (url, token) = resolved(None, None, Some("kb.yaml"));
        assert_eq!(
            (url.as_str(), token.as_str()),
            ("http://127.0.0.1:9090", "file-token")
        );
    }

    #[test]
    fn config_is_not_read_when_flags_give_everything() {
        let target = resolve_with(
            some("http://a"),
            some("t"),
            Some(Path::new("x")),
            unreadable,
        );
        assert!(target.is_ok());
    }

    #[test]
    fn nothing_given_is_a_clear_error() {
        let err = resolve_with(None, None, None, from_file).err().unwrap();
        assert!(
            matches!(err, CliError::MissingTarget("URL and token")),
            "{err}"
        );
        let err = resolve_with(some("http://a"), some("  "), None, from_file)
            .err()
            .unwrap();
        assert!(matches!(err, CliError::MissingTarget("token")), "{err}");
        let err = resolve_with(None, some("t"), None, from_file)
            .err()
            .unwrap();
        assert!(matches!(err, CliError::MissingTarget("URL")), "{err}");
    }

    #[test]
    fn config_errors_name_the_file() {
        let err = resolve_with(None, None, Some(Path::new("kb.yaml")), unreadable)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "cannot read the admin address from kb.yaml: no such file"
        );
    }
}
