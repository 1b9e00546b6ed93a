//! `kbgate demo`: the gateway on the embedded store, in front of a built-in sample KB, with a
//! read key and a read-write key, and curl lines that work exactly as printed.

mod sample_kb;

use crate::app::{self, open_store, start_with_store};
use crate::authz::Scope;
use crate::config::Config;
use crate::keys::StoreConfig;
use crate::keys::{KeyRecord, secret};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The shipped config: the demo runs the very route table a user would deploy.
const SHIPPED_CONFIG: &str = include_str!("../../config/kbgate.yaml");

pub async fn run(listen: SocketAddr, admin_listen: SocketAddr) -> Result<(), String> {
    let data_dir = std::env::temp_dir().join(format!("kbgate-demo-{}", std::process::id()));
    let result = run_in(listen, admin_listen, data_dir.clone()).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn run_in(
    listen: SocketAddr,
    admin_listen: SocketAddr,
    data_dir: PathBuf,
) -> Result<(), String> {
    let kb_credential = random_token("kbcred");
    let admin_token = random_token("admin");
    let kb_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("sample KB: {e}"))?;
    let kb_addr = kb_listener.local_addr().map_err(|e| e.to_string())?;
    let kb = sample_kb::spawn(kb_listener, kb_credential.clone());

    let env = |name: &str| match name {
        "KBGATE_ADMIN_TOKEN" => Some(admin_token.clone()),
        "KB_API_KEY" => Some(kb_credential.clone()),
        _ => None,
    };
    let mut config = Config::parse_with_env(SHIPPED_CONFIG, &env).map_err(|e| e.to_string())?;
    config.listen = listen;
    config.admin.listen = admin_listen;
    config.upstream.origin = format!("http://{kb_addr}/")
        .parse()
        .map_err(|e| format!("{e}"))?;
    config.store = StoreConfig::embedded(data_dir.join("kbgate.db"));

    let store = open_store(&config.store).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now();
    let read = secret::generate();
    let write = secret::generate();
    for (name, scope, new) in [
        ("Chatbot Integration", Scope::Read, &read),
        ("Content Sync", Scope::ReadWrite, &write),
    ] {
        let record = KeyRecord::new(name.into(), scope, vec![], None, new, now);
        store.create(&record).await.map_err(|e| e.to_string())?;
    }
    let signal = app::shutdown_signal();
    let running = start_with_store(config, store)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{}",
        tour(
            running.addr,
            running.admin_addr,
            &admin_token,
            &read.secret,
            &write.secret
        )
    );

    signal.await;
    running.shutdown().await;
    kb.abort();
    Ok(())
}

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// The text printed for the user. Each `curl` line prints the body and then `-> HTTP <status>`.
fn tour(
    gateway: SocketAddr,
    admin: SocketAddr,
    admin_token: &str,
    read: &str,
    write: &str,
) -> String {
    let g = format!("http://{gateway}");
    let w = r#"-w ' -> HTTP %{http_code}\n'"#;
    format!(
        r#"kbgate demo is running.
  gateway:   {g}   (in front of a built-in sample knowledge base)
  admin API: http://{admin}   (admin token: {admin_token})

Two keys were created:
  Chatbot Integration (Read-only):       {read}
  Content Sync        (Read and Write):  {write}

Try these (each prints the response body, then its status):

# search articles with the read-only key -> 200
curl -sS {w} '{g}/v1/search?query=password' -H 'Authorization: Bearer {read}'
# list articles, key in X-Api-Key -> 200
curl -sS {w} '{g}/v1/article' -H 'X-Api-Key: {read}'
# read one article, key in the query string -> 200
curl -sS {w} '{g}/v1/article/a1?key={read}'
# the read-only key cannot create an article -> 403
curl -sS {w} -X POST '{g}/v1/article' -H 'Authorization: Bearer {read}' -H 'Content-Type: application/json' -d '{{"title":"Hello from kbgate"}}'
# the read-write key can -> 201
curl -sS {w} -X POST '{g}/v1/article' -H 'Authorization: Bearer {write}' -H 'Content-Type: application/json' -d '{{"title":"Hello from kbgate"}}'
# no key -> 401
curl -sS {w} '{g}/v1/article'
# a path no route maps -> 403
curl -sS {w} '{g}/v1/secret-admin-area' -H 'Authorization: Bearer {write}'
# list keys with their usage through the admin API (a page and its next_cursor) -> 200
curl -sS {w} 'http://{admin}/v1/keys?limit=100' -H 'Authorization: Bearer {admin_token}'
# usage of the last 7 days: totals (forwarded, refused by code, the KB's answers by class) and the top keys -> 200
curl -sS {w} 'http://{admin}/v1/usage' -H 'Authorization: Bearer {admin_token}'

Manage keys in a browser (Settings > API): open http://{admin}/console/
  and sign in with the admin token: {admin_token}

Manage keys with the CLI in another shell:
  KBGATE_ADMIN_URL=http://{admin} KBGATE_ADMIN_TOKEN={admin_token} cargo run --release -- keys list

Press Ctrl-C to stop."#
    )
}
