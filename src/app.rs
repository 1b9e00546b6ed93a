//! Wiring: builds the store, keyring, usage recorder, upstream client, gateway and admin API from
//! a [`Config`], binds both listeners and runs them until shut down.

use crate::admin::Admin;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::keys::StoreConfig;
use crate::keys::embedded::EmbeddedStore;
use crate::keys::redis::RedisStore;
use crate::keys::service::KeyService;
use crate::keys::{self, KeyStore, Keyring, StoreError};
use crate::limits::Limiter;
use crate::metrics;
use crate::metrics::keys::KeyMetrics;
use crate::metrics::requests::RequestMetrics;
use crate::rejection::Rejection;
use crate::server::{self, tls_acceptor};
use crate::upstream::Upstream;
use crate::usage::UsageRecorder;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// The background loops (keys' watch, usage flush, audit pruning, metrics upkeep): waited
    /// for at shutdown, so the store is released when `shutdown` returns.
    tasks: TaskTracker,
    usage: Arc<UsageRecorder>,
    limiter: Arc<Limiter>,
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
    let keyring = Arc::new(
        Keyring::new(store.clone(), config.hot_tier, changes.is_none())
            .with_defaults(config.limit_settings.defaults),
    );
    let usage = Arc::new(UsageRecorder::with_retention(
        config.usage_history_retention,
    ));
    let key_metrics = config
        .metrics
        .per_key
        .then(|| Arc::new(KeyMetrics::new(config.metrics.per_key_limit)));
    let tasks = TaskTracker::new();
    keys::watch::spawn(
        &tasks,
        keyring.clone(),
        changes,
        key_metrics.clone(),
        shutdown.clone(),
    )
    .await;
    let limiter = Arc::new(limiter(&config, store.as_ref()).await?);
    let deliverer = crate::events::Deliverer::new(store.clone(), config.webhooks.clone());
    let mut gateway = gateway(&config, keyring.clone(), usage.clone(), key_metrics.clone())?;
    gateway.limiter = limiter.clone();
    gateway.limit_events = Some(crate::events::limit_events::LimitEvents::new(
        store.clone(),
        deliverer.clone(),
    ));
    if config.routes.routes().iter().any(|r| !r.events.is_empty()) {
        gateway.content_events = Some(Arc::new(crate::events::content::ContentEvents::new(
            store.clone(),
            deliverer.clone(),
        )));
    }
    let gateway = Arc::new(gateway);
    let route_permissions: Vec<String> = (config.routes.routes().iter())
        .map(|route| route.permission.to_string())
        .collect();
    let keys = Arc::new(KeyService::new(
        store.clone(),
        keyring.clone(),
        usage.clone(),
        key_metrics.clone(),
        config.resources,
    ));
    let admin = Arc::new(
        Admin::new(keys.clone(), &config.admin.token)
            .with_metrics(prometheus, key_metrics.clone())
            .with_limiter(limiter.clone())
            .with_webhooks(deliverer.clone())
            .with_route_permissions(route_permissions)
            .with_hygiene(config.hygiene.clone()),
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
    tasks.spawn(keys::run_pruning(
        store.clone(),
        config.audit_retention,
        shutdown.clone(),
    ));
    tasks.spawn(usage.clone().run_flusher(
        store,
        config.usage_flush_interval,
        shutdown.clone(),
        Some(limiter.clone()),
    ));
    tasks.spawn(deliverer.run(shutdown.clone()));
    tasks.spawn(crate::events::hygiene::run(
        keys,
        config.hygiene.clone(),
        shutdown.clone(),
    ));
    tasks.close();

    tracing::info!(%addr, %admin_addr, "kbgate listening");
    Ok(Running {
        addr,
        admin_addr,
        keyring,
        shutdown,
        servers,
        tasks,
        usage,
        limiter,
    })
}

/// Where per-key limits keep their state: on Redis when the keys are there (shared by every
/// gateway), else in this process, with the quota counts the embedded store kept.
async fn limiter(config: &Config, store: &dyn KeyStore) -> Result<Limiter, StartError> {
    match &config.store {
        StoreConfig::Redis(redis) => Ok(Limiter::redis(
            Arc::new(RedisStore::open(redis)?),
            config.limit_settings,
        )),
        StoreConfig::Embedded { .. } => {
            let limiter = Limiter::memory(config.limit_settings);
            limiter.restore(store).await?;
            Ok(limiter)
        }
    }
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
        limiter: Arc::new(Limiter::memory(config.limit_settings)),
        content_events: None,
        key_notices: crate::gateway::KeyNotices::new(config.hygiene.notice_lead()),
        limit_events: None,
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
        self.tasks.wait().await;
        if let Err(error) = self.usage.flush(self.keyring.store().as_ref()).await {
            tracing::error!(%error, "final usage flush failed; recent usage is lost");
        }
        if let Err(error) = self.limiter.save(self.keyring.store().as_ref()).await {
            tracing::error!(%error, "final quota save failed; recent quota counts are lost");
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
