//! Command-line arguments of `kbgate keys …` and the parsers for their values.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};

use super::limit_args::{ClearLimitArgs, LimitArgs};

/// Kept apart in `--help`, so each subcommand's own options are easy to find.
const GLOBAL: &str = "Global options";

#[derive(Args, Debug)]
pub struct KeysArgs {
    /// kbgate config to read the admin address and token from (only its `admin` section);
    /// default: config/kbgate.yaml, as `kbgate serve`, when that file exists
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Admin API base URL (overrides the config)
    #[arg(long, global = true, help_heading = GLOBAL, env = "KBGATE_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Admin bearer token (overrides the config)
    #[arg(
        long,
        global = true, help_heading = GLOBAL,
        env = "KBGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Print JSON instead of tables, for scripts
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once
    Create {
        /// Name to tell the key apart (default: its creation time)
        #[arg(long)]
        name: Option<String>,
        /// What the key may do (default: read)
        #[arg(long)]
        scope: Option<ScopeArg>,
        /// Narrow the scope to this permission, e.g. article:read (repeatable)
        #[arg(long = "permission", value_name = "PERMISSION")]
        permissions: Vec<String>,
        #[command(flatten)]
        expiry: ExpiryArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List keys (every page, oldest first unless sorted), optionally filtered
    List(ListArgs),
    /// A key's usage over the last days: a table and a one-line sparkline
    Usage {
        /// Key id, as `kbgate keys list` shows it
        #[arg(value_parser = parse_id)]
        id: String,
        /// How many days back (hours for up to 2 days, days beyond)
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
    },
    /// Show one key
    Show {
        /// Key id, as `kbgate keys list` shows it
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Change a key's name, scope, permissions, expiry or limits
    Edit {
        /// Key id, as `kbgate keys list` shows it
        #[arg(value_parser = parse_id)]
        id: String,
        /// New name
        #[arg(long)]
        name: Option<String>,
        /// New scope
        #[arg(long)]
        scope: Option<ScopeArg>,
        /// Replace the permissions with these (repeatable)
        #[arg(long = "permission", value_name = "PERMISSION")]
        permissions: Vec<String>,
        /// Remove all permissions, so the key gets its whole scope
        #[arg(long, conflicts_with = "permissions")]
        clear_permissions: bool,
        #[command(flatten)]
        expiry: ExpiryArgs,
        /// Remove the expiry
        #[arg(long, conflicts_with_all = ["expires_at", "expires_in"])]
        no_expiry: bool,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        clear_limits: ClearLimitArgs,
    },
    /// Refuse the key's requests until it is enabled again
    Disable {
        /// Key id, as `kbgate keys list` shows it
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Accept the key's requests again
    Enable {
        /// Key id, as `kbgate keys list` shows it
        #[arg(value_parser = parse_id)]
        id: String,
    },
    /// Give the key a new secret; the old one works for the grace period
    Rotate {
        /// Key id, as `kbgate keys list` shows it
        #[arg(value_parser = parse_id)]
        id: String,
        /// How long the old secret keeps working, e.g. 1h; 0 ends it at once
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        grace: Duration,
        /// Make no new secret: end the grace of the last rotation now, so the old secret stops
        /// working at once
        #[arg(long, conflicts_with = "grace")]
        end_grace: bool,
    },
    /// Delete the key for good (asks first on a terminal)
    Delete {
        /// Key id, as `kbgate keys list` shows it
        #[arg(value_parser = parse_id)]
        id: String,
        /// Delete without asking (needed when stdin is not a terminal)
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `kbgate keys list`'s filters and order (the admin API's `GET /v1/keys` parameters).
#[derive(Args, Debug, Default, PartialEq)]
pub struct ListArgs {
    /// Only keys in this state (expiring: within --expiring-within, default 14d)
    #[arg(long)]
    pub state: Option<StateArg>,
    /// With --state expiring: how soon, e.g. 30d
    #[arg(long, value_parser = parse_positive_duration)]
    pub expiring_within: Option<Duration>,
    /// Only keys with no request for this long, e.g. 30d (a never-used key counts from its creation)
    #[arg(long, value_parser = parse_positive_duration)]
    pub unused_for: Option<Duration>,
    /// Only keys whose name contains this, ignoring case
    #[arg(long)]
    pub search: Option<String>,
    /// Only keys that grant this permission, e.g. article:write
    #[arg(long)]
    pub permission: Option<String>,
    /// Order by
    #[arg(long)]
    pub sort: Option<SortArg>,
    /// Newest, most recently used or busiest first
    #[arg(long)]
    pub desc: bool,
    /// Print at most this many keys
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateArg {
    Active,
    Disabled,
    Expired,
    Expiring,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortArg {
    Created,
    #[value(alias = "last_used")]
    LastUsed,
    Requests,
}

/// When a key stops working: at a fixed time or after a while.
#[derive(Args, Debug)]
pub struct ExpiryArgs {
    /// Expire at this time (RFC 3339, e.g. 2030-01-31T00:00:00Z)
    #[arg(long, value_parser = parse_timestamp, conflicts_with = "expires_in")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Expire this long from now, e.g. 30d or 12h
    #[arg(long, value_parser = parse_positive_duration)]
    pub expires_in: Option<Duration>,
}

/// `--scope`: the two scopes of the admin API (authz::Scope is the domain's); both spellings of read-write are accepted.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeArg {
    Read,
    #[value(alias = "read_write")]
    ReadWrite,
}

impl ScopeArg {
    /// The spelling the admin API uses.
    pub fn as_api(self) -> &'static str {
        match self {
            ScopeArg::Read => "read",
            ScopeArg::ReadWrite => "read_write",
        }
    }
}

/// A key id as `list` shows it; `.` and `..` would change the URL path instead of naming a key.
fn parse_id(value: &str) -> Result<String, String> {
    match value.trim() {
        "" | "." | ".." => Err("expected a key id as shown by `kbgate keys list`".to_string()),
        id => Ok(id.to_string()),
    }
}

/// Parses a human duration such as `30d`, `12h` or `0`.
fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (try e.g. 30d, 12h, 15m or 0)"))
}

/// Like `parse_duration`, but zero is refused: a key that expires now is useless.
fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        d if d.is_zero() => Err("must be longer than zero".to_string()),
        d => Ok(d),
    }
}

/// Parses an RFC 3339 time in any offset and keeps it in UTC.
fn parse_timestamp(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2030-01-31T00:00:00Z)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Wires `KeysArgs` the way main.rs does: `kbgate keys …`.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Subcommand, Debug)]
    enum Top {
        Keys(KeysArgs),
    }

    fn parse(args: &[&str]) -> Result<KeysArgs, clap::Error> {
        let argv = ["kbgate", "keys"].iter().chain(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Top::Keys(keys) => keys,
        })
    }

    fn command(args: &[&str]) -> KeysCommand {
        parse(args).expect("arguments should parse").command
    }

    #[test]
    fn create_with_everything() {
        let cmd = command(&[
            "create",
            "--name",
            "chatbot",
            "--scope",
            "read-write",
            "--permission",
            "article:read",
            "--permission",
            "search:read",
            "--expires-in",
            "30d",
        ]);
        let KeysCommand::Create {
            name,
            scope,
            permissions,
            expiry,
            ..
        } = cmd
        else {
            panic!("expected create, got {cmd:?}");
        };
        assert_eq!(name.as_deref(), Some("chatbot"));
        assert_eq!(scope, Some(ScopeArg::ReadWrite));
        assert_eq!(permissions, ["article:read", "search:read"]);
        assert_eq!(expiry.expires_in, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(expiry.expires_at, None);
    }

    #[test]
    fn create_with_nothing() {
        let cmd = command(&["create"]);
        let KeysCommand::Create {
            name,
            scope,
            permissions,
            expiry,
            ..
        } = cmd
        else {
            panic!("expected create, got {cmd:?}");
        };
        assert_eq!((name, scope), (None, None));
        assert!(permissions.is_empty());
        assert_eq!((expiry.expires_at, expiry.expires_in), (None, None));
    }

    #[test]
    fn scope_accepts_all_spellings() {
        for (given, want) in [
            ("read", ScopeArg::Read),
            ("read-write", ScopeArg::ReadWrite),
            ("read_write", ScopeArg::ReadWrite),
        ] {
            let cmd = command(&["create", "--scope", given]);
            let KeysCommand::Create { scope, .. } = cmd else {
                panic!("expected create, got {cmd:?}");
            };
            assert_eq!(scope, Some(want), "--scope {given}");
        }
        assert!(parse(&["create", "--scope", "write"]).is_err());
    }

    #[test]
    fn expires_at_is_rfc3339_in_any_offset() {
        let cmd = command(&["create", "--expires-at", "2030-01-31T02:00:00+02:00"]);
        let KeysCommand::Create { expiry, .. } = cmd else {
            panic!("expected create, got {cmd:?}");
        };
        let want = DateTime::parse_from_rfc3339("2030-01-31T00:00:00Z").unwrap();
        assert_eq!(expiry.expires_at, Some(want.with_timezone(&Utc)));
        assert!(parse(&["create", "--expires-at", "next tuesday"]).is_err());
    }

    #[test]
    fn expiry_flags_exclude_each_other() {
        let both = [
            "create",
            "--expires-at",
            "2030-01-01T00:00:00Z",
            "--expires-in",
            "1d",
        ];
        assert!(parse(&both).is_err());
        assert!(parse(&["edit", "k1", "--no-expiry", "--expires-in", "1d"]).is_err());
        assert!(
            parse(&[
                "edit",
                "k1",
                "--no-expiry",
                "--expires-at",
                "2030-01-01T00:00:00Z"
            ])
            .is_err()
        );
    }

    #[test]
    fn expires_in_must_be_positive() {
        assert!(parse(&["create", "--expires-in", "0s"]).is_err());
        assert!(parse(&["create", "--expires-in", "soon"]).is_err());
    }

    #[test]
    fn list_show_enable_disable_delete() {
        assert!(matches!(command(&["list"]), KeysCommand::List(_)));
        let KeysCommand::List(list) = command(&[
            "list",
            "--unused-for",
            "30d",
            "--state",
            "disabled",
            "--search",
            "chat",
            "--sort",
            "last-used",
            "--desc",
        ]) else {
            panic!("expected list");
        };
        assert_eq!(list.unused_for, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(list.state, Some(StateArg::Disabled));
        assert_eq!(list.search.as_deref(), Some("chat"));
        assert_eq!((list.sort, list.desc), (Some(SortArg::LastUsed), true));
        assert!(parse(&["list", "--state", "gone"]).is_err());
        assert!(parse(&["usage", "k1", "--days", "0"]).is_err());
        assert!(matches!(
            command(&["usage", "k1"]),
            KeysCommand::Usage { days: 7, .. }
        ));
        assert!(matches!(command(&["show", "k1"]), KeysCommand::Show { id } if id == "k1"));
        assert!(matches!(command(&["enable", "k1"]), KeysCommand::Enable { id } if id == "k1"));
        assert!(matches!(command(&["disable", "k1"]), KeysCommand::Disable { id } if id == "k1"));
        assert!(
            matches!(command(&["delete", "k1"]), KeysCommand::Delete { id, yes: false } if id == "k1")
        );
        assert!(matches!(
            command(&["delete", "k1", "--yes"]),
            KeysCommand::Delete { yes: true, .. }
        ));
        assert!(parse(&["show"]).is_err(), "show needs an id");
        for id in ["", ".", ".."] {
            assert!(parse(&["delete", id]).is_err(), "id {id:?}");
        }
    }

    #[test]
    fn edit_flags() {
        let cmd = command(&[
            "edit",
            "k1",
            "--name",
            "n",
            "--scope",
            "read",
            "--no-expiry",
        ]);
        let KeysCommand::Edit {
            id,
            name,
            scope,
            no_expiry,
            clear_permissions,
            ..
        } = cmd
        else {
            panic!("expected edit, got {cmd:?}");
        };
        assert_eq!((id.as_str(), name.as_deref()), ("k1", Some("n")));
        assert_eq!(scope, Some(ScopeArg::Read));
        assert!(no_expiry);
        assert!(!clear_permissions);
    }

    #[test]
    fn edit_cannot_set_and_clear_permissions() {
        let args = [
            "edit",
            "k1",
            "--permission",
            "article:read",
            "--clear-permissions",
        ];
        assert!(parse(&args).is_err());
    }

    #[test]
    fn rotate_grace_defaults_to_a_day_and_zero_means_now() {
        let grace_of = |args: &[&str]| match command(args) {
            KeysCommand::Rotate { grace, .. } => grace,
            other => panic!("expected rotate, got {other:?}"),
        };
        assert_eq!(grace_of(&["rotate", "k1"]), Duration::from_secs(86_400));
        assert_eq!(
            grace_of(&["rotate", "k1", "--grace", "90m"]),
            Duration::from_secs(5_400)
        );
        assert_eq!(grace_of(&["rotate", "k1", "--grace", "0"]), Duration::ZERO);
        assert_eq!(grace_of(&["rotate", "k1", "--grace", "0s"]), Duration::ZERO);
        assert!(parse(&["rotate", "k1", "--grace", "a while"]).is_err());
        assert!(matches!(
            command(&["rotate", "k1", "--end-grace"]),
            KeysCommand::Rotate {
                end_grace: true,
                ..
            }
        ));
        assert!(parse(&["rotate", "k1", "--end-grace", "--grace", "1h"]).is_err());
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let before = parse(&["--json", "--config", "kb.yaml", "list"]).unwrap();
        let after = parse(&["list", "--json", "--config", "kb.yaml"]).unwrap();
        for args in [before, after] {
            assert!(args.json);
            assert_eq!(args.config, Some(PathBuf::from("kb.yaml")));
        }
        let args = parse(&[
            "show",
            "k1",
            "--admin-url",
            "http://x",
            "--admin-token",
            "t",
        ])
        .unwrap();
        assert_eq!(args.admin_url.as_deref(), Some("http://x"));
        assert_eq!(args.admin_token.as_deref(), Some("t"));
    }

    #[test]
    fn unknown_subcommand_is_refused() {
        assert!(parse(&["revoke", "k1"]).is_err());
    }
}
