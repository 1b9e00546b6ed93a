//! What can go wrong in `kbgate keys …`, worded for the person at the terminal.

use std::path::PathBuf;

use serde::Deserialize;

/// Longest stretch of an unexpected error body worth showing.
const MAX_BODY_SHOWN: usize = 200;

/// Every message is complete on its own: the caller prints `error: <message>` and exits 1
/// (or, under `--json`, [`CliError::to_json`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "no admin {0} given: pass --config <kbgate.yaml> (default config/kbgate.yaml, not found here), or set KBGATE_ADMIN_URL and KBGATE_ADMIN_TOKEN"
    )]
    MissingTarget(&'static str),
    #[error("cannot read the admin address from {}{}: {message}{}",
        path.display(),
        if *default { " (the default --config)" } else { "" },
        if *default { "; pass --config <kbgate.yaml>, or set KBGATE_ADMIN_URL and KBGATE_ADMIN_TOKEN" } else { "" })]
    Config {
        path: PathBuf,
        message: String,
        /// The file was not named with --config: it is the default.
        default: bool,
    },
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
    #[error(
        "the admin token was rejected by {url}: check --admin-token, KBGATE_ADMIN_TOKEN or admin.token in the config"
    )]
    TokenRejected { url: String },
    #[error(
        "{url} is the gateway, not the admin API: use the address in admin.listen (default 127.0.0.1:9090) with --admin-url or KBGATE_ADMIN_URL"
    )]
    NotTheAdminApi { url: String },
    #[error("cannot connect to the admin API at {url}: is `kbgate serve` running? ({cause})")]
    Unreachable { url: String, cause: String },
    #[error(
        "the admin API at {url} did not answer in time: check the address (admin.listen) and that `kbgate serve` is running"
    )]
    TimedOut { url: String },
    #[error("request to the admin API failed: {}", with_causes(.0))]
    Request(#[from] reqwest::Error),
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "not deleting {0} without a confirmation: stdin is not a terminal, so pass --yes to delete it"
    )]
    ConfirmationNeeded(String),
    #[error("{0} was not deleted")]
    NotConfirmed(String),
    #[error("unexpected response from the admin API: {0}")]
    UnexpectedResponse(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The refusal codes of the gateway's own listener: an answer with one of them came from the
/// gateway, not from the admin API (whose 401 is `unauthorized`).
const GATEWAY_CODES: [&str; 7] = [
    "missing_key",
    "invalid_key",
    "ambiguous_key",
    "key_disabled",
    "key_expired",
    "route_not_allowed",
    "insufficient_permissions",
];

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
                message: if error.code == "invalid_request" {
                    flag_named(&error.message)
                } else {
                    error.message
                },
                code: error.code,
            },
            Err(_) => CliError::Api {
                status,
                code: "unexpected_body".to_string(),
                message: shorten(body.trim()),
            },
        }
    }

    /// Says what to do about an answer from `url` that is not the admin API's or not for this
    /// token; other errors are kept as they are.
    pub fn explained(self, url: &str) -> CliError {
        match &self {
            CliError::Api {
                status: 401, code, ..
            } if code == "unauthorized" => CliError::TokenRejected {
                url: url.to_string(),
            },
            CliError::Api { code, .. } if GATEWAY_CODES.contains(&code.as_str()) => {
                CliError::NotTheAdminApi {
                    url: url.to_string(),
                }
            }
            _ => self,
        }
    }

    /// A failed request: a refused connection and a timeout say what to check.
    pub fn from_request(error: reqwest::Error, url: &str) -> CliError {
        let url = url.to_string();
        // A connect timeout is both: nothing answered at that address.
        if error.is_connect() {
            let cause = root_cause(&error);
            return CliError::Unreachable { url, cause };
        }
        if error.is_timeout() {
            return CliError::TimedOut { url };
        }
        CliError::Request(error)
    }

    /// A stable word for scripts (`--json`): the API's own code for its errors.
    pub fn code(&self) -> &str {
        match self {
            CliError::MissingTarget(_) => "missing_target",
            CliError::Config { .. } => "config",
            CliError::InvalidUrl(_) => "invalid_url",
            CliError::InvalidToken => "invalid_token",
            CliError::ExpiryOutOfRange => "expiry_out_of_range",
            CliError::NothingToEdit => "nothing_to_edit",
            CliError::TokenRejected { .. } => "admin_token_rejected",
            CliError::NotTheAdminApi { .. } => "not_the_admin_api",
            CliError::Unreachable { .. } => "admin_unreachable",
            CliError::TimedOut { .. } => "admin_timeout",
            CliError::Request(_) => "request_failed",
            CliError::Api { code, .. } => code,
            CliError::ConfirmationNeeded(_) => "confirmation_needed",
            CliError::NotConfirmed(_) => "not_confirmed",
            CliError::UnexpectedResponse(_) => "unexpected_response",
            CliError::Output(_) => "output",
        }
    }

    /// `{"error":{"code":…,"message":…}}` (with `status` when the API answered), one line.
    pub fn to_json(&self) -> String {
        let mut error = serde_json::json!({"code": self.code(), "message": self.to_string()});
        if let CliError::Api {
            status, message, ..
        } = self
        {
            error["status"] = (*status).into();
            error["message"] = message.as_str().into();
        }
        serde_json::json!({ "error": error }).to_string()
    }
}

/// The admin API names JSON fields (`name: …`); the person at the terminal gave flags.
fn flag_named(message: &str) -> String {
    let Some((field, rest)) = message.split_once(": ") else {
        return message.to_string();
    };
    let field = field.split('[').next().unwrap_or(field);
    let flag = match field {
        "name" => "--name",
        "scope" => "--scope",
        "permissions" => "--permission",
        "expires_at" => "--expires-at/--expires-in",
        "grace_period_seconds" => "--grace",
        _ => return message.to_string(),
    };
    format!("{flag}: {rest}")
}

/// The innermost cause, e.g. "Connection refused (os error 111)".
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
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

    #[test]
    fn api_messages_name_flags_not_fields() {
        let body = r#"{"error":{"code":"invalid_request","message":"name: must be 1 to 200 printable characters"}}"#;
        let err = CliError::from_response(422, body);
        assert!(err.to_string().starts_with("--name: must be"), "{err}");
        let body = r#"{"error":{"code":"invalid_request","message":"permissions[1]: unknown resource \"x\""}}"#;
        let err = CliError::from_response(422, body);
        assert!(
            err.to_string().starts_with("--permission: unknown"),
            "{err}"
        );
        assert_eq!(
            flag_named("grace_period_seconds: at most 1"),
            "--grace: at most 1"
        );
        assert_eq!(
            flag_named("the body must be an object"),
            "the body must be an object"
        );
    }

    #[test]
    fn the_gateway_and_a_wrong_token_are_told_apart() {
        let admin = r#"{"error":{"code":"unauthorized","message":"m"}}"#;
        let err = CliError::from_response(401, admin).explained("http://a");
        assert!(matches!(err, CliError::TokenRejected { .. }), "{err}");
        assert!(
            err.to_string().contains("admin token was rejected"),
            "{err}"
        );
        let gateway = r#"{"error":{"code":"invalid_key","message":"m"}}"#;
        let err = CliError::from_response(401, gateway).explained("http://g");
        assert!(
            err.to_string().contains("use the address in admin.listen"),
            "{err}"
        );
        let other = CliError::from_response(404, r#"{"error":{"code":"not_found","message":"m"}}"#);
        assert!(matches!(
            other.explained("x"),
            CliError::Api { status: 404, .. }
        ));
    }

    #[test]
    fn json_errors_carry_code_and_message() {
        let err = CliError::from_response(
            404,
            r#"{"error":{"code":"not_found","message":"No such key."}}"#,
        );
        let json: serde_json::Value = serde_json::from_str(&err.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "not_found", "message": "No such key.", "status": 404}})
        );
        let json: serde_json::Value =
            serde_json::from_str(&CliError::NothingToEdit.to_json()).unwrap();
        assert_eq!(json["error"]["code"], "nothing_to_edit");
    }
}
