//! Outages mid-stream, against real services: Redis frozen for a while, the broker killed
//! and restarted. Either way the pipeline keeps running (it stalls and retries, it does not
//! stop or skip), resumes by itself when the service is back, and ends exactly where the
//! offline reference (`offline::replay`) does: outputs, Redis state, latest scores and
//! committed offsets. Outputs are compared by idempotency key, since a batch retried after an
//! outage may publish its records a second time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::Device;
use common::{Read, check, generated, model, observe, produce_records, synthetic, test_kafka};
use tierflow_model::{Artifact, Scorer};
use tierflow_pipeline::{
    Health, Pipeline, PipelineConfig, PipelineError, RunSummary, TopicsConfig, offline,
};
use tierflow_store::{RedisConfig, RedisStore};
use tierflow_stream::consume::{committed_offsets, high_watermarks};
use tierflow_stream::{KafkaConfig, ensure_topics};
use tierflow_testkit::{Broker, BrokerStorage, RedisServer, unique_name};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long each service stays unavailable.
const OUTAGE: Duration = Duration::from_secs(5);
/// Longest wait for the pipeline to catch up once the service is back.
const CATCH_UP: Duration = Duration::from_secs(60);

/// A pipeline running in a task of this test.
struct Running {
    task: JoinHandle<Result<RunSummary, PipelineError>>,
    health: Arc<Health>,
    stop: watch::Sender<bool>,
}

fn start(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    store: RedisStore,
    config: &PipelineConfig,
) -> Result<Running> {
    let health = Health::new();
    let (stop, shutdown) = watch::channel(false);
    let pipeline = Pipeline {
        config: config.clone(),
        kafka: kafka.clone(),
        topics: topics.clone(),
        store,
        model: model()?,
        health: Arc::clone(&health),
    };
    Ok(Running {
        task: tokio::spawn(pipeline.run(shutdown)),
        health,
        stop,
    })
}

/// Settings for these runs: small batches (many of them, a user's events spread over
/// several), a unique group, and a stall limit that fails a stuck run within the test's time
/// rather than after the default four minutes.
fn pipeline_config() -> PipelineConfig {
    PipelineConfig {
        group_id: unique_name("group"),
        batch_max_events: 200,
        retry_backoff_max_ms: 500,
        max_stall_secs: 60,
        ..PipelineConfig::default()
    }
}

/// The generated stream cut in two halves, produced at different times.
fn halves(users: u64, seed: u64) -> (Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>) {
    let mut first = generated(&synthetic(users, 15, seed));
    let second = first.split_off(first.len() / 2);
    (first, second)
}

/// Polls `check` every 20 ms until it holds, failing (with the pipeline's fate) if the
/// pipeline stops first or `timeout` passes.
async fn wait_while_running(
    running: &Running,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<()> {
    let started = Instant::now();
    while !check() {
        ensure!(
            !running.task.is_finished(),
            "the pipeline stopped while waiting for {what} (after {} records)",
            running.health.records()
        );
        ensure!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what} ({} records done)",
            running.health.records()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Holds an outage for the rest of `OUTAGE` since `since`, checking every 100 ms that the
/// pipeline is still running and that `holds` (what must stay true meanwhile) does.
async fn during_outage(
    running: &Running,
    since: Instant,
    mut holds: impl FnMut() -> Result<()>,
) -> Result<()> {
    while since.elapsed() < OUTAGE {
        ensure!(
            !running.task.is_finished(),
            "the pipeline stopped during the outage instead of waiting for the service"
        );
        holds()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until every record is done and the group's committed offsets reach the end of
/// every input partition, then stops the pipeline and returns its summary. Both conditions:
/// a replay after a rebalance counts its records again, so the record count alone could be
/// reached early.
async fn finish(
    running: Running,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    config: &PipelineConfig,
    total: u64,
) -> Result<RunSummary> {
    let ends = tokio::task::block_in_place(|| high_watermarks(kafka, &topics.clickstream))?;
    ensure!(
        ends.values().sum::<i64>() as u64 == total,
        "input topic ends {ends:?} do not add up to {total} records"
    );
    let caught_up = async {
        let health = &running.health;
        wait_while_running(&running, "every record to be done", CATCH_UP, || {
            health.records() >= total
        })
        .await?;
        let started = Instant::now();
        loop {
            let committed = tokio::task::block_in_place(|| {
                committed_offsets(kafka, &config.group_id, &topics.clickstream)
            })?;
            if committed == ends {
                ensure!(
                    running.health.ready(),
                    "caught up, yet /readyz still reports a stall"
                );
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30) && !running.task.is_finished(),
                "committed offsets {committed:?} never reached the input ends {ends:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    .await;
    running.stop.send(true)?;
    let summary = running
        .task
        .await?
        .context("the pipeline stopped with an error")?;
    caught_up.map(|()| summary)
}

/// Reads everything back and checks it against the offline replay of the input topic.
async fn verify(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    config: &PipelineConfig,
    store: &RedisStore,
    summary: &RunSummary,
    total: u64,
) -> Result<()> {
    let observed = observe(kafka, topics, &config.group_id, total).await?;
    ensure!(
        observed.input.len() as u64 == total,
        "input topic holds {} of {total} records",
        observed.input.len()
    );
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let sources: Vec<_> = observed.input.iter().map(Read::source).collect();
    let expected = offline::replay(&scorer, config, &sources)?;
    // Retries repeat I/O, never processing: each update is scored once, whatever replayed.
    ensure!(
        summary.counts.scored == expected.scored,
        "scored {} != {} in the offline replay ({summary:?})",
        summary.counts.scored,
        expected.scored
    );
    check(&observed, &expected, store, scorer.version(), true).await
}

fn redis_config(url: String) -> RedisConfig {
    RedisConfig {
        key_prefix: unique_name("o"),
        // Short timeouts and few retries inside the store, so an outage of a few seconds
        // reaches the pipeline's own retry loop (and `/readyz`) instead of being absorbed.
        response_timeout_ms: 500,
        retries: 1,
        ..RedisConfig::new(url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_stalls_the_pipeline_which_resumes_without_loss() -> Result<()> {
    let started = Instant::now();
    let broker = Broker::start()?;
    let redis = RedisServer::start()?;
    let kafka = test_kafka(broker.bootstrap_servers());
    let topics = common::topics(3);
    ensure_topics(&kafka, &topics.specs()).await?;
    let (first, second) = halves(80, 11);
    let total = (first.len() + second.len()) as u64;
    produce_records(&kafka, &topics.clickstream, &first).await?;

    let store = RedisStore::connect(redis_config(redis.url())).await?;
    let config = pipeline_config();
    let running = start(&kafka, &topics, store.clone(), &config)?;
    let health = Arc::clone(&running.health);
    wait_while_running(&running, "the first batches", CATCH_UP, || {
        health.records() > 0
    })
    .await?;
    ensure!(health.ready(), "joined and working, yet not ready");

    // Freeze Redis with the stream half consumed, and feed it the rest meanwhile.
    redis.pause()?;
    let paused_at = Instant::now();
    let done_at_pause = health.records();
    let outage = async {
        produce_records(&kafka, &topics.clickstream, &second).await?;
        wait_while_running(&running, "/readyz to report the stall", OUTAGE * 4, || {
            !health.ready()
        })
        .await?;
        let stalled_at = health.records();
        ensure!(
            stalled_at < total,
            "all {total} records done with Redis frozen"
        );
        during_outage(&running, paused_at, || {
            ensure!(
                health.records() == stalled_at,
                "a batch completed with Redis frozen"
            );
            ensure!(!health.ready(), "ready with Redis frozen");
            Ok(())
        })
        .await
    }
    .await;
    // Resume before anything can fail: a frozen server outliving a failed test only wastes
    // time (the handle kills it either way).
    redis.resume()?;
    outage?;
    eprintln!(
        "{total} records; {done_at_pause} done when Redis froze; resumed after {:?}",
        paused_at.elapsed()
    );

    let summary = finish(running, &kafka, &topics, &config, total).await?;
    // Nothing was rebalanced or replayed: each record went through exactly one batch.
    ensure!(
        summary.records == total,
        "processed {} of {total}",
        summary.records
    );
    verify(&kafka, &topics, &config, &store, &summary, total).await?;
    eprintln!("redis outage test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing_and_the_pipeline_resumes() -> Result<()> {
    let started = Instant::now();
    let mut broker = Broker::start_with(BrokerStorage::Sqlite)?;
    let redis = RedisServer::start()?;
    let kafka = test_kafka(broker.bootstrap_servers());
    let topics = common::topics(3);
    ensure_topics(&kafka, &topics.specs()).await?;
    let (first, second) = halves(80, 13);
    let total = (first.len() + second.len()) as u64;
    produce_records(&kafka, &topics.clickstream, &first).await?;

    let store = RedisStore::connect(redis_config(redis.url())).await?;
    let config = pipeline_config();
    let running = start(&kafka, &topics, store.clone(), &config)?;
    let health = Arc::clone(&running.health);
    wait_while_running(&running, "the first batches", CATCH_UP, || {
        health.records() > 0
    })
    .await?;

    // Kill the broker with the first half being consumed; bring it back on the same port
    // and storage after a while, then produce the second half.
    broker.stop();
    let stopped_at = Instant::now();
    let done_at_stop = health.records();
    let outage = during_outage(&running, stopped_at, || Ok(())).await;
    broker.restart()?;
    outage?;
    eprintln!(
        "{total} records; {done_at_stop} done when the broker stopped; restarted after {:?}",
        stopped_at.elapsed()
    );
    produce_records(&kafka, &topics.clickstream, &second).await?;

    let summary = match finish(running, &kafka, &topics, &config, total).await {
        Ok(summary) => summary,
        Err(e) => bail!("{e:#}\nbroker log:\n{}", broker.log_tail()),
    };
    ensure!(
        summary.records >= total,
        "processed {} of {total}",
        summary.records
    );
    verify(&kafka, &topics, &config, &store, &summary, total).await?;
    eprintln!(
        "broker outage test took {:?} ({} records processed for {total} in the topic)",
        started.elapsed(),
        summary.records
    );
    Ok(())
}
