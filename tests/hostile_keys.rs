//! Attacks on key handling.
//!
//! Lookup by hash only: a presented secret is hashed (blake3) and the hash is the only thing
//! the hot tier and the store are asked about (`KeyStore::find_by_hash(&KeyHash)`; no store
//! method takes a secret). No stored secret exists to compare against, so no byte comparison
//! of a secret with a stored one can leak timing. (`extract_key` does compare the keys one
//! request presents in several places, to refuse two different ones: both are the client's
//! own.) The tests below watch every store call to hold the gateway to that, check that every
//! malformed or unknown key gets the very same 401, and run the real binary at trace level to
//! find no secret in any log line.

mod common;

use common::store::Call;
use common::{ADMIN_TOKEN, RunningKb, TestGateway, UPSTREAM_CREDENTIAL};
use kbgate::keys::{KeyHash, secret};
use reqwest::Method;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the store was asked, reduced to what can be compared: hashes looked up, and records
/// written (as JSON, to search for secrets in).
#[derive(Default)]
struct Watched {
    lookups: Vec<KeyHash>,
    written: Vec<String>,
}

#[tokio::test]
async fn the_store_only_ever_sees_hashes_of_secrets() {
    let upstream = RunningKb::start().await;
    let watched = Arc::new(Mutex::new(Watched::default()));
    let log = watched.clone();
    let gateway = TestGateway::builder()
        .upstream(&upstream)
        .store(Box::new(move |call| {
            let mut log = log.lock().unwrap();
            match call {
                Call::FindByHash(hash) => log.lookups.push(*hash),
                Call::Create(record) | Call::Update(record) => {
                    log.written.push(serde_json::to_string(record).unwrap())
                }
                _ => {}
            }
            Ok(())
        }))
        .start()
        .await;
    let (id, first) = gateway.create_key(json!({"name": "watched"})).await;
    let (_, rotated) = gateway
        .admin("POST", &format!("/v1/keys/{id}/rotate"), Some(json!({})))
        .await;
    let second = rotated["secret"].as_str().unwrap().to_string();
    let unknown = secret::generate().secret;

    for key in [&first, &second, &unknown] {
        gateway.get("/v1/article/a1", key).await;
    }
    // Malformed keys (a typo, a flood of random strings) never reach the store.
    let mut typo = second.clone();
    typo.replace_range(5..6, if &second[5..6] == "a" { "b" } else { "a" });
    for key in [typo.as_str(), "kb_random", "nonsense"] {
        assert_eq!(gateway.get("/v1/article/a1", key).await.0, 401);
    }

    // Taken out of the lock: the shutdown flush below calls the hook.
    let Watched { lookups, written } = std::mem::take(&mut *watched.lock().unwrap());
    let hash = |s: &str| KeyHash::of(s);
    assert_eq!(
        lookups,
        [hash(&first), hash(&second), hash(&unknown)],
        "one lookup per well-formed key, by its hash; none for malformed ones"
    );
    assert!(written.len() >= 2, "the create and the rotate");
    for record in &written {
        for secret in [&first, &second] {
            assert!(
                !record.contains(secret.as_str()),
                "a secret was stored: {record}"
            );
            assert!(
                !record.contains(&secret[3..]),
                "a secret was stored: {record}"
            );
        }
    }
    assert!(written.last().unwrap().contains(&hash(&second).to_hex()));
    gateway.shutdown().await;
}

/// Sends `request` raw and returns the status line, the headers that describe the refusal
/// (everything but the per-request id and date), and the body.
async fn refusal(addr: SocketAddr, request: &[u8]) -> (String, Vec<String>, String) {
    let mut conn = common::raw::Conn::open(addr).await;
    conn.send(request).await.unwrap();
    let response = conn.response().await;
    let headers = response
        .headers
        .lines()
        .filter(|line| {
            let name = line.split(':').next().unwrap().to_ascii_lowercase();
            name != "x-request-id" && name != "date"
        })
        .map(str::to_ascii_lowercase)
        .collect();
    let body = response.text();
    (response.start, headers, body)
}

#[tokio::test]
async fn malformed_and_unknown_keys_get_the_very_same_401() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (deleted_id, deleted) = gateway.create_key(json!({})).await;
    assert_eq!(gateway.get("/v1/article/a1", &deleted).await.0, 200);
    let (status, _) = gateway
        .admin("DELETE", &format!("/v1/keys/{deleted_id}"), None)
        .await;
    assert_eq!(status, 204);
    let (_, real) = gateway.create_key(json!({})).await;

    let unknown = secret::generate().secret;
    let mut wrong_checksum = real.clone();
    let last = wrong_checksum.pop().unwrap();
    wrong_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let bearer = |key: &str| format!("Authorization: Bearer {key}\r\n").into_bytes();
    let header_forms: Vec<(&str, Vec<u8>)> = vec![
        ("unknown, well-formed", bearer(&unknown)),
        ("deleted", bearer(&deleted)),
        ("wrong checksum", bearer(&wrong_checksum)),
        ("one character short", bearer(&real[..real.len() - 1])),
        ("one character long", bearer(&format!("{real}A"))),
        ("other prefix", bearer(&real.replacen("kb_", "KB_", 1))),
        ("prefix only", bearer("kb_")),
        ("not a key at all", bearer("nonsense")),
        ("non-ASCII", bearer("kb_\u{e9}\u{e9}\u{e9}")),
        (
            "obs-text bytes",
            [b"Authorization: Bearer kb_\xe9\xff".as_slice(), b"\r\n"].concat(),
        ),
        (
            "in X-Api-Key",
            format!("X-Api-Key: {wrong_checksum}\r\n").into_bytes(),
        ),
        (
            "X-Api-Key obs-text",
            [b"X-Api-Key: \xff\xfe".as_slice(), b"\r\n"].concat(),
        ),
    ];
    let mut forms: Vec<(&str, Vec<u8>)> = header_forms
        .into_iter()
        .map(|(what, header)| {
            let request = [
                b"GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\n".as_slice(),
                &header,
                b"\r\n",
            ]
            .concat();
            (what, request)
        })
        .collect();
    for (what, query) in [
        ("in the query", format!("key={unknown}")),
        ("escaped garbage in the query", "key=%ff%00kb_".to_string()),
    ] {
        let request = format!("GET /v1/article/a1?{query} HTTP/1.1\r\nHost: kb.example\r\n\r\n");
        forms.push((what, request.into_bytes()));
    }

    let reference = refusal(gateway.addr, &forms[0].1).await;
    assert_eq!(reference.0, "HTTP/1.1 401 Unauthorized");
    assert_eq!(common::raw::error_code(&reference.2), "invalid_key");
    assert!(
        reference
            .1
            .contains(&"www-authenticate: bearer".to_string())
    );
    for (what, request) in &forms {
        assert_eq!(
            refusal(gateway.addr, request).await,
            reference,
            "{what}: told apart from an unknown key"
        );
    }
    upstream.assert_count(1, "only the request before the delete");
    gateway.shutdown().await;
}

/// tests/logs.rs watches the JSON log of ordinary keyed requests; this watches the text log
/// (the default) of hostile ones: keys over HTTP/2, unknown and malformed keys, a malformed
/// request carrying keys (a parser error message might echo it), a key offered as the admin
/// token, and the admin token offered as a key.
#[tokio::test]
async fn secrets_never_appear_in_any_log_line_at_trace_level() {
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut process = TestGateway::builder()
        .upstream(&upstream)
        .edit(&[(
            "# query: { key: \"${KB_API_KEY}\" }",
            "query: { key: \"${KB_API_KEY}\" } #",
        )])
        .env("RUST_LOG", "trace")
        .spawn(dir.path())
        .await;
    let (gateway, admin) = (process.gateway, process.admin);

    let (status, created) = process.post_key(json!({"name": "logged"})).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_string();
    let first = created["secret"].as_str().unwrap().to_string();
    let rotate = format!("/v1/keys/{id}/rotate");
    let (_, rotated) = process.admin(Method::POST, &rotate, Some(json!({}))).await;
    let second = rotated["secret"].as_str().unwrap().to_string();
    let unknown = secret::generate().secret;
    // The rotated secret with its last character changed: a wrong checksum.
    let (body, last) = second.split_at(second.len() - 1);
    let malformed = format!("{body}{}", if last == "X" { "Y" } else { "X" });

    let url = |path: &str| format!("http://{gateway}{path}");
    let h2 = common::h2c_client();
    let mut statuses = Vec::new();
    for key in [
        &first,
        &second,
        &unknown,
        &malformed,
        &ADMIN_TOKEN.to_string(),
    ] {
        let response = h2.get(url("/v1/article/a1")).bearer_auth(key).send().await;
        statuses.push(response.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 401, 401, 401]);
    // A malformed request carrying keys in its target and headers.
    let mut raw = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let request = format!(
        "GET /v1/article/a1?key={first} HTTP/1.1\r\nContent-Length: x\r\nAuthorization: Bearer {second}\r\n\r\n"
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let _ = raw.read_to_end(&mut Vec::new()).await;
    // A key offered to the admin API instead of its token.
    let wrong = process
        .client
        .get(format!("http://{admin}/v1/keys"))
        .bearer_auth(&first);
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    // The credential went upstream in the query too (percent-encoded there).
    let in_query = UPSTREAM_CREDENTIAL.replace('-', "%2D");
    let seen = upstream.requests();
    assert!(
        seen.iter()
            .all(|s| s.path_and_query.ends_with(&format!("key={in_query}"))),
        "{seen:?}"
    );

    process.terminate();
    assert_eq!(process.wait(Duration::from_secs(10)).await, Some(0));
    let log = process.log();
    assert!(log.contains("TRACE"), "trace logging was not on");
    assert!(log.contains("kbgate::access"), "no access lines");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log that is not a terminal"
    );
    for (what, secret) in [
        ("a key secret", first.as_str()),
        ("a rotated secret", second.as_str()),
        ("an unknown key", unknown.as_str()),
        ("a malformed key", malformed.as_str()),
        ("the admin token", ADMIN_TOKEN),
        ("the upstream credential", UPSTREAM_CREDENTIAL),
        ("the upstream credential, query-encoded", in_query.as_str()),
    ] {
        let random_part = secret.strip_prefix("kb_").unwrap_or(secret);
        for (n, line) in log.lines().enumerate() {
            assert!(
                !line.contains(random_part),
                "{what} is in log line {}: {line}",
                n + 1
            );
        }
    }
}
