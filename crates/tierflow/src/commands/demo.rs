//! `tierflow demo`: the whole data-in path on embedded defaults, nothing installed. Synthetic
//! users flow into an in-process Kafka broker; a consumer group decodes them, sends malformed
//! records to the dead-letter topic with their reason, and commits only what it handled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use tierflow_data::synth::{self, Dials, Segment, SynthConfig};
use tierflow_events::{ClickEvent, Contract, Encoding, EventTime, EventType};
use tierflow_stream::consume::{committed_offsets, group_consumer, high_watermarks};
use tierflow_stream::{
    BoundedProducer, EmbeddedBroker, KafkaConfig, OutputHeaders, TopicSpec, dead_letter,
};

use crate::cli::DemoArgs;
use crate::config::TopicsConfig;
use crate::sink::{Sink, pump};

const GROUP: &str = "tierflow-demo";
/// How often consumers commit (after flushing their dead letters).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    if args.consumers == 0 || args.partitions < 1 {
        bail!("--consumers and --partitions must be at least 1");
    }
    let started = Instant::now();
    let broker = EmbeddedBroker::start(1).context("starting the embedded broker")?;
    let kafka = broker.kafka_config();
    let topics = TopicsConfig::default();
    broker.create_topics(&[
        TopicSpec::new(&topics.clickstream, args.partitions),
        TopicSpec::new(&topics.dead_letter, 1),
    ])?;
    let synth_config = SynthConfig {
        users: args.users,
        seed: args.seed,
        days: args.days,
        dials: Dials {
            out_of_order: 0.01,
            late: 0.001,
            duplicate: 0.005,
            malformed: args.malformed,
        },
        ..SynthConfig::default()
    };
    synth_config.validate().context("invalid demo settings")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "tierflow demo: {} synthetic users, {} days from {}, into an embedded Kafka broker at {}\n\
         topics: {} ({} partitions), {}; consumer group {GROUP} with {} members\n",
        args.users,
        args.days,
        synth_config.start,
        broker.bootstrap_servers(),
        topics.clickstream,
        args.partitions,
        topics.dead_letter,
        args.consumers,
    )?;
    drop(out);

    let stats = Arc::new(Shared::default());
    // Members leave the group together, after all have committed: a member leaving early
    // would start a rebalance under the others' final commits.
    let all_committed = Arc::new(tokio::sync::Barrier::new(args.consumers));
    let mut consumers = Vec::new();
    for member in 0..args.consumers {
        let kafka = kafka.clone();
        let topics = topics.clone();
        let stats = Arc::clone(&stats);
        let all_committed = Arc::clone(&all_committed);
        consumers.push(tokio::spawn(async move {
            consume(member, &kafka, &topics, &stats, &all_committed).await
        }));
    }
    let reporter = tokio::spawn(report_progress(Arc::clone(&stats)));

    // Produce on a blocking thread through the same bounded sink `generate --topic` uses.
    let mut sink = Sink::kafka(&kafka, topics.clickstream.clone(), args.rate, 10_000)?;
    let generator_config = synth_config.clone();
    let produced_counter = Arc::clone(&stats);
    let (_, _end) = pump(
        &mut sink,
        &indicatif::ProgressBar::hidden(),
        move |emitter| {
            for record in synth::generate(&generator_config) {
                produced_counter.produced.fetch_add(1, Ordering::Relaxed);
                if !emitter.emit(record.key().to_owned(), record.to_bytes()) {
                    break;
                }
            }
        },
    )
    .await?;
    let summary = sink.finish().await?;
    stats.produced.store(summary.records, Ordering::SeqCst);
    stats.producer_done.store(true, Ordering::SeqCst);

    let mut assignments = Vec::new();
    for consumer in consumers {
        assignments.push(consumer.await.context("a consumer panicked")??);
    }
    reporter.abort();
    let committed =
        tokio::task::block_in_place(|| committed_offsets(&kafka, GROUP, &topics.clickstream))?;
    let ends = tokio::task::block_in_place(|| high_watermarks(&kafka, &topics.clickstream))?;
    let dead_letters_on_topic: i64 =
        tokio::task::block_in_place(|| high_watermarks(&kafka, &topics.dead_letter))?
            .values()
            .sum();
    let segments: HashMap<String, Segment> = (0..synth_config.users)
        .map(|u| (synth::user_id(u), synth::segment_of(&synth_config, u)))
        .collect();
    let stats = stats.state.lock().expect("stats lock");
    print_summary(&Summary {
        started,
        produced: summary.records,
        stats: &stats,
        segments: &segments,
        assignments: &assignments,
        committed: &committed,
        ends: &ends,
        dead_letters_on_topic,
        dead_letter_topic: &topics.dead_letter,
    })?;
    if committed != ends {
        bail!("committed offsets {committed:?} do not reach the end of the topic {ends:?}");
    }
    Ok(())
}

/// Counters shared by the consumers, the producer and the progress reporter.
#[derive(Default)]
struct Shared {
    produced: AtomicU64,
    consumed: AtomicU64,
    producer_done: AtomicBool,
    state: Mutex<DemoStats>,
}

#[derive(Default)]
struct DemoStats {
    by_type: BTreeMap<EventType, u64>,
    seen_event_ids: HashSet<String>,
    duplicates: u64,
    /// Events older than an event of the same user seen before them.
    out_of_order: u64,
    /// Dead letters by class and field, with one example reason each.
    dead_letters: BTreeMap<(String, String), (u64, String)>,
    users: HashMap<String, UserTotals>,
}

#[derive(Default, Clone)]
struct UserTotals {
    events: u64,
    latest_ts: EventTime,
    purchases: u64,
    revenue: f64,
    refunds: f64,
}

impl DemoStats {
    fn record(&mut self, event: &ClickEvent) {
        if !self.seen_event_ids.insert(event.event_id.clone()) {
            self.duplicates += 1;
            return;
        }
        *self.by_type.entry(event.event_type).or_default() += 1;
        let user = self.users.entry(event.user_id.clone()).or_default();
        if user.events > 0 && event.ts < user.latest_ts {
            self.out_of_order += 1;
        } else {
            user.latest_ts = event.ts;
        }
        user.events += 1;
        match event.event_type {
            EventType::Purchase => {
                user.purchases += 1;
                user.revenue += event.revenue.unwrap_or(0.0);
            }
            EventType::Refund => user.refunds += event.revenue.unwrap_or(0.0),
            _ => {}
        }
    }
}

/// One group member: decode, count, dead-letter what does not decode, commit what it handled.
async fn consume(
    member: usize,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    shared: &Shared,
    all_committed: &tokio::sync::Barrier,
) -> Result<Vec<i32>> {
    let mut config = kafka.clone();
    config.client_id = format!("tierflow-demo-{member}");
    // The mock cluster forms groups slowly with long session timeouts (see BROKER-FACTS.md).
    config
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    let consumer: StreamConsumer = group_consumer(&config, GROUP, &[&topics.clickstream])?;
    let mut dead_letters = BoundedProducer::new(kafka, 1_000)?;
    let headers = OutputHeaders::new(Contract::DeadLetter, Encoding::Json);
    let mut partitions = HashSet::new();
    let mut last_commit = Instant::now();
    let mut uncommitted = false;
    loop {
        let done = shared.producer_done.load(Ordering::SeqCst)
            && shared.consumed.load(Ordering::SeqCst) >= shared.produced.load(Ordering::SeqCst);
        if done {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Err(_) => {}
            Ok(Err(e)) => tracing::warn!(member, error = %e, "consumer error; retrying"),
            Ok(Ok(message)) => {
                partitions.insert(message.partition());
                let payload = message.payload().unwrap_or_default();
                match ClickEvent::from_json(payload) {
                    Ok(event) => shared.state.lock().expect("stats lock").record(&event),
                    Err(error) => {
                        let letter =
                            dead_letter::for_decode_error(&message, &error, EventTime::now());
                        let value = tierflow_events::encode(&letter, Encoding::Json);
                        dead_letters
                            .send(dead_letter::out_record(
                                &topics.dead_letter,
                                &letter,
                                &value,
                                &headers.pairs(),
                            ))
                            .await?;
                        let mut stats = shared.state.lock().expect("stats lock");
                        let key = (
                            error.kind.as_str().to_owned(),
                            error.field.clone().unwrap_or_default(),
                        );
                        let entry = stats
                            .dead_letters
                            .entry(key)
                            .or_insert_with(|| (0, error.reason.clone()));
                        entry.0 += 1;
                    }
                }
                consumer.store_offset_from_message(&message)?;
                shared.consumed.fetch_add(1, Ordering::SeqCst);
                uncommitted = true;
            }
        }
        if uncommitted && last_commit.elapsed() >= COMMIT_EVERY {
            commit(&consumer, &mut dead_letters, CommitMode::Async).await?;
            last_commit = Instant::now();
            uncommitted = false;
        }
    }
    commit(&consumer, &mut dead_letters, CommitMode::Sync).await?;
    all_committed.wait().await;
    let mut partitions: Vec<i32> = partitions.into_iter().collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// Dead letters first, offsets second: an offset is committed only once everything it
/// produced is acknowledged. A rebalance in progress is retried, not fatal.
async fn commit(
    consumer: &StreamConsumer,
    dead_letters: &mut BoundedProducer,
    mode: CommitMode,
) -> Result<()> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    dead_letters.flush().await?;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1.. {
        match tokio::task::block_in_place(|| consumer.commit_consumer_state(mode)) {
            Ok(()) => return Ok(()),
            // Nothing stored since the last commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return Ok(()),
            Err(KafkaError::ConsumerCommit(
                code @ (RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId),
            )) if attempt < 50 => {
                tracing::debug!(%code, attempt, "commit during a rebalance; retrying");
                // Serving the consumer lets librdkafka finish the rebalance.
                let _ = tokio::time::timeout(backoff, consumer.recv()).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e).context("committing offsets"),
        }
    }
    unreachable!("the loop returns")
}

async fn report_progress(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let started = Instant::now();
    let mut last = 0;
    loop {
        ticker.tick().await;
        let produced = shared.produced.load(Ordering::Relaxed);
        let consumed = shared.consumed.load(Ordering::Relaxed);
        let (users, purchases, dead) = {
            let stats = shared.state.lock().expect("stats lock");
            (
                stats.users.len(),
                stats
                    .by_type
                    .get(&EventType::Purchase)
                    .copied()
                    .unwrap_or(0),
                stats.dead_letters.values().map(|(n, _)| n).sum::<u64>(),
            )
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "[{:>4.1}s] produced {produced:>8}  consumed {consumed:>8} ({:>6}/s)  lag {:>6}  users {users:>5}  purchases {purchases:>6}  dead letters {dead:>4}",
            started.elapsed().as_secs_f64(),
            consumed - last,
            produced.saturating_sub(consumed),
        );
        last = consumed;
    }
}

struct Summary<'a> {
    started: Instant,
    produced: u64,
    stats: &'a DemoStats,
    segments: &'a HashMap<String, Segment>,
    assignments: &'a [Vec<i32>],
    committed: &'a BTreeMap<i32, i64>,
    ends: &'a BTreeMap<i32, i64>,
    dead_letters_on_topic: i64,
    dead_letter_topic: &'a str,
}

fn print_summary(s: &Summary<'_>) -> Result<()> {
    let stats = s.stats;
    let mut out = std::io::stdout().lock();
    let events: u64 = stats.by_type.values().sum();
    let dead: u64 = stats.dead_letters.values().map(|(n, _)| n).sum();
    writeln!(
        out,
        "\n== {} records produced and consumed in {:.1}s: {events} distinct events, {} duplicates skipped, {} out of order, {dead} dead letters",
        s.produced,
        s.started.elapsed().as_secs_f64(),
        stats.duplicates,
        stats.out_of_order,
    )?;

    writeln!(out, "\nevents by type")?;
    for (event_type, n) in &stats.by_type {
        writeln!(out, "  {:<16} {n:>8}", event_type.as_str())?;
    }
    let count = |t| stats.by_type.get(&t).copied().unwrap_or(0) as f64;
    let rate = |a: f64, b: f64| if b > 0.0 { 100.0 * a / b } else { 0.0 };
    writeln!(
        out,
        "  funnel: product_view → add_to_cart {:.1}% → checkout_start {:.1}% → purchase {:.1}%",
        rate(count(EventType::AddToCart), count(EventType::ProductView)),
        rate(count(EventType::CheckoutStart), count(EventType::AddToCart)),
        rate(count(EventType::Purchase), count(EventType::CheckoutStart)),
    )?;

    writeln!(
        out,
        "\nlatent segments (ground truth the model will have to learn)"
    )?;
    writeln!(
        out,
        "  {:<20} {:>6} {:>12} {:>14} {:>16}",
        "segment", "users", "events/user", "purchases/user", "net revenue/user"
    )?;
    let mut by_segment: BTreeMap<&str, (u64, UserTotals)> = BTreeMap::new();
    for (user, totals) in &stats.users {
        let segment = s.segments.get(user).map_or("unknown", |seg| seg.as_str());
        let entry = by_segment.entry(segment).or_default();
        entry.0 += 1;
        entry.1.events += totals.events;
        entry.1.purchases += totals.purchases;
        entry.1.revenue += totals.revenue - totals.refunds;
    }
    for (segment, (users, totals)) in &by_segment {
        let per = |x: f64| x / *users as f64;
        writeln!(
            out,
            "  {segment:<20} {users:>6} {:>12.1} {:>14.2} {:>16.2}",
            per(totals.events as f64),
            per(totals.purchases as f64),
            per(totals.revenue),
        )?;
    }

    let mut top: Vec<(&String, &UserTotals)> = stats.users.iter().collect();
    top.sort_by(|a, b| b.1.revenue.total_cmp(&a.1.revenue).then(a.0.cmp(b.0)));
    writeln!(out, "\ntop customers by revenue")?;
    for (user, totals) in top.iter().take(5) {
        writeln!(
            out,
            "  {user:<12} {:>10.2} EUR in {:>3} purchases  ({})",
            totals.revenue,
            totals.purchases,
            s.segments.get(*user).map_or("unknown", |seg| seg.as_str()),
        )?;
    }

    writeln!(
        out,
        "\ndead letters → {} ({} records on the topic)",
        s.dead_letter_topic, s.dead_letters_on_topic
    )?;
    let mut classes: Vec<_> = stats.dead_letters.iter().collect();
    classes.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    for ((kind, field), (n, example)) in classes {
        let field = if field.is_empty() {
            "-"
        } else {
            field.as_str()
        };
        writeln!(out, "  {n:>5}  {kind:<14} {field:<12} e.g. {example}")?;
    }

    writeln!(out, "\nconsumer group {GROUP}")?;
    for (member, partitions) in s.assignments.iter().enumerate() {
        writeln!(out, "  member {member} read partitions {partitions:?}")?;
    }
    for (partition, end) in s.ends {
        let committed = s.committed.get(partition).copied();
        writeln!(
            out,
            "  partition {partition}: end offset {end}, committed {}{}",
            committed.map_or("none".to_owned(), |c| c.to_string()),
            if committed == Some(*end) {
                "  ✓"
            } else {
                "  ✗"
            }
        )?;
    }
    Ok(())
}
