//! The Kafka wrapper against a real broker (tansu, from the testkit) and against the
//! embedded mock cluster: topics, bounded production, a consumer group and its commits.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use tierflow_stream::consume::{committed_offsets, group_consumer, high_watermarks, partitions};
use tierflow_stream::{
    BoundedProducer, EmbeddedBroker, KafkaConfig, OutRecord, TopicSpec, ensure_topics,
};
use tierflow_testkit::{broker, unique_name};

/// Produces `n` keyed records, consumes them back through a group, commits, and checks that
/// every record arrived once and the committed offsets reach the end of every partition.
async fn round_trip(
    config: &KafkaConfig,
    topic: &str,
    n: usize,
    exact_watermarks: bool,
) -> Result<()> {
    let mut producer = BoundedProducer::new(config, 64)?;
    for i in 0..n {
        let key = format!("user-{}", i % 17);
        let value = format!("record-{i}");
        producer
            .send(OutRecord {
                topic,
                key: Some(key.as_bytes()),
                value: value.as_bytes(),
                headers: &[("tierflow-schema", b"test/v1")],
            })
            .await?;
        ensure!(producer.in_flight() <= 64, "in-flight bound broken");
    }
    let stats = producer.flush().await?;
    ensure!(stats.delivered == n as u64, "delivered {stats:?}");

    let group = unique_name("group");
    let consumer = group_consumer(config, &group, &[topic])?;
    let mut seen = BTreeMap::new();
    let mut consumed_ends: BTreeMap<i32, i64> = BTreeMap::new();
    while seen.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .with_context(|| format!("only {} of {n} records arrived", seen.len()))??;
        let value = String::from_utf8(message.payload().unwrap_or_default().to_vec())?;
        let header = message
            .headers()
            .and_then(|h| {
                rdkafka::message::Headers::iter(h)
                    .next()
                    .map(|h| h.value.map(<[u8]>::to_vec))
            })
            .flatten();
        ensure!(header.as_deref() == Some(&b"test/v1"[..]), "header lost");
        ensure!(
            seen.insert(value.clone(), message.offset()).is_none(),
            "{value} twice"
        );
        let end = consumed_ends.entry(message.partition()).or_insert(0);
        *end = (*end).max(message.offset() + 1);
        consumer.store_offset_from_message(&message)?;
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    drop(consumer);

    let committed = tokio::task::block_in_place(|| committed_offsets(config, &group, topic))?;
    let ends = tokio::task::block_in_place(|| high_watermarks(config, topic))?;
    ensure!(
        consumed_ends.values().sum::<i64>() == n as i64,
        "offsets are not dense: {consumed_ends:?}"
    );
    ensure!(
        committed == consumed_ends,
        "committed {committed:?} != end of what was consumed {consumed_ends:?}"
    );
    if exact_watermarks {
        ensure!(
            ends == consumed_ends,
            "watermarks {ends:?} != {consumed_ends:?}"
        );
    } else {
        // tansu 0.6.0 answers ListOffsets(latest) with the base offset of the last batch,
        // not the log end, so its high watermarks lag: they may only be lower.
        ensure!(
            ends.iter().all(|(p, e)| *e <= consumed_ends[p]),
            "watermarks {ends:?} beyond {consumed_ends:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_through_a_real_broker_and_group() -> Result<()> {
    let config = KafkaConfig::new(broker().bootstrap_servers());
    let topic = unique_name("roundtrip");
    ensure_topics(&config, &[TopicSpec::new(&topic, 3)]).await?;
    // Idempotent: a second call with an existing topic is fine.
    ensure_topics(&config, &[TopicSpec::new(&topic, 3)]).await?;
    assert_eq!(
        tokio::task::block_in_place(|| partitions(&config, &topic))?,
        vec![0, 1, 2]
    );
    round_trip(&config, &topic, 500, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_through_the_embedded_broker() -> Result<()> {
    let embedded = EmbeddedBroker::start(1)?;
    let topic = unique_name("embedded");
    embedded.create_topics(&[TopicSpec::new(&topic, 2)])?;
    round_trip(&embedded.kafka_config(), &topic, 200, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_broker_is_a_retriable_delivery_failure() -> Result<()> {
    // Nothing listens on port 1: delivery must fail (not hang, not succeed) once the
    // message timeout passes, and be classified as retriable.
    let mut config = KafkaConfig::new("127.0.0.1:1");
    config
        .properties
        .insert("message.timeout.ms".into(), "1500".into());
    let mut producer = BoundedProducer::new(&config, 8)?;
    producer
        .send(OutRecord {
            topic: "nowhere",
            key: None,
            value: b"x",
            headers: &[],
        })
        .await?;
    let err = producer.flush().await.expect_err("no broker, no delivery");
    assert_eq!(
        err.class(),
        tierflow_stream::FailureClass::Retriable,
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_broker_keeps_records_and_commits_across_a_restart() -> Result<()> {
    use tierflow_testkit::{Broker, BrokerStorage};
    let mut broker = Broker::start_with(BrokerStorage::Sqlite)?;
    let config = KafkaConfig::new(broker.bootstrap_servers());
    let topic = unique_name("durable");
    ensure_topics(&config, &[TopicSpec::new(&topic, 2)]).await?;
    let mut producer = BoundedProducer::new(&config, 32)?;
    for i in 0..100 {
        let value = format!("v{i}");
        producer
            .send(OutRecord {
                topic: &topic,
                key: Some(value.as_bytes()),
                value: value.as_bytes(),
                headers: &[],
            })
            .await?;
    }
    producer.flush().await?;
    drop(producer);

    broker.restart()?;
    let group = unique_name("durable-group");
    let consumer = group_consumer(&config, &group, &[&topic])?;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for n in 0..100 {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .with_context(|| format!("after the restart only {n} of 100 records came back"))??;
        let end = ends.entry(message.partition()).or_default();
        *end = (*end).max(message.offset() + 1);
        consumer.store_offset_from_message(&message)?;
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    drop(consumer);

    broker.restart()?;
    let committed = tokio::task::block_in_place(|| committed_offsets(&config, &group, &topic))?;
    ensure!(
        committed == ends,
        "committed {committed:?} lost in the restart (expected {ends:?})"
    );
    Ok(())
}
