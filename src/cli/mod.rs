//! `kbgate keys …`, `kbgate admin-tokens …`, `kbgate audit …`: command-line clients of the
//! admin API.
//!
//! # Layout
//! - `args`: clap arguments and value parsers
//! - `target`: which admin API and token (flags and env over `--config`)
//! - `request`: command -> one admin API call, no I/O
//! - `client`: sends the call, maps API errors
//! - `output`, `table`, `block`, `key`: what is printed
//! - `error`: `CliError`, one variant per condition
//! - `admin`: `admin-tokens` and `audit`, arguments to output

mod admin;
mod args;
mod block;
mod client;
mod error;
mod key;
mod limit_args;
mod output;
mod request;
mod table;
mod target;
mod usage;
mod webhooks;

use std::io::{ErrorKind, IsTerminal, Write};

use chrono::Utc;

pub use admin::{AdminTokensArgs, AuditArgs, run_audit, run_tokens};
pub use args::{ExpiryArgs, KeysArgs, KeysCommand, ListArgs, ScopeArg, SortArg, StateArg};
pub use error::CliError;
pub use webhooks::{WebhooksArgs, run_webhooks};

use client::AdminClient;
use request::{Request, View};

/// Runs one `kbgate keys …` command; returns Err with a message for the caller to print and exit 1.
pub async fn run(args: KeysArgs) -> Result<(), CliError> {
    let request = request::request_for(&args.command, Utc::now())?;
    let target = target::resolve(args.admin_url, args.admin_token, args.config.as_deref())?;
    if let KeysCommand::Delete { id, yes: false } = &args.command {
        confirm_delete(id)?;
    }
    let client = AdminClient::new(&target)?;
    let answer = match request.view {
        View::KeyList(most) => Some(list_all(&client, request.clone(), most).await?),
        _ => client.send(&request).await?,
    };
    let text = output::render(&request.view, answer, args.json, Utc::now())?;
    print(&text)
}

/// Follows `next_cursor` from page to page; answers one list of every key (at most `most`).
async fn list_all(
    client: &AdminClient,
    mut request: Request,
    most: Option<u64>,
) -> Result<serde_json::Value, CliError> {
    let most = most.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut keys = Vec::new();
    loop {
        let page = client.send(&request).await?.unwrap_or_default();
        keys.extend(page["keys"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(cursor) if keys.len() < most => {
                request.query.retain(|(name, _)| *name != "cursor");
                request.query.push(("cursor", cursor.to_string()));
            }
            _ => break,
        }
    }
    keys.truncate(most);
    Ok(serde_json::json!({ "keys": keys }))
}

/// Asks on the terminal before a delete; without a terminal to ask on, `--yes` is needed.
fn confirm_delete(id: &str) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::ConfirmationNeeded(id.to_string()));
    }
    let mut stderr = std::io::stderr().lock();
    write!(
        stderr,
        "Delete key {id} for good? Its secret stops working at once. [y/N] "
    )?;
    stderr.flush()?;
    let mut answer = String::new();
    stdin.read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::NotConfirmed(id.to_string())),
    }
}

/// Writes without `print!`, which panics when the reader has gone; a reader that stops early
/// (`| head`) is not an error.
fn print(text: &str) -> Result<(), CliError> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
