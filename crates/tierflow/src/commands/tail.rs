//! `tierflow tail TOPIC`: what is on a topic, decoded and filtered, for people and for `jq`.
//! An assigned reader (no group, no commits), so tailing never disturbs the pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tierflow_events::codec::decode_click;
use tierflow_events::{
    CampaignOutcome, CampaignTriggered, Contract, DeadLetter, EventTime, EventType, OutputRecord,
    TierChanged, UserScore,
};
use tierflow_events::{Encoding, HEADER_ENCODING, HEADER_SCHEMA};

use crate::cli::TailArgs;
use crate::config::{Config, TopicsConfig};
use crate::topic_reader::{self, assign_only_config};

/// Types `--type` accepts besides the clickstream's event types.
const TYPES: [&str; 8] = [
    "clickstream",
    "tier_changed",
    "user_score",
    "dead_letter",
    "campaign_triggered",
    "campaign_outcome",
    "tombstone",
    "undecodable",
];

pub(crate) async fn run(args: TailArgs, config: &Config) -> Result<()> {
    let (topic, role) = resolve(&args.topic, &config.topics);
    let types: BTreeSet<String> = args.types.iter().map(|t| t.trim().to_owned()).collect();
    for t in &types {
        if !TYPES.contains(&t.as_str()) && EventType::ALL.iter().all(|e| e.as_str() != t) {
            bail!(
                "--type {t:?} is not one of {} or a clickstream event type",
                TYPES.join(", ")
            );
        }
    }
    let kafka = config.kafka.clone();
    let (spans, starts) = tokio::task::block_in_place(|| {
        let spans = topic_reader::spans(&kafka, &topic)?;
        let starts = topic_reader::starts(&kafka, &topic, &spans, args.from)?;
        anyhow::Ok((spans, starts))
    })?;
    // Without --follow, each partition is read up to its end as found now.
    let mut open: BTreeMap<i32, i64> = spans
        .iter()
        .filter(|(p, span)| args.follow || starts[*p] < span.end)
        .map(|(p, span)| (*p, span.end))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let consumer: StreamConsumer = assign_only_config(&kafka)
        .create()
        .context("creating a reader")?;
    let mut list = TopicPartitionList::new();
    for partition in open.keys() {
        list.add_partition_offset(&topic, *partition, Offset::Offset(starts[partition]))?;
    }
    consumer.assign(&list)?;
    drop(list);

    let filter = Filter {
        user: args.user.clone(),
        types,
    };
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let limit = args.limit.unwrap_or(u64::MAX);
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    while printed < limit && !open.is_empty() {
        let message = tokio::select! {
            _ = &mut stop => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(partition)) => {
                if !args.follow {
                    open.remove(&partition);
                }
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {topic}")),
        };
        let partition = message.partition();
        if !args.follow {
            match open.get(&partition) {
                Some(end) if message.offset() < *end => {
                    if message.offset() + 1 >= *end {
                        open.remove(&partition);
                    }
                }
                // Past the end found at start (or a partition already done).
                _ => continue,
            }
        }
        let record = decode(&message, role);
        if !filter.accepts(&record) {
            continue;
        }
        let written = if args.pretty {
            writeln!(out, "{}", record.pretty())
        } else {
            serde_json::to_writer(&mut out, &record)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        };
        // A closed pipe (`| head`) ends the tail quietly.
        match written.and_then(|()| if args.follow { out.flush() } else { Ok(()) }) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        printed += 1;
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The topic's name and the contract it carries when it is one of the configured topics.
fn resolve(topic: &str, topics: &TopicsConfig) -> (String, Option<Contract>) {
    let roles = [
        (Contract::Clickstream, &topics.clickstream),
        (Contract::TierChanged, &topics.tier_changed),
        (Contract::UserScore, &topics.user_score),
        (Contract::DeadLetter, &topics.dead_letter),
        (Contract::CampaignTriggered, &topics.campaign_triggered),
        // Held-out triggers are the same record on their own topic.
        (Contract::CampaignTriggered, &topics.campaign_control),
        (Contract::CampaignOutcome, &topics.campaign_outcome),
    ];
    for (contract, name) in roles {
        if topic == contract.name() || topic == name.as_str() {
            return (name.clone(), Some(contract));
        }
    }
    (topic.to_owned(), None)
}

/// One record as printed.
#[derive(Debug, Serialize)]
struct Printed {
    partition: i32,
    offset: i64,
    /// Kafka record timestamp.
    timestamp: Option<EventTime>,
    key: Option<String>,
    /// The contract name, the clickstream event type, `tombstone` or `undecodable`.
    #[serde(rename = "type")]
    kind: String,
    user_id: Option<String>,
    /// The decoded record as JSON, whatever the wire encoding; `None` (null) for tombstones
    /// and records that could not be decoded.
    value: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

struct Filter {
    user: Option<String>,
    types: BTreeSet<String>,
}

impl Filter {
    fn accepts(&self, record: &Printed) -> bool {
        let user_ok = match &self.user {
            None => true,
            Some(user) => record.user_id.as_deref() == Some(user.as_str()),
        };
        let type_ok = self.types.is_empty()
            || self.types.contains(&record.kind)
            || (self.types.contains("clickstream")
                && EventType::ALL.iter().any(|t| t.as_str() == record.kind));
        user_ok && type_ok
    }
}

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn decode(message: &BorrowedMessage<'_>, role: Option<Contract>) -> Printed {
    let key = message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let mut printed = Printed {
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message
            .timestamp()
            .to_millis()
            .map(EventTime::from_unix_millis),
        key: key.clone(),
        kind: "undecodable".to_owned(),
        user_id: key,
        value: None,
        error: None,
    };
    // The headers say what a record is; a configured topic's role is the fallback.
    let contract = header(message, HEADER_SCHEMA)
        .and_then(|schema| schema.split('/').next())
        .and_then(|name| Contract::from_str(name).ok())
        .or(role);
    let encoding = match header(message, HEADER_ENCODING).map(Encoding::from_str) {
        None => Encoding::Json,
        Some(Ok(encoding)) => encoding,
        Some(Err(e)) => {
            printed.error = Some(e);
            return printed;
        }
    };
    let Some(payload) = message.payload() else {
        printed.kind = "tombstone".to_owned();
        return printed;
    };
    let Some(contract) = contract else {
        printed.error = Some(format!(
            "no {HEADER_SCHEMA} header and the topic is not one of the configured topics"
        ));
        return printed;
    };
    let decoded: Result<(String, String, Box<RawValue>), String> = match contract {
        Contract::Clickstream => decode_click(payload)
            .map_err(|e| e.to_string())
            .and_then(|e| {
                Ok((
                    e.event_type.as_str().to_owned(),
                    e.user_id.clone(),
                    json(&e)?,
                ))
            }),
        Contract::TierChanged => output::<TierChanged>(payload, encoding, |r| r.user_id.clone()),
        Contract::UserScore => output::<UserScore>(payload, encoding, |r| r.user_id.clone()),
        Contract::CampaignTriggered => {
            output::<CampaignTriggered>(payload, encoding, |r| r.user_id.clone())
        }
        Contract::CampaignOutcome => {
            output::<CampaignOutcome>(payload, encoding, |r| r.user_id.clone())
        }
        Contract::DeadLetter => output::<DeadLetter>(payload, encoding, |r| {
            r.source_key
                .as_ref()
                .map(|k| String::from_utf8_lossy(&k.0).into_owned())
                .unwrap_or_default()
        }),
    };
    match decoded {
        Ok((kind, user, value)) => {
            printed.kind = kind;
            printed.user_id = Some(user);
            printed.value = Some(value);
        }
        Err(e) => printed.error = Some(e),
    }
    printed
}

fn json(value: &impl Serialize) -> Result<Box<RawValue>, String> {
    serde_json::value::to_raw_value(value).map_err(|e| format!("unprintable: {e}"))
}

fn output<T: OutputRecord>(
    payload: &[u8],
    encoding: Encoding,
    user: impl Fn(&T) -> String,
) -> Result<(String, String, Box<RawValue>), String> {
    let record = tierflow_events::decode::<T>(payload, encoding).map_err(|e| e.to_string())?;
    Ok((T::CONTRACT.name().to_owned(), user(&record), json(&record)?))
}

impl Printed {
    /// One short line: position, type, user and what matters of the record.
    fn pretty(&self) -> String {
        let user = self.user_id.as_deref().unwrap_or("-");
        let head = format!(
            "{}@{} {:<18} {user}",
            self.partition, self.offset, self.kind
        );
        let v: Value = self
            .value
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null);
        let tier = |field: &str| match &v[field] {
            Value::Null => "none".to_owned(),
            value => value.to_string(),
        };
        let text = |field: &str| v[field].as_str().unwrap_or("-").to_owned();
        let number = |field: &str| v[field].as_f64().unwrap_or(f64::NAN);
        let scores = || {
            format!(
                "churn {:.3} expected {:.2}",
                v["scores"]["churn_risk"].as_f64().unwrap_or(f64::NAN),
                v["scores"]["expected_value"].as_f64().unwrap_or(f64::NAN)
            )
        };
        let detail = match self.kind.as_str() {
            "tier_changed" => format!(
                "tier {} -> {} at {} by {} ({}) [{}]",
                tier("from_tier"),
                tier("to_tier"),
                text("event_time"),
                text("causing_event_id"),
                scores(),
                text("idempotency_key")
            ),
            "user_score" => format!(
                "tier {} at {} ({}, model {})",
                tier("tier"),
                text("event_time"),
                scores(),
                text("model_version")
            ),
            "campaign_triggered" => format!(
                "{} / {} tier {} at {} [{}]",
                text("campaign"),
                text("rule"),
                tier("tier"),
                text("event_time"),
                text("idempotency_key")
            ),
            "campaign_outcome" => format!(
                "{} {} purchase {} {:.2} {} after {} ms [{}]",
                text("campaign"),
                text("arm"),
                text("purchase_event_id"),
                number("revenue"),
                text("currency"),
                v["delay_ms"],
                text("idempotency_key")
            ),
            "dead_letter" => format!(
                "{} from {}/{}@{}: {}",
                text("error_class"),
                text("source_topic"),
                v["source_partition"],
                v["source_offset"],
                text("reason")
            ),
            "tombstone" => "(user forgotten)".to_owned(),
            "undecodable" => self.error.clone().unwrap_or_default(),
            // A clickstream event.
            _ => {
                let revenue = number("revenue");
                let money = if revenue.is_nan() {
                    String::new()
                } else {
                    format!(" {revenue:.2}")
                };
                format!("{}{money} session {}", text("ts"), text("session_id"))
            }
        };
        format!("{head} {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_resolve_through_the_topics_config() {
        let topics = TopicsConfig {
            tier_changed: "shop.tiers".into(),
            ..TopicsConfig::default()
        };
        let check = |given: &str, expected: (&str, Option<Contract>)| {
            let (name, role) = resolve(given, &topics);
            assert_eq!((name.as_str(), role), expected, "{given}");
        };
        check("tier_changed", ("shop.tiers", Some(Contract::TierChanged)));
        check("shop.tiers", ("shop.tiers", Some(Contract::TierChanged)));
        check(
            "user_score",
            ("tierflow.user_score", Some(Contract::UserScore)),
        );
        check("something.else", ("something.else", None));
    }
}
