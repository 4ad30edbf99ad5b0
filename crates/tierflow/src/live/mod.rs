//! The live view of a running pipeline (`tierflow run`, `tierflow demo`): a web page served
//! beside `/metrics` and a terminal dashboard, both drawn from one [`LiveFeed`].
//!
//! The feed has two sources. The output topics (tier changes, triggers, outcomes), read
//! outside any consumer group, make the counts group-wide: every replica's decisions, not just
//! this process's. This process's own metrics, sampled once a second, give throughput, batch
//! latency and consumer lag. Everything kept is bounded (rings, latest-N lists, per-tier and
//! per-campaign counters), so a view left open for weeks stays small.

mod feed;
mod prometheus;
mod reader;
pub(crate) mod tui;
mod web;

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tierflow_events::EventTime;
use tierflow_pipeline::TopicsConfig;
use tierflow_stream::KafkaConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use feed::LiveFeed;
pub(crate) use reader::StartFrom;
pub(crate) use web::{UserLookup, router};

/// How often the metrics are sampled: one point of the time series.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Starts the feed's sources: the output-topic reader and, with a recorder, the metrics
/// sampler. Both stop when `shutdown` turns true (or its sender is dropped).
pub(crate) fn start(
    feed: &LiveFeed,
    kafka: KafkaConfig,
    topics: TopicsConfig,
    from: StartFrom,
    metrics: Option<PrometheusHandle>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(reader::read_outputs(
        feed.clone(),
        kafka,
        topics,
        from,
        shutdown.clone(),
    ))];
    if let Some(handle) = metrics {
        tasks.push(tokio::spawn(sample_metrics(feed.clone(), handle, shutdown)));
    }
    tasks
}

async fn sample_metrics(
    feed: LiveFeed,
    handle: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        // Rendering also drains the recorder's histogram buffers (what upkeep would do).
        let text = handle.render();
        let now = EventTime::now().unix_millis();
        feed.lock().sample_metrics(now, &text);
    }
}
