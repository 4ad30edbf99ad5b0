//! `--mode consume-only`: the broker's ceiling for the pipeline's input side. The same events
//! are produced to a fresh topic (the produce rate is reported too), then read back by a new
//! consumer-group member configured as the pipeline's (`StreamConsumer::recv`, the payload
//! copied out), twice: once reading only, once also decoding every event as the pipeline does.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde::Serialize;
use tierflow_events::ClickEvent;
use tierflow_stream::TopicSpec;

use crate::Args;
use crate::cpu;
use crate::events::EventMaker;
use crate::measure::{self, Broker};
use crate::produce::{self, Offer, Produced};

#[derive(Debug, Serialize)]
pub(crate) struct ConsumeReport {
    broker: &'static str,
    topic: String,
    produced: Produced,
    /// Reading and copying each record.
    read: Pass,
    /// Reading, copying and `ClickEvent::from_json`.
    read_and_decode: Pass,
}

#[derive(Debug, Serialize)]
struct Pass {
    records: u64,
    bytes: u64,
    /// From the first record to the last (the group join is not counted).
    secs: f64,
    records_per_sec: f64,
    /// Seconds from subscribing to the first record.
    join_secs: f64,
    cpu_secs_this_process: f64,
}

pub(crate) async fn run(args: &Args) -> Result<ConsumeReport> {
    let run = measure::run_name();
    let broker = Broker::connect(&args.brokers, &args.kafka_properties)?;
    let topic = format!("{run}.clickstream");
    broker
        .create_topics(&[TopicSpec::new(&topic, args.partitions)])
        .await?;
    let bar = measure::progress(args.quiet);
    bar.set_message(format!("producing to {topic}"));
    let produced = produce::produce(
        &broker.kafka,
        &topic,
        EventMaker::new(args.users, args.user_distribution, args.seed, &run),
        Offer {
            rate: args.rate,
            duration: Duration::from_secs(args.duration_secs),
            max_events: args.max_events,
        },
        Arc::new(AtomicU64::new(0)),
    )
    .await?;
    bar.println(format!(
        "produced {} events in {:.1} s ({:.0}/s)",
        produced.events, produced.secs, produced.events_per_sec
    ));
    bar.set_message("reading");
    let read = pass(
        &broker,
        &topic,
        &format!("{run}.read"),
        produced.events,
        false,
    )
    .await?;
    bar.set_message("reading and decoding");
    let read_and_decode = pass(
        &broker,
        &topic,
        &format!("{run}.decode"),
        produced.events,
        true,
    )
    .await?;
    bar.finish_and_clear();
    Ok(ConsumeReport {
        broker: broker.kind(),
        topic,
        produced,
        read,
        read_and_decode,
    })
}

async fn pass(
    broker: &Broker,
    topic: &str,
    group: &str,
    records: u64,
    decode: bool,
) -> Result<Pass> {
    let mut config = broker.kafka.consumer_config(group);
    // As the pipeline's consumer (`PipelineConfig::consumer_queue_kbytes` default).
    config.set("queued.max.messages.kbytes", "16384");
    for (key, value) in &broker.kafka.properties {
        config.set(key, value);
    }
    let consumer: StreamConsumer = config.create().context("creating the consumer")?;
    consumer.subscribe(&[topic])?;
    let subscribed = Instant::now();
    let mut first: Option<Instant> = None;
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut decoded = 0u64;
    let cpu_before = cpu::own_process();
    while count < records {
        let message = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(e)) => bail!("consuming {topic}: {e}"),
            Err(_) => bail!("{topic}: nothing for 30 s after {count} of {records} records"),
        };
        first.get_or_insert_with(Instant::now);
        let payload = message.payload().unwrap_or_default().to_vec();
        bytes += payload.len() as u64;
        if decode && ClickEvent::from_json(&payload).is_ok() {
            decoded += 1;
        }
        count += 1;
    }
    let first = first.context("no record")?;
    let secs = first.elapsed().as_secs_f64();
    let cpu_secs_this_process = cpu::own_process() - cpu_before;
    drop(consumer);
    if decode && decoded != count {
        bail!("{} of {count} records did not decode", count - decoded);
    }
    Ok(Pass {
        records: count,
        bytes,
        secs,
        records_per_sec: count as f64 / secs,
        join_secs: first.duration_since(subscribed).as_secs_f64(),
        cpu_secs_this_process,
    })
}
