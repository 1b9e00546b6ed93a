//! `kbgate demo` prints curl lines that work exactly as printed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn the_demo_curl_lines_work_as_printed() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have curl for the demo test"
        );
        eprintln!("SKIPPED: curl is not installed; the demo's curl lines were not tried");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_kbgate"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).unwrap();
        assert!(read > 0, "demo exited before printing its tour: {lines:?}");
        let done = line.starts_with("Press Ctrl-C");
        lines.push(line.trim_end().to_string());
        if done {
            break;
        }
    }

    let mut tried = 0;
    for pair in lines.windows(2) {
        let (comment, command) = (&pair[0], &pair[1]);
        if !command.starts_with("curl ") {
            continue;
        }
        let expected = comment.rsplit("-> ").next().unwrap().trim();
        let output = Command::new("sh").arg("-c").arg(command).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.trim_end().ends_with(&format!("-> HTTP {expected}")),
            "{comment}\n{command}\nprinted: {stdout}"
        );
        tried += 1;
    }
    assert_eq!(tried, 9, "every curl line was tried");

    let cli = lines.iter().find(|l| l.contains("keys list")).unwrap();
    let cli = cli
        .trim()
        .replace("cargo run --release --", env!("CARGO_BIN_EXE_kbgate"));
    let output = Command::new("sh").arg("-c").arg(&cli).output().unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{cli}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        table.contains("Chatbot Integration") && table.contains("Content Sync"),
        "{table}"
    );

    // The console's address and sign-in token, as printed: signing in leads to the key list.
    let console = lines.iter().position(|l| l.contains("/console/")).unwrap();
    let url = lines[console].rsplit(' ').next().unwrap().to_string();
    let token = lines[console + 1].rsplit(' ').next().unwrap();
    let sign_in = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .args([
            "--data-urlencode",
            &format!("token={token}"),
            &format!("{url}login"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sign_in.stdout),
        format!("303 {url}")
    );

    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the demo stops cleanly on SIGTERM: {status}"
    );
}
