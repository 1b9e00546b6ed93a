//! Broken configs, run through the real binary: `check-config` and `serve` both refuse them
//! with exit code 2 and one stderr line naming the field and the reason.

mod common;

use common::bin;
use std::path::{Path, PathBuf};

/// The shipped config's text, the starting point of every broken one.
fn shipped() -> String {
    std::fs::read_to_string(shipped_path()).expect("read the shipped config")
}

fn shipped_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kbgate.yaml")
}

/// `text` with the one occurrence of `from` replaced; panics if `from` is not there exactly once
/// (so a change to the shipped config cannot silently turn a case into a valid config).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} should occur once in the shipped config"
    );
    text.replacen(from, to, 1)
}

/// Runs `kbgate <args>` in `dir` with the shipped config's env set (minus `remove`, plus
/// `set`).
async fn kbgate(dir: &Path, args: &[&str], remove: &[&str], set: &[(&str, &str)]) -> bin::Run {
    let mut command = bin::kbgate(args);
    command.current_dir(dir);
    for name in remove {
        command.env_remove(name);
    }
    command.envs(set.iter().copied());
    bin::run(&mut command).await
}

struct Case {
    name: &'static str,
    /// The config text; `None` for a file that does not exist.
    text: Option<String>,
    remove_env: &'static [&'static str],
    set_env: &'static [(&'static str, &'static str)],
    /// What stderr must contain after "error: config error: ".
    expected: String,
}

fn case(name: &'static str, text: String, expected: &str) -> Case {
    Case {
        name,
        text: Some(text),
        remove_env: &[],
        set_env: &[],
        expected: expected.to_owned(),
    }
}

fn cases() -> Vec<Case> {
    let base = shipped();
    vec![
        case(
            "unknown resource in a permission",
            replace_once(
                &base,
                r#"path: "/v1/article/{id}",              permission: "article:read""#,
                r#"path: "/v1/article/{id}",              permission: "articel:read""#,
            ),
            r#"routes[2].permission: unknown resource "articel""#,
        ),
        case(
            "unknown top-level field",
            replace_once(&base, "\nstore:\n", "\ncolour: blue\nstore:\n"),
            "colour: unknown field `colour`, expected one of `listen`,",
        ),
        case(
            "unknown nested field",
            replace_once(
                &base,
                "max_entries: 100000",
                "max_entries: 100000\n  max_size: 5",
            ),
            "hot_tier.max_size: unknown field `max_size`, expected one of `max_age`, `max_entries`, `negative_ttl`, `negative_max_entries`",
        ),
        Case {
            remove_env: &["KB_API_KEY"],
            ..case(
                "missing environment variable",
                base.clone(),
                "upstream.inject.headers.Authorization: environment variable KB_API_KEY is not set",
            )
        },
        Case {
            set_env: &[("KBGATE_ADMIN_TOKEN", "short")],
            ..case(
                "admin token too short",
                base.clone(),
                "admin.token: must be at least 16 characters",
            )
        },
        case(
            "bad listen address",
            replace_once(&base, "listen: 127.0.0.1:8080", "listen: 127.0.0.1:80800"),
            r#"listen: "127.0.0.1:80800" is not an IP:port address"#,
        ),
        case(
            "bad admin listen address",
            replace_once(&base, "listen: 127.0.0.1:9090", "listen: nowhere:9090"),
            r#"admin.listen: "nowhere:9090" is not an IP:port address"#,
        ),
        case(
            "non-http upstream URL",
            replace_once(
                &base,
                "url: http://127.0.0.1:8081",
                "url: ftp://127.0.0.1:8081",
            ),
            "upstream.url: must start with http:// or https://",
        ),
        case(
            "lowercase method",
            replace_once(
                &base,
                r#"methods: [POST],                path: "/v1/article","#,
                r#"methods: [post],                path: "/v1/article","#,
            ),
            r#"routes[1].methods: method "post" must be upper case (POST)"#,
        ),
        case(
            "duplicate route",
            format!(
                "{}  - {{ methods: [HEAD], path: \"/v1/article/{{article_id}}\", permission: \"article:read\" }}\n",
                base
            ),
            "routes[17].path: duplicate of routes[2] (HEAD /v1/article/{id})",
        ),
        case(
            "non-canonical route path",
            replace_once(
                &base,
                r#"path: "/v1/group/{id}",                permission: "group:read""#,
                r#"path: "/v1//group/{id}",               permission: "group:read""#,
            ),
            r#"routes[15].path: empty segment ("//") is not canonical"#,
        ),
    ]
}

/// Both commands refuse every broken config with exit code 2 and one line naming the field.
#[tokio::test]
async fn broken_configs_exit_2_naming_the_field_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (index, case) in cases().into_iter().enumerate() {
        let path = dir.path().join(format!("case-{index}.yaml"));
        std::fs::write(&path, case.text.as_deref().unwrap()).unwrap();
        let path = path.to_str().unwrap();
        for command in ["check-config", "serve"] {
            let output = kbgate(
                dir.path(),
                &[command, "--config", path],
                case.remove_env,
                case.set_env,
            )
            .await;
            if let Some(problem) = problem(&output, &case.expected) {
                failures.push(format!("{} ({command}): {problem}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// What is wrong with the output of a refused config, if anything.
fn problem(output: &bin::Run, expected: &str) -> Option<String> {
    let (stderr, stdout) = (&output.stderr, &output.stdout);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let want = format!("error: config error: {expected}");
    if output.code != Some(2) {
        Some(format!("exit {:?}, stderr {stderr:?}", output.code))
    } else if !stdout.is_empty() {
        Some(format!("printed to stdout: {stdout:?}"))
    } else if lines.len() != 1 || !lines[0].starts_with(&want) {
        Some(format!(
            "expected one line starting {want:?}, got {stderr:?}"
        ))
    } else {
        None
    }
}

#[tokio::test]
async fn a_yaml_syntax_error_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let broken = replace_once(&shipped(), "max_entries: 100000", "max_entries: [100000");
    let path = dir.path().join("syntax.yaml");
    std::fs::write(&path, &broken).unwrap();
    for command in ["check-config", "serve"] {
        let path = path.to_str().unwrap();
        let stderr = kbgate(dir.path(), &[command, "--config", path], &[], &[])
            .await
            .failure(2);
        assert!(
            stderr.starts_with("error: config error: "),
            "{command}: {stderr}"
        );
        // serde_yaml names the line of the unclosed sequence (and where it gave up).
        let broken_line = broken.lines().position(|l| l.contains("[100000")).unwrap() + 1;
        assert!(
            stderr.contains(&format!(
                "while parsing a flow sequence at line {broken_line} column"
            )),
            "{command}: the break is on line {broken_line}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-config.yaml");
    let path = path.to_str().unwrap();
    for command in ["check-config", "serve"] {
        let stderr = kbgate(dir.path(), &[command, "--config", path], &[], &[])
            .await
            .failure(2);
        assert!(
            stderr.starts_with(&format!("error: config error: {path}: ")),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("No such file or directory"),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test]
async fn check_config_prints_the_shipped_route_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = shipped_path();
    let output = kbgate(
        dir.path(),
        &["check-config", "--config", path.to_str().unwrap()],
        &[],
        &[],
    )
    .await;
    let stderr = output.stderr.clone();
    let stdout = output.success();
    assert!(stderr.is_empty(), "stderr: {stderr}");
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        stdout.lines().next(),
        Some(
            "config OK: listen 127.0.0.1:8080, admin 127.0.0.1:9090, upstream http://127.0.0.1:8081/"
        ),
        "{stdout}"
    );
    assert!(
        lines.contains(&vec!["METHODS", "PATH", "PERMISSION", "MAX_BODY", "QUERY"]),
        "{stdout}"
    );
    for row in [
        [
            "GET,HEAD",
            "/v1/article/{id}",
            "article:read",
            "100MiB",
            "-",
        ],
        [
            "PUT,PATCH,DELETE",
            "/v1/article/{id}",
            "article:write",
            "100MiB",
            "-",
        ],
        ["POST", "/v1/article", "article:write", "100MiB", "-"],
        ["GET,HEAD", "/v1/search", "search:read", "100MiB", "-"],
    ] {
        assert!(
            lines.contains(&row.to_vec()),
            "no line {row:?} in\n{stdout}"
        );
    }
    // One line per route: the header, then all 17 routes of the shipped table.
    let routes = lines
        .iter()
        .filter(|l| l.len() == 5 && l[1].starts_with('/'))
        .count();
    assert_eq!(routes, 17, "{stdout}");
    // check-config only reads: no store was created.
    assert!(!dir.path().join("data").exists());
}
