//! Members joining and leaving one consumer group mid-stream (real broker, real Redis): each
//! revocation waits until the batches in flight are durable and committed, so the next
//! owner of a partition starts exactly after them — no record is processed twice, none is
//! lost, and state, outputs and offsets equal the offline replay of the same events.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use burn::prelude::Device;
use common::{
    Read, check, generated, model, observe, produce_records, synthetic, test_kafka, topics,
    wait_for,
};
use tierflow_model::{Artifact, Scorer};
use tierflow_pipeline::{Health, Pipeline, PipelineConfig, RunSummary, offline};
use tierflow_store::{RedisConfig, RedisStore};
use tierflow_stream::{KafkaConfig, ensure_topics};
use tierflow_testkit::{broker, redis, unique_name};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Member {
    health: Arc<Health>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<RunSummary, tierflow_pipeline::PipelineError>>,
}

fn join(
    kafka: &KafkaConfig,
    topics: &tierflow_pipeline::TopicsConfig,
    store: &RedisStore,
    config: &PipelineConfig,
) -> Result<Member> {
    let health = Health::new();
    let (stop, shutdown) = watch::channel(false);
    let pipeline = Pipeline {
        config: config.clone(),
        kafka: kafka.clone(),
        topics: topics.clone(),
        store: store.clone(),
        model: model()?,
        health: Arc::clone(&health),
        campaigns: None,
    };
    Ok(Member {
        health,
        stop,
        task: tokio::spawn(pipeline.run(shutdown)),
    })
}

impl Member {
    async fn leave(self) -> Result<RunSummary> {
        self.stop.send(true)?;
        Ok(self.task.await??)
    }
}

fn done(members: &[&Member]) -> u64 {
    members.iter().map(|m| m.health.records()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_mid_stream_process_every_record_once() -> Result<()> {
    // Shown when the test fails: who had which partitions, what was committed on handover.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("tierflow_pipeline=info")
        .try_init();
    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(6);
    ensure_topics(&kafka, &topics.specs()).await?;
    // The stream keeps flowing (about 1,000 records/s) while members join and leave.
    let generated = generated(&synthetic(300, 20, 11));
    let records = generated.len() as u64;
    let producer = {
        let (kafka, topic) = (kafka.clone(), topics.clickstream.clone());
        tokio::spawn(async move {
            for chunk in generated.chunks(500) {
                produce_records(&kafka, &topic, chunk).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            anyhow::Ok(())
        })
    };
    let store = RedisStore::connect(RedisConfig {
        key_prefix: unique_name("r"),
        ..RedisConfig::new(redis().url())
    })
    .await?;
    let config = PipelineConfig {
        group_id: unique_name("group"),
        // Small batches, so a rebalance always finds batches in flight.
        batch_max_events: 50,
        ..PipelineConfig::default()
    };
    let long = Duration::from_secs(180);

    let first = join(&kafka, &topics, &store, &config)?;
    wait_for("the first member to do a fifth", long, || {
        done(&[&first]) >= records / 5
    })
    .await?;
    let second = join(&kafka, &topics, &store, &config)?;
    wait_for("the second member to get partitions", long, || {
        second.health.records() > 0
    })
    .await?;
    let third = join(&kafka, &topics, &store, &config)?;
    wait_for("the third member to get partitions", long, || {
        third.health.records() > 0
    })
    .await?;
    ensure!(
        !producer.is_finished(),
        "the stream ended before every member joined; produce more"
    );
    // The first member leaves while the stream is still flowing.
    let mut summaries = vec![first.leave().await?];
    wait_for("the remaining members to finish", long, || {
        done(&[&second, &third]) + summaries[0].records >= records
    })
    .await?;
    producer.await??;
    summaries.push(second.leave().await?);
    summaries.push(third.leave().await?);

    let processed: u64 = summaries.iter().map(|s| s.records).sum();
    ensure!(
        processed == records,
        "{processed} records processed for {records} produced: a revocation replayed or lost records ({summaries:?})"
    );
    ensure!(summaries.iter().all(|s| s.batches > 0), "{summaries:?}");

    let observed = observe(&kafka, &topics, &config.group_id, records).await?;
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let sources: Vec<_> = observed.input.iter().map(Read::source).collect();
    let expected = offline::replay(&scorer, &config, &sources)?;
    let scored: u64 = summaries.iter().map(|s| s.counts.scored).sum();
    ensure!(
        scored == expected.scored,
        "scored {scored} != {}",
        expected.scored
    );
    // Strict: no output twice, state and committed offsets exactly the replay's.
    check(&observed, &expected, &store, scorer.version(), false).await
}
