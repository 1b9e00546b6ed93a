//! The `kbgate` command: parse arguments, start logging, dispatch.

use clap::{Parser, Subcommand};
use kbgate::config::{Config, LogFormat};
use kbgate::log_format::LineFormat;
use kbgate::log_sink::{FlushOnDrop, LogSink};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kbgate",
    version,
    about = "API keys for any knowledge-base HTTP API: an authenticating reverse proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and its admin listener
    Serve {
        #[arg(long, default_value = "config/kbgate.yaml")]
        config: PathBuf,
    },
    /// A one-command tour: the gateway in front of a sample KB, with two keys and curl lines to try
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
    },
    /// Validate a config and print the compiled route table
    CheckConfig {
        #[arg(long, default_value = "config/kbgate.yaml")]
        config: PathBuf,
    },
    /// Manage API keys through the admin API
    Keys(Box<kbgate::cli::KeysArgs>),
    /// Manage the admin API's tokens and their roles
    AdminTokens(kbgate::cli::AdminTokensArgs),
    /// Show the audit trail of key and admin token changes, or verify its hash chain
    Audit(kbgate::cli::AuditArgs),
    /// Manage webhooks (signed event deliveries) and their deliveries
    Webhooks(kbgate::cli::WebhooksArgs),
    /// Copy every key, hash and usage figure from one config's store to another's
    Migrate {
        /// The config whose store is read
        #[arg(long)]
        from: PathBuf,
        /// The config whose store is written
        #[arg(long)]
        to: PathBuf,
    },
}

/// The exit of a client command: 0 when it succeeded, 1 when it failed (the error on stderr,
/// as JSON with `--json`).
fn cli_exit(result: Result<bool, kbgate::cli::CliError>, json: bool) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if json => {
            eprintln!("{}", e.to_json());
            ExitCode::from(1)
        }
        Err(e) => fail(&e.to_string(), 1),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match runtime() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => fail(&format!("cannot start the async runtime: {e}"), 1),
    }
}

/// A worker thread per CPU this process may use (or `TOKIO_WORKER_THREADS`). With one, a
/// current-thread runtime: the same single worker without the work-stealing machinery, which
/// costs about a tenth of the CPU time per proxied request (benches/load, one CPU, closed loop).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build()
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Demo {
            listen,
            admin_listen,
        } => {
            let filter = match log_filter("info") {
                Ok(filter) => filter,
                Err(e) => return fail(&e, 2),
            };
            let logs = init_tracing(LogFormat::Text, &filter);
            let result = kbgate::demo::run(listen, admin_listen).await;
            drop(logs);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("demo: {e}"), 1),
            }
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(config) => {
                println!(
                    "config OK: listen {}, admin {}, upstream {}",
                    config.listen, config.admin.listen, config.upstream.origin
                );
                println!("{}", config.routes.describe(config.limits.max_body));
                for warning in config.routes.shadowed() {
                    eprintln!("warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("config error: {e}"), 2),
        },
        Command::Migrate { from, to } => migrate(from, to).await,
        Command::Keys(args) => {
            let json = args.json;
            cli_exit(kbgate::cli::run(*args).await.map(|()| true), json)
        }
        Command::AdminTokens(args) => {
            let json = args.target.json;
            cli_exit(kbgate::cli::run_tokens(args).await.map(|()| true), json)
        }
        Command::Audit(args) => {
            let json = args.target.json;
            cli_exit(kbgate::cli::run_audit(args).await, json)
        }
        Command::Webhooks(args) => {
            let json = args.target.json;
            cli_exit(kbgate::cli::run_webhooks(args).await.map(|()| true), json)
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => return fail(&format!("config error: {e}"), 2),
    };
    let filter = match log_filter(&config.log_level) {
        Ok(filter) => filter,
        Err(e) => return fail(&e, 2),
    };
    let logs = init_tracing(config.log_format, &filter);
    for warning in config.routes.shadowed() {
        tracing::warn!("{warning}");
    }
    let signal = kbgate::app::shutdown_signal();
    let running = match kbgate::start(config).await {
        Ok(running) => running,
        Err(e) => {
            drop(logs); // what was logged before the error comes before it
            return fail(&e.to_string(), 1);
        }
    };
    signal.await;
    tracing::info!("shutting down: draining connections");
    running.shutdown().await;
    drop(logs);
    ExitCode::SUCCESS
}

async fn migrate(from: PathBuf, to: PathBuf) -> ExitCode {
    let (source, destination) = match (Config::load(&from), Config::load(&to)) {
        (Ok(source), Ok(destination)) => (source, destination),
        (Err(e), _) => return fail(&format!("config error ({}): {e}", from.display()), 2),
        (_, Err(e)) => return fail(&format!("config error ({}): {e}", to.display()), 2),
    };
    match kbgate::migrate::migrate(&source.store, &destination.store).await {
        Ok(count) => {
            println!(
                "copied {count} keys from {} to {}",
                from.display(),
                to.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("migrate: {e}"), 1),
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// The log filter: RUST_LOG when it is set and not empty, else `configured`. RUST_LOG is
/// checked as `log.level` is (an unknown level word would silence every line), so a bad one
/// is an error rather than a gateway that logs nothing.
fn log_filter(configured: &str) -> Result<String, String> {
    match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.trim().is_empty() => {
            kbgate::log_filter::normalize(&filter).map_err(|e| format!("RUST_LOG: {e}"))
        }
        _ => Ok(configured.to_owned()),
    }
}

/// Logs go to stderr (stdout is for command output) in batches, off the request path (see
/// `log_sink`); `filter` is what [`log_filter`] chose. Colours only on a terminal. Keep the
/// returned guard alive: dropping it writes what is pending.
fn init_tracing(format: LogFormat, filter: &str) -> FlushOnDrop {
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let (sink, guard) = LogSink::stderr();
    let ansi = std::io::stderr().is_terminal();
    if !ansi {
        // Plain lines: the access line skips tracing's per-field dispatch (see `log_direct`).
        kbgate::log_direct::install(sink.clone(), format == LogFormat::Json);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(sink);
    match format {
        LogFormat::Text => builder.event_format(LineFormat::text()).init(),
        LogFormat::Json => builder.json().event_format(LineFormat::json()).init(),
    }
    guard
}

/// See the `mimalloc` feature in Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: kbgate::allocator::Mimalloc = kbgate::allocator::Mimalloc;

/// mimalloc's options, set before `main`: the runtime's first allocations reserve mimalloc's
/// first arena, which takes the options as they are then. An ELF constructor (`.init_array`)
/// runs before any of them.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = {
    extern "C" fn configure() {
        kbgate::allocator::configure();
    }
    configure
};
