//! Campaign governance in Redis: one Lua script decides a user's triggers atomically —
//! suppression list, cooldown, simultaneous limit, daily cap, hourly budget, control holdout —
//! and reserves the slots, so consumers on several partitions (and replays after a crash or a
//! rebalance) never send more than the limits allow.
//!
//! The decision is the same as `tierflow_rules::govern` over its in-memory `Ledger` (same
//! order, same checks, same names); this module only speaks plain values because the store
//! does not depend on the rules crate. Counters are kept per event-time day and hour, so a
//! replay decides the same whatever the wall clock says; every key carries a wall-clock TTL
//! (its event-time span plus `ALLOWED_LATENESS_MS`; verdicts [`IDEMPOTENCY_TTL_MS`]) so that
//! Redis cleans up after itself. A replay of triggers older than those TTLs is decided afresh.
//!
//! Keys (`{prefix}` is `RedisConfig::key_prefix`): `{prefix}:optout` (a SET of user ids),
//! `{prefix}:g:cool:{campaign}:{user}` (newest `fired_at` sent or held out, ms),
//! `{prefix}:g:day:{day}:{user}` (sends that UTC day), `{prefix}:g:budget:{campaign}:{hour}`
//! (sends that UTC hour), `{prefix}:g:idem:{idempotency key}` (the verdict given).
//!
//! On a Redis Cluster every governance key starts with the hash tag `{{prefix}:g}` instead of
//! `{prefix}` (e.g. `{tierflow:g}:optout`), so they all share one slot and one script still
//! sees them all atomically. Governance is light (one call per user with a fired rule, not
//! per event), so its one shard is not a hot spot for the pipeline; the script is sent with
//! `EVAL` there (no script cache to lose on a failover).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tierflow_events::EventTime;
use tierflow_features::spec::ALLOWED_LATENESS_MS;

use crate::StoreError;
use crate::config::RedisConfig;

/// How long a verdict is remembered for replays: the allowed lateness plus a day, so any
/// replay the pipeline can still accept finds it.
pub const IDEMPOTENCY_TTL_MS: i64 = ALLOWED_LATENESS_MS + EventTime::MILLIS_PER_DAY;

/// One candidate trigger, with the terms of its campaign (`RuleSet::terms` in the rules crate;
/// a candidate whose campaign left the rules has no terms and is not sent here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernCandidate {
    pub campaign: String,
    /// `Candidate::idempotency_key`: the same trigger always has the same key.
    pub idempotency_key: String,
    pub fired_at: EventTime,
    pub priority: i32,
    /// `0`: no cooldown.
    pub cooldown_ms: i64,
    pub budget_per_hour: Option<u32>,
    /// The user is in this campaign's control group.
    pub in_control: bool,
}

/// One user's candidates and the limits that span campaigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernRequest {
    pub user_id: String,
    pub daily_cap: u32,
    pub max_simultaneous: u32,
    pub candidates: Vec<GovernCandidate>,
}

/// The verdict on one candidate; the names are `tierflow_rules::Verdict`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GovernVerdict {
    Send,
    ControlHoldout,
    OptedOut,
    Cooldown,
    LowerPriority,
    DailyCap,
    Budget,
}

impl GovernVerdict {
    pub const ALL: [GovernVerdict; 7] = [
        Self::Send,
        Self::ControlHoldout,
        Self::OptedOut,
        Self::Cooldown,
        Self::LowerPriority,
        Self::DailyCap,
        Self::Budget,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::ControlHoldout => "control_holdout",
            Self::OptedOut => "opted_out",
            Self::Cooldown => "cooldown",
            Self::LowerPriority => "lower_priority",
            Self::DailyCap => "daily_cap",
            Self::Budget => "budget",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

/// The script. Per call: one user; candidates already in decision order (event time, then
/// priority descending, then campaign). For each candidate, in order:
/// an earlier verdict under its idempotency key is returned again and consumes nothing;
/// otherwise opted_out → cooldown (|fired_at − newest fired| < cooldown) → lower_priority
/// (max_simultaneous sends already at this fired_at) → daily_cap → budget → control_holdout
/// (starts the cooldown only) → send (starts the cooldown, takes a daily, a budget and a
/// simultaneous slot); the verdict is recorded under the idempotency key.
///
/// KEYS: [1] opt-out set, then per candidate: idempotency, cooldown, day, budget.
/// ARGV: user, n, daily_cap, max_simultaneous, idempotency_ttl, day_ttl, budget_ttl,
/// lateness, then per candidate: fired_at, cooldown, budget (−1: none), control (1/0).
const SCRIPT: &str = r#"
local user = ARGV[1]
local n = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local max_simultaneous = tonumber(ARGV[4])
local idempotency_ttl = ARGV[5]
local day_ttl = ARGV[6]
local budget_ttl = ARGV[7]
local lateness = tonumber(ARGV[8])
local opted_out = redis.call('SISMEMBER', KEYS[1], user) == 1
local sent_at = {}
local verdicts = {}
for i = 1, n do
  local k = 1 + 4 * (i - 1)
  local idempotency, cool, day, budget_key = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local a = 8 + 4 * (i - 1)
  local at = ARGV[a + 1]
  local fired = tonumber(at)
  local cooldown = tonumber(ARGV[a + 2])
  local budget = tonumber(ARGV[a + 3])
  local control = ARGV[a + 4] == '1'
  local verdict = redis.call('GET', idempotency)
  if not verdict then
    local last = redis.call('GET', cool)
    if last then last = tonumber(last) end
    if opted_out then
      verdict = 'opted_out'
    elseif last and cooldown > 0 and math.abs(fired - last) < cooldown then
      verdict = 'cooldown'
    elseif (sent_at[at] or 0) >= max_simultaneous then
      verdict = 'lower_priority'
    elseif tonumber(redis.call('GET', day) or '0') >= cap then
      verdict = 'daily_cap'
    elseif budget >= 0 and tonumber(redis.call('GET', budget_key) or '0') >= budget then
      verdict = 'budget'
    elseif control then
      verdict = 'control_holdout'
    else
      verdict = 'send'
    end
    if (verdict == 'send' or verdict == 'control_holdout') and cooldown > 0 then
      local newest = fired
      if last and last > newest then newest = last end
      redis.call('SET', cool, string.format('%d', newest), 'PX', string.format('%d', cooldown + lateness))
    end
    if verdict == 'send' then
      redis.call('INCR', day)
      redis.call('PEXPIRE', day, day_ttl)
      if budget >= 0 then
        redis.call('INCR', budget_key)
        redis.call('PEXPIRE', budget_key, budget_ttl)
      end
    end
    redis.call('SET', idempotency, verdict, 'PX', idempotency_ttl)
  end
  if verdict == 'send' then sent_at[at] = (sent_at[at] or 0) + 1 end
  verdicts[i] = verdict
end
return verdicts
"#;

/// Decides campaign triggers against Redis. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Governor {
    connection: GovernorConnection,
    config: RedisConfig,
    /// SHA1 of [`SCRIPT`], as Redis computed it when loading it.
    sha: Arc<str>,
    round_trips: Arc<AtomicU64>,
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor")
            .field("key_prefix", &self.config.key_prefix)
            .field("sha", &self.sha)
            .finish()
    }
}

#[derive(Clone)]
enum GovernorConnection {
    Single(ConnectionManager),
    /// Every governance key in one slot (the hash tag `{{prefix}:g}`).
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Governor {
    /// Connects and loads the script (on a Cluster: connects to the seed nodes of
    /// `config.url`, comma-separated; the script goes with every call).
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        if config.cluster {
            let nodes: Vec<&str> = config.url.split(',').map(str::trim).collect();
            let mut builder = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
                .response_timeout(Duration::from_millis(config.response_timeout_ms))
                .retries(config.retries);
            if let Some(certificates) = crate::redis_store::tls_certificates(&config)? {
                builder = builder.certs(certificates);
            }
            let client = builder
                .build()
                .map_err(|e| StoreError::Fatal(format!("redis cluster config: {e}")))?;
            let connection = client.get_async_connection().await.map_err(classify)?;
            return Ok(Self {
                connection: GovernorConnection::Cluster(connection),
                config,
                sha: Arc::from(""),
                round_trips: Default::default(),
            });
        }
        let client = client(&config)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(config.response_timeout_ms)))
            .set_number_of_retries(config.retries as usize)
            .set_min_delay(Duration::from_millis(config.retry_backoff_ms))
            .set_max_delay(Duration::from_secs(2));
        let mut connection = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(classify)?;
        let sha = load_script(&mut connection).await.map_err(classify)?;
        Ok(Self {
            connection: GovernorConnection::Single(connection),
            config,
            sha: sha.into(),
            round_trips: Default::default(),
        })
    }

    /// Decides every request (one user each) in one round trip: one atomic script call per
    /// user, pipelined. `result[i][j]` is the verdict on `requests[i].candidates[j]`.
    ///
    /// Safe to retry and to replay: a candidate already decided returns its recorded verdict.
    pub async fn decide(
        &self,
        requests: &[GovernRequest],
    ) -> Result<Vec<Vec<GovernVerdict>>, StoreError> {
        let calls: Vec<(redis::Cmd, Vec<usize>)> = requests
            .iter()
            .filter(|r| !r.candidates.is_empty())
            .map(|r| self.script_call(r))
            .collect();
        if calls.is_empty() {
            return Ok(requests.iter().map(|_| Vec::new()).collect());
        }
        let mut pipeline = redis::pipe();
        for (call, _) in &calls {
            pipeline.add_command(call.clone());
        }
        let answers: Vec<Vec<String>> = self.run(&pipeline).await?;
        let mut answers = answers.into_iter().zip(&calls);
        let mut decided = Vec::with_capacity(requests.len());
        for request in requests {
            if request.candidates.is_empty() {
                decided.push(Vec::new());
                continue;
            }
            let (verdicts, (_, order)) = answers
                .next()
                .ok_or_else(|| StoreError::Fatal("governor: missing script answer".into()))?;
            if verdicts.len() != order.len() {
                return Err(StoreError::Fatal(format!(
                    "governor: script answered {} verdicts for {} candidates",
                    verdicts.len(),
                    order.len()
                )));
            }
            let mut in_input_order = vec![GovernVerdict::Send; order.len()];
            for (verdict, &index) in verdicts.iter().zip(order) {
                in_input_order[index] = GovernVerdict::parse(verdict).ok_or_else(|| {
                    StoreError::Fatal(format!("governor: unknown verdict {verdict:?}"))
                })?;
            }
            decided.push(in_input_order);
        }
        Ok(decided)
    }

    /// Adds users to the suppression list: from now on they get nothing.
    pub async fn opt_out(&self, users: &[&str]) -> Result<(), StoreError> {
        self.set_membership("SADD", users).await
    }

    /// Removes users from the suppression list.
    pub async fn opt_in(&self, users: &[&str]) -> Result<(), StoreError> {
        self.set_membership("SREM", users).await
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Round trips made so far (every attempt counts).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn set_membership(&self, command: &str, users: &[&str]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd(command);
        cmd.arg(self.optout_key()).arg(users);
        let mut pipeline = redis::pipe();
        pipeline.add_command(cmd).ignore();
        self.run::<()>(&pipeline).await
    }

    fn optout_key(&self) -> String {
        format!("{}:optout", self.key_base())
    }

    /// What every governance key starts with: the prefix, or on a Cluster the hash tag that
    /// puts them all in one slot.
    fn key_base(&self) -> String {
        match self.connection {
            GovernorConnection::Single(_) => self.config.key_prefix.clone(),
            GovernorConnection::Cluster(_) => format!("{{{}:g}}", self.config.key_prefix),
        }
    }

    /// The `EVALSHA` for one user, and for each script position the candidate's input index.
    fn script_call(&self, request: &GovernRequest) -> (redis::Cmd, Vec<usize>) {
        let prefix = &self.key_base();
        let user = &request.user_id;
        let mut order: Vec<usize> = (0..request.candidates.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&request.candidates[a], &request.candidates[b]);
            (a.fired_at, std::cmp::Reverse(a.priority), &a.campaign).cmp(&(
                b.fired_at,
                std::cmp::Reverse(b.priority),
                &b.campaign,
            ))
        });
        let mut cmd = match self.connection {
            GovernorConnection::Single(_) => {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&*self.sha);
                cmd
            }
            GovernorConnection::Cluster(_) => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(SCRIPT);
                cmd
            }
        };
        cmd.arg(1 + 4 * order.len()).arg(self.optout_key());
        for &i in &order {
            let c = &request.candidates[i];
            let at = c.fired_at.unix_millis();
            cmd.arg(format!("{prefix}:g:idem:{}", c.idempotency_key))
                .arg(format!("{prefix}:g:cool:{}:{user}", c.campaign))
                .arg(format!(
                    "{prefix}:g:day:{}:{user}",
                    at.div_euclid(EventTime::MILLIS_PER_DAY)
                ))
                .arg(format!(
                    "{prefix}:g:budget:{}:{}",
                    c.campaign,
                    at.div_euclid(EventTime::MILLIS_PER_HOUR)
                ));
        }
        cmd.arg(user)
            .arg(order.len())
            .arg(request.daily_cap)
            .arg(request.max_simultaneous)
            .arg(IDEMPOTENCY_TTL_MS)
            .arg(EventTime::MILLIS_PER_DAY + ALLOWED_LATENESS_MS)
            .arg(EventTime::MILLIS_PER_HOUR + ALLOWED_LATENESS_MS)
            .arg(ALLOWED_LATENESS_MS);
        for &i in &order {
            let c = &request.candidates[i];
            cmd.arg(c.fired_at.unix_millis())
                .arg(c.cooldown_ms.max(0))
                .arg(c.budget_per_hour.map_or(-1, i64::from))
                .arg(u8::from(c.in_control));
        }
        (cmd, order)
    }

    /// Sends one pipeline, retrying retriable failures with doubling backoff, and reloading
    /// the script if Redis lost it (a restart without persistence, `SCRIPT FLUSH`). Retrying
    /// is safe: decisions are recorded under their idempotency keys.
    async fn run<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut backoff = Duration::from_millis(self.config.retry_backoff_ms);
        let mut attempt = 0;
        loop {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let result = match self.connection.clone() {
                GovernorConnection::Single(mut c) => pipeline.query_async::<T>(&mut c).await,
                GovernorConnection::Cluster(mut c) => pipeline.query_async::<T>(&mut c).await,
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    self.round_trips.fetch_add(1, Ordering::Relaxed);
                    let GovernorConnection::Single(mut connection) = self.connection.clone() else {
                        return Err(classify(e));
                    };
                    match load_script(&mut connection).await {
                        // Reloaded: worth another attempt.
                        Ok(_) => StoreError::Unavailable(format!("script reloaded after: {e}")),
                        Err(load) => classify(load),
                    }
                }
                Err(e) => classify(e),
            };
            if !error.is_retriable() || attempt >= self.config.retries {
                return Err(error);
            }
            attempt += 1;
            tracing::warn!(%error, attempt, ?backoff, "governor: redis operation failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// A client for `config.url`; for `rediss://`, rustls (ring) trusting `tls_ca_file` when
/// given, else the system's roots — as the state store connects.
fn client(config: &RedisConfig) -> Result<redis::Client, StoreError> {
    let refused = |e: RedisError| StoreError::Fatal(format!("redis url for the governor: {e}"));
    if !config.url.starts_with("rediss://") {
        return redis::Client::open(config.url.as_str()).map_err(refused);
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
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert,
    };
    redis::Client::build_with_tls(config.url.as_str(), certificates).map_err(refused)
}

async fn load_script(connection: &mut ConnectionManager) -> redis::RedisResult<String> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query_async(connection)
        .await
}

/// The state store's classification (retriable: connection, timeout, loading, cluster
/// changes; everything else fatal), repeated here to keep the two modules independent.
fn classify(e: RedisError) -> StoreError {
    let retriable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
            )
        );
    if retriable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Fatal(e.to_string())
    }
}
