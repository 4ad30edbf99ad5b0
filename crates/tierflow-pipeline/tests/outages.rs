//! Outages mid-stream, against real services: Redis frozen, Redis killed and restarted, the
//! broker killed and restarted (with deliveries waiting inside librdkafka, and with
//! deliveries timing out so the pipeline's own retry loop has to send the batch again).
//! Every time the pipeline keeps running — it stalls and retries, it neither stops nor skips
//! — resumes by itself once the service is back, and ends exactly where the offline
//! reference (`offline::replay`) does: outputs, Redis state, latest scores and committed
//! offsets. Outputs are compared by idempotency key: a batch sent again after an outage may
//! publish its records twice.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::Device;
use common::{
    Read, check, ends, generated, metric, model, observe, produce_records, read_all, synthetic,
    test_kafka, topics,
};
use tierflow_model::{Artifact, Scorer};
use tierflow_pipeline::{
    Health, Pipeline, PipelineConfig, PipelineError, RunSummary, TopicsConfig, offline,
};
use tierflow_store::{RedisConfig, RedisStore};
use tierflow_stream::consume::committed_offsets;
use tierflow_stream::{EmbeddedBroker, KafkaConfig, ensure_topics};
use tierflow_testkit::{Broker, BrokerStorage, RedisServer, unique_name};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long each service stays unavailable.
const OUTAGE: Duration = Duration::from_secs(5);
/// Longest wait for the pipeline to catch up once the service is back.
const CATCH_UP: Duration = Duration::from_secs(60);
/// Longest wait for the test's own records to be acknowledged: a broken broker would
/// otherwise hold the test for librdkafka's five-minute delivery timeout.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);

type Records = Vec<(String, Vec<u8>)>;

/// A pipeline running in a task of this test, with the first half of a generated stream
/// produced and the second half held back.
struct Scenario {
    kafka: KafkaConfig,
    topics: TopicsConfig,
    config: PipelineConfig,
    store: RedisStore,
    first_half: u64,
    second_half: Records,
    total: u64,
    task: JoinHandle<Result<RunSummary, PipelineError>>,
    health: Arc<Health>,
    stop: watch::Sender<bool>,
}

impl Scenario {
    /// Creates the topics, produces the first half of the stream, starts the pipeline (its
    /// Kafka clients with `pipeline_properties` on top of the test's) and waits for its
    /// first completed batch.
    async fn begin(
        kafka: KafkaConfig,
        pipeline_properties: &[(&str, &str)],
        redis: RedisConfig,
        seed: u64,
    ) -> Result<Self> {
        Self::begin_on(kafka, None, pipeline_properties, redis, seed).await
    }

    /// `begin` on `kafka`, or on librdkafka's mock cluster `mock` (which creates topics
    /// through its own call: it does not serve CreateTopics).
    async fn begin_on(
        kafka: KafkaConfig,
        mock: Option<&EmbeddedBroker>,
        pipeline_properties: &[(&str, &str)],
        redis: RedisConfig,
        seed: u64,
    ) -> Result<Self> {
        // Shown when a test fails: stalls, retries, rebalances and recoveries.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("tierflow_pipeline=info,librdkafka=warn")
            .try_init();
        let topics = topics(3);
        match mock {
            Some(mock) => mock.create_topics(&topics.specs())?,
            None => ensure_topics(&kafka, &topics.specs()).await?,
        }
        let mut first_half = generated(&synthetic(80, 15, seed));
        let second_half = first_half.split_off(first_half.len() / 2);
        let total = (first_half.len() + second_half.len()) as u64;
        produce(&kafka, &topics.clickstream, &first_half).await?;

        let store = RedisStore::connect(redis).await?;
        let config = PipelineConfig {
            group_id: unique_name("group"),
            // Small batches: many of them, each user's events spread over several.
            batch_max_events: 200,
            retry_backoff_max_ms: 500,
            // A stuck run fails within the test's time, not after the default four minutes.
            max_stall_secs: 60,
            ..PipelineConfig::default()
        };
        let health = Health::new();
        let (stop, shutdown) = watch::channel(false);
        let mut pipeline_kafka = kafka.clone();
        for (key, value) in pipeline_properties {
            pipeline_kafka
                .properties
                .insert((*key).to_owned(), (*value).to_owned());
        }
        let pipeline = Pipeline {
            config: config.clone(),
            kafka: pipeline_kafka,
            topics: topics.clone(),
            store: store.clone(),
            model: model()?,
            health: Arc::clone(&health),
            campaigns: None,
            drift: Default::default(),
        };
        let scenario = Self {
            kafka,
            topics,
            config,
            store,
            first_half: first_half.len() as u64,
            second_half,
            total,
            task: tokio::spawn(pipeline.run(shutdown)),
            health,
            stop,
        };
        scenario
            .wait("the first batches", CATCH_UP, |h| h.records() > 0)
            .await?;
        ensure!(scenario.health.ready(), "working, yet not ready");
        Ok(scenario)
    }

    async fn produce_second_half(&self) -> Result<()> {
        produce(&self.kafka, &self.topics.clickstream, &self.second_half).await
    }

    /// Polls `check` every 20 ms until it holds; fails if the pipeline stops first or
    /// `timeout` passes.
    async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Health) -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        while !check(&self.health) {
            ensure!(
                !self.task.is_finished(),
                "the pipeline stopped while waiting for {what} ({} records done)",
                self.health.records()
            );
            ensure!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what} ({} records done)",
                self.health.records()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Holds an outage that began at `since` until `OUTAGE` has passed, checking every
    /// 100 ms that the pipeline still runs and that `holds` does.
    async fn outage(&self, since: Instant, holds: impl Fn(&Health) -> Result<()>) -> Result<()> {
        while since.elapsed() < OUTAGE {
            ensure!(
                !self.task.is_finished(),
                "the pipeline stopped during the outage instead of waiting for the service"
            );
            holds(&self.health)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Waits until the pipeline has done every record and committed the end of every input
    /// partition, and reports ready again; then stops it and checks everything against the
    /// offline replay of the input topic. `exactly_once`: each record went through exactly
    /// one completed batch (no rebalance, no replay).
    async fn finish(self, exactly_once: bool) -> Result<RunSummary> {
        let input = read_all(
            &self.kafka,
            &self.topics.clickstream,
            self.total as usize,
            Duration::from_secs(2),
        )
        .await?;
        ensure!(
            input.len() as u64 == self.total,
            "input topic holds {} of {} records",
            input.len(),
            self.total
        );
        let input_ends = ends(&input);
        // Both conditions: a replay after a rebalance counts its records again, so the record
        // count alone could be reached early.
        let caught_up = async {
            self.wait("every record to be done", CATCH_UP, |h| {
                h.records() >= self.total
            })
            .await?;
            let started = Instant::now();
            loop {
                let committed = tokio::task::block_in_place(|| {
                    committed_offsets(&self.kafka, &self.config.group_id, &self.topics.clickstream)
                })?;
                if committed == input_ends {
                    break;
                }
                ensure!(
                    started.elapsed() < Duration::from_secs(30) && !self.task.is_finished(),
                    "committed offsets {committed:?} never reached the input ends {input_ends:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            ensure!(
                self.health.ready(),
                "caught up, yet /readyz still reports a stall"
            );
            anyhow::Ok(())
        }
        .await;
        self.stop.send(true)?;
        let summary = self
            .task
            .await?
            .context("the pipeline stopped with an error")?;
        caught_up?;
        if exactly_once {
            ensure!(
                summary.records == self.total,
                "{} records in completed batches for {} in the topic",
                summary.records,
                self.total
            );
        }

        let observed =
            observe(&self.kafka, &self.topics, &self.config.group_id, self.total).await?;
        let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
        let sources: Vec<_> = observed.input.iter().map(Read::source).collect();
        let expected = offline::replay(&scorer, &self.config, &sources)?;
        // Outages repeat I/O, never processing: each update is scored exactly once.
        ensure!(
            summary.counts.scored == expected.scored,
            "scored {} != {} in the offline replay ({summary:?})",
            summary.counts.scored,
            expected.scored
        );
        check(&observed, &expected, &self.store, scorer.version(), true).await?;
        Ok(summary)
    }
}

/// Produces `records` to `topic`, failing after `PRODUCE_TIMEOUT`.
async fn produce(kafka: &KafkaConfig, topic: &str, records: &[(String, Vec<u8>)]) -> Result<()> {
    tokio::time::timeout(PRODUCE_TIMEOUT, produce_records(kafka, topic, records))
        .await
        .with_context(|| {
            format!(
                "producing {} records to {topic} took over {PRODUCE_TIMEOUT:?}",
                records.len()
            )
        })??;
    Ok(())
}

/// Short timeouts and a single retry inside the store, so an outage of a few seconds reaches
/// the pipeline's own retry loop (and `/readyz`) instead of being absorbed by the store.
fn redis_config(url: String) -> RedisConfig {
    RedisConfig {
        key_prefix: unique_name("o"),
        response_timeout_ms: 500,
        connect_timeout_ms: 500,
        retries: 1,
        ..RedisConfig::new(url)
    }
}

/// Redis unavailable from `since`: `/readyz` reports the stall, no batch completes, and the
/// pipeline waits for Redis instead of stopping.
async fn redis_outage(scenario: &Scenario, since: Instant) -> Result<()> {
    scenario
        .wait("/readyz to report the stall", OUTAGE * 4, |h| !h.ready())
        .await?;
    let stalled_at = scenario.health.records();
    ensure!(
        stalled_at < scenario.total,
        "all {stalled_at} records done without Redis"
    );
    scenario
        .outage(since, |h| {
            ensure!(h.records() == stalled_at, "a batch completed without Redis");
            ensure!(!h.ready(), "ready without Redis");
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_stalls_the_pipeline_which_resumes_without_loss() -> Result<()> {
    let started = Instant::now();
    let broker = Broker::start()?;
    let redis = RedisServer::start()?;
    let scenario = Scenario::begin(
        test_kafka(broker.bootstrap_servers()),
        &[],
        redis_config(redis.url()),
        11,
    )
    .await?;

    // Freeze Redis once the first half is done (connections stay open, requests go
    // unanswered), then feed the pipeline the second half: its first load stalls. (The
    // crash test below stops Redis mid-batch instead, where the store is what stalls.)
    let first_half = scenario.first_half;
    scenario
        .wait("the first half to be done", CATCH_UP, |h| {
            h.records() >= first_half
        })
        .await?;
    redis.pause()?;
    let paused_at = Instant::now();
    let done = scenario.health.records();
    let outage = async {
        scenario.produce_second_half().await?;
        redis_outage(&scenario, paused_at).await
    }
    .await;
    // Resume before anything can fail: the test must not leave a frozen server behind.
    redis.resume()?;
    outage?;

    let total = scenario.total;
    scenario.finish(true).await?;
    eprintln!(
        "frozen redis: {total} records, {done} done when it froze for {OUTAGE:?}; test took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_and_restart_stalls_the_pipeline_which_resumes_without_loss() -> Result<()> {
    let started = Instant::now();
    let broker = Broker::start()?;
    // Every acknowledged write is on disk before the reply: a crash keeps exactly those.
    let mut redis = RedisServer::start_persistent()?;
    let scenario = Scenario::begin(
        test_kafka(broker.bootstrap_servers()),
        &[],
        redis_config(redis.url()),
        17,
    )
    .await?;

    // Kill Redis mid-stream (connections drop, requests in flight are lost, new connections
    // are refused), feed the pipeline the rest meanwhile, then start Redis again.
    redis.stop();
    let stopped_at = Instant::now();
    let done = scenario.health.records();
    let outage = async {
        scenario.produce_second_half().await?;
        redis_outage(&scenario, stopped_at).await
    }
    .await;
    redis.restart()?;
    outage?;

    let total = scenario.total;
    if let Err(e) = scenario.finish(true).await {
        bail!("{e:#}\nredis log:\n{}", redis.log_tail());
    }
    eprintln!(
        "restarted redis: {total} records, {done} done when it stopped for {OUTAGE:?}; test took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Kills the broker mid-stream (the first half being consumed), starts it again on the same
/// port and storage after `OUTAGE`, produces the second half, and checks the end result.
/// `stalls`: the outage must reach the pipeline's retry loop (and `/readyz`).
async fn broker_outage(
    pipeline_properties: &[(&str, &str)],
    stalls: bool,
    seed: u64,
) -> Result<()> {
    let started = Instant::now();
    let mut broker = Broker::start_with(BrokerStorage::Sqlite)?;
    let redis = RedisServer::start()?;
    let scenario = Scenario::begin(
        test_kafka(broker.bootstrap_servers()),
        pipeline_properties,
        redis_config(redis.url()),
        seed,
    )
    .await?;

    broker.stop();
    let stopped_at = Instant::now();
    let done = scenario.health.records();
    let outage = async {
        if stalls {
            scenario
                .wait("/readyz to report the stall", OUTAGE, |h| !h.ready())
                .await?;
        }
        scenario.outage(stopped_at, |_| Ok(())).await
    }
    .await;
    broker.restart()?;
    outage?;

    let total = scenario.total;
    let finished = async {
        scenario.produce_second_half().await?;
        scenario.finish(false).await
    };
    let summary = match finished.await {
        Ok(summary) => summary,
        Err(e) => bail!("{e:#}\nbroker log:\n{}", broker.log_tail()),
    };
    eprintln!(
        "broker restart: {total} records, {done} done when it stopped for {OUTAGE:?}, {} in \
         completed batches; test took {:?}",
        summary.records,
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing_and_the_pipeline_resumes() -> Result<()> {
    // Default producer settings: deliveries wait inside librdkafka (`message.timeout.ms`,
    // 5 minutes) and go out once the broker is back.
    broker_outage(&[], false, 13).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_timing_out_during_a_broker_outage_are_sent_again_without_loss() -> Result<()> {
    // Deliveries time out during the outage: the produce stage fails, backs off and sends
    // the whole batch again (idempotency keys let readers drop what went out twice).
    // Without librdkafka's idempotence here: an idempotent producer bumps its epoch after
    // timed-out deliveries, and tansu 0.6.0's SQLite storage then panics on its next produce
    // ("more or less than one row", tansu-storage lite.rs:503) and fails every later
    // request. One request in flight per connection keeps the outputs in order without it.
    broker_outage(
        &[
            ("message.timeout.ms", "2000"),
            ("enable.idempotence", "false"),
            ("max.in.flight.requests.per.connection", "1"),
        ],
        true,
        19,
    )
    .await
}

/// Faults injected with librdkafka's mock cluster (three brokers, a real redis-server):
/// error answers to produce, fetch, offset-commit and heartbeat requests, one slow broker, and
/// one broker down for `OUTAGE` mid-stream. The pipeline retries what it can, keeps running,
/// replays what was not committed, and ends exactly where the offline replay does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_request_errors_a_slow_broker_and_a_broker_down_lose_nothing() -> Result<()> {
    use rdkafka::types::RDKafkaApiKey as Api;
    use rdkafka::types::RDKafkaRespErr as E;
    let started = Instant::now();
    let metrics = tierflow_pipeline::telemetry::install_recorder()?;
    let mock = EmbeddedBroker::start(3)?;
    let redis = RedisServer::start()?;
    let scenario = Scenario::begin_on(
        test_kafka(mock.bootstrap_servers()),
        Some(&mock),
        // Deliveries to the broker that is down time out, so the produce stage has to retry
        // (and report the stall) instead of librdkafka waiting for it.
        &[("message.timeout.ms", "2000")],
        redis_config(redis.url()),
        23,
    )
    .await?;

    // Error answers: retried inside librdkafka (produce, fetch, coordinator errors) or
    // surfacing as failed commits, which the pipeline counts and replays after the rejoin.
    mock.inject_request_errors(
        Api::Produce,
        &[
            E::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            E::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    mock.inject_request_errors(Api::Fetch, &[E::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION]);
    mock.inject_request_errors(
        Api::OffsetCommit,
        &[
            E::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            E::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        ],
    );
    // The second half in two parts: one meets the errors, one the broker outage.
    let (with_errors, with_outage) = scenario
        .second_half
        .split_at(scenario.second_half.len() / 2);
    let clickstream = &scenario.topics.clickstream;
    produce(&scenario.kafka, clickstream, with_errors).await?;
    let with_errors_done = scenario.first_half + with_errors.len() as u64;
    scenario
        .wait("the records produced under errors", CATCH_UP, |h| {
            h.records() >= with_errors_done
        })
        .await?;
    let after_errors = scenario.health.records();
    // The refused commit (REBALANCE_IN_PROGRESS) reached the pipeline and was counted;
    // NOT_COORDINATOR is retried inside librdkafka.
    let commit_failures = metric(&metrics.render(), "tierflow_commit_failures_total");
    ensure!(
        commit_failures >= 1.0,
        "the refused offset commit was not counted as a commit failure"
    );

    // A slow broker, and a broker down (the group coordinator, and leader of some partitions)
    // while the last part arrives: the pipeline waits for it and resumes by itself.
    mock.set_round_trip_time(2, Duration::from_millis(300))?;
    mock.broker_down(1)?;
    let down_at = Instant::now();
    let (produced, stalled) = tokio::join!(
        // Records for the down broker's partitions wait in the test's producer.
        produce(&scenario.kafka, clickstream, with_outage),
        async {
            // Whether a stage stalls depends on which leaders the down broker held; what must
            // hold is that the pipeline keeps running and catches up afterwards.
            scenario.outage(down_at, |_| Ok(())).await?;
            mock.broker_up(1)?;
            anyhow::Ok(())
        }
    );
    // Up again whatever happened: the test must not leave the cluster half down.
    mock.broker_up(1)?;
    mock.set_round_trip_time(2, Duration::ZERO)?;
    stalled?;
    produced?;

    let total = scenario.total;
    let summary = scenario.finish(false).await?;
    let rendered = metrics.render();
    eprintln!(
        "mock faults: {total} records, {after_errors} done after the injected errors \
         ({commit_failures} commit failures counted), {} in completed batches; commit failures \
         {}, stage retries {}; test took {:?}",
        summary.records,
        metric(&rendered, "tierflow_commit_failures_total"),
        metric(&rendered, "tierflow_stage_retries_total"),
        started.elapsed()
    );
    Ok(())
}
