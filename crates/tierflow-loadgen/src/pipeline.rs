//! `--mode pipeline`: the streaming job in this process against the given broker and Redis.
//!
//! Live (`--rate N`): a producer offers N events/s for `--duration-secs` while the pipeline
//! runs; a watcher thread reads `user_score` from the beginning and records, per record, wall
//! clock − the event time of the newest event it includes (= that event's produce time). The
//! sustained rate is what the pipeline completed between the end of the warm-up and the end
//! of production.
//!
//! With `--series FILE` a live run also samples itself every `--sample-secs` (see [`soak`]):
//! the latency reader then also fills a per-interval histogram.
//!
//! Backlog (`--rate 0`): the topic is filled first, then the pipeline starts and the drain is
//! timed from its first completed batch to its last: the pipeline's capacity on this machine
//! without a producer competing for the CPU (latency is meaningless there and not reported).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tierflow_events::EventTime;
use tierflow_model::{Artifact, ModelHandle};
use tierflow_pipeline::{Health, Pipeline, PipelineConfig, RunSummary, TopicsConfig, telemetry};
use tierflow_store::{RedisConfig, RedisStore};
use tokio::sync::watch;

use crate::Args;
use crate::cpu;
use crate::events::EventMaker;
use crate::measure::{self, Broker, Latency, RedisMemory, Summed};
use crate::produce::{self, Offer, Produced};
use crate::soak::{self, Phase, Sampler, SoakSummary};
use crate::soak_plot;

#[derive(Debug, Serialize)]
pub(crate) struct PipelineReport {
    broker: &'static str,
    run: String,
    model_version: String,
    produced: Produced,
    /// Live runs: events completed per second between the warm-up and the end of production.
    /// Backlog runs: events per second from the first completed batch to the last.
    sustained_events_per_sec: f64,
    /// Seconds the window of `sustained_events_per_sec` lasted, and the events in it.
    window_secs: f64,
    window_events: u64,
    /// Live runs: seconds from the end of production until every event was processed.
    drain_after_produce_secs: f64,
    /// Backlog runs: seconds from the pipeline's start to its first completed batch (group
    /// join and first fetch).
    startup_secs: f64,
    summary: Summary,
    user_scores_seen: u64,
    /// Event time → `user_score` seen, for events produced after the warm-up (live only).
    latency: Option<Latency>,
    /// The same over every event, warm-up included.
    latency_all: Option<Latency>,
    /// The pipeline's own histogram: event time → outputs acknowledged (mean only).
    event_to_ack: Summed,
    /// Per-stage time of every batch (the pipeline's `tierflow_stage_seconds`).
    stages: BTreeMap<String, Summed>,
    /// Share of the summed batch time per stage (collect is outside `batch`).
    stage_share_of_batch: BTreeMap<String, f64>,
    redis_round_trips: BTreeMap<String, Summed>,
    mean_batch_records: f64,
    redis_before: RedisMemory,
    redis_after: RedisMemory,
    /// Users with a state key written by this run (state and latest-score keys / 2).
    users_with_state: u64,
    /// Redis `used_memory` growth per user with state (state + latest score + key overhead).
    redis_bytes_per_user: f64,
    /// CPU seconds during the run: this process by thread group, redis-server, the broker.
    cpu_secs: BTreeMap<String, f64>,
    wall_secs: f64,
    load_average_max: f64,
    /// With `--series`: did memory and lag stay flat (issue 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    soak: Option<SoakSummary>,
}

#[derive(Debug, Serialize)]
struct Summary {
    batches: u64,
    records: u64,
    applied: u64,
    duplicates: u64,
    too_late: u64,
    scored: u64,
    tier_changes: u64,
    user_scores: u64,
    dead_letters: u64,
}

impl From<RunSummary> for Summary {
    fn from(s: RunSummary) -> Self {
        Self {
            batches: s.batches,
            records: s.records,
            applied: s.counts.applied,
            duplicates: s.counts.duplicates,
            too_late: s.counts.too_late,
            scored: s.counts.scored,
            tier_changes: s.tier_changes,
            user_scores: s.user_scores,
            dead_letters: s.dead_letters,
        }
    }
}

/// The watcher's view: latencies and the window of event times that count.
#[derive(Debug)]
struct Watch {
    stop: AtomicBool,
    seen: AtomicU64,
    /// Events with `ts` in `[from_ms, to_ms]` enter the steady-state histogram.
    from_ms: AtomicI64,
    to_ms: AtomicI64,
    /// Latencies seen since the last soak sample (every record, warm-up included); `None`
    /// without `--series`.
    interval: Option<Mutex<Histogram<u64>>>,
}

impl Watch {
    /// The latencies since the last call, and a fresh histogram for the next interval.
    fn take_interval(&self) -> Histogram<u64> {
        self.interval
            .as_ref()
            .map_or_else(measure::latency_histogram, |h| {
                std::mem::replace(
                    &mut *h.lock().expect("interval histogram lock"),
                    measure::latency_histogram(),
                )
            })
    }
}

/// Only the field the watcher needs from a `user_score` record.
#[derive(Deserialize)]
struct SeenScore<'a> {
    #[serde(borrow)]
    event_time: &'a str,
}

pub(crate) async fn run(args: &Args) -> Result<PipelineReport> {
    if args.series.is_some() && args.rate == 0 {
        bail!("--series samples a live run: give --rate above 0");
    }
    let run = measure::run_name();
    let broker = Broker::connect(&args.brokers, &args.kafka_properties)?;
    let topics = TopicsConfig {
        clickstream: format!("{run}.clickstream"),
        tier_changed: format!("{run}.tier_changed"),
        campaign_triggered: format!("{run}.campaign_triggered"),
        campaign_control: format!("{run}.campaign_control"),
        campaign_outcome: format!("{run}.campaign_outcome"),
        user_score: format!("{run}.user_score"),
        dead_letter: format!("{run}.dead_letter"),
        partitions: args.partitions,
    };
    broker.create_topics(&topics.specs()).await?;

    let mut redis = measure::redis_connection(&args.redis).await?;
    let redis_pid = redis_pid(&mut redis).await;
    let redis_before = measure::redis_memory(&mut redis).await?;
    let store = RedisStore::connect(RedisConfig {
        key_prefix: run.clone(),
        ..RedisConfig::new(args.redis.clone())
    })
    .await
    .context("connecting the state store")?;
    let metrics = telemetry::install_recorder().context("installing the metrics recorder")?;
    let model = Arc::new(ModelHandle::fixed(
        &Artifact::embedded_default()?,
        &Device::flex(),
    )?);
    let model_version = model.version();
    let config = PipelineConfig {
        group_id: format!("{run}.pipeline"),
        batch_max_events: args.batch_max_events,
        batch_max_wait_ms: args.batch_max_wait_ms,
        // Every update yields a `user_score`: the record the latency is measured on.
        score_min_interval_secs: 0,
        reason_codes: args.reason_codes,
        ..PipelineConfig::default()
    };
    // Taken by whichever producer runs (the fill or the live one).
    let mut maker = Some(EventMaker::new(
        args.users,
        args.user_distribution,
        args.seed,
        &run,
    ));
    let offer = Offer {
        rate: args.rate,
        duration: Duration::from_secs(args.duration_secs),
        max_events: args.max_events,
    };
    let bar = measure::progress(args.quiet);
    let broker_pid = broker_pid(&args.brokers);
    let cpu_before = cpu_snapshot(redis_pid, broker_pid);
    let started = Instant::now();
    let mut load_max: f64 = measure::load_average();

    // Backlog: fill before the pipeline exists.
    let sent = Arc::new(AtomicU64::new(0));
    let mut backlog: Option<Produced> = None;
    if args.rate == 0 {
        let task = tokio::spawn({
            let kafka = broker.kafka.clone();
            let topic = topics.clickstream.clone();
            let sent = Arc::clone(&sent);
            let maker = maker.take().expect("one producer per run");
            async move { produce::produce(&kafka, &topic, maker, offer, sent).await }
        });
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            bar.set_message(format!(
                "filling {}: {} events",
                topics.clickstream,
                sent.load(Ordering::Relaxed)
            ));
        }
        let produced = task.await??;
        bar.println(format!(
            "filled {} events in {:.1} s ({:.0} events/s)",
            produced.events, produced.secs, produced.events_per_sec
        ));
        backlog = Some(produced);
    }

    // The latency watcher, assigned to every user_score partition from the start.
    let watch = Arc::new(Watch {
        stop: AtomicBool::new(false),
        seen: AtomicU64::new(0),
        from_ms: AtomicI64::new(i64::MAX),
        to_ms: AtomicI64::new(i64::MAX),
        interval: args
            .series
            .as_ref()
            .map(|_| Mutex::new(measure::latency_histogram())),
    });
    let watcher = std::thread::Builder::new()
        .name("latency-watch".into())
        .spawn({
            let kafka = broker.kafka.clone();
            let topic = topics.user_score.clone();
            let group = format!("{run}.watch");
            let partitions = args.partitions;
            let watch = Arc::clone(&watch);
            move || watch_scores(&kafka, &topic, &group, partitions, &watch)
        })?;

    let health = Health::new();
    let (stop, shutdown) = watch::channel(false);
    let pipeline = tokio::spawn(
        Pipeline {
            config,
            kafka: broker.kafka.clone(),
            topics: topics.clone(),
            store,
            model,
            health: Arc::clone(&health),
            campaigns: None,
            drift: Default::default(),
        }
        .run(shutdown),
    );
    let join_started = Instant::now();
    while !health.ready() {
        if pipeline.is_finished() {
            bail!("the pipeline stopped before joining: {:?}", pipeline.await?);
        }
        if join_started.elapsed() > Duration::from_secs(60) {
            bail!("the pipeline did not join its group within 60 s");
        }
        bar.set_message("pipeline joining its group");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut sampler: Option<Sampler> = None;
    let (produced, window_secs, window_events, drain_secs, startup_secs) = match backlog {
        Some(produced) => {
            let pipeline_started = Instant::now();
            let mut first: Option<(Instant, u64)> = None;
            loop {
                let done = health.records();
                if first.is_none() && done > 0 {
                    first = Some((Instant::now(), done));
                }
                if done >= produced.events {
                    break;
                }
                if pipeline.is_finished() {
                    bail!("the pipeline stopped early: {:?}", pipeline.await?);
                }
                bar.set_message(format!("draining: {done} of {} events", produced.events));
                load_max = load_max.max(measure::load_average());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (at, done_at_first) = first.context("no batch completed")?;
            let window = at.elapsed().as_secs_f64();
            let startup = at.duration_since(pipeline_started).as_secs_f64();
            (
                produced,
                window,
                health.records() - done_at_first,
                0.0,
                startup,
            )
        }
        None => {
            let live_started = Instant::now();
            let warmup = Duration::from_secs(args.warmup_secs.min(args.duration_secs / 2));
            watch.from_ms.store(
                EventTime::now().unix_millis() + warmup.as_millis() as i64,
                Ordering::Relaxed,
            );
            let producer = tokio::spawn({
                let kafka = broker.kafka.clone();
                let topic = topics.clickstream.clone();
                let sent = Arc::clone(&sent);
                let maker = maker.take().expect("one producer per run");
                async move { produce::produce(&kafka, &topic, maker, offer, sent).await }
            });
            sampler = args
                .series
                .as_deref()
                .map(|csv| {
                    Sampler::start(
                        Duration::from_secs(args.sample_secs.max(1)),
                        broker_pid,
                        csv,
                    )
                })
                .transpose()?;
            let render = || metrics.render();
            let soak_sample = Soak {
                watch: &watch,
                metrics: &render,
                topic: &topics.clickstream,
            };
            let mut window_start: Option<(Instant, u64)> = None;
            let mut last = (Instant::now(), 0u64);
            while !producer.is_finished() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let done = health.records();
                if window_start.is_none() && live_started.elapsed() >= warmup {
                    window_start = Some((Instant::now(), done));
                }
                if pipeline.is_finished() {
                    bail!("the pipeline stopped early: {:?}", pipeline.await?);
                }
                let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), done);
                load_max = load_max.max(measure::load_average());
                let offered = sent.load(Ordering::Relaxed);
                if let Some(sampler) = sampler.as_mut().filter(|s| s.due()) {
                    soak_sample
                        .record(sampler, Phase::Produce, offered, done, &mut redis)
                        .await?;
                }
                bar.set_message(format!(
                    "offered {offered} · processed {done} ({rate:.0}/s) · behind {} · user_scores seen {}",
                    offered.saturating_sub(done),
                    watch.seen.load(Ordering::Relaxed)
                ));
            }
            let production_end = (Instant::now(), health.records());
            let produced = producer.await??;
            watch.to_ms.store(produced.last_ms, Ordering::Relaxed);
            let (window_at, window_done) = window_start.unwrap_or((live_started, 0));
            let window_secs = production_end
                .0
                .duration_since(window_at)
                .as_secs_f64()
                .max(1e-3);
            let window_events = production_end.1 - window_done;
            let drain_started = Instant::now();
            loop {
                let done = health.records();
                if done >= produced.events {
                    break;
                }
                if pipeline.is_finished() {
                    bail!("the pipeline stopped early: {:?}", pipeline.await?);
                }
                if drain_started.elapsed() > Duration::from_secs(300) {
                    bail!("the pipeline did not catch up within 300 s");
                }
                if let Some(sampler) = sampler.as_mut().filter(|s| s.due()) {
                    soak_sample
                        .record(sampler, Phase::Drain, produced.events, done, &mut redis)
                        .await?;
                }
                bar.set_message(format!("draining: {done} of {} events", produced.events));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let drain = drain_started.elapsed().as_secs_f64();
            if let Some(sampler) = sampler.as_mut() {
                // The end of the series: everything offered is processed.
                soak_sample
                    .record(
                        sampler,
                        Phase::Drain,
                        produced.events,
                        health.records(),
                        &mut redis,
                    )
                    .await?;
            }
            (produced, window_secs, window_events, drain, 0.0)
        }
    };

    // Let the watcher read the last outputs: until the count stops moving.
    let mut seen = watch.seen.load(Ordering::Relaxed);
    let settle_started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let now = watch.seen.load(Ordering::Relaxed);
        if now == seen || settle_started.elapsed() > Duration::from_secs(60) {
            break;
        }
        seen = now;
    }
    stop.send(true).ok();
    let summary = pipeline.await??;
    watch.stop.store(true, Ordering::Relaxed);
    let (steady, all) = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the latency watcher panicked"))??;
    let cpu_after = cpu_snapshot(redis_pid, broker_pid);
    let wall_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let text = metrics.render();
    let stages = measure::histogram_sums(&text, telemetry::STAGE_SECONDS, "stage");
    let batch_total = stages.get("batch").map_or(0.0, |s| s.sum_secs);
    let stage_share_of_batch = stages
        .iter()
        .filter(|(name, _)| name.as_str() != "batch" && batch_total > 0.0)
        .map(|(name, s)| {
            (
                name.clone(),
                (s.sum_secs / batch_total * 1_000.0).round() / 1_000.0,
            )
        })
        .collect();
    let batch_records = measure::histogram_sums(&text, telemetry::BATCH_RECORDS, "none");
    let mean_batch_records = batch_records.get("").map_or(0.0, |s| {
        if s.count > 0.0 {
            s.sum_secs / s.count
        } else {
            0.0
        }
    });
    let event_to_ack = measure::histogram_sums(&text, telemetry::EVENT_TO_OUTPUT_SECONDS, "none")
        .remove("")
        .unwrap_or_default();

    let redis_after = measure::redis_memory(&mut redis).await?;
    let users_with_state = redis_after.keys.saturating_sub(redis_before.keys) / 2;
    let grown = redis_after
        .used_memory
        .saturating_sub(redis_before.used_memory);
    let live = args.rate > 0;
    let soak = match (&args.series, &sampler) {
        (Some(series), Some(sampler)) => {
            let plot = series.with_extension("svg");
            let title = format!(
                "tierflow soak: {} events/s offered, {} users, batch {}, {} ({})",
                args.rate,
                args.users,
                args.batch_max_events,
                broker.kind(),
                run
            );
            soak_plot::write(&plot, &title, sampler.samples())?;
            soak::summarise(
                sampler.samples(),
                args.sample_secs,
                args.batch_max_events,
                (series, &plot),
            )
        }
        _ => None,
    };
    Ok(PipelineReport {
        broker: broker.kind(),
        run,
        model_version,
        produced,
        sustained_events_per_sec: window_events as f64 / window_secs,
        window_secs,
        window_events,
        drain_after_produce_secs: drain_secs,
        startup_secs,
        summary: summary.into(),
        user_scores_seen: watch.seen.load(Ordering::Relaxed),
        latency: live.then(|| Latency::of(&steady)),
        latency_all: live.then(|| Latency::of(&all)),
        event_to_ack,
        stages,
        stage_share_of_batch,
        redis_round_trips: measure::histogram_sums(&text, telemetry::REDIS_SECONDS, "op"),
        mean_batch_records,
        redis_before,
        redis_after,
        users_with_state,
        redis_bytes_per_user: if users_with_state > 0 {
            grown as f64 / users_with_state as f64
        } else {
            0.0
        },
        cpu_secs: cpu::delta(&cpu_before, &cpu_after),
        wall_secs,
        load_average_max: load_max,
        soak,
    })
}

/// What a soak sample reads besides the load generator's counters.
struct Soak<'a> {
    watch: &'a Watch,
    /// The pipeline's Prometheus text (`PrometheusHandle::render`).
    metrics: &'a dyn Fn() -> String,
    topic: &'a str,
}

impl Soak<'_> {
    async fn record(
        &self,
        sampler: &mut Sampler,
        phase: Phase,
        offered: u64,
        processed: u64,
        redis: &mut redis::aio::MultiplexedConnection,
    ) -> Result<()> {
        let external = soak::External {
            redis: measure::redis_memory(redis).await?,
            consumer_lag_gauge: soak::consumer_lag_gauge(
                &(self.metrics)(),
                telemetry::CONSUMER_LAG,
                self.topic,
            ),
        };
        let latency = self.watch.take_interval();
        sampler.record(
            phase,
            soak::Progress { offered, processed },
            external,
            &latency,
        )
    }
}

/// Reads `user_score` from the beginning of every partition until told to stop; returns the
/// steady-state and the all-events latency histograms (µs).
fn watch_scores(
    kafka: &tierflow_stream::KafkaConfig,
    topic: &str,
    group: &str,
    partitions: i32,
    watch: &Watch,
) -> Result<(Histogram<u64>, Histogram<u64>)> {
    let consumer: BaseConsumer = kafka
        .consumer_config(group)
        .create()
        .context("creating the latency watcher")?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    drop(list);
    let mut steady = measure::latency_histogram();
    let mut all = measure::latency_histogram();
    while !watch.stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "latency watcher");
                continue;
            }
        };
        let now_us = wall_micros();
        let Some(event_ms) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<SeenScore<'_>>(p).ok())
            .and_then(|s| EventTime::parse_rfc3339(s.event_time).ok())
            .map(EventTime::unix_millis)
        else {
            continue;
        };
        watch.seen.fetch_add(1, Ordering::Relaxed);
        let latency = (now_us - event_ms * 1_000).max(1) as u64;
        all.saturating_record(latency);
        if let Some(interval) = &watch.interval {
            interval
                .lock()
                .expect("interval histogram lock")
                .saturating_record(latency);
        }
        if event_ms >= watch.from_ms.load(Ordering::Relaxed)
            && event_ms <= watch.to_ms.load(Ordering::Relaxed)
        {
            steady.saturating_record(latency);
        }
    }
    drop(consumer);
    Ok((steady, all))
}

fn wall_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The redis-server's pid (same machine), from `INFO server`.
async fn redis_pid(connection: &mut redis::aio::MultiplexedConnection) -> Option<u32> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(connection)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The broker's pid from `TIERFLOW_LOADGEN_BROKER_PID` (to count its CPU), if set.
fn broker_pid(brokers: &str) -> Option<u32> {
    if brokers == "embedded" {
        return None;
    }
    std::env::var("TIERFLOW_LOADGEN_BROKER_PID")
        .ok()
        .and_then(|v| v.parse().ok())
}

fn cpu_snapshot(redis_pid: Option<u32>, broker_pid: Option<u32>) -> BTreeMap<String, f64> {
    let mut out = cpu::own_threads();
    out.insert("this process (total)".into(), cpu::own_process());
    if let Some(secs) = redis_pid.and_then(cpu::process_secs) {
        out.insert("redis-server".into(), secs);
    }
    if let Some(secs) = broker_pid.and_then(cpu::process_secs) {
        out.insert("broker".into(), secs);
    }
    out
}
