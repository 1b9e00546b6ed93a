//! Presents each of the first `--limit` keys of a key file to a running gateway once, so its hot
//! tier holds that many distinct keys (the load benchmark's arm E and memory figure). Exits
//! non-zero if any key is refused.
//!
//! ```sh
//! cargo run --release --example warm_keys -- --url http://127.0.0.1:8080/v1/article/a1 --keys keys.txt --limit 100000
//! ```

use clap::Parser;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// A URL the keys may read.
    #[arg(long)]
    url: String,
    /// Secrets, one per line (as written by the seed_keys example).
    #[arg(long)]
    keys: PathBuf,
    /// How many keys (from the top of the file) to present.
    #[arg(long)]
    limit: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.keys)?;
    let keys: Vec<&str> = text.lines().take(args.limit).collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let started = Instant::now();
    let refused = futures_util::stream::iter(&keys)
        .map(|key| {
            let request = client.get(&args.url).bearer_auth(key).send();
            async move {
                match request.await {
                    Ok(response) => response.status() != reqwest::StatusCode::OK,
                    Err(_) => true,
                }
            }
        })
        .buffer_unordered(args.concurrency)
        .filter(|refused| std::future::ready(*refused))
        .count()
        .await;
    eprintln!(
        "presented {} keys in {:.1}s, {refused} refused",
        keys.len(),
        started.elapsed().as_secs_f64()
    );
    if refused > 0 {
        return Err(format!("{refused} keys were refused").into());
    }
    Ok(())
}
