//! Config cases through the real binary (and `Config::parse_in`): log levels and RUST_LOG,
//! relative paths resolved against the config file's folder, the admin listener that would
//! clash with the gateway's, and `localhost` in a listen address.

mod common;

use common::{RunningKb, TestGateway, bin};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

fn shipped() -> String {
    common::shipped_yaml()
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    common::edit_yaml(text, &[(from, to)])
}

/// Runs `kbgate <args>` with `cwd` as its current directory and the shipped config's env.
async fn kbgate(cwd: &Path, args: &[&str], set: &[(&str, &str)]) -> bin::Run {
    bin::run(bin::kbgate(args).current_dir(cwd).envs(set.iter().copied())).await
}

/// Runs `check-config` and `serve` on `path` from `cwd`; asserts exit 2 with
/// `error: config error: {expected}`.
async fn refused(cwd: &Path, path: &Path, expected: &str, set: &[(&str, &str)]) {
    for command in ["check-config", "serve"] {
        let stderr = kbgate(cwd, &[command, "--config", path.to_str().unwrap()], set)
            .await
            .failure(2);
        assert!(
            stderr.starts_with(&format!("error: config error: {expected}")),
            "{command}: expected {expected:?}, got {stderr:?}"
        );
    }
}

async fn check_config_ok(cwd: &Path, path: &Path) -> String {
    let path = path.to_str().unwrap();
    kbgate(cwd, &["check-config", "--config", path], &[])
        .await
        .success()
}

#[tokio::test]
async fn unknown_log_levels_are_refused_and_warning_means_warn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kbgate.yaml");
    for word in ["verbose", "loud", "info,kbgate=chatty"] {
        std::fs::write(
            &path,
            replace_once(&shipped(), "level: info", &format!("level: \"{word}\"")),
        )
        .unwrap();
        let bad = if word.contains("chatty") {
            "chatty"
        } else {
            word
        };
        let expected = format!(
            "log.level: unknown level \"{bad}\" (expected one of error, warn, info, debug, trace, off)"
        );
        refused(dir.path(), &path, &expected, &[]).await;
    }
    std::fs::write(
        &path,
        replace_once(&shipped(), "level: info", "level: warning"),
    )
    .unwrap();
    check_config_ok(dir.path(), &path).await;
    for (written, used) in [
        ("warning", "warn"),
        ("WARN", "warn"),
        ("info,kbgate::access=Warning", "info,kbgate::access=warn"),
    ] {
        let text = replace_once(&shipped(), "level: info", &format!("level: \"{written}\""));
        let config = kbgate::Config::parse_with_env(&text, &common::test_env).unwrap();
        assert_eq!(config.log_level, used);
    }
}

/// RUST_LOG still overrides `log.level`; a RUST_LOG that would silence everything is refused.
#[tokio::test]
async fn rust_log_overrides_and_is_checked_too() {
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let written = TestGateway::builder()
        .upstream(&upstream)
        .edit(&[("level: info", "level: error")])
        .write(dir.path());
    let config = written.path.clone();

    let config_path = config.to_str().unwrap();
    let stderr = kbgate(
        dir.path(),
        &["serve", "--config", config_path],
        &[("RUST_LOG", "verbose")],
    )
    .await
    .failure(2);
    assert!(
        stderr.starts_with("error: RUST_LOG: unknown level \"verbose\" (expected one of"),
        "{stderr}"
    );

    // log.level: error alone would hide the start-up line; RUST_LOG=warning,kbgate=info shows it.
    let mut process = written
        .spawn_as("kbgate.log", &[("RUST_LOG", "warning,kbgate=info")])
        .await;
    common::eventually("the start-up line", || async {
        process.log().contains("kbgate listening")
    })
    .await;
    process.terminate();
    assert_eq!(process.wait(Duration::from_secs(10)).await, Some(0));

    // An empty RUST_LOG is no filter at all: the configured level (error) applies.
    let mut quiet = written.spawn_as("quiet.log", &[("RUST_LOG", "")]).await;
    quiet.terminate();
    assert_eq!(quiet.wait(Duration::from_secs(10)).await, Some(0));
    assert!(!quiet.log().contains("kbgate listening"), "{}", quiet.log());
}

/// A config in another folder than the current directory: its relative paths are read from its
/// own folder, the store is created there, and errors show the resolved path.
#[tokio::test]
async fn relative_paths_are_resolved_against_the_config_folder() {
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let written = TestGateway::builder().upstream(&upstream).write(dir.path());
    let config = written.path.clone();
    let absolute_store = format!("{:?}", dir.path().join("kbgate.db").display().to_string());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        replace_once(&text, &absolute_store, "state/keys.db"),
    )
    .unwrap();

    // tls and upstream.ca: found next to the config, whatever the current directory.
    let tls_text = replace_once(
        &std::fs::read_to_string(&config).unwrap(),
        "# tls: { cert: /etc/kbgate/tls/cert.pem, key: /etc/kbgate/tls/key.pem }",
        "tls: { cert: tls/cert.pem, key: tls/key.pem }",
    );
    let tls_text = replace_once(
        &tls_text,
        "pool_idle_timeout: 30s",
        "pool_idle_timeout: 30s\n  ca: tls/ca.pem",
    );
    let tls_config = dir.path().join("tls.yaml");
    std::fs::write(&tls_config, tls_text).unwrap();
    let missing = dir.path().join("tls/cert.pem");
    refused(
        elsewhere.path(),
        &tls_config,
        &format!("tls.cert: {} is not a readable file", missing.display()),
        &[],
    )
    .await;
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    for file in ["cert.pem", "key.pem"] {
        std::fs::write(
            dir.path().join("tls").join(file),
            "not read by check-config",
        )
        .unwrap();
    }
    refused(
        elsewhere.path(),
        &tls_config,
        &format!(
            "upstream.ca: {} is not a readable file",
            dir.path().join("tls/ca.pem").display()
        ),
        &[],
    )
    .await;
    std::fs::write(dir.path().join("tls/ca.pem"), "not read by check-config").unwrap();
    check_config_ok(elsewhere.path(), &tls_config).await;

    // The process runs in the crate folder (the test's current directory), not in `dir`.
    let mut process = written.spawn().await;
    let (status, key) = process.post_key(serde_json::json!({})).await;
    assert_eq!(status, 201, "{key}");
    process.terminate();
    assert_eq!(process.wait(Duration::from_secs(10)).await, Some(0));
    assert!(dir.path().join("state/keys.db").is_file());
    assert!(!Path::new("state/keys.db").exists());
    assert!(!elsewhere.path().join("state").exists());

    // A path given relative to the current directory on the command line works too.
    kbgate(dir.path(), &["check-config", "--config", "tls.yaml"], &[])
        .await
        .success();
    // `Config::parse_in` takes the folder from its caller.
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed =
        kbgate::Config::parse_in(&text, &common::test_env, Some(Path::new("/srv/kb"))).unwrap();
    match parsed.store {
        kbgate::keys::StoreConfig::Embedded { path, .. } => {
            assert_eq!(path, Path::new("/srv/kb/state/keys.db"))
        }
        _ => panic!("not embedded"),
    }
}

#[tokio::test]
async fn the_admin_listener_must_not_be_the_gateway_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kbgate.yaml");
    for (listen, admin, clash) in [
        ("127.0.0.1:8080", "127.0.0.1:8080", true),
        ("0.0.0.0:8080", "127.0.0.1:8080", true),
        ("127.0.0.1:8080", "[::]:8080", true),
        ("localhost:8080", "127.0.0.1:8080", true),
        ("127.0.0.1:8080", "127.0.0.2:8080", false),
        ("0.0.0.0:8080", "127.0.0.1:9090", false),
    ] {
        let text = replace_once(
            &replace_once(
                &shipped(),
                "listen: 127.0.0.1:8080",
                &format!("listen: \"{listen}\""),
            ),
            "listen: 127.0.0.1:9090",
            &format!("listen: \"{admin}\""),
        );
        std::fs::write(&path, text).unwrap();
        if clash {
            let gateway: SocketAddr = listen.replace("localhost", "127.0.0.1").parse().unwrap();
            let expected = format!(
                "admin.listen: {} is the gateway's own address (listen: {gateway}); give the admin API another port",
                admin.parse::<SocketAddr>().unwrap()
            );
            refused(dir.path(), &path, &expected, &[]).await;
        } else {
            check_config_ok(dir.path(), &path).await;
        }
    }
}

#[tokio::test]
async fn localhost_is_a_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kbgate.yaml");
    let text = replace_once(
        &shipped(),
        "listen: 127.0.0.1:8080",
        "listen: localhost:8080",
    );
    let text = replace_once(&text, "listen: 127.0.0.1:9090", "listen: LocalHost:9090");
    std::fs::write(&path, text).unwrap();
    let stdout = check_config_ok(dir.path(), &path).await;
    assert!(
        stdout.starts_with("config OK: listen 127.0.0.1:8080, admin 127.0.0.1:9090,"),
        "{stdout}"
    );
    // Other names are not looked up.
    std::fs::write(
        &path,
        replace_once(
            &shipped(),
            "listen: 127.0.0.1:8080",
            "listen: kb.example:8080",
        ),
    )
    .unwrap();
    refused(
        dir.path(),
        &path,
        "listen: \"kb.example:8080\" is not an IP:port address",
        &[],
    )
    .await;

    // And a gateway started on `localhost:PORT` answers on 127.0.0.1.
    let upstream = RunningKb::start().await;
    let written = TestGateway::builder().upstream(&upstream).write(dir.path());
    let (config, gateway) = (&written.path, written.gateway);
    let text = std::fs::read_to_string(config).unwrap();
    let text = replace_once(
        &text,
        &format!("listen: {gateway}"),
        &format!("listen: localhost:{}", gateway.port()),
    );
    std::fs::write(config, text).unwrap();
    let mut process = written.spawn().await;
    let response = process
        .plain_get(format!("http://{gateway}/v1/article"))
        .await;
    assert_eq!(response.status(), 401, "the gateway answers on 127.0.0.1");
    process.terminate();
    assert_eq!(process.wait(Duration::from_secs(10)).await, Some(0));
}
