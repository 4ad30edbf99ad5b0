//! What the pipeline can be told: topics, batching, the tier policy, output throttling and the
//! delivery mode. Every field has a default and can be set from the config file or the
//! environment (`TIERFLOW_PIPELINE__BATCH_MAX_EVENTS=…`).

use serde::{Deserialize, Serialize};
use tierflow_events::Encoding;
use tierflow_stream::TopicSpec;

use crate::policy::TierPolicy;

/// Topic names and their partition count when tierflow creates them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub clickstream: String,
    pub tier_changed: String,
    pub campaign_triggered: String,
    /// Triggers held out for a campaign's control group (`would_have_triggered`): the same
    /// record as `campaign_triggered`, on a topic campaign engines do not read.
    pub campaign_control: String,
    /// Purchases attributed to a trigger (sent or held out) within its campaign's
    /// attribution window: one `campaign_outcome` record per purchase and campaign.
    pub campaign_outcome: String,
    /// Compacted: the latest score per user.
    pub user_score: String,
    pub dead_letter: String,
    /// Partitions for topics tierflow creates (the clickstream's bounds consumer parallelism).
    pub partitions: i32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            clickstream: "tierflow.clickstream".into(),
            tier_changed: "tierflow.tier_changed".into(),
            campaign_triggered: "tierflow.campaign_triggered".into(),
            campaign_control: "tierflow.campaign_control".into(),
            campaign_outcome: "tierflow.campaign_outcome".into(),
            user_score: "tierflow.user_score".into(),
            dead_letter: "tierflow.dead_letter".into(),
            partitions: 6,
        }
    }
}

impl TopicsConfig {
    /// Every topic tierflow reads or writes, as it would create them.
    pub fn specs(&self) -> Vec<TopicSpec> {
        vec![
            TopicSpec::new(&self.clickstream, self.partitions),
            TopicSpec::new(&self.tier_changed, self.partitions),
            TopicSpec::new(&self.campaign_triggered, self.partitions),
            TopicSpec::new(&self.campaign_control, self.partitions),
            TopicSpec::new(&self.campaign_outcome, self.partitions),
            TopicSpec::new(&self.user_score, self.partitions).compacted(),
            TopicSpec::new(&self.dead_letter, self.partitions),
        ]
    }
}

/// The streaming job's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Kafka consumer group: every `tierflow run` with the same group shares the partitions.
    pub group_id: String,
    /// A micro-batch closes at this many records…
    pub batch_max_events: usize,
    /// …or this long after its first record, whichever comes first.
    pub batch_max_wait_ms: u64,
    /// When a user's tier moves (hysteresis).
    pub policy: TierPolicy,
    /// Minimum event time between two `user_score` records of one user; 0 = every update.
    /// The latest score in Redis is written every batch regardless.
    pub score_min_interval_secs: u64,
    /// Reason codes on each `tier_changed` (0 = none, saves a backward pass).
    pub reason_codes: usize,
    /// Encoding of output records (JSON, or bincode for compact internal topics).
    pub output_encoding: Encoding,
    /// Bound on output records sent but not yet acknowledged (memory bound of the producer).
    pub max_in_flight: usize,
    /// librdkafka prefetch bound per consumer (`queued.max.messages.kbytes`): with a stalled
    /// stage, consumption stops here instead of growing memory.
    pub consumer_queue_kbytes: u64,
    /// How long the broker may hold a fetch open waiting for data (`fetch.wait.max.ms`):
    /// short keeps latency low at modest rates.
    pub fetch_wait_max_ms: u64,
    /// A stage waiting longer than this (outputs not acknowledged, Redis not answering)
    /// counts as stalled: `/readyz` fails until it completes.
    pub slow_stage_secs: u64,
    /// Longest pause between retries of a retriable failure (Redis or broker down).
    pub retry_backoff_max_ms: u64,
    /// A stage that keeps failing this long stops the process without committing (the
    /// supervisor restarts it; the batch is replayed). Keep it below librdkafka's
    /// `max.poll.interval.ms` (300 s by default), after which the group would reassign the
    /// partitions of a member that stopped polling.
    pub max_stall_secs: u64,
    /// Each member leases its partitions in Redis for this long, renewing every third of
    /// it; a new owner starts a partition only once the previous owner released the lease
    /// (after its last commit) or the lease ran out. Keep it below the consumer's
    /// `session.timeout.ms`, so a crashed member's partitions wait for nothing extra.
    pub partition_lease_ms: u64,
    /// Campaign timers (cart abandonment, inactivity) fire once the partition's clock, the
    /// newest event time read from it, is this far past their deadline: events up to this
    /// late still count as before the deadline.
    pub timer_slack_ms: u64,
    /// A partition read to its end with no new record for this long moves its clock with
    /// the wall clock (minus `timer_slack_ms`), so timers fire while a partition is quiet.
    /// 0: event time only (replays of history, where the wall clock is far ahead).
    pub idle_partition_secs: u64,
    /// Rows per forward pass (a batch with more rows is scored in chunks).
    pub score_chunk_rows: usize,
    /// An event stamped more than this after its record's Kafka timestamp is dead-lettered
    /// (`decode_error` invalid_value, field `ts`): a producer with a wrong clock. One
    /// far-future event would make every later real event of its user too late and move its
    /// partition's timer clock ahead. Judged against the record's timestamp, not the wall
    /// clock, so a replay decides the same. 0: no check.
    pub max_event_ahead_secs: u64,
    /// Keep each user's recent tier changes and triggers in Redis (`{prefix}:h:{user}`, the
    /// newest 32) for `tierflow inspect` and the live view: one list write per user with a
    /// decision, in the batch's store round trip. Not kept in transactional mode.
    pub user_history: bool,
    /// Exactly-once outputs with Kafka transactions: the `transactional.id` of this process,
    /// unique per process and stable across its restarts (e.g. the pod name). Absent =
    /// at-least-once outputs with idempotency keys. Needs a broker with transactions; readers
    /// must read with `isolation.level=read_committed`.
    pub transactional_id: Option<String>,
    /// Timeout of each transactional call.
    pub transaction_timeout_ms: u64,
    /// Drift of the live features and scores from the model's training profile.
    pub drift: DriftConfig,
}

/// Drift monitoring (`monitor.rs`): the live rows of the newest `window_rows` (between half
/// and all of it: two halves slide) are compared with the model's training profile, per
/// feature and per score, and exported on `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Off: no counting, no drift metrics.
    pub enabled: bool,
    /// Rows the comparison covers (the newest half to all of them).
    pub window_rows: u64,
    /// No alert before the window holds this many rows (a few rows prove nothing).
    pub min_rows: u64,
    /// `tierflow_drift_alert` is 1 when some feature's or score's PSI is above this
    /// (0.25 is the usual "act on it" level, 0.1 "worth a look").
    pub psi_threshold: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_rows: 100_000,
            min_rows: 10_000,
            psi_threshold: 0.25,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            group_id: "tierflow".into(),
            batch_max_events: 5_000,
            batch_max_wait_ms: 20,
            policy: TierPolicy::default(),
            score_min_interval_secs: 0,
            reason_codes: 3,
            output_encoding: Encoding::Json,
            max_in_flight: 50_000,
            consumer_queue_kbytes: 16 * 1024,
            fetch_wait_max_ms: 10,
            slow_stage_secs: 10,
            retry_backoff_max_ms: 2_000,
            max_stall_secs: 240,
            partition_lease_ms: 6_000,
            timer_slack_ms: 300_000,
            idle_partition_secs: 60,
            score_chunk_rows: 4_096,
            max_event_ahead_secs: 3_600,
            user_history: true,
            transactional_id: None,
            transaction_timeout_ms: 30_000,
            drift: DriftConfig::default(),
        }
    }
}

impl PipelineConfig {
    /// Refuses settings that cannot work, with the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.group_id.trim().is_empty() {
            return Err("pipeline.group_id must not be empty".into());
        }
        if self.batch_max_events == 0 {
            return Err("pipeline.batch_max_events must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("pipeline.max_in_flight must be at least 1".into());
        }
        if self.partition_lease_ms < 300 {
            return Err("pipeline.partition_lease_ms must be at least 300".into());
        }
        if self.score_chunk_rows == 0 {
            return Err("pipeline.score_chunk_rows must be at least 1".into());
        }
        if self.drift.enabled && self.drift.window_rows < 2 {
            return Err("pipeline.drift.window_rows must be at least 2".into());
        }
        if !(self.drift.psi_threshold.is_finite() && self.drift.psi_threshold > 0.0) {
            return Err("pipeline.drift.psi_threshold must be a positive number".into());
        }
        self.policy.validate()
    }
}
