//! What can go wrong in `kbgate keys …`, worded for the person at the terminal.

use std::path::PathBuf;

use serde::Deserialize;

/// Longest stretch of an unexpected error body worth showing.
const MAX_BODY_SHOWN: usize = 200;

/// Every message is complete on its own: the caller prints `error: <message>` and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "no admin {0} given: pass --config <kbgate.yaml>, or set KBGATE_ADMIN_URL and KBGATE_ADMIN_TOKEN"
    )]
    MissingTarget(&'static str),
    #[error("cannot read the admin address from {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid admin URL: {0}")]
    InvalidUrl(String),
    #[error("the admin token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    #[error("--expires-in is too far in the future")]
    ExpiryOutOfRange,
    #[error(
        "nothing to change: pass --name, --scope, --permission, --clear-permissions, --expires-at, --expires-in or --no-expiry"
    )]
    NothingToEdit,
    #[error("request to the admin API failed: {}", with_causes(.0))]
    Request(#[from] reqwest::Error),
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected response from the admin API: {0}")]
    UnexpectedResponse(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The admin API's error body: `{"error":{"code":"…","message":"…"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl CliError {
    /// Turns a failed response into an error; bodies not in the API's shape (e.g. from a proxy in
    /// between) are shown in part so the cause is not lost.
    pub fn from_response(status: u16, body: &str) -> CliError {
        match serde_json::from_str::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => CliError::Api {
                status,
                code: error.code,
                message: error.message,
            },
            Err(_) => CliError::Api {
                status,
                code: "unexpected_body".to_string(),
                message: shorten(body.trim()),
            },
        }
    }
}

/// reqwest's own message leaves out the cause (e.g. "connection refused"), which is the useful part.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

/// Keeps the first `MAX_BODY_SHOWN` characters, so a whole HTML page does not flood the terminal.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_BODY_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_body_is_rendered_with_code_and_status() {
        let body = r#"{"error":{"code":"key_not_found","message":"no key with id k9"}}"#;
        let err = CliError::from_response(404, body);
        assert_eq!(
            format!("error: {err}"),
            "error: no key with id k9 (key_not_found, HTTP 404)"
        );
    }

    #[test]
    fn other_bodies_are_shown_shortened() {
        let err = CliError::from_response(502, "Bad Gateway\n");
        assert_eq!(err.to_string(), "Bad Gateway (unexpected_body, HTTP 502)");

        let long = "x".repeat(1000);
        let shown = CliError::from_response(500, &long).to_string();
        assert!(
            shown.starts_with(&format!("{}…", "x".repeat(MAX_BODY_SHOWN))),
            "{shown}"
        );

        let empty = CliError::from_response(503, "");
        assert_eq!(
            empty.to_string(),
            "(empty body) (unexpected_body, HTTP 503)"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_kept_in_the_message() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let text = with_causes(&Outer(refused));
        assert_eq!(text, "error sending request: connection refused");
    }

    #[test]
    fn missing_target_names_every_way_to_give_it() {
        let text = CliError::MissingTarget("URL").to_string();
        for part in ["URL", "--config", "KBGATE_ADMIN_URL", "KBGATE_ADMIN_TOKEN"] {
            assert!(text.contains(part), "{text:?} lacks {part}");
        }
    }
}
