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
use crate::{BatchWrites, HISTORY_LEN, StateStore, StoreError, StoredClock};

/// Which of a user's keys [`RedisStore::forget`] found and deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// `{prefix}:u:{user}`, the windows and decision memory.
    pub state: bool,
    /// `{prefix}:s:{user}`, the latest score record.
    pub score: bool,
    /// `{prefix}:h:{user}`, the recent decisions.
    pub history: bool,
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

    /// Deletes the state, latest-score and history keys of `users` in one round trip (on a
    /// Cluster, where the keys of a user live in different slots, concurrent single-key
    /// `DEL`s).
    /// Says per user which keys existed; deleting what is absent is not an error, so
    /// forgetting twice is harmless.
    pub async fn forget(&self, users: &[&str]) -> Result<Vec<Forgotten>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let dels: Vec<redis::Cmd> = users
            .iter()
            .flat_map(|user| {
                [
                    self.config.state_key(user),
                    self.config.score_key(user),
                    self.config.history_key(user),
                ]
            })
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
            .chunks_exact(3)
            .map(|keys| Forgotten {
                state: keys[0] > 0,
                score: keys[1] > 0,
                history: keys[2] > 0,
            })
            .collect())
    }

    /// Single-key commands in one round trip: a pipeline on one node, concurrent commands
    /// over the multiplexed connection on a Cluster (where a pipeline may not cross slots).
    async fn per_key<T: redis::FromRedisValue + Send>(
        &self,
        commands: &[redis::Cmd],
    ) -> Result<Vec<T>, StoreError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        self.run(|connection| async move {
            match connection {
                Connection::Single(mut c) => {
                    let mut pipeline = redis::pipe();
                    for command in commands {
                        pipeline.add_command(command.clone());
                    }
                    pipeline.query_async::<Vec<T>>(&mut c).await
                }
                Connection::Cluster(c) => {
                    futures_util::future::try_join_all(
                        commands
                            .iter()
                            .map(|command| query::<T>(command, Connection::Cluster(c.clone()))),
                    )
                    .await
                }
            }
        })
        .await
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
pub(crate) fn tls_certificates(
    config: &RedisConfig,
) -> Result<Option<redis::TlsCertificates>, StoreError> {
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
        timers: &BatchWrites<'_>,
    ) -> Result<(), StoreError> {
        if states.is_empty() && scores.is_empty() && timers.is_empty() {
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
            .chain(timers.due.iter().map(|(partition, user, at)| {
                let key = self.config.due_key(timers.index, *partition);
                match at {
                    Some(at) => {
                        let mut zadd = redis::cmd("ZADD");
                        zadd.arg(key).arg(*at).arg(*user);
                        zadd
                    }
                    None => {
                        let mut zrem = redis::cmd("ZREM");
                        zrem.arg(key).arg(*user);
                        zrem
                    }
                }
            }))
            .chain(timers.clocks.iter().map(|(partition, clock)| {
                let mut set = redis::cmd("SET");
                set.arg(self.config.clock_key(timers.index, *partition))
                    .arg(clock.encode());
                set
            }))
            .chain(history_appends(&self.config, &timers.history, ttl_ms))
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

    async fn due_users(
        &self,
        index: &str,
        up_to: &[(i32, i64)],
        limit: usize,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let ranges: Vec<redis::Cmd> = up_to
            .iter()
            .map(|(partition, up_to)| {
                let mut range = redis::cmd("ZRANGEBYSCORE");
                range
                    .arg(self.config.due_key(index, *partition))
                    .arg("-inf")
                    .arg(*up_to)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit);
                range
            })
            .collect();
        self.per_key(&ranges).await
    }

    async fn clocks(
        &self,
        index: &str,
        partitions: &[i32],
    ) -> Result<Vec<Option<StoredClock>>, StoreError> {
        let gets: Vec<redis::Cmd> = partitions
            .iter()
            .map(|partition| {
                let mut get = redis::cmd("GET");
                get.arg(self.config.clock_key(index, *partition));
                get
            })
            .collect();
        let values: Vec<Option<String>> = self.per_key(&gets).await?;
        Ok(values
            .into_iter()
            .map(|v| v.as_deref().and_then(StoredClock::decode))
            .collect())
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

    async fn history(&self, user: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut range = redis::cmd("LRANGE");
        range.arg(self.config.history_key(user)).arg(0).arg(-1);
        self.run(|c| query(&range, c)).await
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn claim_leases(
        &self,
        owner: &str,
        names: &[String],
        ttl: Duration,
        force: bool,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let force = u8::from(force);
        let claims: Vec<redis::Cmd> = names
            .iter()
            .map(|name| {
                let mut eval = redis::cmd("EVAL");
                eval.arg(CLAIM_LEASE)
                    .arg(1)
                    .arg(self.config.lease_key(name))
                    .arg(owner)
                    .arg(ttl_ms)
                    .arg(force);
                eval
            })
            .collect();
        let holders: Vec<String> = self.per_key(&claims).await?;
        Ok(holders
            .into_iter()
            .map(|holder| (!holder.is_empty()).then_some(holder))
            .collect())
    }

    async fn release_leases(&self, owner: &str, names: &[String]) -> Result<(), StoreError> {
        let releases: Vec<redis::Cmd> = names
            .iter()
            .map(|name| {
                let mut eval = redis::cmd("EVAL");
                eval.arg(RELEASE_LEASE)
                    .arg(1)
                    .arg(self.config.lease_key(name))
                    .arg(owner);
                eval
            })
            .collect();
        let _: Vec<i64> = self.per_key(&releases).await?;
        Ok(())
    }
}

/// Takes a lease that is free or already ours (or any, when forced), for `ARGV[2]` ms;
/// answers the other holder, or "" when the lease is ours now. One key: fine on a Cluster.
/// One single-key script per user (so it runs on a Cluster too): push the user's new
/// entries, keep the newest `HISTORY_LEN`, refresh the TTL.
fn history_appends(
    config: &RedisConfig,
    history: &[(&str, &[u8])],
    ttl_ms: u64,
) -> Vec<redis::Cmd> {
    let mut by_user: Vec<(&str, Vec<&[u8]>)> = Vec::new();
    let mut slot: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (user, entry) in history {
        let at = *slot.entry(user).or_insert_with(|| {
            by_user.push((user, Vec::new()));
            by_user.len() - 1
        });
        by_user[at].1.push(entry);
    }
    by_user
        .into_iter()
        .map(|(user, entries)| {
            let mut eval = redis::cmd("EVAL");
            eval.arg(APPEND_HISTORY)
                .arg(1)
                .arg(config.history_key(user))
                .arg(HISTORY_LEN)
                .arg(ttl_ms)
                .arg(entries);
            eval
        })
        .collect()
}

const APPEND_HISTORY: &str = r"
redis.call('LPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
";

const CLAIM_LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] or ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
return holder
";

/// Deletes a lease only if it is still ours.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";
