//! One handle over a single Redis (auto-reconnecting `ConnectionManager`) or a Redis Cluster,
//! created lazily so the gateway starts, and reports not ready, while Redis is down.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Connections to one Redis or one cluster, with the timeout every call gets.
pub struct Connector {
    timeout: Duration,
    single: Option<ConnectionManager>,
    cluster: Option<(ClusterClient, OnceCell<ClusterConnection>)>,
}

impl Connector {
    pub fn single(client: redis::Client, timeout: Duration) -> redis::RedisResult<Connector> {
        // Few, quick retries: a request waits at most `timeout` anyway, and the manager
        // reconnects on the next call after a failure.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        Ok(Connector {
            timeout,
            single: Some(ConnectionManager::new_lazy_with_config(client, config)?),
            cluster: None,
        })
    }

    /// The cluster is contacted on the first call (and again after a failed first contact).
    pub fn cluster(client: ClusterClient, timeout: Duration) -> Connector {
        Connector {
            timeout,
            single: None,
            cluster: Some((client, OnceCell::new())),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection to run commands on (cheap: both kinds are shared, multiplexed handles).
    pub async fn get(&self) -> redis::RedisResult<Connection> {
        match (&self.single, &self.cluster) {
            (Some(single), _) => Ok(Connection::Single(single.clone())),
            (None, Some((client, connection))) => {
                let connection = connection
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                Ok(Connection::Cluster(connection.clone()))
            }
            (None, None) => Err((redis::ErrorKind::Client, "no Redis configured").into()),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}
