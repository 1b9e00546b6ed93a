//! `kbgate admin-tokens create|list|delete` and `kbgate audit [verify]`: clients of
//! `/v1/admin-tokens` and `/v1/audit`, with the same target options as `kbgate keys`.

use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

use super::args::ExpiryArgs;
use super::block::secret_notice;
use super::client::AdminClient;
use super::error::CliError;
use super::request::expiry_time;
use super::{print, target};

/// Entries asked for per page while `kbgate audit` walks the trail.
const AUDIT_PAGE: &str = "1000";

/// Where the admin API is and how to show its answers (as for `kbgate keys`).
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// kbgate config to read the admin address and token from (only its `admin` section)
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Admin API base URL (overrides the config)
    #[arg(long, global = true, env = "KBGATE_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Admin bearer token (overrides the config)
    #[arg(
        long,
        global = true,
        env = "KBGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Print JSON instead of text, for scripts
    #[arg(long, global = true)]
    pub json: bool,
}

impl TargetArgs {
    pub(super) fn client(&self) -> Result<AdminClient, CliError> {
        let target = target::resolve(
            self.admin_url.clone(),
            self.admin_token.clone(),
            self.config.as_deref(),
        )?;
        AdminClient::new(&target)
    }
}

#[derive(Args, Debug)]
pub struct AdminTokensArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: AdminTokensCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminTokensCommand {
    /// Create an admin token; its secret is printed once
    Create {
        /// Name to tell the token apart, e.g. who or what uses it
        #[arg(long)]
        name: String,
        /// What the token may do (never more than the token creating it)
        #[arg(long)]
        role: RoleArg,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// List the admin tokens
    List,
    /// Delete (revoke) an admin token at once
    Delete { id: String },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    Viewer,
    Operator,
    Admin,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Only entries about this key
    #[arg(long = "key", value_name = "ID")]
    pub key_id: Option<String>,
    /// Only entries by this actor id (an admin token's id, or `config`)
    #[arg(long)]
    pub actor: Option<String>,
    /// Only entries of this action, e.g. key.deleted
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries since then: an RFC 3339 time or a duration ago (30d, 12h)
    #[arg(long)]
    pub since: Option<String>,
    /// Only entries before then: an RFC 3339 time or a duration ago
    #[arg(long)]
    pub until: Option<String>,
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the audit trail's hash chain; exits 1 when an entry does not match
    Verify,
}

/// Runs one `kbgate admin-tokens …` command.
pub async fn run_tokens(args: AdminTokensArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    let json_out = args.target.json;
    match &args.command {
        AdminTokensCommand::Create { name, role, expiry } => {
            let mut body = json!({"name": name, "role": role_text(*role)});
            if let Some(at) = expiry_time(expiry, Utc::now())? {
                body["expires_at"] = json!(at);
            }
            let url = client.v1_url(&["admin-tokens"], &[]);
            let token = expect_body(client.call(Method::POST, url, Some(&body)).await?)?;
            if json_out {
                return print(&pretty(&token));
            }
            let secret = token["secret"].as_str().unwrap_or_default();
            print(&(token_table(std::slice::from_ref(&token)) + &secret_notice(secret)))
        }
        AdminTokensCommand::List => {
            let url = client.v1_url(&["admin-tokens"], &[]);
            let list = expect_body(client.call(Method::GET, url, None).await?)?;
            if json_out {
                return print(&pretty(&list));
            }
            let tokens = list["tokens"].as_array().cloned().unwrap_or_default();
            print(&token_table(&tokens))
        }
        AdminTokensCommand::Delete { id } => {
            let url = client.v1_url(&["admin-tokens", id], &[]);
            client.call(Method::DELETE, url, None).await?;
            match json_out {
                true => Ok(()),
                false => print(&format!("deleted {id}\n")),
            }
        }
    }
}

/// Runs `kbgate audit` (every matching entry, newest first, page by page) or `audit verify`.
/// Returns whether the command succeeded: a chain that does not verify is a failure.
pub async fn run_audit(args: AuditArgs) -> Result<bool, CliError> {
    let client = args.target.client()?;
    if let Some(AuditCommand::Verify) = args.command {
        let url = client.v1_url(&["audit", "verify"], &[]);
        let outcome = expect_body(client.call(Method::GET, url, None).await?)?;
        let ok = outcome["ok"] == true;
        let text = match (args.target.json, ok) {
            (true, _) => pretty(&outcome),
            (false, true) => format!("audit chain OK: {} entries\n", outcome["entries"]),
            (false, false) => format!(
                "audit chain BROKEN at {}: {}\n",
                outcome["first_bad"].as_str().unwrap_or("?"),
                outcome["reason"].as_str().unwrap_or("")
            ),
        };
        print(&text)?;
        return Ok(ok);
    }
    let mut query: Vec<(&str, String)> = vec![("limit", AUDIT_PAGE.to_string())];
    for (name, value) in [
        ("key_id", &args.key_id),
        ("actor", &args.actor),
        ("action", &args.action),
        ("since", &args.since),
        ("until", &args.until),
    ] {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    let mut entries: Vec<Value> = Vec::new();
    loop {
        let url = client.v1_url(&["audit"], &query);
        let page = expect_body(client.call(Method::GET, url, None).await?)?;
        entries.extend(page["entries"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                query.retain(|(name, _)| *name != "cursor");
                query.push(("cursor", cursor.to_string()));
            }
            None => break,
        }
    }
    let text = match args.target.json {
        true => pretty(&Value::Array(entries)),
        false => audit_table(&entries),
    };
    print(&text)?;
    Ok(true)
}

fn role_text(role: RoleArg) -> &'static str {
    match role {
        RoleArg::Viewer => "viewer",
        RoleArg::Operator => "operator",
        RoleArg::Admin => "admin",
    }
}

pub(super) fn expect_body(answer: Option<Value>) -> Result<Value, CliError> {
    answer.ok_or_else(|| CliError::UnexpectedResponse("empty body".to_string()))
}

pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()) + "\n"
}

pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn token_table(tokens: &[Value]) -> String {
    if tokens.is_empty() {
        return "no admin tokens\n".to_string();
    }
    let fields = ["id", "name", "role", "start", "expires_at", "created_by"];
    let rows = tokens
        .iter()
        .map(|t| fields.iter().map(|f| text(&t[*f])).collect())
        .collect();
    table(
        &["ID", "NAME", "ROLE", "START", "EXPIRES", "CREATED BY"],
        rows,
    )
}

fn audit_table(entries: &[Value]) -> String {
    if entries.is_empty() {
        return "no audit entries\n".to_string();
    }
    let rows = entries
        .iter()
        .map(|e| {
            let changes: Vec<String> = e["changes"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(field, c)| format!("{field}: {} -> {}", text(&c["from"]), text(&c["to"])))
                .collect();
            vec![
                text(&e["time"]),
                text(&e["action"]),
                format!(
                    "{} {}",
                    text(&e["target"]["id"]),
                    text(&e["target"]["name"])
                ),
                format!(
                    "{} ({})",
                    text(&e["actor"]["id"]),
                    text(&e["actor"]["role"])
                ),
                changes.join("; "),
            ]
        })
        .collect();
    table(&["TIME", "ACTION", "TARGET", "ACTOR", "CHANGES"], rows)
}

/// Rows under a header, columns padded to their widest cell, no trailing spaces.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let all: Vec<&Vec<String>> = std::iter::once(&header).chain(&rows).collect();
    let mut widths = vec![0; headers.len()];
    for row in &all {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    all.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_string() + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let text = table(
            &["A", "BB"],
            vec![vec!["long".into(), "x".into()], vec!["s".into(), "".into()]],
        );
        assert_eq!(text, "A     BB\nlong  x\ns\n");
    }

    #[test]
    fn audit_lines_show_changes() {
        let entry = json!({"time": "t", "action": "key.updated",
            "target": {"id": "key_1", "name": "Bot"}, "actor": {"id": "config", "role": "admin"},
            "changes": {"name": {"from": "a", "to": "b"}}});
        let text = audit_table(&[entry]);
        assert!(
            text.contains("key.updated  key_1 Bot  config (admin)  name: a -> b"),
            "{text}"
        );
    }
}
