//! The admin API's OpenAPI document: `openapi.json`, with the permissions this config's
//! resources make (the handlers refuse any other) filled in as an enum.

use serde_json::{Value, json};

const DOCUMENT: &str = include_str!("openapi.json");

/// The document served at `/openapi.json`.
pub fn document(resources: &[String]) -> String {
    let mut document: Value =
        serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON (a unit test says so)");
    let permissions: Vec<String> = resources
        .iter()
        .flat_map(|r| [format!("{r}:read"), format!("{r}:write")])
        .collect();
    let schema = &mut document["components"]["schemas"]["Permission"];
    if !permissions.is_empty() {
        schema["enum"] = json!(permissions);
    }
    document.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_those_of_the_configured_resources() {
        let text = document(&["article".into(), "search".into()]);
        let document: Value = serde_json::from_str(&text).unwrap();
        let permission = &document["components"]["schemas"]["Permission"];
        assert_eq!(
            permission["enum"],
            json!([
                "article:read",
                "article:write",
                "search:read",
                "search:write"
            ])
        );
        assert_eq!(document["openapi"], "3.0.3");
    }
}
