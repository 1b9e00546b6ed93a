//! `kbgate keys …` as an operator meets it, through the real binary: the config's admin
//! section alone, the default config, errors that say what to do (in JSON under --json),
//! confirmation before a delete, secrets and their rotation grace, and a closed stdout.

mod common;

use common::{ADMIN_TOKEN, TestGateway, bin, free_port};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

/// `kbgate keys ARGS` in `dir` with exactly the admin variables given (the others removed).
async fn keys(args: &[&str], url: Option<&str>, token: Option<&str>, dir: &Path) -> bin::Run {
    let mut command = bin::kbgate(&[&["keys"], args].concat());
    command
        .current_dir(dir)
        .env_remove("KBGATE_ADMIN_URL")
        .env_remove("KBGATE_ADMIN_TOKEN")
        .env_remove("KB_API_KEY");
    if let Some(url) = url {
        command.env("KBGATE_ADMIN_URL", url);
    }
    if let Some(token) = token {
        command.env("KBGATE_ADMIN_TOKEN", token);
    }
    bin::run(&mut command).await
}

/// [`keys`] against the admin API at `admin`, with its token.
async fn as_admin(args: &[&str], admin: &str, dir: &Path) -> bin::Run {
    keys(args, Some(admin), Some(ADMIN_TOKEN), dir).await
}

/// The shipped config with the admin listener at `admin`, written as `dir/config/kbgate.yaml`.
fn write_config(dir: &Path, admin: std::net::SocketAddr) -> std::path::PathBuf {
    let text = common::shipped_with(&[
        ("listen: 127.0.0.1:9090", format!("listen: {admin}")),
        (
            "url: http://127.0.0.1:8081",
            "url: ${KB_URL_NOT_SET}".to_string(),
        ),
    ]);
    assert!(text.contains("${KB_API_KEY}") && text.contains("${KB_URL_NOT_SET}"));
    std::fs::create_dir_all(dir.join("config")).unwrap();
    let path = dir.join("config/kbgate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_config_is_read_for_its_admin_section_only_and_is_found_by_default() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), gateway.admin_addr);
    let elsewhere = tempfile::tempdir().unwrap();

    // KB_API_KEY and KB_URL_NOT_SET are unset: only admin.token's variable is needed.
    let config = path.to_str().unwrap();
    let run = keys(
        &["create", "--json", "--config", config],
        None,
        Some(ADMIN_TOKEN),
        elsewhere.path(),
    )
    .await;
    assert!(run.ok(), "{}", run.stderr);
    let key: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(key["scope"], "read");

    // No --config: config/kbgate.yaml of the working directory, as `kbgate serve`.
    let run = keys(&["list"], None, Some(ADMIN_TOKEN), dir.path()).await;
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stdout.contains(key["id"].as_str().unwrap()),
        "{}",
        run.stdout
    );

    // The default config names a variable that is unset: say which, and the other ways.
    let run = keys(&["list"], None, None, dir.path()).await;
    assert!(!run.ok());
    for part in [
        "config/kbgate.yaml (the default --config)",
        "admin.token: environment variable KBGATE_ADMIN_TOKEN is not set",
        "KBGATE_ADMIN_URL",
    ] {
        assert!(run.stderr.contains(part), "{part:?} in {}", run.stderr);
    }
    // Without a config here, nothing is read and the message says what to pass.
    let run = keys(&["list"], None, None, elsewhere.path()).await;
    assert!(!run.ok());
    assert!(
        run.stderr.contains("--config") && run.stderr.contains("KBGATE_ADMIN_URL"),
        "{}",
        run.stderr
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let here = tempfile::tempdir().unwrap();
    let admin = format!("http://{}", gateway.admin_addr);
    let dir = here.path();

    let run = keys(
        &["list"],
        Some(&admin),
        Some("not-the-admin-token-123"),
        dir,
    )
    .await;
    assert!(!run.ok());
    assert!(
        run.stderr.contains("the admin token was rejected") && run.stderr.contains("--admin-token"),
        "{}",
        run.stderr
    );

    let gateway_url = format!("http://{}", gateway.addr);
    let run = keys(&["list"], Some(&gateway_url), Some(ADMIN_TOKEN), dir).await;
    assert!(!run.ok());
    assert!(
        run.stderr
            .contains("is the gateway, not the admin API: use the address in admin.listen"),
        "{}",
        run.stderr
    );

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let run = keys(&["list"], Some(&nobody), Some(ADMIN_TOKEN), dir).await;
    assert!(!run.ok());
    assert!(
        run.stderr.contains("is `kbgate serve` running?") && run.stderr.contains(&nobody),
        "{}",
        run.stderr
    );
    // A listener whose queue is full lets no connection complete: the CLI gives up soon.
    let full = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // SAFETY: listen(2) on a socket this test owns; a backlog of 0 holds one connection.
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&full), 0) },
        0
    );
    let full_addr = full.local_addr().unwrap();
    let mut queued = Vec::new();
    while let Ok(stream) =
        std::net::TcpStream::connect_timeout(&full_addr, std::time::Duration::from_millis(300))
    {
        queued.push(stream);
        assert!(queued.len() < 50, "the listen queue never filled");
    }
    let started = std::time::Instant::now();
    let full_url = format!("http://{full_addr}");
    let run = keys(&["list"], Some(&full_url), Some(ADMIN_TOKEN), dir).await;
    assert!(!run.ok());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        run.stderr.contains("is `kbgate serve` running?"),
        "{}",
        run.stderr
    );
    drop(queued);

    let run = keys(&["list", "--json"], Some(&nobody), Some(ADMIN_TOKEN), dir).await;
    let error: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(error["error"]["code"], "admin_unreachable");

    // The API's field names become the flags the operator typed.
    let run = as_admin(&["create", "--name", "   "], &admin, dir).await;
    assert!(!run.ok());
    assert!(
        run.stderr.starts_with("error: --name: must be"),
        "{}",
        run.stderr
    );
    let run = as_admin(
        &["create", "--permission", "nothing:read", "--json"],
        &admin,
        dir,
    )
    .await;
    assert!(!run.ok() && run.stdout.is_empty());
    let error: Value = serde_json::from_str(run.stderr.trim())
        .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", run.stderr));
    assert_eq!(error["error"]["code"], "invalid_request");
    assert_eq!(error["error"]["status"], 422);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("--permission: unknown resource"),
        "{error}"
    );
    let run = as_admin(&["show", "key_nope", "--json"], &admin, dir).await;
    let error: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(error["error"]["code"], "not_found");
    gateway.shutdown().await;
}

#[tokio::test]
async fn delete_asks_first_or_needs_yes() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let admin = format!("http://{}", gateway.admin_addr);
    let here = tempfile::tempdir().unwrap();
    let (id, secret) = gateway.create_key(json!({"name": "Doomed"})).await;

    // stdin is not a terminal and there is no --yes: nothing is deleted.
    let run = as_admin(&["delete", &id], &admin, here.path()).await;
    assert!(!run.ok());
    assert!(run.stderr.contains("pass --yes"), "{}", run.stderr);
    assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);

    // On a terminal (script(1) gives it one) the answer decides.
    if let Some(answer_no) = on_terminal(&admin, &id, "n\n").await {
        assert!(answer_no.contains("[y/N]"), "{answer_no}");
        assert!(answer_no.contains("was not deleted"), "{answer_no}");
        assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);
        let answer_yes = on_terminal(&admin, &id, "y\n").await.unwrap();
        assert!(
            answer_yes.contains(&format!("deleted {id}")),
            "{answer_yes}"
        );
        assert_eq!(
            gateway.get("/v1/article", &secret).await,
            (401, "invalid_key".into())
        );
    } else {
        let run = as_admin(&["delete", &id, "--yes"], &admin, here.path()).await;
        assert!(run.ok() && run.stdout.contains(&id), "{}", run.stderr);
    }
    let run = as_admin(&["delete", &id, "--yes"], &admin, here.path()).await;
    assert!(!run.ok() && run.stderr.contains("404"), "{}", run.stderr);
    gateway.shutdown().await;
}

/// `kbgate keys delete ID` on a pseudo-terminal made by script(1), typing `input`; returns what
/// the terminal showed, or None when script(1) is not installed.
async fn on_terminal(admin: &str, id: &str, input: &str) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let script = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let Some(script) = script else {
        println!("SKIPPED: script(1) is not installed; the terminal prompt was not tried");
        return None;
    };
    let line = format!("{} keys delete {id}", env!("CARGO_BIN_EXE_kbgate"));
    let mut child = tokio::process::Command::new(script)
        .args(["-qec", &line, "/dev/null"])
        .env("KBGATE_ADMIN_URL", admin)
        .env("KBGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Type only once the question is on the screen.
    let mut shown = Vec::new();
    while !String::from_utf8_lossy(&shown).contains("[y/N]") {
        let mut chunk = [0u8; 256];
        let n = tokio::io::AsyncReadExt::read(&mut stdout, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&shown));
        shown.extend_from_slice(&chunk[..n]);
    }
    stdin.write_all(input.as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut rest)
        .await
        .unwrap();
    child.wait().await.unwrap();
    shown.extend_from_slice(&rest);
    Some(String::from_utf8_lossy(&shown).into_owned())
}

#[tokio::test]
async fn show_lists_secrets_and_a_grace_can_be_ended_early() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let admin = format!("http://{}", gateway.admin_addr);
    let here = tempfile::tempdir().unwrap();
    let dir = here.path();
    let (id, old_secret) = gateway.create_key(json!({"name": "Rotating"})).await;

    let run = as_admin(&["rotate", &id, "--grace", "1h", "--json"], &admin, dir).await;
    assert!(run.ok(), "{}", run.stderr);
    let rotated: Value = serde_json::from_str(&run.stdout).unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_eq!(gateway.get("/v1/article", &old_secret).await.0, 200);

    let run = as_admin(&["show", &id], &admin, dir).await;
    assert!(run.ok(), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("secrets:"))
        .unwrap_or_else(|| panic!("no secrets in:\n{}", run.stdout));
    assert!(
        lines[at].contains(&format!("{}… current", &new_secret[..8])),
        "{}",
        run.stdout
    );
    assert!(
        lines[at + 1].contains(&old_secret[..8]) && lines[at + 1].contains("works until"),
        "{}",
        run.stdout
    );

    let run = as_admin(&["rotate", &id, "--end-grace"], &admin, dir).await;
    assert!(run.ok(), "{}", run.stderr);
    assert!(
        run.stdout.contains(&old_secret[..8]) && run.stdout.contains("stopped"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("only this once"),
        "no new secret is made"
    );
    assert_eq!(
        gateway.get("/v1/article", &old_secret).await,
        (401, "key_expired".into())
    );
    assert_eq!(gateway.get("/v1/article", &new_secret).await.0, 200);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_closed_stdout_is_not_a_panic() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let admin = format!("http://{}", gateway.admin_addr);
    // Enough keys that the output is far larger than a pipe holds (64 KiB).
    for i in 0..300 {
        gateway
            .create_key(
                json!({ "name": format!("key number {i} with a long name to fill the table") }),
            )
            .await;
    }
    for args in [&["list", "--json"][..], &["list"][..]] {
        let mut child = bin::kbgate(&[&["keys"], args].concat())
            .env("KBGATE_ADMIN_URL", &admin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // As `| head -1`: one line, then the reader is gone.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).await.unwrap();
        assert!(!first.is_empty());
        drop(stdout);
        let output = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panic"), "{args:?}: {stderr}");
        assert!(output.status.success(), "{args:?}: {stderr}");
    }
    gateway.shutdown().await;
}
