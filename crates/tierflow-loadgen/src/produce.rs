//! The offered load: events produced at a fixed rate (a due count from the elapsed time,
//! topped up every millisecond, so a slow moment is caught up rather than lost) or as fast as
//! the producer goes. Each event is stamped with the wall clock just before it is handed to
//! the producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use tierflow_events::EventTime;
use tierflow_stream::{BoundedProducer, KafkaConfig, OutRecord};
use tokio::time::MissedTickBehavior;

use crate::events::EventMaker;

/// How much to offer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offer {
    /// Events per second; 0 = as fast as possible.
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    pub(crate) max_events: u64,
}

/// What the producer managed.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Produced {
    pub(crate) events: u64,
    /// From the first send to the last acknowledgement.
    pub(crate) secs: f64,
    pub(crate) events_per_sec: f64,
    /// Wall-clock time of the first and last event (`ts`), ms since the epoch.
    pub(crate) first_ms: i64,
    pub(crate) last_ms: i64,
}

/// Produces until the duration passes or `max_events` are sent, then waits for every
/// acknowledgement. `sent` counts handed-over events as they go (for progress).
pub(crate) async fn produce(
    kafka: &KafkaConfig,
    topic: &str,
    mut maker: EventMaker,
    offer: Offer,
    sent: Arc<AtomicU64>,
) -> Result<Produced> {
    let mut kafka = kafka.clone();
    // Large batches: the producer must not be what limits the offered rate.
    for (key, value) in [
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "500000"),
        ("queue.buffering.max.kbytes", "1048576"),
    ] {
        kafka
            .properties
            .entry(key.into())
            .or_insert_with(|| value.into());
    }
    let mut producer = BoundedProducer::new(&kafka, 200_000)?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let started = Instant::now();
    let first_ms = EventTime::now().unix_millis();
    let mut count = 0u64;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= offer.duration || count >= offer.max_events {
            break;
        }
        let due = if offer.rate == 0 {
            count + 1_000
        } else {
            (offer.rate as f64 * elapsed.as_secs_f64()) as u64 + 1
        }
        .min(offer.max_events);
        while count < due {
            let (key, value) = maker.next(EventTime::now());
            producer
                .send(OutRecord {
                    topic,
                    key: Some(key.as_bytes()),
                    value: &value,
                    headers: &[],
                })
                .await?;
            count += 1;
        }
        sent.store(count, Ordering::Relaxed);
        if offer.rate == 0 {
            tokio::task::yield_now().await;
        } else {
            tick.tick().await;
        }
    }
    let last_ms = EventTime::now().unix_millis();
    producer.flush().await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Produced {
        events: count,
        secs,
        events_per_sec: count as f64 / secs,
        first_ms,
        last_ms,
    })
}
