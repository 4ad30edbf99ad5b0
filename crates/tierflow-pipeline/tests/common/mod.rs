//! Helpers for the pipeline's tests: produce generated events, read topics back, compare a
//! run with the offline reference.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tierflow_data::synth::{self, Dials, SynthConfig};
use tierflow_pipeline::offline::SourceRecord;
use tierflow_stream::consume::partitions;
use tierflow_stream::{BoundedProducer, KafkaConfig, OutRecord};

/// Settings for short test runs against the brokers here (see BROKER-FACTS.md).
pub(crate) fn test_kafka(brokers: String) -> KafkaConfig {
    let mut kafka = KafkaConfig::new(brokers);
    kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    kafka
        .properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    kafka
}

/// A generated stream with every kind of disorder and some malformed records.
pub(crate) fn synthetic(users: u64, days: u32, seed: u64) -> SynthConfig {
    SynthConfig {
        users,
        days,
        seed,
        dials: Dials {
            out_of_order: 0.02,
            late: 0.01,
            duplicate: 0.01,
            malformed: 0.01,
        },
        ..SynthConfig::default()
    }
}

/// Produces the generated stream to `topic`, keyed by user. Returns the record count.
pub(crate) async fn produce(kafka: &KafkaConfig, topic: &str, config: &SynthConfig) -> Result<u64> {
    let mut producer = BoundedProducer::new(kafka, 10_000)?;
    let mut n = 0;
    for record in synth::generate(config) {
        let value = record.to_bytes();
        producer
            .send(OutRecord {
                topic,
                key: Some(record.key().as_bytes()),
                value: &value,
                headers: &[],
            })
            .await?;
        n += 1;
    }
    producer.flush().await?;
    Ok(n)
}

/// One record read back.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
}

impl Read {
    pub(crate) fn source(&self) -> SourceRecord {
        SourceRecord {
            partition: self.partition,
            offset: self.offset,
            payload: self.payload.clone(),
        }
    }
}

/// Reads every partition of `topic` from the beginning, outside any group, until `idle`
/// passes with nothing new (and at least `at_least` records arrived).
pub(crate) async fn read_all(
    kafka: &KafkaConfig,
    topic: &str,
    at_least: usize,
    idle: Duration,
) -> Result<Vec<Read>> {
    let consumer: StreamConsumer = kafka
        .consumer_config(&format!("reader-{}", tierflow_testkit::unique_name("g")))
        .create()
        .context("creating reader")?;
    let ids = tokio::task::block_in_place(|| partitions(kafka, topic))?;
    let mut list = TopicPartitionList::new();
    for p in ids {
        list.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    drop(list);
    let mut out = Vec::new();
    let started = Instant::now();
    loop {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(Ok(m)) => out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
            }),
            Ok(Err(e)) => bail!("reading {topic}: {e}"),
            Err(_) if out.len() >= at_least => break,
            Err(_) if started.elapsed() > Duration::from_secs(120) => {
                bail!("{topic}: only {} of at least {at_least} records", out.len())
            }
            Err(_) => {}
        }
    }
    drop(consumer);
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// The end (last offset + 1) of each partition in `records`.
pub(crate) fn ends(records: &[Read]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for r in records {
        let end = ends.entry(r.partition).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    ends
}

/// Polls `check` until it holds or `timeout` passes.
pub(crate) async fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<()> {
    let started = Instant::now();
    while !check() {
        ensure!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
