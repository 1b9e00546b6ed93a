//! The real `kbgate` binary run to completion (`check-config`, `keys …`, `migrate`), as an
//! operator runs it: what it printed and how it exited. `kbgate serve` is in `process`.
#![allow(dead_code)]

use super::{ADMIN_TOKEN, UPSTREAM_CREDENTIAL};
use std::time::Duration;
use tokio::process::Command;

/// How long a run may take: a command that does not end by then is a failure of its own (a
/// broken config that `serve` accepted would run for ever).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// `kbgate ARGS` with the test secrets as KBGATE_ADMIN_TOKEN and KB_API_KEY, no RUST_LOG and
/// no stdin, killed when dropped. Change its environment or directory before [`run`].
pub fn kbgate(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kbgate"));
    command
        .args(args)
        .env("KBGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KB_API_KEY", UPSTREAM_CREDENTIAL)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// What one run printed and its exit code.
pub struct Run {
    /// `kbgate ARGS`, for failure messages.
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts the run exited 0 (showing stderr when not); returns its stdout.
    pub fn success(self) -> String {
        assert_eq!(self.code, Some(0), "{}: {}", self.command, self.stderr);
        self.stdout
    }

    /// Asserts the run exited with `code`; returns its stderr.
    pub fn failure(self, code: i32) -> String {
        assert_eq!(self.code, Some(code), "{}: {}", self.command, self.stderr);
        self.stderr
    }
}

/// Runs `command` to its end; panics when it runs longer than [`TIMEOUT`].
pub async fn run(command: &mut Command) -> Run {
    let args = command.as_std().get_args();
    let shown = format!(
        "kbgate {}",
        args.map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = match tokio::time::timeout(TIMEOUT, command.output()).await {
        Ok(output) => output.expect("run kbgate"),
        Err(_) => panic!("{shown} was still running after {TIMEOUT:?}"),
    };
    Run {
        command: shown,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
