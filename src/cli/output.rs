//! What `kbgate keys …` prints: the API's JSON as is with `--json`, readable text otherwise.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::block::{key_block, secret_notice};
use super::error::CliError;
use super::key::Key;
use super::request::View;
use super::table::key_table;

/// Renders the API's answer; `now` decides which keys show as expired.
pub fn render(
    view: &View,
    answer: Option<Value>,
    json: bool,
    now: DateTime<Utc>,
) -> Result<String, CliError> {
    if json {
        return Ok(answer.map(pretty).unwrap_or_default());
    }
    if let View::Deleted(id) = view {
        return Ok(format!("deleted {id}\n"));
    }
    let answer = answer.ok_or_else(|| CliError::UnexpectedResponse("empty body".to_string()))?;
    match view {
        View::KeyList(_) => Ok(key_table(&Key::list_from_json(&answer)?, now)),
        View::Usage => super::usage::usage_text(&answer),
        View::Key => Ok(key_block(&Key::from_json(&answer)?, now)),
        View::KeyWithSecret => {
            let secret = answer["secret"].as_str().ok_or_else(|| {
                CliError::UnexpectedResponse("the new key's secret is missing".to_string())
            })?;
            let block = key_block(&Key::from_json(&answer)?, now);
            Ok(block + &secret_notice(secret))
        }
        View::Deleted(_) => Ok(String::new()),
    }
}

fn pretty(value: Value) -> String {
    // A `Value` always serializes; the fallback only keeps this free of panics.
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
    text + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::key::tests::{now, sample};
    use serde_json::json;

    #[test]
    fn json_mode_prints_the_answer_as_is() {
        let mut answer = sample();
        answer["secret"] = json!("kb_SECRET");
        let text = render(&View::KeyWithSecret, Some(answer.clone()), true, now()).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), answer);
        assert!(text.ends_with("}\n"));
        let deleted = render(&View::Deleted("k1".into()), None, true, now()).unwrap();
        assert_eq!(deleted, "");
    }

    #[test]
    fn create_and_rotate_show_the_key_then_the_secret() {
        let mut answer = sample();
        answer["secret"] = json!("kb_SECRET");
        let text = render(&View::KeyWithSecret, Some(answer), false, now()).unwrap();
        assert!(text.starts_with("id:          key_01\n"), "{text}");
        assert!(text.ends_with("\nkb_SECRET\n"), "{text}");
        assert_eq!(text.matches("kb_SECRET").count(), 1);
    }

    #[test]
    fn a_missing_secret_is_an_error() {
        let err = render(&View::KeyWithSecret, Some(sample()), false, now()).unwrap_err();
        assert!(err.to_string().contains("secret is missing"), "{err}");
    }

    #[test]
    fn delete_says_what_it_deleted() {
        let text = render(&View::Deleted("key_01".into()), None, false, now()).unwrap();
        assert_eq!(text, "deleted key_01\n");
    }

    #[test]
    fn list_and_show_use_table_and_block() {
        let list = json!({"keys": [sample()]});
        let table = render(&View::KeyList(None), Some(list), false, now()).unwrap();
        assert!(table.starts_with("ID "), "{table}");
        let block = render(&View::Key, Some(sample()), false, now()).unwrap();
        assert!(block.contains("status:      enabled\n"), "{block}");
        assert!(render(&View::Key, None, false, now()).is_err());
    }
}
