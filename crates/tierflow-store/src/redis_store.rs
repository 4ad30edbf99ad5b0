//! Redis behind [`StateStore`]: one `MGET` to load (split per node on a Cluster), pipelined
//! `SET .. PX` to store (on a Cluster, where a pipeline may not cross slots, the same
//! commands sent concurrently over the multiplexed connection): one round trip each way,
//! with timeouts and retries with backoff.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError};

use crate::config::RedisConfig;
use crate::{StateStore, StoreError};

/// Which of a user's keys [`RedisStore::forget`] found and deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// `{prefix}:u:{user}`, the windows and decision memory.
    pub state: bool,
    /// `{prefix}:s:{user}`, the latest score record.
    pub score: bool,
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// State in Redis. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    config: RedisConfig,
    round_trips: std::sync::Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.config.cluster)
            .field("key_prefix", &self.config.key_prefix)
            .finish()
    }
}

impl RedisStore {
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        let certificates = tls_certificates(&config)?;
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let response_timeout = Duration::from_millis(config.response_timeout_ms);
        let connection = if config.cluster {
            let nodes: Vec<&str> = config.url.split(',').map(str::trim).collect();
            let mut builder = ClusterClient::builder(nodes)
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                .retries(config.retries);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            let client = builder
                .build()
                .map_err(|e| StoreError::Fatal(format!("redis cluster config: {e}")))?;
            Connection::Cluster(client.get_async_connection().await.map_err(classify)?)
        } else {
            let client = match certificates {
                Some(certificates) => {
                    redis::Client::build_with_tls(config.url.as_str(), certificates)
                }
                None => redis::Client::open(config.url.as_str()),
            }
            .map_err(|e| StoreError::Fatal(format!("redis url {:?}: {e}", redact(&config.url))))?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout))
                // Reconnects follow the same budget as our own retries.
                .set_number_of_retries(config.retries as usize)
                .set_min_delay(Duration::from_millis(config.retry_backoff_ms))
                .set_max_delay(Duration::from_secs(2));
            Connection::Single(
                ConnectionManager::new_with_config(client, manager_config)
                    .await
                    .map_err(classify)?,
            )
        };
        Ok(Self {
            connection,
            config,
            round_trips: Default::default(),
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Deletes the state and latest-score keys of `users` in one round trip (on a Cluster,
    /// where the two keys of a user live in different slots, concurrent single-key `DEL`s).
    /// Says per user which keys existed; deleting what is absent is not an error, so
    /// forgetting twice is harmless.
    pub async fn forget(&self, users: &[&str]) -> Result<Vec<Forgotten>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let dels: Vec<redis::Cmd> = users
            .iter()
            .flat_map(|user| [self.config.state_key(user), self.config.score_key(user)])
            .map(|key| {
                let mut del = redis::cmd("DEL");
                del.arg(key);
                del
            })
            .collect();
        let deleted: Vec<i64> = self
            .run(|connection| {
                let dels = &dels;
                async move {
                    match connection {
                        Connection::Single(mut c) => {
                            let mut pipeline = redis::pipe();
                            for del in dels {
                                pipeline.add_command(del.clone());
                            }
                            pipeline.query_async::<Vec<i64>>(&mut c).await
                        }
                        Connection::Cluster(c) => {
                            futures_util::future::try_join_all(
                                dels.iter()
                                    .map(|del| query::<i64>(del, Connection::Cluster(c.clone()))),
                            )
                            .await
                        }
                    }
                }
            })
            .await?;
        Ok(deleted
            .chunks_exact(2)
            .map(|pair| Forgotten {
                state: pair[0] > 0,
                score: pair[1] > 0,
            })
            .collect())
    }

    /// Runs one request (a command or a pipeline), retrying retriable failures with
    /// doubling backoff. Each attempt is one round trip.
    async fn run<T, F, Fut>(&self, request: F) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut backoff = Duration::from_millis(self.config.retry_backoff_ms);
        let mut attempt = 0;
        loop {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            match request(self.connection.clone()).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let error = classify(e);
                    if !error.is_retriable() || attempt >= self.config.retries {
                        return Err(error);
                    }
                    attempt += 1;
                    tracing::warn!(%error, attempt, ?backoff, "redis operation failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

async fn query<T: redis::FromRedisValue>(
    command: &redis::Cmd,
    connection: Connection,
) -> redis::RedisResult<T> {
    match connection {
        Connection::Single(mut c) => command.query_async(&mut c).await,
        Connection::Cluster(mut c) => command.query_async(&mut c).await,
    }
}

/// TLS settings for `rediss://` URLs: rustls with the ring provider, trusting `tls_ca_file`
/// when given, else the system's roots.
fn tls_certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>, StoreError> {
    if !config
        .url
        .split(',')
        .any(|u| u.trim().starts_with("rediss://"))
    {
        return Ok(None);
    }
    // Several crates may race to install it; the first wins and all use the same one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root_cert = match &config.tls_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| StoreError::Fatal(format!("reading redis tls_ca_file {path}: {e}")))?,
        ),
        None => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert,
    }))
}

/// A URL fit for logs and errors: the password replaced.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn classify(e: RedisError) -> StoreError {
    let retriable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::MasterDown
            )
        );
    if retriable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Fatal(e.to_string())
    }
}

impl StateStore for RedisStore {
    async fn load_raw(&self, users: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = redis::cmd("MGET");
        for user in users {
            mget.arg(self.config.state_key(user));
        }
        self.run(|c| query(&mget, c)).await
    }

    async fn store_raw(
        &self,
        states: &[(&str, &[u8])],
        scores: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        if states.is_empty() && scores.is_empty() {
            return Ok(());
        }
        let ttl_ms = self.config.ttl().as_millis() as u64;
        let set = |key: String, value: &[u8]| {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(value).arg("PX").arg(ttl_ms);
            set
        };
        let sets: Vec<redis::Cmd> = states
            .iter()
            .map(|(user, bytes)| set(self.config.state_key(user), bytes))
            .chain(
                scores
                    .iter()
                    .map(|(user, record)| set(self.config.score_key(user), record)),
            )
            .collect();
        self.run(|connection| {
            let sets = &sets;
            async move {
                match connection {
                    Connection::Single(mut c) => {
                        let mut pipeline = redis::pipe();
                        for set in sets {
                            pipeline.add_command(set.clone()).ignore();
                        }
                        pipeline.query_async::<()>(&mut c).await
                    }
                    Connection::Cluster(c) => futures_util::future::try_join_all(
                        sets.iter()
                            .map(|set| query::<()>(set, Connection::Cluster(c.clone()))),
                    )
                    .await
                    .map(|_| ()),
                }
            }
        })
        .await
    }

    async fn latest_scores(&self, users: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = redis::cmd("MGET");
        for user in users {
            mget.arg(self.config.score_key(user));
        }
        self.run(|c| query(&mget, c)).await
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
