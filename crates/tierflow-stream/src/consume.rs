//! Consumer-group members and the offset questions every test and tool asks: where is the
//! end of each partition, and what has a group committed.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::error::StreamError;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A group member subscribed to `topics`, committing only when told to.
pub fn group_consumer(
    config: &KafkaConfig,
    group_id: &str,
    topics: &[&str],
) -> Result<StreamConsumer, StreamError> {
    let consumer: StreamConsumer = config
        .consumer_config(group_id)
        .create()
        .map_err(|e| StreamError::kafka("creating consumer", e))?;
    consumer
        .subscribe(topics)
        .map_err(|e| StreamError::kafka("subscribing", e))?;
    Ok(consumer)
}

/// Partition ids of a topic, from the cluster's metadata.
pub fn partitions(config: &KafkaConfig, topic: &str) -> Result<Vec<i32>, StreamError> {
    let consumer: BaseConsumer = config
        .client_config()
        .create()
        .map_err(|e| StreamError::kafka("creating metadata client", e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| StreamError::kafka("fetching metadata", e))?;
    let topic_meta = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| StreamError::Topic {
            topic: topic.to_owned(),
            reason: "not in metadata".to_owned(),
        })?;
    if let Some(err) = topic_meta.error() {
        return Err(StreamError::Topic {
            topic: topic.to_owned(),
            reason: format!("{err:?}"),
        });
    }
    Ok(topic_meta.partitions().iter().map(|p| p.id()).collect())
}

/// The high watermark (offset of the next record) of every partition of `topic`.
pub fn high_watermarks(
    config: &KafkaConfig,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, StreamError> {
    let consumer: BaseConsumer = config
        .client_config()
        .create()
        .map_err(|e| StreamError::kafka("creating metadata client", e))?;
    let mut marks = BTreeMap::new();
    for partition in partitions(config, topic)? {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|e| StreamError::kafka("fetching watermarks", e))?;
        marks.insert(partition, high);
    }
    Ok(marks)
}

/// The offsets `group_id` has committed on each partition of `topic` (absent = none yet).
pub fn committed_offsets(
    config: &KafkaConfig,
    group_id: &str,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, StreamError> {
    let consumer: BaseConsumer = config
        .consumer_config(group_id)
        .create()
        .map_err(|e| StreamError::kafka("creating offset client", e))?;
    let mut wanted = TopicPartitionList::new();
    for partition in partitions(config, topic)? {
        wanted.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(wanted, METADATA_TIMEOUT)
        .map_err(|e| StreamError::kafka("fetching committed offsets", e))?;
    let offsets = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    // The list must go before the consumer (a mock-cluster consumer hangs otherwise).
    drop(committed);
    drop(consumer);
    Ok(offsets)
}
