//! Feeds the live view from the output topics: one assigned reader (no group, no commits,
//! never disturbs the pipeline) on tier_changed, campaign_triggered, campaign_control and
//! campaign_outcome, so the view counts what every replica of the group published. Topics
//! that do not exist yet are looked for again every few seconds.

use std::str::FromStr;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Offset, TopicPartitionList};
use tierflow_events::{
    CampaignArm, CampaignOutcome, CampaignTriggered, Contract, Encoding, HEADER_ENCODING,
    HEADER_SCHEMA, OutputRecord, TierChanged,
};
use tierflow_pipeline::TopicsConfig;
use tierflow_stream::KafkaConfig;
use tokio::sync::watch;

use super::feed::LiveFeed;
use crate::topic_reader::assign_only_config;

/// How often topics that were missing are looked for again.
const RETRY: Duration = Duration::from_secs(5);

/// Where the reader starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartFrom {
    /// Everything on the topics (the demo: its topics are new).
    Beginning,
    /// Only what is published from now on (`run` against long-lived topics).
    End,
}

/// One output topic and what it carries.
#[derive(Debug, Clone)]
struct Watched {
    topic: String,
    kind: Kind,
    assigned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TierChanged,
    Trigger(CampaignArm),
    Outcome,
}

/// Reads until `shutdown` turns true. Errors are shown in the view, not returned: the live
/// view never stops the pipeline.
pub(crate) async fn read_outputs(
    feed: LiveFeed,
    kafka: KafkaConfig,
    topics: TopicsConfig,
    from: StartFrom,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watched = vec![
        Watched {
            topic: topics.tier_changed,
            kind: Kind::TierChanged,
            assigned: false,
        },
        Watched {
            topic: topics.campaign_triggered,
            kind: Kind::Trigger(CampaignArm::Treated),
            assigned: false,
        },
        Watched {
            topic: topics.campaign_control,
            kind: Kind::Trigger(CampaignArm::Control),
            assigned: false,
        },
        Watched {
            topic: topics.campaign_outcome,
            kind: Kind::Outcome,
            assigned: false,
        },
    ];
    // A small prefetch: the view reads what the pipeline writes and must stay light.
    let consumer: StreamConsumer = match assign_only_config(&kafka)
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "4096")
        .create()
    {
        Ok(consumer) => consumer,
        Err(e) => {
            feed.lock()
                .set_reader(format!("cannot create a topic reader: {e}"));
            return;
        }
    };
    let mut retry = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = retry.tick(), if watched.iter().any(|w| !w.assigned) => {
                assign_found(&feed, &consumer, &kafka, &mut watched, from).await;
            }
            message = consumer.recv() => match message {
                Ok(message) => {
                    let kind = watched
                        .iter()
                        .find(|w| w.topic == message.topic())
                        .map(|w| w.kind);
                    if let Some(kind) = kind {
                        apply(&feed, &message, kind);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "live view reader");
                    feed.lock().set_reader(format!("reading: {e}"));
                }
            },
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

/// Assigns every partition of the watched topics that exist now and were not assigned yet.
async fn assign_found(
    feed: &LiveFeed,
    consumer: &StreamConsumer,
    kafka: &KafkaConfig,
    watched: &mut [Watched],
    from: StartFrom,
) {
    let offset = match from {
        StartFrom::Beginning => Offset::Beginning,
        StartFrom::End => Offset::End,
    };
    let mut list = TopicPartitionList::new();
    let mut missing = Vec::new();
    for w in watched.iter_mut().filter(|w| !w.assigned) {
        let lookup = {
            let kafka = kafka.clone();
            let topic = w.topic.clone();
            tokio::task::spawn_blocking(move || {
                tierflow_stream::consume::partitions(&kafka, &topic)
            })
            .await
        };
        match lookup {
            Ok(Ok(ids)) if !ids.is_empty() => {
                for id in ids {
                    if let Err(e) = list.add_partition_offset(&w.topic, id, offset) {
                        missing.push(format!("{}: {e}", w.topic));
                    }
                }
                w.assigned = true;
            }
            Ok(Ok(_)) => missing.push(format!("{} (no partitions yet)", w.topic)),
            Ok(Err(e)) => missing.push(format!("{} ({e})", w.topic)),
            Err(e) => missing.push(format!("{} ({e})", w.topic)),
        }
    }
    if list.count() > 0
        && let Err(e) = consumer.incremental_assign(&list)
    {
        feed.lock()
            .set_reader(format!("cannot read the output topics: {e}"));
        return;
    }
    let reading: Vec<&str> = watched
        .iter()
        .filter(|w| w.assigned)
        .map(|w| w.topic.as_str())
        .collect();
    let start = match from {
        StartFrom::Beginning => "from their beginning",
        StartFrom::End => "from their end at start",
    };
    let mut status = format!("reading {} {start}", reading.join(", "));
    if !missing.is_empty() {
        status.push_str(&format!("; waiting for {}", missing.join(", ")));
    }
    feed.lock().set_reader(status);
}

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Decodes one record (JSON or bincode, by its headers; the topic's role when it has none)
/// into the feed. Tombstones are skipped.
fn apply(feed: &LiveFeed, message: &BorrowedMessage<'_>, kind: Kind) {
    let Some(payload) = message.payload() else {
        return;
    };
    let decoded = decode(
        payload,
        header(message, HEADER_SCHEMA),
        header(message, HEADER_ENCODING),
        kind,
    );
    let mut live = feed.lock();
    match decoded {
        Some(Record::TierChanged(record)) => live.tier_changed(&record),
        Some(Record::Trigger(record, arm)) => live.trigger(&record, arm),
        Some(Record::Outcome(record)) => live.outcome(&record),
        None => live.undecodable(),
    }
}

/// One decoded output record.
#[derive(Debug)]
enum Record {
    TierChanged(Box<TierChanged>),
    Trigger(Box<CampaignTriggered>, CampaignArm),
    Outcome(Box<CampaignOutcome>),
}

/// The record a topic of `kind` carries, from its value and its `tierflow-schema` and
/// `tierflow-encoding` headers (JSON without one); `None` when it cannot be decoded or the
/// schema header names another contract.
fn decode(
    payload: &[u8],
    schema: Option<&str>,
    encoding: Option<&str>,
    kind: Kind,
) -> Option<Record> {
    let encoding = match encoding.map(Encoding::from_str) {
        None => Encoding::Json,
        Some(Ok(encoding)) => encoding,
        Some(Err(_)) => return None,
    };
    let contract = schema
        .and_then(|schema| schema.split('/').next())
        .map(Contract::from_str);
    let expected = match kind {
        Kind::TierChanged => TierChanged::CONTRACT,
        Kind::Trigger(_) => CampaignTriggered::CONTRACT,
        Kind::Outcome => CampaignOutcome::CONTRACT,
    };
    match contract {
        Some(Ok(c)) if c == expected => {}
        None => {}
        _ => return None,
    }
    match kind {
        Kind::TierChanged => tierflow_events::decode(payload, encoding)
            .ok()
            .map(|r| Record::TierChanged(Box::new(r))),
        Kind::Trigger(arm) => tierflow_events::decode(payload, encoding)
            .ok()
            .map(|r| Record::Trigger(Box::new(r), arm)),
        Kind::Outcome => tierflow_events::decode(payload, encoding)
            .ok()
            .map(|r| Record::Outcome(Box::new(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::feed::tests::{change, trigger};
    use tierflow_events::encode;

    #[test]
    fn records_decode_by_their_headers() {
        let tier = change("u1", Some(0), 2, "k1");
        let json = encode(&tier, Encoding::Json);
        let bincode = encode(&tier, Encoding::Bincode);
        let check = |payload: &[u8], schema: Option<&str>, encoding: Option<&str>, kind: Kind| {
            decode(payload, schema, encoding, kind)
        };
        // JSON without headers, JSON and bincode with them.
        for (payload, encoding) in [
            (&json, None),
            (&json, Some("json")),
            (&bincode, Some("bincode")),
        ] {
            match check(
                payload,
                Some("tier_changed/v1"),
                encoding,
                Kind::TierChanged,
            ) {
                Some(Record::TierChanged(r)) => assert_eq!(*r, tier),
                other => panic!("{encoding:?}: {other:?}"),
            }
        }
        assert!(check(&json, None, None, Kind::TierChanged).is_some());
        // bincode read as JSON, an unknown encoding, another contract's header: undecodable.
        assert!(check(&bincode, None, None, Kind::TierChanged).is_none());
        assert!(check(&json, None, Some("yaml"), Kind::TierChanged).is_none());
        assert!(check(&json, Some("user_score/v1"), None, Kind::TierChanged).is_none());
        // The arm comes from the topic: the control topic carries the same record.
        let held = trigger("u2", "vip", "t1");
        let bytes = encode(&held, Encoding::Bincode);
        match check(
            &bytes,
            Some("campaign_triggered/v1"),
            Some("bincode"),
            Kind::Trigger(CampaignArm::Control),
        ) {
            Some(Record::Trigger(r, CampaignArm::Control)) => assert_eq!(*r, held),
            other => panic!("{other:?}"),
        }
    }
}
