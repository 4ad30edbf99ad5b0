//! The pipeline end to end, in process, against a real broker (tansu) and a real redis-server
//! from the testkit — and against librdkafka's mock cluster, the demo's embedded broker.
//! Generated events in (with duplicates, disorder, late and malformed records); then the
//! output topics, the Redis state, the latest scores and the committed offsets are checked
//! together against the offline reference (`offline::replay`: one event at a time, each
//! update scored on its own).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use burn::prelude::Device;
use common::{Read, check, model, observe, produce, synthetic, test_kafka, topics, wait_for};
use tierflow_model::{Artifact, Scorer};
use tierflow_pipeline::offline;
use tierflow_pipeline::{Health, Pipeline, PipelineConfig, TopicsConfig};
use tierflow_store::{RedisConfig, RedisStore};
use tierflow_stream::{EmbeddedBroker, KafkaConfig, ensure_topics};
use tierflow_testkit::{broker, redis, unique_name};
use tokio::sync::watch;

async fn run_to_end(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    store: RedisStore,
    config: PipelineConfig,
    records: u64,
) -> Result<tierflow_pipeline::RunSummary> {
    let health = Health::new();
    let (stop, shutdown) = watch::channel(false);
    let pipeline = Pipeline {
        config,
        kafka: kafka.clone(),
        topics: topics.clone(),
        store,
        model: model()?,
        health: Arc::clone(&health),
    };
    let task = tokio::spawn(pipeline.run(shutdown));
    let waited = wait_for(
        "the pipeline to finish every record",
        Duration::from_secs(240),
        || health.records() >= records || task.is_finished(),
    )
    .await;
    stop.send(true)?;
    let summary = task.await??;
    waited?;
    ensure!(
        summary.records == records,
        "processed {} of {records}",
        summary.records
    );
    Ok(summary)
}

async fn end_to_end(kafka: KafkaConfig, topics: TopicsConfig, users: u64) -> Result<()> {
    let synth = synthetic(users, 20, 7);
    let records = produce(&kafka, &topics.clickstream, &synth).await?;
    let redis_config = RedisConfig {
        key_prefix: unique_name("p"),
        ..RedisConfig::new(redis().url())
    };
    let store = RedisStore::connect(redis_config).await?;
    let config = PipelineConfig {
        group_id: unique_name("group"),
        // Small batches: many batches, users spread over several of them.
        batch_max_events: 400,
        ..PipelineConfig::default()
    };
    let summary = run_to_end(&kafka, &topics, store.clone(), config.clone(), records).await?;
    ensure!(summary.batches > 5, "{summary:?}");

    let observed = observe(&kafka, &topics, &config.group_id, records).await?;
    ensure!(
        observed.input.len() as u64 == records,
        "input topic holds {}",
        observed.input.len()
    );
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let sources: Vec<_> = observed.input.iter().map(Read::source).collect();
    let expected = offline::replay(&scorer, &config, &sources)?;
    ensure!(
        summary.counts.scored == expected.scored,
        "scored {} != {}",
        summary.counts.scored,
        expected.scored
    );
    check(&observed, &expected, &store, scorer.version(), false).await?;
    let distinct: BTreeSet<&str> = observed
        .tier_changed
        .iter()
        .map(|c| c.user_id.as_str())
        .collect();
    ensure!(distinct.len() as u64 <= users);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_matches_the_offline_replay_on_a_real_broker_and_redis() -> Result<()> {
    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(3);
    ensure_topics(&kafka, &topics.specs()).await?;
    end_to_end(kafka, topics, 120).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_matches_the_offline_replay_on_the_embedded_broker() -> Result<()> {
    let embedded = EmbeddedBroker::start(1)?;
    let kafka = test_kafka(embedded.bootstrap_servers());
    let topics = topics(3);
    embedded.create_topics(&topics.specs())?;
    end_to_end(kafka, topics, 60).await
}
