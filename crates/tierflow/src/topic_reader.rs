//! Reading a topic outside any consumer group, as `tail` and `replay` do: where to start in
//! each partition (`--from`), and where each partition ends right now.
//!
//! The end is read, not only asked for: tansu 0.6.0 answers ListOffsets(latest) with the
//! base offset of the last record batch plus one, not the log end (ARCHITECTURE.md, measured
//! quirks), so the last batch of each partition is fetched to find its true end.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use tierflow_events::EventTime;
use tierflow_stream::KafkaConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where to start reading each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAt {
    Beginning,
    End,
    /// The same offset in every partition (clamped to what the partition holds).
    Offset(i64),
    /// The first record whose Kafka timestamp is at or after this time.
    Time(EventTime),
}

impl FromStr for StartAt {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "beginning" | "earliest" => Ok(Self::Beginning),
            "end" | "latest" => Ok(Self::End),
            _ => {
                if let Ok(offset) = text.parse::<i64>() {
                    return if offset >= 0 {
                        Ok(Self::Offset(offset))
                    } else {
                        Err(format!("offset {offset} is negative"))
                    };
                }
                EventTime::parse_rfc3339(text).map(Self::Time).map_err(|_| {
                    format!(
                        "{text:?} is not `beginning`, `end`, an offset or an RFC 3339 time \
                         (e.g. 2026-01-01T00:00:00Z)"
                    )
                })
            }
        }
    }
}

/// The first and the next-to-be-written offset of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) low: i64,
    pub(crate) end: i64,
}

/// A consumer that is never part of a group: it only ever `assign`s and commits nothing.
/// (librdkafka wants a `group.id` for any consumer; this one is never joined.)
pub(crate) fn assign_only_config(kafka: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("group.id", "tierflow-reader-never-joined")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    config
}

/// Partition ids of `topic`, with a message that says what to do when it does not exist.
pub(crate) fn partitions(kafka: &KafkaConfig, topic: &str) -> Result<Vec<i32>> {
    let ids = tierflow_stream::consume::partitions(kafka, topic)
        .with_context(|| format!("topic {topic:?} on {} (does it exist?)", kafka.brokers))?;
    if ids.is_empty() {
        bail!("topic {topic:?} has no partitions (does it exist?)");
    }
    Ok(ids)
}

/// The current first offset and true end of every partition of `topic`. Blocking.
pub(crate) fn spans(kafka: &KafkaConfig, topic: &str) -> Result<BTreeMap<i32, Span>> {
    let consumer: BaseConsumer = assign_only_config(kafka)
        .create()
        .context("creating a reader")?;
    let mut spans = BTreeMap::new();
    let mut probe = TopicPartitionList::new();
    for partition in partitions(kafka, topic)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{partition}"))?;
        spans.insert(partition, Span { low, end: high });
        if high > low {
            // The last batch starts at or before `high - 1`: read it to its end.
            probe.add_partition_offset(topic, partition, Offset::Offset(high - 1))?;
        }
    }
    if probe.count() == 0 {
        return Ok(spans);
    }
    let mut open: Vec<i32> = probe.elements().iter().map(|e| e.partition()).collect();
    consumer.assign(&probe)?;
    drop(probe);
    let started = Instant::now();
    while !open.is_empty() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{topic}: no end of partitions {open:?} after 30 s");
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                let span = spans
                    .get_mut(&message.partition())
                    .context("unknown partition")?;
                span.end = span.end.max(message.offset() + 1);
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => open.retain(|p| *p != partition),
            Some(Err(e)) => return Err(e).with_context(|| format!("reading the end of {topic}")),
        }
    }
    Ok(spans)
}

/// The offset to start at in each partition, between its first offset and its end.
/// Blocking.
pub(crate) fn starts(
    kafka: &KafkaConfig,
    topic: &str,
    spans: &BTreeMap<i32, Span>,
    at: StartAt,
) -> Result<BTreeMap<i32, i64>> {
    let clamp = |span: &Span, offset: i64| offset.clamp(span.low, span.end);
    match at {
        StartAt::Beginning => Ok(spans.iter().map(|(p, s)| (*p, s.low)).collect()),
        StartAt::End => Ok(spans.iter().map(|(p, s)| (*p, s.end)).collect()),
        StartAt::Offset(offset) => Ok(spans.iter().map(|(p, s)| (*p, clamp(s, offset))).collect()),
        StartAt::Time(time) => {
            let consumer: BaseConsumer = assign_only_config(kafka)
                .create()
                .context("creating a reader")?;
            let mut wanted = TopicPartitionList::new();
            for partition in spans.keys() {
                wanted.add_partition_offset(
                    topic,
                    *partition,
                    Offset::Offset(time.unix_millis()),
                )?;
            }
            let found = consumer
                .offsets_for_times(wanted, TIMEOUT)
                .with_context(|| format!("offsets of {topic} at {time}"))?;
            let answers: Vec<(i32, Offset)> = found
                .elements()
                .iter()
                .map(|e| (e.partition(), e.offset()))
                .collect();
            drop(found);
            let mut starts = BTreeMap::new();
            for (partition, answer) in answers {
                let span = spans[&partition];
                // No record at or after the time: start at the end.
                let offset = match answer {
                    Offset::Offset(o) => clamp(&span, o),
                    _ => span.end,
                };
                let reader = Probe {
                    consumer: &consumer,
                    topic,
                    partition,
                };
                // The broker's time index is checked, not trusted: tansu 0.6.0 answers
                // offset 0 whatever the time. A wrong answer falls back to a binary search
                // over the partition's timestamps.
                let offset = if reader.starts_at(span, offset, time.unix_millis())? {
                    offset
                } else {
                    tracing::debug!(
                        partition,
                        answer = offset,
                        "broker's offset for the time is wrong; searching"
                    );
                    reader.search(span, time.unix_millis())?
                };
                starts.insert(partition, offset);
            }
            Ok(starts)
        }
    }
}

/// Sets `group`'s committed offsets on `topic` (the group must have no active member).
/// Blocking.
pub(crate) fn commit_positions(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<()> {
    let consumer: BaseConsumer = kafka
        .consumer_config(group)
        .create()
        .context("creating an offset client")?;
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    let result = consumer.commit(&list, CommitMode::Sync);
    drop(list);
    match result {
        Ok(()) => Ok(()),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId))
        | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::IllegalGeneration)) => bail!(
            "consumer group {group:?} has active members: stop them (another replay of this \
             namespace?) before replaying"
        ),
        Err(e) => Err(e).with_context(|| format!("setting the start offsets of {group:?}")),
    }
}

/// Reads single records of one partition by offset, to find where a time starts.
struct Probe<'a> {
    consumer: &'a BaseConsumer,
    topic: &'a str,
    partition: i32,
}

impl Probe<'_> {
    /// The first record at or after `offset` (before `end`): its offset and Kafka timestamp
    /// (`i64::MIN` when it has none).
    fn record_at(&self, offset: i64, end: i64) -> Result<Option<(i64, i64)>> {
        if offset >= end {
            return Ok(None);
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(self.topic, self.partition, Offset::Offset(offset))?;
        self.consumer.assign(&list)?;
        let started = Instant::now();
        loop {
            if started.elapsed() > TIMEOUT {
                bail!(
                    "{}/{}: no record at offset {offset} after {TIMEOUT:?}",
                    self.topic,
                    self.partition
                );
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) if m.partition() == self.partition && m.offset() >= offset => {
                    return Ok(Some((
                        m.offset(),
                        m.timestamp().to_millis().unwrap_or(i64::MIN),
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p == self.partition => return Ok(None),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    return Err(e)
                        .with_context(|| format!("reading {}/{}", self.topic, self.partition));
                }
            }
        }
    }

    /// Whether `offset` is where records stamped at or after `at` start: the record there
    /// (if any) is, and the one before it (if any) is not.
    fn starts_at(&self, span: Span, offset: i64, at: i64) -> Result<bool> {
        let here = match self.record_at(offset, span.end)? {
            Some((_, stamp)) => stamp >= at,
            None => true,
        };
        if !here || offset <= span.low {
            return Ok(here);
        }
        Ok(match self.record_at(offset - 1, span.end)? {
            Some((found, stamp)) if found < offset => stamp < at,
            _ => true,
        })
    }

    /// The first offset whose record is stamped at or after `at`, by binary search (for
    /// timestamps that do not decrease along the partition, as when producers stamp records
    /// as they send them); `span.end` when there is none.
    fn search(&self, span: Span, at: i64) -> Result<i64> {
        let (mut low, mut high) = (span.low, span.end);
        while low < high {
            let mid = low + (high - low) / 2;
            match self.record_at(mid, span.end)? {
                Some((_, stamp)) if stamp >= at => high = mid,
                Some((found, _)) => low = found + 1,
                None => high = mid,
            }
        }
        Ok(low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        let check = |text: &str, expected: Result<StartAt, ()>| {
            assert_eq!(text.parse::<StartAt>().map_err(|_| ()), expected, "{text}");
        };
        check("beginning", Ok(StartAt::Beginning));
        check("end", Ok(StartAt::End));
        check("42", Ok(StartAt::Offset(42)));
        check("-1", Err(()));
        check(
            "2026-01-02T00:00:00Z",
            Ok(StartAt::Time(EventTime::from_unix_millis(
                1_767_312_000_000,
            ))),
        );
        check("yesterday", Err(()));
    }
}
