//! Wiring: builds the store, keyring, usage recorder, upstream client, gateway and admin API from
//! a [`Config`], binds both listeners and runs them until shut down.

use crate::admin::Admin;
use crate::config::{Config, StoreConfig};
use crate::gateway::Gateway;
use crate::keys::embedded::EmbeddedStore;
use crate::keys::redis::RedisStore;
use crate::keys::{KeyRecord, KeyStore, Keyring, StoreError, StoreEvent};
use crate::metrics::keys::KeyMetrics;
use crate::metrics::requests::RequestMetrics;
use crate::metrics::{self, StoreOp};
use crate::rejection::Rejection;
use crate::server::{self, tls_acceptor};
use crate::upstream::Upstream;
use crate::usage::UsageRecorder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often aged hot-tier entries are swept out.
const HOT_TIER_SWEEP: Duration = Duration::from_secs(10);
/// How often `kbgate_key_info` may be re-read from a shared store after the change feed told of
/// a change made through another instance (a full listing: not on every event).
const KEY_INFO_REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Tls(String),
    #[error("upstream: {0}")]
    Upstream(String),
}

/// A started gateway: its bound addresses and the means to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub keyring: Arc<Keyring>,
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<()>>,
    usage: Arc<UsageRecorder>,
}

/// Opens the configured store.
pub fn open_store(config: &StoreConfig) -> Result<Arc<dyn KeyStore>, StoreError> {
    match config {
        StoreConfig::Embedded { path, cache_size } => Ok(Arc::new(
            EmbeddedStore::open_with_cache_size(path, *cache_size)?,
        )),
        StoreConfig::Redis(redis) => Ok(Arc::new(RedisStore::open(redis)?)),
    }
}

/// Starts the gateway and admin listeners (port 0 picks a free port).
pub async fn start(config: Config) -> Result<Running, StartError> {
    let store = open_store(&config.store)?;
    start_with_store(config, store).await
}

pub async fn start_with_store(
    config: Config,
    store: Arc<dyn KeyStore>,
) -> Result<Running, StartError> {
    let tls = config
        .tls
        .as_ref()
        .map(tls_acceptor)
        .transpose()
        .map_err(StartError::Tls)?;
    let listener = bind("gateway", config.listen).await?;
    let admin_listener = bind("admin", config.admin.listen).await?;
    let addr = local_addr("gateway", &listener)?;
    let admin_addr = local_addr("admin", &admin_listener)?;

    let prometheus = metrics::install(Rejection::auth_codes());
    let shutdown = CancellationToken::new();
    let changes = store.watch(shutdown.clone());
    let keyring = Arc::new(Keyring::new(
        store.clone(),
        config.hot_tier,
        changes.is_none(),
    ));
    // Set by the change feed, read by the `kbgate_key_info` refresh. Without a feed (the
    // embedded store) every change goes through this process's admin API: no refresh needed.
    let changed_elsewhere = changes.as_ref().map(|_| Arc::new(AtomicBool::new(false)));
    if let (Some(changes), Some(flag)) = (changes, &changed_elsewhere) {
        tokio::spawn(follow_changes(keyring.clone(), changes, flag.clone()));
    }
    let usage = Arc::new(UsageRecorder::default());
    let key_metrics = config
        .metrics
        .per_key
        .then(|| Arc::new(KeyMetrics::new(config.metrics.per_key_limit)));
    if let Some(key_metrics) = &key_metrics {
        refresh_key_metrics(key_metrics, store.as_ref()).await;
    }
    let gateway = Arc::new(gateway(
        &config,
        keyring.clone(),
        usage.clone(),
        key_metrics.clone(),
    )?);
    let admin = Arc::new(
        Admin::new(
            keyring.clone(),
            usage.clone(),
            &config.admin.token,
            config.resources,
        )
        .with_metrics(prometheus.clone(), key_metrics.clone()),
    );

    let servers = vec![
        tokio::spawn(server::serve(
            listener,
            gateway,
            tls,
            config.limits,
            shutdown.clone(),
        )),
        tokio::spawn(server::serve(
            admin_listener,
            admin,
            None,
            config.limits,
            shutdown.clone(),
        )),
    ];
    tokio::spawn(
        usage
            .clone()
            .run_flusher(store, config.usage_flush_interval, shutdown.clone()),
    );
    tokio::spawn(sweep_hot_tier(keyring.clone(), shutdown.clone()));
    tokio::spawn(metrics::run_upkeep(prometheus, shutdown.clone()));
    if let (Some(key_metrics), Some(changed_elsewhere)) = (key_metrics, changed_elsewhere) {
        tokio::spawn(keep_key_metrics(
            key_metrics,
            keyring.clone(),
            changed_elsewhere,
            shutdown.clone(),
        ));
    }
    tracing::info!(%addr, %admin_addr, "kbgate listening");
    Ok(Running {
        addr,
        admin_addr,
        keyring,
        shutdown,
        servers,
        usage,
    })
}

/// The gateway as a value, built from the config's sections: [`start_with_store`] serves it,
/// tests and benches call it in process.
pub fn gateway(
    config: &Config,
    keyring: Arc<Keyring>,
    usage: Arc<UsageRecorder>,
    key_metrics: Option<Arc<KeyMetrics>>,
) -> Result<Gateway, StartError> {
    let request_metrics = RequestMetrics::new(
        config.routes.routes().iter().map(|r| r.template.as_str()),
        key_metrics,
    );
    Ok(Gateway {
        keyring,
        routes: config.routes.clone(),
        upstream: Upstream::new(config.upstream.clone()).map_err(StartError::Upstream)?,
        usage,
        metrics: request_metrics,
        limits: config.limits,
        key_sources: config.key_sources.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        cors: config.cors.clone(),
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the shutdown grace), then flushes
    /// the usage counted so far.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for server in self.servers {
            let _ = server.await;
        }
        if let Err(error) = self.usage.flush(self.keyring.store().as_ref()).await {
            tracing::error!(%error, "final usage flush failed; recent usage is lost");
        }
        tracing::info!("kbgate stopped");
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(what: &'static str, listener: &TcpListener) -> Result<SocketAddr, StartError> {
    let fallback = SocketAddr::from(([0, 0, 0, 0], 0));
    listener.local_addr().map_err(|source| StartError::Bind {
        what,
        addr: fallback,
        source,
    })
}

/// Applies a shared store's change feed to the hot tier, in order.
async fn follow_changes(
    keyring: Arc<Keyring>,
    mut changes: tokio::sync::mpsc::Receiver<StoreEvent>,
    changed_elsewhere: Arc<AtomicBool>,
) {
    while let Some(event) = changes.recv().await {
        // Any event, including a feed lost and found again (changes may have been missed).
        changed_elsewhere.store(true, Ordering::Release);
        keyring.apply(event).await;
    }
}

async fn sweep_hot_tier(keyring: Arc<Keyring>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(HOT_TIER_SWEEP);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => keyring.evict_aged(),
        }
    }
}

/// Reads the names and scopes of the keys `kbgate_key_info` covers (the oldest, up to
/// `metrics.per_key_limit`); on a store error keeps what it has.
async fn refresh_key_metrics(key_metrics: &KeyMetrics, store: &dyn KeyStore) {
    let changes = key_metrics.changes();
    match store.list_oldest(key_metrics.limit()).await {
        Ok(records) => {
            let labels: Vec<_> = records.iter().map(KeyRecord::metric_labels).collect();
            key_metrics.replace_all(&labels, changes);
        }
        Err(error) => {
            metrics::fixed().store_error(StoreOp::Admin, error.metric_kind());
            tracing::warn!(%error, "cannot list keys for kbgate_key_info; will retry");
        }
    }
}

/// Re-reads `kbgate_key_info` from a shared store when the change feed heard of a change; a
/// full listing of a large store is seconds of work, so never on a timer alone.
async fn keep_key_metrics(
    key_metrics: Arc<KeyMetrics>,
    keyring: Arc<Keyring>,
    changed_elsewhere: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(KEY_INFO_REFRESH);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                if changed_elsewhere.swap(false, Ordering::AcqRel) {
                    refresh_key_metrics(&key_metrics, keyring.store().as_ref()).await;
                }
            }
        }
    }
}

/// Resolves when the process receives SIGINT or SIGTERM. The handlers are installed by this
/// call, not on first poll: call it before the listeners open, so a SIGTERM that follows the
/// first healthy probe is always a graceful shutdown, never the default kill.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
