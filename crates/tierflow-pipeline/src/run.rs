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

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tierflow_events::output::OUTPUT_SCHEMA_VERSION;
use tierflow_events::{
    Bytes, ClickEvent, Contract, DeadLetter, DecodeError, ErrorClass, EventTime,
};
use tierflow_model::{ModelHandle, ScoreError};
use tierflow_store::{StateStore, StoreError, Versioned};
use tierflow_stream::{
    BoundedProducer, FailureClass, KafkaConfig, OutRecord, OutputHeaders, StreamError, TxnFailure,
    transaction_failure,
};
use tokio::sync::watch;

use crate::config::{PipelineConfig, TopicsConfig};
use crate::process::{self, BatchCounts, Input, Processed};
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
}

/// A received record, decoded (or not) as it arrived.
struct Received {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    event: Result<ClickEvent, DecodeError>,
}

/// The consumer's view of rebalances and statistics.
struct GroupContext {
    health: Arc<Health>,
    /// Partitions revoked since the collector last looked.
    revoked: Mutex<Vec<i32>>,
    assigned: Mutex<BTreeSet<i32>>,
    /// Partitions that delivered a record since they were assigned.
    resumed: Mutex<BTreeSet<i32>>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
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
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?partitions, "partitions revoked");
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

impl<S: StateStore> Pipeline<S> {
    /// Runs until `shutdown` turns true (the batch in flight is finished and committed) or a
    /// fatal error.
    pub async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<RunSummary, PipelineError> {
        self.config.validate().map_err(PipelineError::Config)?;
        let context = GroupContext {
            health: Arc::clone(&self.health),
            revoked: Mutex::new(Vec::new()),
            assigned: Mutex::new(BTreeSet::new()),
            resumed: Mutex::new(BTreeSet::new()),
        };
        let mut consumer_config = self.kafka.consumer_config(&self.config.group_id);
        consumer_config
            .set(
                "queued.max.messages.kbytes",
                self.config.consumer_queue_kbytes.to_string(),
            )
            .set("statistics.interval.ms", "5000");
        // Pass-through properties win over ours, as everywhere.
        for (key, value) in &self.kafka.properties {
            consumer_config.set(key, value);
        }
        let consumer: GroupConsumer = consumer_config
            .create_with_context(context)
            .map_err(|e| StreamError::Config(format!("creating the consumer: {e}")))?;
        consumer
            .subscribe(&[&self.topics.clickstream])
            .map_err(|e| StreamError::Config(format!("subscribing: {e}")))?;
        let mut producer = match &self.config.transactional_id {
            None => BoundedProducer::new(&self.kafka, self.config.max_in_flight)?,
            Some(id) => tokio::task::block_in_place(|| {
                BoundedProducer::transactional(
                    &self.kafka,
                    self.config.max_in_flight,
                    id,
                    Duration::from_millis(self.config.transaction_timeout_ms),
                )
            })?,
        };
        metrics::gauge!(telemetry::MODEL_INFO, "version" => self.model.version()).set(1.0);
        tracing::info!(
            group = %self.config.group_id,
            topic = %self.topics.clickstream,
            model = %self.model.version(),
            "pipeline started"
        );

        let mut summary = RunSummary::default();
        let mut result = Ok(());
        while !*shutdown.borrow() {
            let batch = self.collect(&consumer, &mut shutdown).await;
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = self
                .handle(&consumer, &mut producer, batch, &mut summary, &shutdown)
                .await
            {
                result = Err(e);
                break;
            }
        }
        consumer.unsubscribe();
        drop(consumer);
        self.health.set_joined(false);
        tracing::info!(?summary, "pipeline stopped");
        result.map(|()| summary)
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
                    if first_at.is_none() {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    if matches!(e, KafkaError::Global(_) | KafkaError::MessageConsumption(_)) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Ok(Ok(message)) => {
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
                        event: ClickEvent::from_json(payload),
                    });
                    first_at.get_or_insert_with(Instant::now);
                    if batch.len() >= self.config.batch_max_events {
                        break;
                    }
                }
            }
            self.drop_revoked(consumer, &mut batch);
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

    async fn handle(
        &self,
        consumer: &GroupConsumer,
        producer: &mut BoundedProducer,
        batch: Vec<Received>,
        summary: &mut RunSummary,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        let started = Instant::now();
        let topic = self.topics.clickstream.as_str();
        metrics::counter!(telemetry::EVENTS_IN, "topic" => topic.to_owned())
            .increment(batch.len() as u64);
        metrics::histogram!(telemetry::BATCH_RECORDS).record(batch.len() as f64);

        // Split decoded inputs from undecodable records.
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

        if self.config.transactional_id.is_some() {
            let decoded = Decoded {
                inputs,
                input_source,
                letters,
                ends,
                now,
            };
            return self
                .handle_transactional(
                    consumer, producer, &batch, decoded, summary, shutdown, started,
                )
                .await;
        }

        // Load the batch's users once.
        let (users, _) = process::users_of(&inputs);
        let mut retry = Retry::new(self, "load", shutdown);
        let loaded = loop {
            let t = Instant::now();
            let result = self.store.load(&users).await;
            metrics::histogram!(telemetry::REDIS_SECONDS, "op" => "load")
                .record(t.elapsed().as_secs_f64());
            if let Some(loaded) = retry.check(result.map_err(Failure::from)).await? {
                break loaded;
            }
        };
        drop(users);

        // Apply, score, decide.
        let t = Instant::now();
        let scorer = self.model.current();
        let processed = process::process(&scorer, &self.config, &inputs, loaded, now)?;
        metrics::histogram!(telemetry::SCORING_SECONDS).record(t.elapsed().as_secs_f64());
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "process")
            .record(t.elapsed().as_secs_f64());
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

        // Outputs first; every one acknowledged before anything is stored or committed.
        let t = Instant::now();
        let encoded = Encoded::new(&processed, &letters, self.config.output_encoding);
        let mut retry = Retry::new(self, "produce", shutdown);
        loop {
            let result = encoded.send(producer, &self.topics).await;
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
        for input in &inputs {
            latency.record((acked - input.event.ts.unix_millis()).max(0) as f64 / 1000.0);
        }
        encoded.count_delivered(&self.topics);

        // Then the state, with the latest scores beside it.
        let t = Instant::now();
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
        let latest_refs: Vec<(&str, &[u8])> =
            latest.iter().map(|(u, v)| (*u, v.as_slice())).collect();
        let states: Vec<(&str, &tierflow_features::UserState)> = processed
            .states
            .iter()
            .map(|(u, s)| (u.as_str(), s))
            .collect();
        let mut retry = Retry::new(self, "store", shutdown);
        loop {
            let t = Instant::now();
            let result = self.store.store_with_scores(&states, &latest_refs).await;
            metrics::histogram!(telemetry::REDIS_SECONDS, "op" => "store")
                .record(t.elapsed().as_secs_f64());
            if retry.check(result.map_err(Failure::from)).await?.is_some() {
                break;
            }
        }
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "store")
            .record(t.elapsed().as_secs_f64());

        // Finally the offsets: the next record of each partition.
        let t = Instant::now();
        let mut list = TopicPartitionList::new();
        for (partition, last) in &ends {
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(last + 1)) {
                tracing::warn!(error = %e, partition, "cannot add an offset to commit");
            }
        }
        tracing::debug!(?ends, "committing");
        let mode = if *shutdown.borrow() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = consumer.commit(&list, mode) {
            // Not fatal: the batch is durable; an uncommitted batch is replayed idempotently.
            metrics::counter!(telemetry::COMMIT_FAILURES, "reason" => commit_reason(&e))
                .increment(1);
            tracing::warn!(error = %e, "offset commit failed; the batch will be replayed after a restart or rebalance");
        }
        drop(list);
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "commit")
            .record(t.elapsed().as_secs_f64());
        metrics::histogram!(telemetry::STAGE_SECONDS, "stage" => "batch")
            .record(started.elapsed().as_secs_f64());

        summary.batches += 1;
        summary.records += batch.len() as u64;
        summary.add(&processed.counts);
        summary.tier_changes += processed.tier_changes.len() as u64;
        summary.user_scores += processed.user_scores.len() as u64;
        summary.dead_letters += letters.len() as u64;
        self.health.batch_done(batch.len());
        Ok(())
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

            let t = Instant::now();
            let scorer = self.model.current();
            let processed = process::process(&scorer, &self.config, &inputs, loaded, now)?;
            metrics::histogram!(telemetry::SCORING_SECONDS).record(t.elapsed().as_secs_f64());
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
            let encoded = Encoded::new(&processed, &letters, self.config.output_encoding);
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
                let mut retry = Retry::new(self, "store", shutdown);
                loop {
                    let t = Instant::now();
                    let result = self.store.store_raw(&state_refs, &latest_refs).await;
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

/// A batch's output records, encoded once (a retry sends the same bytes again).
struct Encoded {
    tier_changed: Vec<(String, Vec<u8>)>,
    user_score: Vec<(String, Vec<u8>)>,
    dead_letter: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    headers: [OutputHeaders; 3],
}

impl Encoded {
    fn new(
        processed: &Processed,
        letters: &[DeadLetter],
        encoding: tierflow_events::Encoding,
    ) -> Self {
        Self {
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
            ],
        }
    }

    /// Sends everything and waits for every acknowledgement.
    async fn send(
        &self,
        producer: &mut BoundedProducer,
        topics: &TopicsConfig,
    ) -> Result<(), StreamError> {
        let [tier_headers, score_headers, letter_headers] = &self.headers;
        let (tier_headers, score_headers, letter_headers) = (
            tier_headers.pairs(),
            score_headers.pairs(),
            letter_headers.pairs(),
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
        producer.flush().await?;
        Ok(())
    }

    fn count_delivered(&self, topics: &TopicsConfig) {
        for (topic, n) in [
            (&topics.tier_changed, self.tier_changed.len()),
            (&topics.user_score, self.user_score.len()),
            (&topics.dead_letter, self.dead_letter.len()),
        ] {
            if n > 0 {
                metrics::counter!(telemetry::RECORDS_OUT, "topic" => topic.clone())
                    .increment(n as u64);
            }
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
