//! How to reach Redis and how long state lives there.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tierflow_features::spec::STATE_RETENTION_MS;

/// Redis settings. A single `url` is one node; `cluster = true` treats `url` as a
/// comma-separated list of seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`; with `cluster`, several, comma-separated.
    pub url: String,
    pub cluster: bool,
    /// For `rediss://`: a PEM file with the CA certificate(s) to trust; without it, the
    /// system's trust store.
    pub tls_ca_file: Option<String>,
    /// State keys are `{key_prefix}:u:{user_id}`, latest scores `{key_prefix}:s:{user_id}`.
    pub key_prefix: String,
    /// State expires this long after its last write, so users who go quiet clean up after
    /// themselves. Default: the longest window plus the allowed lateness plus a day.
    pub state_ttl_secs: u64,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    /// Attempts after the first for a retriable failure, with doubling backoff.
    pub retries: u32,
    pub retry_backoff_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            cluster: false,
            tls_ca_file: None,
            key_prefix: "tierflow".into(),
            state_ttl_secs: default_ttl().as_secs(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 2_000,
            retries: 5,
            retry_backoff_ms: 50,
        }
    }
}

/// Longest window + allowed lateness + one day of margin (`STATE_RETENTION_MS`).
pub fn default_ttl() -> Duration {
    Duration::from_millis(STATE_RETENTION_MS as u64)
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn state_key(&self, user: &str) -> String {
        format!("{}:u:{user}", self.key_prefix)
    }

    /// Where a user's latest score record (JSON `UserScore`) is kept.
    pub fn score_key(&self, user: &str) -> String {
        format!("{}:s:{user}", self.key_prefix)
    }

    /// A user's recent decisions (a list, newest first): tier changes and triggers.
    pub fn history_key(&self, user: &str) -> String {
        format!("{}:h:{user}", self.key_prefix)
    }

    /// The timer index of `partition` of `index` (a sorted set: user → next deadline).
    pub fn due_key(&self, index: &str, partition: i32) -> String {
        format!("{}:due:{index}:{partition}", self.key_prefix)
    }

    /// The event-time clock of `partition` of `index`.
    pub fn clock_key(&self, index: &str, partition: i32) -> String {
        format!("{}:clock:{index}:{partition}", self.key_prefix)
    }

    /// Where the lease `name` (a partition's, say) is kept.
    pub fn lease_key(&self, name: &str) -> String {
        format!("{}:lease:{name}", self.key_prefix)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.state_ttl_secs)
    }
}
