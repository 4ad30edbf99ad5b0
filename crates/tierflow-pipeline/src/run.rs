//! The streaming job. One task per process drives one consumer-group member through
//! micro-batches:
//!
//! ```text
//! collect (size or time) → decode → load states (1 Redis round trip) → apply + score + policy
//!   → produce outputs and dead letters, wait for every acknowledgement
//!   → store states and latest scores (1 Redis round trip) → commit offsets
//! ```
//!
//! A batch's offsets are committed only after its outputs are acknowledged and its state is
//! stored. Outputs go out *before* the state is stored: a crash in between replays the batch,
//! and the replay produces the same records with the same idempotency keys (readers dedupe);
//! had the state gone first, the replay would skip the events as applied and their outputs
//! would be lost. Retriable failures (Redis or the broker down) pause the batch and retry
//! with backoff — nothing is fetched meanwhile, librdkafka's prefetch is bounded — until it
//! succeeds or `max_stall_secs` passes; then the process stops without committing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tierflow_events::output::OUTPUT_SCHEMA_VERSION;
use tierflow_events::{
    Bytes, CampaignArm, CampaignOutcome, CampaignTriggered, ClickEvent, Contract, DeadLetter,
    DecodeError, ErrorClass, EventTime,
};
use tierflow_features::UserState;
use tierflow_model::{ModelHandle, ScoreError};
use tierflow_rules::{Attribution, RuleSet};
use tierflow_store::Loaded;
use tierflow_store::{BatchWrites, StateStore, StoreError, StoredClock, Versioned};
use tierflow_stream::{
    BoundedProducer, FailureClass, KafkaConfig, OutRecord, OutputHeaders, Refusal, StreamError,
    TxnFailure, transaction_failure,
};
use tokio::sync::{mpsc, watch};

use crate::campaigns::{self, Campaigns, Fired, Governance, Outcome};
use crate::config::{PipelineConfig, TopicsConfig};
use crate::history;
use crate::leases::{Claimed, LeaseLost, LeaseStore, Leases, Released};
use crate::monitor::DriftSlot;
use crate::process::{self, BatchCounts, Clocks, Input, Processed, Timers};
use crate::telemetry::{self, Health};

/// Why the pipeline stopped with an error. Nothing after the last committed batch was
/// committed; a restart replays from there.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Kafka(#[from] StreamError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("scoring: {0}")]
    Score(#[from] ScoreError),
    #[error(
        "{stage} kept failing for {secs} s ({reason}); stopping without committing the batch in flight (it will be replayed)"
    )]
    Stalled {
        stage: &'static str,
        secs: u64,
        reason: String,
    },
    #[error(
        "asked to stop while {stage} was failing ({reason}); the batch in flight was not committed and will be replayed"
    )]
    Interrupted { stage: &'static str, reason: String },
    #[error(
        "partition {partition} was taken over by member {holder} (this member lost its lease: a long pause, or the group moved on without it); stopping without committing"
    )]
    LeaseLost { partition: i32, holder: String },
    #[error(
        "the broker refused this client: {0}; check the credentials (sasl.username, sasl.password or its secrets file) and the ACLs; stopping without committing"
    )]
    Refused(String),
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub batches: u64,
    pub records: u64,
    pub undecodable: u64,
    pub counts: BatchCounts,
    pub tier_changes: u64,
    pub user_scores: u64,
    pub dead_letters: u64,
    /// Users whose state was rolled back from an uncommitted transaction (transactional mode).
    pub rolled_back: u64,
}

impl RunSummary {
    fn merge(&mut self, other: &RunSummary) {
        self.batches += other.batches;
        self.records += other.records;
        self.undecodable += other.undecodable;
        self.add(&other.counts);
        self.tier_changes += other.tier_changes;
        self.user_scores += other.user_scores;
        self.dead_letters += other.dead_letters;
        self.rolled_back += other.rolled_back;
    }

    fn add(&mut self, counts: &BatchCounts) {
        let c = &mut self.counts;
        c.applied += counts.applied;
        c.duplicates += counts.duplicates;
        c.replayed += counts.replayed;
        c.too_late += counts.too_late;
        c.corrupt_state += counts.corrupt_state;
        c.scored += counts.scored;
    }
}

/// Everything one pipeline process needs.
#[derive(Debug)]
pub struct Pipeline<S> {
    pub config: PipelineConfig,
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub store: S,
    pub model: Arc<ModelHandle>,
    pub health: Arc<Health>,
    /// Campaign rules and their governor; `None` runs without campaigns.
    pub campaigns: Option<Campaigns>,
    /// Drift of the scored rows from the model's training profile (`Default::default()`;
    /// configured by `config.drift`).
    pub drift: DriftSlot,
}

/// The pipeline's store as the consumer context's lease store.
struct PipelineLeases<S>(Arc<Pipeline<S>>);

impl<S: StateStore + 'static> LeaseStore for PipelineLeases<S> {
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        names: &'a [String],
        ttl: Duration,
        force: bool,
    ) -> Claimed<'a> {
        Box::pin(self.0.store.claim_leases(owner, names, ttl, force))
    }

    fn release<'a>(&'a self, owner: &'a str, names: &'a [String]) -> Released<'a> {
        Box::pin(self.0.store.release_leases(owner, names))
    }
}

/// A received record, decoded (or not) as it arrived.
struct Received {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    event: Result<ClickEvent, DecodeError>,
}

/// Batches handed to the durable stage and batches it finished, so a revocation can wait
/// until everything read from the revoked partitions is durable and committed.
#[derive(Debug, Default)]
struct Inflight {
    state: Mutex<InflightState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct InflightState {
    /// Sequence number of the last batch handed over.
    sent: u64,
    /// Sequence number of the last batch whose outputs, state and commit are done.
    durable: u64,
    /// The durable stage ended; nobody will finish anything any more.
    closed: bool,
    /// Next offset of each partition after the last durable batch (what was committed).
    committed: BTreeMap<i32, i64>,
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, InflightState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Numbers the next batch.
    fn next(&self) -> u64 {
        let mut state = self.lock();
        state.sent += 1;
        state.sent
    }

    fn durable(&self) -> u64 {
        self.lock().durable
    }

    fn mark_durable(&self, seq: u64, ends: &BTreeMap<i32, i64>) {
        let mut state = self.lock();
        state.durable = seq;
        for (partition, last) in ends {
            state.committed.insert(*partition, last + 1);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// The committed positions of `partitions` (forgetting them: they are being revoked).
    fn take_committed(&self, partitions: &[i32]) -> Vec<(i32, i64)> {
        let mut state = self.lock();
        partitions
            .iter()
            .filter_map(|p| state.committed.remove(p).map(|o| (*p, o)))
            .collect()
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Blocks until every batch handed over is durable (or the stage ended, or `timeout`).
    fn wait_drained(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.durable < s.sent && !s.closed)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.durable >= state.sent
    }

    fn idle(&self) -> bool {
        let state = self.lock();
        state.durable >= state.sent || state.closed
    }
}

/// The consumer's view of rebalances and statistics.
struct GroupContext {
    health: Arc<Health>,
    /// Bumped by every assignment and revocation: the loader re-reads partition clocks.
    generation: std::sync::atomic::AtomicU64,
    /// Each assigned partition's high watermark, from librdkafka's statistics (every 5 s;
    /// cleared by a rebalance): a quiet partition read up to it has nothing left to read.
    high: Mutex<BTreeMap<i32, i64>>,
    /// Partitions revoked since the collector last looked.
    revoked: Mutex<Vec<i32>>,
    assigned: Mutex<BTreeSet<i32>>,
    /// Partitions that delivered a record since they were assigned.
    resumed: Mutex<BTreeSet<i32>>,
    inflight: Arc<Inflight>,
    /// How long a revocation waits for batches in flight to become durable.
    drain_timeout: Duration,
    /// This member's partition leases (handover between owners).
    leases: Arc<Leases>,
    topic: String,
    /// When a consumer error was last logged, and how many were not logged since.
    error_log: Mutex<(Option<Instant>, u64)>,
    /// Set when the broker refused our login or permissions: retrying cannot fix that.
    refused: Refusal,
}

impl GroupContext {
    /// Logs a consumer error: the first at once, then at most one line per 10 s with the
    /// count in between (a broker outage raises one every poll). Always counted.
    fn consumer_error(&self, error: &KafkaError) {
        metrics::counter!(telemetry::CONSUMER_ERRORS).increment(1);
        self.refused.note(error, "");
        let mut log = self
            .error_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, skipped) = &mut *log;
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            *skipped += 1;
            return;
        }
        tracing::warn!(%error, since_last_logged = *skipped, "consumer error");
        *last = Some(Instant::now());
        *skipped = 0;
    }

    /// Called before partitions are taken away: the batches in flight hold their records,
    /// so wait until those are durable and their offsets committed. The next owner then
    /// starts exactly after them instead of replaying them.
    fn drain_before_revoke(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) -> bool {
        let started = Instant::now();
        let mut drained = true;
        if !self.inflight.idle() {
            let wait = || self.inflight.wait_drained(self.drain_timeout);
            // The callback runs on the task polling the consumer; on a multi-threaded
            // runtime `block_in_place` lets the durable stage progress on the other workers.
            drained = match tokio::runtime::Handle::try_current() {
                Ok(handle)
                    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
                {
                    tokio::task::block_in_place(wait)
                }
                Ok(_) => false,
                Err(_) => wait(),
            };
            if !drained {
                tracing::warn!(
                    waited = ?started.elapsed(),
                    "batches in flight were not durable before the revocation; the next owner replays them (idempotently)"
                );
            }
        }
        // The durable stage commits asynchronously; a commit still on its way when the
        // group moves to the next generation is refused. Commit the revoked partitions'
        // positions once more, synchronously, while this member still owns them.
        let positions = self.inflight.take_committed(partitions);
        if positions.is_empty() {
            return drained;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &positions {
            if let Err(e) =
                list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(error = %e, partition, "cannot add an offset to commit");
            }
        }
        let commit = || consumer.commit(&list, CommitMode::Sync);
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(commit)
            }
            _ => commit(),
        };
        match result {
            Ok(()) => {
                tracing::info!(?positions, waited = ?started.elapsed(), "committed the revoked partitions' positions")
            }
            Err(e) => {
                metrics::counter!(telemetry::COMMIT_FAILURES, "reason" => commit_reason(&e))
                    .increment(1);
                tracing::warn!(error = %e, "commit before the revocation failed; the next owner replays the last batches (idempotently)");
            }
        }
        drop(list);
        drained
    }
}

/// Runs `work` to completion from a rebalance callback (which is synchronous, called on
/// the task polling the consumer): on a multi-threaded runtime `block_in_place` lets the
/// other workers go on meanwhile. `None` where that is impossible (no such runtime).
fn block_on_callback<T>(work: impl Future<Output = T>) -> Option<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Some(tokio::task::block_in_place(|| handle.block_on(work)))
        }
        _ => {
            tracing::warn!(
                "not on a multi-threaded tokio runtime: partition leases are not handed over in the rebalance callback"
            );
            None
        }
    }
}

impl ClientContext for GroupContext {
    /// librdkafka's own log, forwarded to tracing (target `librdkafka`). A failed
    /// asynchronous commit is reported only here: with the events API that rdkafka uses there
    /// is no commit callback for manual asynchronous commits, so librdkafka logs it under
    /// `COMMITFAIL`, and it is counted from that.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "COMMITFAIL" {
            let lower = message.to_ascii_lowercase();
            let reason = if lower.contains("rebalance in progress") {
                "rebalance"
            } else if lower.contains("generation") || lower.contains("member id") {
                "generation"
            } else {
                "other"
            };
            metrics::counter!(telemetry::COMMIT_FAILURES, "reason" => reason).increment(1);
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    /// librdkafka's client-level errors (connections, logins): logged like consumer errors,
    /// and a refused login stops the run.
    fn error(&self, error: KafkaError, reason: &str) {
        if self.refused.note(&error, reason) {
            tracing::error!(%error, reason, "the broker refused this client");
        } else {
            self.consumer_error(&error);
            tracing::debug!(%error, reason, "librdkafka error");
        }
    }

    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            if *name == self.topic {
                let mut high = self.high.lock().expect("high lock");
                for (id, partition) in &topic.partitions {
                    if *id >= 0 && partition.hi_offset >= 0 {
                        high.insert(*id, partition.hi_offset);
                    }
                }
            }
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.consumer_lag >= 0 {
                    metrics::gauge!(telemetry::CONSUMER_LAG, "topic" => name.clone(), "partition" => id.to_string())
                        .set(partition.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            // Before the consumer fetches the committed offsets: wait until the previous
            // owners have stored and committed their last batches and let go.
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            block_on_callback(self.leases.acquire(&partitions));
        }
        if let Rebalance::Revoke(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?partitions, "partitions revoked");
            let drained = self.drain_before_revoke(consumer, &partitions);
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.high.lock().expect("high lock").clear();
            block_on_callback(self.leases.release(&partitions, drained));
            let mut assigned = self.assigned.lock().expect("assigned lock");
            for p in &partitions {
                assigned.remove(p);
            }
            metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(assigned.len() as f64);
            self.revoked
                .lock()
                .expect("revoked lock")
                .extend(partitions);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?partitions, "partitions assigned");
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.high.lock().expect("high lock").clear();
                let mut assigned = self.assigned.lock().expect("assigned lock");
                assigned.extend(partitions);
                metrics::gauge!(telemetry::ASSIGNED_PARTITIONS).set(assigned.len() as f64);
                self.health.set_joined(true);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// A failure inside a stage: try again, or stop.
enum Failure {
    Retriable(String),
    Fatal(PipelineError),
}

impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Self {
        match e.class() {
            FailureClass::Fatal => Self::Fatal(e.into()),
            // A record the broker refuses (too large) is not ours to drop silently; retrying
            // will not help either, so it is fatal for the batch.
            FailureClass::Poison => Self::Fatal(e.into()),
            FailureClass::Retriable => Self::Retriable(e.to_string()),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        if e.is_retriable() {
            Self::Retriable(e.to_string())
        } else {
            Self::Fatal(e.into())
        }
    }
}

/// A batch ready to be made durable: its outputs encoded, its new states, its offsets.
struct Ready {
    seq: u64,
    started: Instant,
    records: usize,
    encoded: Encoded,
    /// The batch's new states; shared with the loader, which reads them instead of Redis
    /// for users of a later batch while this one is not stored yet.
    states: Arc<HashMap<String, UserState>>,
    /// Latest-score records, stored beside the states.
    latest: Vec<(String, Vec<u8>)>,
    /// Last offset of each partition in the batch (none: a batch of timers only).
    ends: BTreeMap<i32, i64>,
    /// Every partition the batch writes for (its records' and its timers'): this member
    /// must still hold their leases.
    partitions: BTreeSet<i32>,
    /// Timer index entries and partition clocks, stored with the states.
    due: Arc<DueEntries>,
    clocks: Vec<(i32, StoredClock)>,
    /// `(user, entry)` for the users' histories, stored with the states.
    history: Vec<(String, Vec<u8>)>,
    /// Event time of every applied input, for the event-to-output latency.
    event_ms: Vec<i64>,
    /// What this batch adds to the run's totals once durable.
    totals: RunSummary,
}

/// Timer index entries of a batch: `(partition, user, next deadline ms)`.
type DueEntries = Vec<(i32, String, Option<i64>)>;

/// New states (and timer index entries) of batches not yet stored, newest last.
#[derive(Default)]
struct Unstored {
    batches: VecDeque<(u64, Arc<HashMap<String, UserState>>)>,
    due: VecDeque<(u64, Arc<DueEntries>)>,
}

impl Unstored {
    /// Forgets batches the durable stage has stored (Redis has them now).
    fn prune(&mut self, durable: u64) {
        while self.batches.front().is_some_and(|(seq, _)| *seq <= durable) {
            self.batches.pop_front();
        }
        while self.due.front().is_some_and(|(seq, _)| *seq <= durable) {
            self.due.pop_front();
        }
    }

    /// Users of `partition` whose newest unstored timer deadline is at or before `up_to`
    /// (Redis's index does not have them yet).
    fn due(&self, partition: i32, up_to: i64) -> Vec<String> {
        let mut newest: HashMap<&str, Option<i64>> = HashMap::new();
        for (_, entries) in &self.due {
            for (p, user, at) in entries.iter() {
                if *p == partition {
                    newest.insert(user.as_str(), *at);
                }
            }
        }
        newest
            .into_iter()
            .filter(|(_, at)| at.is_some_and(|at| at <= up_to))
            .map(|(user, _)| user.to_owned())
            .collect()
    }

    /// The newest unstored state of `user`.
    fn get(&self, user: &str) -> Option<&UserState> {
        self.batches
            .iter()
            .rev()
            .find_map(|(_, states)| states.get(user))
    }
}

/// Most users loaded for timers per partition per batch; the rest come with the next.
const DUE_USERS_PER_PARTITION: usize = 10_000;
/// How often an idle loader looks for timers that came due.
const TIMER_TICK: Duration = Duration::from_secs(1);

/// What the loader task keeps between batches.
#[derive(Default)]
struct Loader {
    unstored: Unstored,
    /// Campaign clocks of the partitions placed since the last assignment change.
    clocks: Clocks,
    /// Partitions whose clock is placed (from the store or from the first record read).
    placed: BTreeSet<i32>,
    /// The assignment generation `placed` belongs to.
    generation: u64,
    /// When each partition last delivered a record (or was placed).
    last_record: BTreeMap<i32, Instant>,
    /// The next offset of each partition, as far as this member knows.
    next_offset: BTreeMap<i32, i64>,
    last_tick: Option<Instant>,
}

impl Loader {
    /// After a rebalance, clocks are placed afresh: another member may have moved them.
    fn sync(&mut self, consumer: &GroupConsumer) {
        let generation = consumer
            .context()
            .generation
            .load(std::sync::atomic::Ordering::SeqCst);
        if generation != self.generation {
            self.generation = generation;
            self.clocks = Clocks::default();
            self.placed.clear();
            self.last_record.clear();
            self.next_offset.clear();
        }
    }
}

impl<S: StateStore + 'static> Pipeline<S> {
    /// Runs until `shutdown` turns true (the batches in flight are finished and committed)
    /// or a fatal error.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<RunSummary, PipelineError> {
        self.config.validate().map_err(PipelineError::Config)?;
        let this = Arc::new(self);
        let leases = Arc::new(Leases::new(
            Box::new(PipelineLeases(Arc::clone(&this))),
            &this.config.group_id,
            &this.topics.clickstream,
            Duration::from_millis(this.config.partition_lease_ms),
            // A live previous owner lets go after its drain (bounded by max_stall_secs); a
            // dead one's lease runs out.
            Duration::from_secs(this.config.max_stall_secs)
                + Duration::from_millis(this.config.partition_lease_ms),
            shutdown.clone(),
        ));
        let (stop_renewing, renewing) = watch::channel(false);
        let renewal = tokio::spawn(Arc::clone(&leases).keep_renewed(renewing));
        let result = Self::run_member(this, Arc::clone(&leases), shutdown).await;
        let _ = stop_renewing.send(true);
        let _ = renewal.await;
        result
    }

    async fn run_member(
        this: Arc<Self>,
        leases: Arc<Leases>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, PipelineError> {
        let inflight = Arc::new(Inflight::default());
        let context = GroupContext {
            health: Arc::clone(&this.health),
            generation: std::sync::atomic::AtomicU64::new(0),
            high: Mutex::new(BTreeMap::new()),
            revoked: Mutex::new(Vec::new()),
            assigned: Mutex::new(BTreeSet::new()),
            resumed: Mutex::new(BTreeSet::new()),
            inflight: Arc::clone(&inflight),
            drain_timeout: Duration::from_secs(this.config.max_stall_secs),
            leases,
            topic: this.topics.clickstream.clone(),
            error_log: Mutex::new((None, 0)),
            refused: Refusal::default(),
        };
        let mut consumer_config = this.kafka.consumer_config(&this.config.group_id);
        consumer_config
            .set(
                "queued.max.messages.kbytes",
                this.config.consumer_queue_kbytes.to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                this.config.fetch_wait_max_ms.to_string(),
            )
            .set("statistics.interval.ms", "5000");
        // Pass-through properties win over ours, as everywhere.
        for (key, value) in &this.kafka.properties {
            consumer_config.set(key, value);
        }
        let consumer: GroupConsumer = consumer_config
            .create_with_context(context)
            .map_err(|e| StreamError::Config(format!("creating the consumer: {e}")))?;
        consumer
            .subscribe(&[&this.topics.clickstream])
            .map_err(|e| StreamError::Config(format!("subscribing: {e}")))?;
        let producer = match &this.config.transactional_id {
            None => BoundedProducer::new(&this.kafka, this.config.max_in_flight)?,
            Some(id) => tokio::task::block_in_place(|| {
                BoundedProducer::transactional(
                    &this.kafka,
                    this.config.max_in_flight,
                    id,
                    Duration::from_millis(this.config.transaction_timeout_ms),
                )
            })?,
        };
        metrics::gauge!(telemetry::MODEL_INFO, "version" => this.model.version()).set(1.0);
        tracing::info!(
            group = %this.config.group_id,
            topic = %this.topics.clickstream,
            model = %this.model.version(),
            transactional = this.config.transactional_id.is_some(),
            "pipeline started"
        );

        let consumer = Arc::new(consumer);
        let result = if this.config.transactional_id.is_some() {
            this.run_transactional(&consumer, producer, shutdown).await
        } else {
            Arc::clone(&this)
                .run_pipelined(&consumer, producer, inflight, shutdown)
                .await
        };
        consumer.unsubscribe();
        drop(consumer);
        this.health.set_joined(false);
        match &result {
            Ok(summary) => tracing::info!(?summary, "pipeline stopped"),
            Err(e) => tracing::error!(error = %e, "pipeline stopped"),
        }
        result
    }

    /// One batch at a time, each in one Kafka transaction.
    async fn run_transactional(
        &self,
        consumer: &GroupConsumer,
        mut producer: BoundedProducer,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, PipelineError> {
        let mut summary = RunSummary::default();
        let mut clocks = Clocks::default();
        while !*shutdown.borrow() {
            let batch = self.collect(consumer, &mut shutdown).await;
            if let Some(reason) = consumer.context().refused.get() {
                return Err(PipelineError::Refused(reason));
            }
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            let decoded = self.decode(&batch, &mut summary);
            self.handle_transactional(
                consumer,
                &mut producer,
                &batch,
                decoded,
                &mut summary,
                &mut clocks,
                &shutdown,
                started,
            )
            .await?;
        }
        Ok(summary)
    }

    /// Two stages joined by a one-batch channel: this task collects, loads and scores batch
    /// N+1 while the durable stage produces, stores and commits batch N. Users of batch N+1
    /// that batch N changed are taken from batch N's new states, not from Redis, until
    /// batch N is stored. The durable stage works strictly in order, so offsets are still
    /// committed only after everything before them is durable.
    async fn run_pipelined(
        self: Arc<Self>,
        consumer: &Arc<GroupConsumer>,
        producer: BoundedProducer,
        inflight: Arc<Inflight>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, PipelineError> {
        let (to_durable, from_loader) = mpsc::channel::<Ready>(1);
        let mut durable = tokio::spawn(Arc::clone(&self).durable_stage(
            Arc::clone(consumer),
            producer,
            from_loader,
            Arc::clone(&inflight),
            shutdown.clone(),
        ));
        let mut loader = Loader::default();
        let mut undecodable = 0;
        let mut failed = None;
        while !*shutdown.borrow() && !durable.is_finished() {
            let batch = self.collect(consumer, &mut shutdown).await;
            if let Some(reason) = consumer.context().refused.get() {
                failed = Some(PipelineError::Refused(reason));
                break;
            }
            if batch.is_empty() {
                // Quiet: look for timers that came due, at most once per tick.
                if self.campaigns.is_none()
                    || loader.last_tick.is_some_and(|t| t.elapsed() < TIMER_TICK)
                {
                    continue;
                }
                loader.last_tick = Some(Instant::now());
            }
            match self
                .prepare(
                    consumer,
                    batch,
                    &mut loader,
                    &inflight,
                    &mut undecodable,
                    &shutdown,
                )
                .await
            {
                Ok(None) => {}
                Ok(Some(ready)) => {
                    if to_durable.send(ready).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Let the durable stage finish what it holds, then report.
        drop(to_durable);
        let durable_result = match (&mut durable).await {
            Ok(result) => result,
            Err(e) => Err(PipelineError::Config(format!(
                "the durable stage panicked: {e}"
            ))),
        };
        inflight.close();
        match (failed, durable_result) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(mut summary)) => {
                summary.undecodable += undecodable;
                Ok(summary)
            }
        }
    }

    /// Splits a batch into decoded inputs and dead letters for what did not decode.
    fn decode(&self, batch: &[Received], summary: &mut RunSummary) -> Decoded {
        let topic = self.topics.clickstream.as_str();
        metrics::counter!(telemetry::EVENTS_IN, "topic" => topic.to_owned())
            .increment(batch.len() as u64);
        metrics::histogram!(telemetry::BATCH_RECORDS).record(batch.len() as f64);
        let mut inputs: Vec<Input> = Vec::with_capacity(batch.len());
        let mut input_source: Vec<usize> = Vec::with_capacity(batch.len());
        let mut letters: Vec<DeadLetter> = Vec::new();
        let now = EventTime::now();
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        for (i, received) in batch.iter().enumerate() {
            let end = ends.entry(received.partition).or_insert(received.offset);
            *end = (*end).max(received.offset);
            match &received.event {
                Ok(event) => {
                    inputs.push(Input {
                        partition: received.partition,
                        offset: received.offset,
                        event: event.clone(),
                    });
                    input_source.push(i);
                }
                Err(error) => {
                    metrics::counter!(telemetry::DEAD_LETTERS, "reason" => error.kind.as_str())
                        .increment(1);
                    metrics::counter!(telemetry::OUTCOMES, "outcome" => "undecodable").increment(1);
                    summary.undecodable += 1;
                    letters.push(dead_letter(
                        topic,
                        received,
                        ErrorClass::Decode,
                        Some(error),
                        error.reason.clone(),
                        now,
                    ));
                }
            }
        }
        Decoded {
            inputs,
            input_source,
            letters,
            ends,
            now,
        }
    }

    /// Loads, applies, scores and decides one batch; encodes what the durable stage sends.
    /// An empty batch is a tick: timers of quiet users that came due (and the clocks of
    /// quiet partitions); `None` when there is nothing to do.
    async fn prepare(
        &self,
        consumer: &GroupConsumer,
        batch: Vec<Received>,
        loader: &mut Loader,
        inflight: &Inflight,
        undecodable: &mut u64,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Option<Ready>, PipelineError> {
        if batch.is_empty() && self.campaigns.is_none() {
            return Ok(None);
        }
        let started = Instant::now();
        let topic = self.topics.clickstream.as_str();
        let mut totals = RunSummary::default();
        let Decoded {
            inputs,
            input_source,
            mut letters,
            ends,
            now,
        } = self.decode(&batch, &mut totals);
        *undecodable += std::mem::take(&mut totals.undecodable);
        loader.unstored.prune(inflight.durable());

        // Campaign timers: place the partitions' clocks, find the users that come due.
        let slack_ms = self.config.timer_slack_ms as i64;
        let mut due_users: Vec<(String, i32)> = Vec::new();
        let mut clock_before: BTreeMap<i32, Option<i64>> = BTreeMap::new();
        let mut first_offset: BTreeMap<i32, i64> = BTreeMap::new();
        loader.sync(consumer);
        for record in &batch {
            let first = first_offset
                .entry(record.partition)
                .or_insert(record.offset);
            *first = (*first).min(record.offset);
            loader.last_record.insert(record.partition, Instant::now());
        }
        if self.campaigns.is_some() {
            let up_to = if batch.is_empty() {
                let up_to = self
                    .quiet_partitions(consumer, loader, &mut clock_before, shutdown)
                    .await?;
                if up_to.is_empty() {
                    return Ok(None);
                }
                up_to
            } else {
                self.place_clocks(loader, &first_offset, shutdown).await?;
                let mut end: BTreeMap<i32, Option<i64>> = BTreeMap::new();
                for partition in first_offset.keys() {
                    let clock = loader.clocks.get(*partition);
                    clock_before.insert(*partition, clock);
                    end.insert(*partition, clock);
                }
                for input in &inputs {
                    let clock = end.entry(input.partition).or_default();
                    *clock = Some(clock.map_or(input.event.ts.unix_millis(), |c| {
                        c.max(input.event.ts.unix_millis())
                    }));
                }
                end.into_iter()
                    .filter_map(|(p, c)| c.map(|c| (p, c.saturating_sub(slack_ms))))
                    .collect()
            };
            let (batch_users, _) = process::users_of(&inputs);
            let batch_users: BTreeSet<&str> = batch_users.into_iter().collect();
            let mut retry = Retry::new(self, "load", shutdown);
            let from_index = loop {
                let result = self
                    .store
                    .due_users(topic, &up_to, DUE_USERS_PER_PARTITION)
                    .await;
                if let Some(users) = retry.check(result.map_err(Failure::from)).await? {
                    break users;
                }
            };
            let mut seen: BTreeSet<String> = BTreeSet::new();
            for ((partition, up_to), users) in up_to.iter().zip(from_index) {
                for user in users
                    .into_iter()
                    .chain(loader.unstored.due(*partition, *up_to))
                {
                    if !batch_users.contains(user.as_str()) && seen.insert(user.clone()) {
                        due_users.push((user, *partition));
                    }
                }
            }
            if batch.is_empty() && due_users.is_empty() && clock_before.is_empty() {
                return Ok(None);
            }
        }

        // Load the batch's users (and the due ones) once: from batches not stored yet, else
        // from Redis.
        let (mut users, _) = process::users_of(&inputs);
        users.extend(due_users.iter().map(|(u, _)| u.as_str()));
        let mut loaded: Vec<Option<Loaded>> = users
            .iter()
            .map(|user| {
                loader
                    .unstored
                    .get(user)
                    .map(|state| Ok(Some(state.clone())))
            })
            .collect();
        let missing: Vec<&str> = users
            .iter()
            .zip(&loaded)
            .filter(|(_, l)| l.is_none())
            .map(|(user, _)| *user)
            .collect();
        if !missing.is_empty() {
            let mut retry = Retry::new(self, "load", shutdown);
            let mut from_store = loop {
                let t = Instant::now();
                let result = self.store.load(&missing).await;
                metrics::histogram!(telemetry::REDIS_SECONDS, "op" => "load")
                    .record(t.elapsed().as_secs_f64());
                if let Some(states) = retry.check(result.map_err(Failure::from)).await? {
                    break states.into_iter();
                }
            };
            for slot in loaded.iter_mut().filter(|l| l.is_none()) {
                *slot = from_store.next();
            }
        }
        let loaded: Vec<Loaded> = loaded.into_iter().map(|l| l.unwrap_or(Ok(None))).collect();
        drop(users);

        // Apply, score, decide.
        let timers = Timers {
            clocks: &mut loader.clocks,
            due_users: &due_users,
        };
        let (processed, triggers) = self.decide(&inputs, loaded, now, timers, shutdown).await?;
        for rejected in &processed.rejected {
            let received = &batch[input_source[rejected.input]];
            let reason = match rejected.class {
                ErrorClass::TooLate => "too_late",
                _ => "corrupt_state",
            };
            metrics::counter!(telemetry::DEAD_LETTERS, "reason" => reason).increment(1);
            letters.push(dead_letter(
                topic,
                received,
                rejected.class,
                None,
                rejected.reason.clone(),
                now,
            ));
        }
        record_outcomes(&processed);

        let history = if self.config.user_history {
            history::entries(
                &processed.tier_changes,
                &triggers.sent,
                &triggers.held,
                &triggers.outcomes,
            )
        } else {
            Vec::new()
        };
        let encoded = Encoded::new(&processed, &letters, triggers, self.config.output_encoding);
        let latest = processed
            .latest
            .iter()
            .map(|s| {
                (
                    s.user_id.clone(),
                    tierflow_events::encode(s, tierflow_events::Encoding::Json),
                )
            })
            .collect();
        totals.records = batch.len() as u64;
        totals.batches = u64::from(!batch.is_empty());
        totals.add(&processed.counts);
        totals.tier_changes = processed.tier_changes.len() as u64;
        totals.user_scores = processed.user_scores.len() as u64;
        totals.dead_letters = letters.len() as u64;
        let event_ms = inputs.iter().map(|i| i.event.ts.unix_millis()).collect();
        let states: Arc<HashMap<String, UserState>> =
            Arc::new(processed.states.into_iter().collect());
        let due = Arc::new(processed.due);
        let clocks: Vec<(i32, StoredClock)> = clock_before
            .iter()
            .filter_map(|(partition, before)| {
                let after = loader.clocks.get(*partition)?;
                let next_offset = ends
                    .get(partition)
                    .map(|last| last + 1)
                    .or_else(|| loader.next_offset.get(partition).copied())
                    .unwrap_or(0);
                Some((
                    *partition,
                    StoredClock {
                        before_ms: before.unwrap_or(i64::MIN),
                        first_offset: first_offset.get(partition).copied().unwrap_or(next_offset),
                        after_ms: after,
                        next_offset,
                    },
                ))
            })
            .collect();
        for (partition, last) in &ends {
            loader.next_offset.insert(*partition, last + 1);
        }
        let partitions: BTreeSet<i32> = ends
            .keys()
            .copied()
            .chain(due.iter().map(|(p, _, _)| *p))
            .chain(clocks.iter().map(|(p, _)| *p))
            .collect();
        let seq = inflight.next();
        loader
            .unstored
            .batches
            .push_back((seq, Arc::clone(&states)));
        loader.unstored.due.push_back((seq, Arc::clone(&due)));
        Ok(Some(Ready {
            seq,
            started,
            records: batch.len(),
            encoded,
            states,
            latest,
            ends,
            partitions,
            due,
            clocks,
            history,
            event_ms,
            totals,
        }))
    }

    /// Places the clocks of the batch's partitions not placed since the last rebalance:
    /// the stored clock as of where this batch starts reading (one round trip for all).
    async fn place_clocks(
        &self,
        loader: &mut Loader,
        first_offset: &BTreeMap<i32, i64>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        let unplaced: Vec<i32> = first_offset
            .keys()
            .copied()
            .filter(|p| !loader.placed.contains(p))
            .collect();
        if unplaced.is_empty() {
            return Ok(());
        }
        let stored = self.stored_clocks(&unplaced, shutdown).await?;
        for (partition, stored) in unplaced.into_iter().zip(stored) {
            if let Some(stored) = stored {
                loader
                    .clocks
                    .advance(partition, stored.at(first_offset[&partition]));
            }
            loader.placed.insert(partition);
        }
        Ok(())
    }

    async fn stored_clocks(
        &self,
        partitions: &[i32],
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<Option<StoredClock>>, PipelineError> {
        let mut retry = Retry::new(self, "load", shutdown);
        loop {
            let result = self
                .store
                .clocks(&self.topics.clickstream, partitions)
                .await;
            if let Some(clocks) = retry.check(result.map_err(Failure::from)).await? {
                return Ok(clocks);
            }
        }
    }

    /// A tick on a quiet loader: the assigned partitions that have been read to their end
    /// get their stored clock if not placed yet, and, after `idle_partition_secs` without a
    /// record, follow the wall clock (`clock_before` gets the partitions whose clock moved).
    /// Returns each placed partition's timer horizon.
    async fn quiet_partitions(
        &self,
        consumer: &GroupConsumer,
        loader: &mut Loader,
        clock_before: &mut BTreeMap<i32, Option<i64>>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<(i32, i64)>, PipelineError> {
        let assigned: Vec<i32> = consumer
            .context()
            .assigned
            .lock()
            .expect("assigned lock")
            .iter()
            .copied()
            .collect();
        let positions: BTreeMap<i32, i64> = consumer
            .position()
            .map(|list| {
                list.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Partitions not placed since the last rebalance: their stored clocks, which also
        // say where the stored batches ended.
        let unplaced: Vec<i32> = assigned
            .iter()
            .copied()
            .filter(|p| !loader.placed.contains(p))
            .collect();
        let stored: BTreeMap<i32, Option<StoredClock>> = if unplaced.is_empty() {
            BTreeMap::new()
        } else {
            let clocks = self.stored_clocks(&unplaced, shutdown).await?;
            unplaced.into_iter().zip(clocks).collect()
        };
        let caught_up: BTreeSet<i32> = assigned
            .iter()
            .copied()
            .filter(|p| {
                let position = positions
                    .get(p)
                    .or_else(|| loader.next_offset.get(p))
                    .copied()
                    .or_else(|| stored.get(p).copied().flatten().map(|c| c.next_offset));
                let high = consumer
                    .context()
                    .high
                    .lock()
                    .expect("high lock")
                    .get(p)
                    .copied()
                    .filter(|high| *high >= 0);
                match (position, high) {
                    (Some(position), Some(high)) => position >= high,
                    // Nothing ever written to it, nothing stored for it.
                    (None, Some(0)) => true,
                    _ => false,
                }
            })
            .collect();
        // Read to its end, so nothing is to be re-read: the clock after the stored batch.
        for (partition, stored) in stored {
            if !caught_up.contains(&partition) {
                continue;
            }
            if let Some(stored) = stored {
                loader.clocks.advance(partition, stored.after_ms);
                loader
                    .next_offset
                    .entry(partition)
                    .or_insert(stored.next_offset);
            }
            loader.placed.insert(partition);
            loader
                .last_record
                .entry(partition)
                .or_insert_with(Instant::now);
        }
        if self.config.idle_partition_secs > 0 {
            let idle = Duration::from_secs(self.config.idle_partition_secs);
            let wall = EventTime::now().unix_millis();
            for partition in &caught_up {
                let quiet = loader
                    .last_record
                    .get(partition)
                    .is_some_and(|at| at.elapsed() >= idle);
                let before = loader.clocks.get(*partition);
                if quiet && loader.placed.contains(partition) && before.is_none_or(|c| c < wall) {
                    loader.clocks.advance(*partition, wall);
                    clock_before.insert(*partition, before);
                }
            }
        }
        let slack_ms = self.config.timer_slack_ms as i64;
        Ok(loader
            .placed
            .iter()
            .filter(|p| assigned.contains(p))
            .filter_map(|p| {
                loader
                    .clocks
                    .get(*p)
                    .map(|c| (*p, c.saturating_sub(slack_ms)))
            })
            .collect())
    }

    /// Makes batches durable, strictly in order: outputs produced and acknowledged, then
    /// states and latest scores stored, then offsets committed.
    async fn durable_stage(
        self: Arc<Self>,
        consumer: Arc<GroupConsumer>,
        mut producer: BoundedProducer,
        mut batches: mpsc::Receiver<Ready>,
        inflight: Arc<Inflight>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, PipelineError> {
        let mut summary = RunSummary::default();
        let result = async {
            while let Some(ready) = batches.recv().await {
                self.make_durable(&consumer, &mut producer, &ready, &shutdown)
                    .await?;
                inflight.mark_durable(ready.seq, &ready.ends);
                summary.merge(&ready.totals);
                self.health.batch_done(ready.records);
            }
            Ok(())
        }
        .await;
        inflight.close();
        result.map(|()| summary)
    }

    async fn make_durable(
        &self,
        consumer: &GroupConsumer,
        producer: &mut BoundedProducer,
        ready: &Ready,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        let topic = self.topics.clickstream.as_str();
        let slow = Duration::from_secs(self.config.slow_stage_secs.max(1));

        // This member must still own the batch's partitions.
        self.ensure_leases(consumer, ready.partitions.iter().copied(), shutdown)
            .await?;
        // Outputs first; every one acknowledged before anything is stored or committed.
        let t = Instant::now();
        let mut retry = Retry::new(self, "produce", shutdown);
        loop {
            let result = watch_slow(
                &self.health,
                "produce",
                slow,
                ready.encoded.send(producer, &self.topics),
            )
            .await;
            if result.is_err() {
                let failed = producer.drain().await;
                tracing::debug!(failed, "drained the producer after a failed delivery");
            }
            if retry.check(result.map_err(Failure::from)).await?.is_some() {
                break;
            }
        }
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "produce")
            .record(t.elapsed().as_secs_f64());
        let acked = EventTime::now().unix_millis();
        let latency = metrics::histogram!(telemetry::EVENT_TO_OUTPUT_SECONDS);
        for ms in &ready.event_ms {
            latency.record((acked - ms).max(0) as f64 / 1000.0);
        }
        ready.encoded.count_delivered(&self.topics);

        // Then the states, with the latest scores beside them, if the partitions are still
        // ours (a zombie's outputs may be duplicates readers drop by key; its states would
        // overwrite the new owner's).
        self.ensure_leases(consumer, ready.partitions.iter().copied(), shutdown)
            .await?;
        let t = Instant::now();
        let timers = BatchWrites {
            index: topic,
            due: ready
                .due
                .iter()
                .map(|(p, user, at)| (*p, user.as_str(), *at))
                .collect(),
            clocks: ready.clocks.clone(),
            history: ready
                .history
                .iter()
                .map(|(user, entry)| (user.as_str(), entry.as_slice()))
                .collect(),
        };
        let latest: Vec<(&str, &[u8])> = ready
            .latest
            .iter()
            .map(|(u, v)| (u.as_str(), v.as_slice()))
            .collect();
        let states: Vec<(&str, &UserState)> =
            ready.states.iter().map(|(u, s)| (u.as_str(), s)).collect();
        let mut retry = Retry::new(self, "store", shutdown);
        loop {
            let t = Instant::now();
            let result = watch_slow(
                &self.health,
                "store",
                slow,
                self.store.store_batch(&states, &latest, &timers),
            )
            .await;
            metrics::histogram!(telemetry::REDIS_SECONDS, "op" => "store")
                .record(t.elapsed().as_secs_f64());
            if retry.check(result.map_err(Failure::from)).await?.is_some() {
                break;
            }
        }
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "store")
            .record(t.elapsed().as_secs_f64());

        // Finally the offsets: the next record of each partition.
        if ready.ends.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let mut list = TopicPartitionList::new();
        for (partition, last) in &ready.ends {
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(last + 1)) {
                tracing::warn!(error = %e, partition, "cannot add an offset to commit");
            }
        }
        tracing::debug!(ends = ?ready.ends, "committing");
        let mode = if *shutdown.borrow() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = consumer.commit(&list, mode) {
            // Not fatal: the batch is durable; an uncommitted batch is replayed idempotently.
            // (An asynchronous commit that the broker refuses later is counted in `log`.)
            metrics::counter!(telemetry::COMMIT_FAILURES, "reason" => commit_reason(&e))
                .increment(1);
            tracing::warn!(error = %e, "offset commit failed; the batch will be replayed after a restart or rebalance");
        }
        drop(list);
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "commit")
            .record(t.elapsed().as_secs_f64());
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "batch")
            .record(ready.started.elapsed().as_secs_f64());
        Ok(())
    }
}

impl<S: StateStore> Pipeline<S> {
    /// Checks (renewing if due) that this member still holds the leases of `partitions`;
    /// a store outage is retried like any other, a lease another member took is fatal.
    async fn ensure_leases(
        &self,
        consumer: &GroupConsumer,
        partitions: impl Iterator<Item = i32> + Clone,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        let leases = &consumer.context().leases;
        let mut retry = Retry::new(self, "lease", shutdown);
        loop {
            let result = match leases.ensure(partitions.clone()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(LeaseLost { partition, holder })) => {
                    Err(Failure::Fatal(PipelineError::LeaseLost {
                        partition,
                        holder,
                    }))
                }
                Err(e) => Err(Failure::from(e)),
            };
            if retry.check(result).await?.is_some() {
                return Ok(());
            }
        }
    }
}

/// Awaits `work`; if it takes longer than `slow` (a broker that stopped acknowledging, a
/// Redis that stopped answering), the stage counts as stalled until it completes, so
/// `/readyz` fails while deliveries wait out their timeout.
async fn watch_slow<T>(
    health: &Health,
    stage: &'static str,
    slow: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = tokio::time::sleep(slow) => {}
    }
    tracing::warn!(stage, after = ?slow, "stage is slow; reporting not ready until it completes");
    health.set_stalled(true);
    let done = work.await;
    health.set_stalled(false);
    tracing::info!(stage, "slow stage completed");
    done
}

impl<S: StateStore> Pipeline<S> {
    /// Applies, scores and runs the tier policy and the campaign rules (one snapshot of the
    /// rules for the whole batch), then governance: what both delivery modes do per batch.
    async fn decide(
        &self,
        inputs: &[Input],
        loaded: Vec<Loaded>,
        now: EventTime,
        timers: Timers<'_>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(Processed, Triggers), PipelineError> {
        let t = Instant::now();
        let scorer = self.model.current();
        let rules = self.campaigns.as_ref().map(Campaigns::rules);
        let mut processed = process::process(
            &scorer,
            &self.config,
            rules.as_deref(),
            inputs,
            loaded,
            now,
            timers,
        )?;
        metrics::histogram!(telemetry::SCORING_SECONDS).record(t.elapsed().as_secs_f64());
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "process")
            .record(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let rows = std::mem::take(&mut processed.rows);
        let scores = std::mem::take(&mut processed.scores);
        self.drift
            .observe(&self.config.drift, &scorer, &rows, &scores);
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "drift")
            .record(t.elapsed().as_secs_f64());
        let mut triggers = self
            .govern(&processed, rules.as_deref(), now, shutdown)
            .await?;
        if let Some(rules) = rules.as_deref() {
            // The triggers governance sent or held out become exposures in their users'
            // states (stored with this batch); the batch's purchases are credited to them.
            let exposures = triggers
                .sent
                .iter()
                .map(|t| campaigns::exposure(t, CampaignArm::Treated))
                .chain(
                    triggers
                        .held
                        .iter()
                        .map(|t| campaigns::exposure(t, CampaignArm::Control)),
                );
            let purchases = processed.purchases.iter().map(|i| &inputs[*i].event);
            triggers.outcomes =
                campaigns::attribute_batch(rules, &mut processed.states, exposures, purchases)
                    .iter()
                    .map(Attribution::to_outcome)
                    .collect();
        }
        Ok((processed, triggers))
    }

    /// Governance for the rules that fired in a batch (one Redis round trip, retried like
    /// any stage): the records to publish on `campaign_triggered` and on the control topic.
    /// A replay gets the earlier verdicts back by idempotency key, so it publishes the same.
    async fn govern(
        &self,
        processed: &Processed,
        rules: Option<&RuleSet>,
        now: EventTime,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Triggers, PipelineError> {
        let mut triggers = Triggers::default();
        let (Some(campaigns), Some(rules)) = (&self.campaigns, rules) else {
            return Ok(triggers);
        };
        if processed.fired.is_empty() {
            return Ok(triggers);
        }
        let t = Instant::now();
        let users = campaigns::by_user(&processed.fired);
        let mut requests = Vec::with_capacity(users.len());
        let mut asked: Vec<Vec<&Fired>> = Vec::with_capacity(users.len());
        for fired in &users {
            // Rules of campaigns retired by a reload are not asked about.
            let live: Vec<&Fired> = fired
                .iter()
                .copied()
                .filter(|f| rules.campaign(&f.candidate.campaign).is_some())
                .collect();
            let retired = fired.len() - live.len();
            if retired > 0 {
                metrics::counter!(telemetry::CAMPAIGN_DECISIONS, "campaign" => "retired", "outcome" => "retired")
                    .increment(retired as u64);
            }
            if let Some(request) = campaigns::govern_request(rules, &live) {
                requests.push(request);
                asked.push(live);
            }
        }
        let outcomes: Vec<Vec<Outcome>> = match &campaigns.governor {
            Governance::Redis(governor) => {
                let mut retry = Retry::new(self, "govern", shutdown);
                let verdicts = loop {
                    let result = governor.decide(&requests).await;
                    if let Some(verdicts) = retry.check(result.map_err(Failure::from)).await? {
                        break verdicts;
                    }
                };
                verdicts
                    .into_iter()
                    .map(|user| user.into_iter().map(Outcome::from).collect())
                    .collect()
            }
            Governance::Memory(ledger) => {
                let mut ledger = ledger
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                asked
                    .iter()
                    .map(|fired| campaigns::govern_offline(rules, &mut ledger, fired))
                    .collect()
            }
        };
        let version = processed.model_version.as_str();
        for (fired, outcomes) in asked.iter().zip(outcomes) {
            for (f, outcome) in fired.iter().zip(outcomes) {
                metrics::counter!(
                    telemetry::CAMPAIGN_DECISIONS,
                    "campaign" => f.candidate.campaign.clone(),
                    "outcome" => outcome.label()
                )
                .increment(1);
                match outcome {
                    Outcome::Sent => triggers.sent.push(campaigns::triggered(f, version, now)),
                    Outcome::Held => triggers.held.push(campaigns::triggered(f, version, now)),
                    Outcome::Suppressed(_) => {}
                }
            }
        }
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "govern")
            .record(t.elapsed().as_secs_f64());
        Ok(triggers)
    }

    /// Gathers up to `batch_max_events` records, or what arrived within `batch_max_wait_ms`
    /// of the first, or what there is when asked to stop. Records of partitions revoked
    /// meanwhile are dropped: nothing of them was applied, the next owner reads them again.
    async fn collect(
        &self,
        consumer: &GroupConsumer,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Vec<Received> {
        let started = Instant::now();
        let max_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let mut batch: Vec<Received> = Vec::new();
        let mut first_at: Option<Instant> = None;
        loop {
            let wait = match first_at {
                None => Duration::from_millis(200),
                Some(at) => match max_wait.checked_sub(at.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => break,
                },
            };
            let message = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                received = tokio::time::timeout(wait, consumer.recv()) => received,
            };
            match message {
                Err(_) => {
                    self.drop_revoked(consumer, &mut batch);
                    if first_at.is_none() {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    self.drop_revoked(consumer, &mut batch);
                    consumer.context().consumer_error(&e);
                    if matches!(e, KafkaError::Global(_) | KafkaError::MessageConsumption(_)) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Ok(Ok(message)) => {
                    // A revocation (and a new assignment) happens inside `recv`: what the
                    // batch holds from revoked partitions goes now, before this record,
                    // which was fetched under the new assignment and must stay.
                    self.drop_revoked(consumer, &mut batch);
                    if consumer
                        .context()
                        .resumed
                        .lock()
                        .expect("resumed lock")
                        .insert(message.partition())
                    {
                        tracing::info!(
                            partition = message.partition(),
                            offset = message.offset(),
                            "first record of an assigned partition"
                        );
                    }
                    let payload = message.payload().unwrap_or_default();
                    batch.push(Received {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: payload.to_vec(),
                        event: ClickEvent::from_json(payload).and_then(|event| {
                            process::check_event_time(
                                event,
                                message.timestamp().to_millis(),
                                self.config.max_event_ahead_secs as i64 * 1000,
                            )
                        }),
                    });
                    first_at.get_or_insert_with(Instant::now);
                    if batch.len() >= self.config.batch_max_events {
                        break;
                    }
                }
            }
        }
        self.drop_revoked(consumer, &mut batch);
        if !batch.is_empty() {
            metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "collect")
                .record(started.elapsed().as_secs_f64());
        }
        batch
    }

    fn drop_revoked(&self, consumer: &GroupConsumer, batch: &mut Vec<Received>) {
        let revoked: Vec<i32> =
            std::mem::take(&mut *consumer.context().revoked.lock().expect("revoked lock"));
        if revoked.is_empty() || batch.is_empty() {
            return;
        }
        let before = batch.len();
        batch.retain(|r| !revoked.contains(&r.partition));
        if batch.len() < before {
            tracing::info!(
                dropped = before - batch.len(),
                ?revoked,
                "dropped uncommitted records of revoked partitions; their next owner reads them again"
            );
        }
    }
}

/// A batch split into decoded inputs and dead letters for what did not decode.
struct Decoded {
    inputs: Vec<Input>,
    /// Index into the batch of each input.
    input_source: Vec<usize>,
    letters: Vec<DeadLetter>,
    /// Last offset of each partition in the batch.
    ends: BTreeMap<i32, i64>,
    now: EventTime,
}

/// Why one transactional attempt failed.
enum TxnError {
    /// Abort the transaction and redo the batch.
    Abort(String),
    Fatal(PipelineError),
}

impl From<StreamError> for TxnError {
    fn from(e: StreamError) -> Self {
        match e.class() {
            FailureClass::Fatal => Self::Fatal(e.into()),
            _ => Self::Abort(e.to_string()),
        }
    }
}

fn txn_error(context: &'static str, e: KafkaError) -> TxnError {
    match transaction_failure(&e) {
        TxnFailure::Fatal => TxnError::Fatal(StreamError::Kafka { context, source: e }.into()),
        TxnFailure::Abort | TxnFailure::Retriable => TxnError::Abort(format!("{context}: {e}")),
    }
}

impl<S: StateStore> Pipeline<S> {
    /// Exactly-once outputs: the batch's outputs and its consumer offsets go into one Kafka
    /// transaction. The state is stored (with an undo image: the state before the batch)
    /// inside the transaction, before its commit. If the transaction never commits — aborted
    /// here, or the process died and the next instance's `init_transactions` aborted it — the
    /// batch is read again from the committed offsets, and a stored state that already holds
    /// any of the batch's offsets is rolled back to its undo image first. So state is applied
    /// once and outputs are visible once to `read_committed` readers.
    #[allow(clippy::too_many_arguments)]
    async fn handle_transactional(
        &self,
        consumer: &GroupConsumer,
        producer: &mut BoundedProducer,
        batch: &[Received],
        decoded: Decoded,
        summary: &mut RunSummary,
        clocks: &mut Clocks,
        shutdown: &watch::Receiver<bool>,
        started: Instant,
    ) -> Result<(), PipelineError> {
        let topic = self.topics.clickstream.as_str();
        let timeout = Duration::from_millis(self.config.transaction_timeout_ms);
        let Decoded {
            inputs,
            input_source,
            letters: decode_letters,
            ends,
            now,
        } = decoded;
        let group = consumer.group_metadata().ok_or_else(|| {
            PipelineError::Config("transactional mode needs a consumer group".into())
        })?;
        let mut offsets = TopicPartitionList::new();
        for (partition, last) in &ends {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(last + 1))
                .map_err(|e| StreamError::Kafka {
                    context: "listing offsets",
                    source: e,
                })?;
        }
        let (users, slots) = process::users_of(&inputs);
        // The first offset of each partition each user has in this batch.
        let mut first: BTreeMap<(usize, i32), i64> = BTreeMap::new();
        for (input, slot) in inputs.iter().zip(&slots) {
            let entry = first
                .entry((*slot, input.partition))
                .or_insert(input.offset);
            *entry = (*entry).min(input.offset);
        }
        let mut attempts = Retry::new(self, "transaction", shutdown);
        loop {
            // Load with undo images; roll back what an uncommitted transaction stored.
            let mut retry = Retry::new(self, "load", shutdown);
            let versioned = loop {
                let t = Instant::now();
                let result = self.store.load_with_undo(&users).await;
                metrics::histogram!(telemetry::REDIS_SECONDS, "op" => "load")
                    .record(t.elapsed().as_secs_f64());
                if let Some(v) = retry.check(result.map_err(Failure::from)).await? {
                    break v;
                }
            };
            let mut rolled_back = 0u64;
            let loaded: Vec<tierflow_store::Loaded> = versioned
                .into_iter()
                .enumerate()
                .map(|(slot, v)| {
                    v.map(|v| {
                        v.and_then(|Versioned { state, undo }| {
                            let uncommitted = state.applied.iter().any(|(p, o)| {
                                first.get(&(slot, *p)).is_some_and(|start| o >= start)
                            });
                            match undo {
                                Some(previous) if uncommitted => {
                                    rolled_back += 1;
                                    previous
                                }
                                _ => Some(state),
                            }
                        })
                    })
                })
                .collect();
            if rolled_back > 0 {
                tracing::info!(
                    users = rolled_back,
                    "rolled back state stored by a transaction that never committed"
                );
                metrics::counter!(telemetry::ROLLED_BACK).increment(rolled_back);
                self.health.rolled_back(rolled_back);
                summary.rolled_back += rolled_back;
            }
            let before: std::collections::HashMap<&str, Option<tierflow_features::UserState>> =
                users
                    .iter()
                    .zip(&loaded)
                    .filter_map(|(user, l)| l.as_ref().ok().map(|s| (*user, s.clone())))
                    .collect();

            // Timers fire with the batch's users (their own events and the batch's clock);
            // users who send nothing more wait for their next event in this mode.
            let mut attempt_clocks = clocks.clone();
            let timers = Timers {
                clocks: &mut attempt_clocks,
                due_users: &[],
            };
            let (processed, triggers) = self.decide(&inputs, loaded, now, timers, shutdown).await?;
            let mut letters = decode_letters.clone();
            for rejected in &processed.rejected {
                letters.push(dead_letter(
                    topic,
                    &batch[input_source[rejected.input]],
                    rejected.class,
                    None,
                    rejected.reason.clone(),
                    now,
                ));
            }
            let encoded = Encoded::new(&processed, &letters, triggers, self.config.output_encoding);
            let states: Vec<(&str, Vec<u8>)> = processed
                .states
                .iter()
                .map(|(user, state)| {
                    let undo = before.get(user.as_str()).and_then(Option::as_ref);
                    (
                        user.as_str(),
                        tierflow_features::encode_with_undo(state, undo),
                    )
                })
                .collect();
            let latest: Vec<(&str, Vec<u8>)> = processed
                .latest
                .iter()
                .map(|s| {
                    (
                        s.user_id.as_str(),
                        tierflow_events::encode(s, tierflow_events::Encoding::Json),
                    )
                })
                .collect();

            let t = Instant::now();
            let attempt: Result<(), TxnError> = async {
                producer
                    .begin_transaction()
                    .map_err(|e| txn_error("beginning a transaction", e))?;
                encoded.send(producer, &self.topics).await?;
                let state_refs: Vec<(&str, &[u8])> =
                    states.iter().map(|(u, b)| (*u, b.as_slice())).collect();
                let latest_refs: Vec<(&str, &[u8])> =
                    latest.iter().map(|(u, b)| (*u, b.as_slice())).collect();
                self.ensure_leases(consumer, ends.keys().copied(), shutdown)
                    .await
                    .map_err(TxnError::Fatal)?;
                let mut retry = Retry::new(self, "store", shutdown);
                loop {
                    let t = Instant::now();
                    let result = self
                        .store
                        .store_raw(&state_refs, &latest_refs, &BatchWrites::default())
                        .await;
                    metrics::histogram!(telemetry::REDIS_SECONDS, "op" => "store")
                        .record(t.elapsed().as_secs_f64());
                    match retry.check(result.map_err(Failure::from)).await {
                        Ok(Some(())) => break,
                        Ok(None) => {}
                        Err(e) => return Err(TxnError::Fatal(e)),
                    }
                }
                tokio::task::block_in_place(|| {
                    producer.send_offsets_to_transaction(&offsets, &group, timeout)
                })
                .map_err(|e| txn_error("adding offsets to the transaction", e))?;
                tokio::task::block_in_place(|| producer.commit_transaction(timeout))
                    .map_err(|e| txn_error("committing the transaction", e))
            }
            .await;
            match attempt {
                Ok(()) => {
                    *clocks = attempt_clocks;
                    metrics::counter!(telemetry::TRANSACTIONS, "outcome" => "committed")
                        .increment(1);
                    metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "transaction")
                        .record(t.elapsed().as_secs_f64());
                    record_outcomes(&processed);
                    encoded.count_delivered(&self.topics);
                    summary.batches += 1;
                    summary.records += batch.len() as u64;
                    summary.add(&processed.counts);
                    summary.tier_changes += processed.tier_changes.len() as u64;
                    summary.user_scores += processed.user_scores.len() as u64;
                    summary.dead_letters += letters.len() as u64;
                    self.health.batch_done(batch.len());
                    metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "batch")
                        .record(started.elapsed().as_secs_f64());
                    drop(offsets);
                    return Ok(());
                }
                Err(TxnError::Fatal(e)) => {
                    drop(offsets);
                    return Err(e);
                }
                Err(TxnError::Abort(reason)) => {
                    metrics::counter!(telemetry::TRANSACTIONS, "outcome" => "aborted").increment(1);
                    tracing::warn!(%reason, "transaction failed; aborting it and redoing the batch");
                    if let Err(e) =
                        tokio::task::block_in_place(|| producer.abort_transaction(timeout))
                    {
                        if matches!(transaction_failure(&e), TxnFailure::Fatal) {
                            drop(offsets);
                            return Err(StreamError::Kafka {
                                context: "aborting a transaction",
                                source: e,
                            }
                            .into());
                        }
                        tracing::warn!(error = %e, "abort failed; redoing the batch anyway");
                    }
                    if let Err(e) = attempts.check::<()>(Err(Failure::Retriable(reason))).await {
                        drop(offsets);
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Retries of one stage: backs off on retriable failures (marking the process stalled, so
/// `/readyz` says so) up to `max_stall_secs`. A stop request while failing gives up: the
/// batch is not committed and will be replayed.
struct Retry<'a> {
    stage: &'static str,
    health: &'a Health,
    shutdown: &'a watch::Receiver<bool>,
    max_stall: Duration,
    max_backoff: Duration,
    started: Instant,
    backoff: Duration,
    stalled: bool,
}

impl<'a> Retry<'a> {
    fn new<S>(
        pipeline: &'a Pipeline<S>,
        stage: &'static str,
        shutdown: &'a watch::Receiver<bool>,
    ) -> Self {
        Self {
            stage,
            health: &pipeline.health,
            shutdown,
            max_stall: Duration::from_secs(pipeline.config.max_stall_secs),
            max_backoff: Duration::from_millis(pipeline.config.retry_backoff_max_ms.max(1)),
            started: Instant::now(),
            backoff: Duration::from_millis(50),
            stalled: false,
        }
    }

    /// `Some(value)` on success; `None` after a retriable failure (backed off: try again);
    /// an error when the stage must stop.
    async fn check<T>(&mut self, result: Result<T, Failure>) -> Result<Option<T>, PipelineError> {
        let stage = self.stage;
        match result {
            Ok(value) => {
                if self.stalled {
                    self.health.set_stalled(false);
                    tracing::info!(stage, after = ?self.started.elapsed(), "recovered");
                }
                Ok(Some(value))
            }
            Err(Failure::Fatal(e)) => Err(e),
            Err(Failure::Retriable(reason)) => {
                metrics::counter!(telemetry::RETRIES, "stage" => stage).increment(1);
                if !self.stalled {
                    self.stalled = true;
                    self.health.set_stalled(true);
                }
                if *self.shutdown.borrow() {
                    return Err(PipelineError::Interrupted { stage, reason });
                }
                if self.started.elapsed() >= self.max_stall {
                    return Err(PipelineError::Stalled {
                        stage,
                        secs: self.max_stall.as_secs(),
                        reason,
                    });
                }
                tracing::warn!(stage, %reason, backoff = ?self.backoff, "retriable failure; pausing and retrying");
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(self.max_backoff);
                Ok(None)
            }
        }
    }
}

fn commit_reason(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(rdkafka::types::RDKafkaErrorCode::RebalanceInProgress) => "rebalance",
        Some(
            rdkafka::types::RDKafkaErrorCode::IllegalGeneration
            | rdkafka::types::RDKafkaErrorCode::UnknownMemberId,
        ) => "generation",
        _ => "other",
    }
}

fn record_outcomes(processed: &Processed) {
    let c = &processed.counts;
    for (outcome, n) in [
        ("applied", c.applied),
        ("duplicate", c.duplicates),
        ("replayed", c.replayed),
        ("too_late", c.too_late),
        ("corrupt_state", c.corrupt_state),
    ] {
        if n > 0 {
            metrics::counter!(telemetry::OUTCOMES, "outcome" => outcome).increment(n);
        }
    }
    for tier in &processed.scored_tiers {
        metrics::counter!(telemetry::SCORED, "tier" => tier.to_string()).increment(1);
    }
    for change in &processed.tier_changes {
        let from = change
            .from_tier
            .map_or_else(|| "none".to_owned(), |t| t.to_string());
        if let Some(from) = change.from_tier {
            metrics::gauge!(telemetry::TIER_USERS, "tier" => from.to_string()).decrement(1.0);
        }
        metrics::gauge!(telemetry::TIER_USERS, "tier" => change.to_tier.to_string()).increment(1.0);
        metrics::counter!(telemetry::TIER_CHANGES, "from" => from, "to" => change.to_tier.to_string()).increment(1);
    }
}

fn dead_letter(
    topic: &str,
    received: &Received,
    class: ErrorClass,
    error: Option<&DecodeError>,
    reason: String,
    now: EventTime,
) -> DeadLetter {
    DeadLetter {
        schema_version: OUTPUT_SCHEMA_VERSION,
        source_topic: topic.to_owned(),
        source_partition: received.partition,
        source_offset: received.offset,
        source_key: received.key.as_deref().map(Bytes::from),
        original: Bytes::from(received.payload.as_slice()),
        error_class: class,
        decode_error: error.map(|e| e.kind),
        field: error.and_then(|e| e.field.clone()),
        reason,
        failed_at: now,
    }
}

/// Campaign triggers governance let through, those held out for control groups, and the
/// purchases attributed to earlier ones.
#[derive(Default)]
struct Triggers {
    sent: Vec<CampaignTriggered>,
    held: Vec<CampaignTriggered>,
    outcomes: Vec<CampaignOutcome>,
}

/// A batch's output records, encoded once (a retry sends the same bytes again).
struct Encoded {
    campaign_triggered: Vec<(String, Vec<u8>)>,
    campaign_control: Vec<(String, Vec<u8>)>,
    campaign_outcome: Vec<(String, Vec<u8>)>,
    /// `(campaign, arm, revenue in cents)` of each outcome, for the metrics once acknowledged.
    outcome_metrics: Vec<(String, CampaignArm, i64)>,
    tier_changed: Vec<(String, Vec<u8>)>,
    user_score: Vec<(String, Vec<u8>)>,
    dead_letter: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    headers: [OutputHeaders; 5],
}

impl Encoded {
    fn new(
        processed: &Processed,
        letters: &[DeadLetter],
        triggers: Triggers,
        encoding: tierflow_events::Encoding,
    ) -> Self {
        let encode_all = |records: Vec<CampaignTriggered>| {
            records
                .iter()
                .map(|r| (r.user_id.clone(), tierflow_events::encode(r, encoding)))
                .collect()
        };
        Self {
            campaign_triggered: encode_all(triggers.sent),
            campaign_control: encode_all(triggers.held),
            campaign_outcome: triggers
                .outcomes
                .iter()
                .map(|r| (r.user_id.clone(), tierflow_events::encode(r, encoding)))
                .collect(),
            outcome_metrics: triggers
                .outcomes
                .iter()
                .map(|r| {
                    (
                        r.campaign.clone(),
                        r.arm,
                        (r.revenue * 100.0).round() as i64,
                    )
                })
                .collect(),
            tier_changed: processed
                .tier_changes
                .iter()
                .map(|r| (r.user_id.clone(), tierflow_events::encode(r, encoding)))
                .collect(),
            user_score: processed
                .user_scores
                .iter()
                .map(|r| (r.user_id.clone(), tierflow_events::encode(r, encoding)))
                .collect(),
            dead_letter: letters
                .iter()
                .map(|l| {
                    (
                        l.source_key.as_ref().map(|k| k.0.clone()),
                        tierflow_events::encode(l, encoding),
                    )
                })
                .collect(),
            headers: [
                OutputHeaders::new(Contract::TierChanged, encoding),
                OutputHeaders::new(Contract::UserScore, encoding),
                OutputHeaders::new(Contract::DeadLetter, encoding),
                OutputHeaders::new(Contract::CampaignTriggered, encoding),
                OutputHeaders::new(Contract::CampaignOutcome, encoding),
            ],
        }
    }

    /// Sends everything and waits for every acknowledgement.
    async fn send(
        &self,
        producer: &mut BoundedProducer,
        topics: &TopicsConfig,
    ) -> Result<(), StreamError> {
        let [
            tier_headers,
            score_headers,
            letter_headers,
            campaign_headers,
            outcome_headers,
        ] = &self.headers;
        let (tier_headers, score_headers, letter_headers, campaign_headers, outcome_headers) = (
            tier_headers.pairs(),
            score_headers.pairs(),
            letter_headers.pairs(),
            campaign_headers.pairs(),
            outcome_headers.pairs(),
        );
        for (key, value) in &self.dead_letter {
            producer
                .send(OutRecord {
                    topic: &topics.dead_letter,
                    key: key.as_deref(),
                    value,
                    headers: &letter_headers,
                })
                .await?;
        }
        for (key, value) in &self.tier_changed {
            producer
                .send(OutRecord {
                    topic: &topics.tier_changed,
                    key: Some(key.as_bytes()),
                    value,
                    headers: &tier_headers,
                })
                .await?;
        }
        for (key, value) in &self.user_score {
            producer
                .send(OutRecord {
                    topic: &topics.user_score,
                    key: Some(key.as_bytes()),
                    value,
                    headers: &score_headers,
                })
                .await?;
        }
        for (topic, records, headers) in [
            (
                &topics.campaign_triggered,
                &self.campaign_triggered,
                &campaign_headers,
            ),
            (
                &topics.campaign_control,
                &self.campaign_control,
                &campaign_headers,
            ),
            (
                &topics.campaign_outcome,
                &self.campaign_outcome,
                &outcome_headers,
            ),
        ] {
            for (key, value) in records {
                producer
                    .send(OutRecord {
                        topic,
                        key: Some(key.as_bytes()),
                        value,
                        headers,
                    })
                    .await?;
            }
        }
        producer.flush().await?;
        Ok(())
    }

    fn count_delivered(&self, topics: &TopicsConfig) {
        for (topic, n) in [
            (&topics.tier_changed, self.tier_changed.len()),
            (&topics.user_score, self.user_score.len()),
            (&topics.dead_letter, self.dead_letter.len()),
            (&topics.campaign_triggered, self.campaign_triggered.len()),
            (&topics.campaign_control, self.campaign_control.len()),
            (&topics.campaign_outcome, self.campaign_outcome.len()),
        ] {
            if n > 0 {
                metrics::counter!(telemetry::RECORDS_OUT, "topic" => topic.clone())
                    .increment(n as u64);
            }
        }
        for (campaign, arm, cents) in &self.outcome_metrics {
            let arm = match arm {
                CampaignArm::Treated => "treated",
                CampaignArm::Control => "control",
            };
            metrics::counter!(telemetry::CAMPAIGN_OUTCOMES, "campaign" => campaign.clone(), "arm" => arm)
                .increment(1);
            metrics::counter!(telemetry::CAMPAIGN_REVENUE_CENTS, "campaign" => campaign.clone(), "arm" => arm)
                .increment(u64::try_from(*cents).unwrap_or(0));
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives (Ctrl-C elsewhere).
pub fn shutdown_on_signals() -> (
    watch::Sender<bool>,
    watch::Receiver<bool>,
    impl Future<Output = ()>,
) {
    let (tx, rx) = watch::channel(false);
    let sender = tx.clone();
    let task = async move {
        wait_for_signal().await;
        tracing::info!("stop requested: finishing the batch in flight");
        let _ = sender.send(true);
    };
    (tx, rx, task)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
