//! `kbgate webhooks create|list|edit|delete|deliveries|retry`: a client of `/v1/webhooks`, with
//! the same target options as `kbgate admin-tokens`.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::admin::{TargetArgs, expect_body, pretty, table, text};
use super::block::secret_notice;
use super::error::CliError;
use super::print;

#[derive(Args, Debug)]
pub struct WebhooksArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Create a webhook; its signing secret is printed once
    Create {
        /// Where deliveries are POSTed (http or https)
        #[arg(long)]
        url: String,
        /// An event type or pattern to receive (article.updated, article.*, *); repeat for more
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the webhooks
    List,
    /// Change a webhook's URL, event types or description
    Edit {
        id: String,
        #[arg(long)]
        url: Option<String>,
        /// Replaces the event types; repeat for more
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a webhook and its deliveries
    Delete { id: String },
    /// A webhook's deliveries, newest first, with their last attempt
    Deliveries { id: String },
    /// Attempt a delivery again now
    Retry { id: String, delivery_id: String },
}

/// Runs one `kbgate webhooks …` command.
pub async fn run_webhooks(args: WebhooksArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    let json_out = args.target.json;
    let (method, path, body): (Method, Vec<&str>, Option<Value>) = match &args.command {
        WebhooksCommand::Create {
            url,
            events,
            description,
        } => {
            let body = json!({"url": url, "events": events, "description": description});
            (Method::POST, vec!["webhooks"], Some(body))
        }
        WebhooksCommand::List => (Method::GET, vec!["webhooks"], None),
        WebhooksCommand::Edit {
            id,
            url,
            events,
            description,
        } => {
            let mut body = json!({});
            if let Some(url) = url {
                body["url"] = json!(url);
            }
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            (Method::PATCH, vec!["webhooks", id], Some(body))
        }
        WebhooksCommand::Delete { id } => (Method::DELETE, vec!["webhooks", id], None),
        WebhooksCommand::Deliveries { id } => {
            (Method::GET, vec!["webhooks", id, "deliveries"], None)
        }
        WebhooksCommand::Retry { id, delivery_id } => (
            Method::POST,
            vec!["webhooks", id, "deliveries", delivery_id, "retry"],
            None,
        ),
    };
    let url = client.v1_url(&path, &[]);
    let answer = client.call(method, url, body.as_ref()).await?;
    if let WebhooksCommand::Delete { id } = &args.command {
        return match json_out {
            true => Ok(()),
            false => print(&format!("deleted {id}\n")),
        };
    }
    let answer = expect_body(answer)?;
    if json_out {
        return print(&pretty(&answer));
    }
    print(&match &args.command {
        WebhooksCommand::Create { .. } => {
            let secret = answer["secret"].as_str().unwrap_or_default();
            webhook_table(std::slice::from_ref(&answer)) + &secret_notice(secret)
        }
        WebhooksCommand::List => {
            webhook_table(answer["webhooks"].as_array().map_or(&[], Vec::as_slice))
        }
        WebhooksCommand::Deliveries { .. } => {
            delivery_table(answer["deliveries"].as_array().map_or(&[], Vec::as_slice))
        }
        WebhooksCommand::Retry { .. } => delivery_table(std::slice::from_ref(&answer)),
        _ => webhook_table(std::slice::from_ref(&answer)),
    })
}

fn webhook_table(hooks: &[Value]) -> String {
    if hooks.is_empty() {
        return "no webhooks\n".to_string();
    }
    let rows = hooks
        .iter()
        .map(|h| {
            let events: Vec<String> = h["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![
                text(&h["id"]),
                text(&h["url"]),
                events.join(","),
                text(&h["description"]),
            ]
        })
        .collect();
    table(&["ID", "URL", "EVENTS", "DESCRIPTION"], rows)
}

fn delivery_table(deliveries: &[Value]) -> String {
    if deliveries.is_empty() {
        return "no deliveries\n".to_string();
    }
    let rows = deliveries
        .iter()
        .map(|d| {
            let attempts = d["attempts"].as_array().map_or(&[][..], Vec::as_slice);
            let last = attempts.last().cloned().unwrap_or(Value::Null);
            vec![
                text(&d["id"]),
                text(&d["event_type"]),
                text(&d["state"]),
                attempts.len().to_string(),
                text(&last["status"]),
                text(&last["error"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "EVENT",
            "STATE",
            "ATTEMPTS",
            "LAST STATUS",
            "LAST ERROR",
        ],
        rows,
    )
}
