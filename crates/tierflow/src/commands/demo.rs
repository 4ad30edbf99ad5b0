//! `tierflow demo`: the whole system on embedded defaults, nothing installed. Synthetic users
//! flow into an in-process Kafka broker (librdkafka's mock cluster); pipeline members in one
//! consumer group keep their windows in the in-memory store, score every update with the
//! model built into the binary, publish tier changes with hysteresis, run the campaign rules
//! of `deploy/rules.toml` with in-memory governance, dead-letter malformed records, and commit
//! offsets only after outputs and state — exactly what `tierflow run` does against real Kafka
//! and Redis, which is a matter of configuration.
//!
//! `--listen` serves the live view while it runs (`--hold` keeps serving after the summary);
//! `--dashboard` draws it in the terminal.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tierflow_data::synth::{self, Dials, Segment, SynthConfig};
use tierflow_events::{CampaignTriggered, DeadLetter, Encoding, EventTime, TierChanged, decode};
use tierflow_pipeline::{
    Campaigns, Governance, Health, Pipeline, PipelineConfig, PipelineError, RunSummary, telemetry,
};
use tierflow_rules::{Ledger, RuleSet};
use tierflow_store::{MemoryStore, StateStore};
use tierflow_stream::consume::{committed_offsets, high_watermarks};
use tierflow_stream::{EmbeddedBroker, KafkaConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::DemoArgs;
use crate::config::{Config, TopicsConfig};
use crate::live::{self, LiveFeed};
use crate::sink::{Sink, pump};
use crate::topic_reader::assign_only_config;

const GROUP: &str = "tierflow-demo";
/// The example rules shipped in `deploy/`, built in.
const RULES: &str = include_str!("../../../../deploy/rules.toml");
/// Longest the demo waits for the pipeline to catch up after the last record is produced.
const CATCH_UP: Duration = Duration::from_secs(180);

type Member = JoinHandle<Result<RunSummary, PipelineError>>;

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    if args.consumers == 0 || args.partitions < 1 {
        bail!("--consumers and --partitions must be at least 1");
    }
    let dashboard = args.dashboard.dashboard;
    if dashboard {
        live::tui::ensure_terminal()?;
    }
    let listen: Option<std::net::SocketAddr> = args
        .listen
        .as_deref()
        .map(|text| {
            text.parse()
                .with_context(|| format!("--listen {text:?} is not HOST:PORT"))
        })
        .transpose()?;
    // The live view reads this process's metrics; without it the demo records none.
    let metrics = if listen.is_some() || dashboard {
        match telemetry::install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; the live view has no rates");
                None
            }
        }
    } else {
        None
    };
    let started = Instant::now();
    let broker = EmbeddedBroker::start(1).context("starting the embedded broker")?;
    let mut kafka = broker.kafka_config();
    // The mock cluster forms a group in ~3 s; a short session lets members settle quickly.
    kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    let topics = TopicsConfig {
        partitions: args.partitions,
        ..TopicsConfig::default()
    };
    broker.create_topics(&topics.specs())?;
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

    let model = Arc::new(super::open_model(&Config::default())?);
    let rules = RuleSet::parse_named("deploy/rules.toml (built in)", RULES)?;
    let tiers = model.current().tiers();
    if rules.tier_count as usize != tiers {
        bail!(
            "the built-in rules expect {} tiers, the model scores {tiers}",
            rules.tier_count
        );
    }
    let campaigns = Campaigns::new(
        rules,
        Governance::Memory(Arc::new(Mutex::new(Ledger::default()))),
    );
    let store = Arc::new(MemoryStore::new());
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "tierflow demo: {} synthetic users, {} days from {}, into an embedded Kafka broker at {}\n\
             {} pipeline members in group {GROUP} on {} ({} partitions); state in memory; model {};\n\
             campaign rules: {} campaigns from deploy/rules.toml\n",
            args.users,
            args.days,
            synth_config.start,
            broker.bootstrap_servers(),
            args.consumers,
            topics.clickstream,
            args.partitions,
            model.version(),
            campaigns.rules().campaigns.len(),
        )?;
    }

    let (stop, shutdown) = watch::channel(false);
    let mut members: Vec<(Arc<Health>, Member)> = Vec::new();
    for _ in 0..args.consumers {
        let health = Health::new();
        let pipeline = Pipeline {
            config: PipelineConfig {
                group_id: GROUP.into(),
                ..PipelineConfig::default()
            },
            kafka: kafka.clone(),
            topics: topics.clone(),
            store: Arc::clone(&store),
            model: Arc::clone(&model),
            health: Arc::clone(&health),
            campaigns: Some(campaigns.clone()),
            drift: Default::default(),
        };
        members.push((health, tokio::spawn(pipeline.run(shutdown.clone()))));
    }

    // The live view: the output topics from their beginning, this process's metrics.
    let feed = LiveFeed::new("tierflow demo", EventTime::now());
    let (end_view, view_ends) = watch::channel(false);
    let view_sources = if listen.is_some() || dashboard {
        live::start(
            &feed,
            kafka.clone(),
            topics.clone(),
            live::StartFrom::Beginning,
            metrics.clone(),
            view_ends.clone(),
        )
    } else {
        Vec::new()
    };
    let server = match listen {
        Some(addr) => {
            let users = super::run::InspectUsers::new(tierflow_store::RedisConfig::default());
            users.ready(Arc::clone(&store), Arc::clone(&model));
            let router = live::router(feed.clone(), users)
                .merge(telemetry::router(metrics, Arc::clone(&members[0].0)));
            let (bound, server) = telemetry::serve(addr, router)
                .await
                .with_context(|| format!("listening on {addr} for the live view"))?;
            writeln!(std::io::stdout().lock(), "live view: http://{bound}/\n")?;
            Some(server)
        }
        None => None,
    };
    let (quit, mut quitting) = watch::channel(false);
    let tui = dashboard.then(|| {
        super::run::spawn_dashboard(
            &args.dashboard,
            feed.clone(),
            format!("{} users, {} days", args.users, args.days),
            quit,
            view_ends,
        )
    });
    let view = ViewTasks {
        end_view,
        tui,
        view_sources,
    };

    let produced = Arc::new(AtomicU64::new(0));
    // The dashboard owns the screen: no status lines under it.
    let progress = tokio::spawn(report_progress(
        Arc::clone(&produced),
        members.iter().map(|(h, _)| Arc::clone(h)).collect(),
        !dashboard,
    ));
    let work = produce_and_catch_up(&args, &synth_config, &kafka, &topics, &produced, &members);
    let total = tokio::select! {
        total = work => total,
        () = quit_pressed(&mut quitting) => {
            // q in the dashboard: stop the members gracefully, no summary.
            progress.abort();
            stop.send(true)?;
            for (_, task) in members {
                task.await.context("a pipeline member panicked")??;
            }
            view.end().await?;
            writeln!(std::io::stdout().lock(), "demo stopped before it finished (q)")?;
            return Ok(());
        }
    };
    let total = match total {
        Ok(total) => total,
        Err(e) => {
            progress.abort();
            view.end().await?;
            return Err(e);
        }
    };
    progress.abort();
    feed.lock().set_status(if dashboard {
        "demo finished: q shows the summary"
    } else {
        "demo finished"
    });
    stop.send(true)?;
    let mut summary = RunSummary::default();
    for (_, task) in members {
        let member = task.await.context("a pipeline member panicked")??;
        summary.batches += member.batches;
        summary.records += member.records;
        summary.counts.applied += member.counts.applied;
        summary.counts.duplicates += member.counts.duplicates;
        summary.counts.too_late += member.counts.too_late;
        summary.tier_changes += member.tier_changes;
        summary.dead_letters += member.dead_letters;
    }
    let elapsed = started.elapsed();

    let outputs = tokio::task::block_in_place(|| Outputs::read(&kafka, &topics))?;
    let committed =
        tokio::task::block_in_place(|| committed_offsets(&kafka, GROUP, &topics.clickstream))?;
    let ends = tokio::task::block_in_place(|| high_watermarks(&kafka, &topics.clickstream))?;
    let users: Vec<String> = (0..synth_config.users).map(synth::user_id).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let states = store.load(&user_refs).await?;
    let mut by_segment: BTreeMap<(String, Option<u8>), u64> = BTreeMap::new();
    for (u, state) in states.into_iter().enumerate() {
        let tier = state.ok().flatten().and_then(|s| s.published.tier);
        let segment = segment_name(synth::segment_of(&synth_config, u as u64));
        *by_segment.entry((segment, tier)).or_default() += 1;
    }

    // The summary prints once the dashboard has left the screen.
    let view = view.dashboard_closed().await?;
    print_summary(&Report {
        total,
        elapsed,
        summary: &summary,
        outputs: &outputs,
        tiers,
        by_segment: &by_segment,
        committed: &committed,
        ends: &ends,
        topics: &topics,
    })?;
    if committed != ends {
        view.end().await?;
        bail!("committed offsets {committed:?} do not reach the end of the topic {ends:?}");
    }
    if args.hold {
        writeln!(
            std::io::stdout().lock(),
            "\nholding: the live view stays up until Ctrl-C or SIGTERM"
        )?;
        std::io::stdout().flush()?;
        super::shutdown_signal().await;
    }
    view.end().await?;
    if let Some(server) = server {
        server.abort();
    }
    Ok(())
}

/// Resolves when the dashboard's q asks to stop; never without a dashboard (or once it is
/// gone).
async fn quit_pressed(quitting: &mut watch::Receiver<bool>) {
    if quitting.wait_for(|q| *q).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What the live view runs, to be ended before the demo returns.
struct ViewTasks {
    end_view: watch::Sender<bool>,
    tui: Option<JoinHandle<Result<()>>>,
    view_sources: Vec<JoinHandle<()>>,
}

impl ViewTasks {
    /// Waits for the dashboard (if any) to be closed with q.
    async fn dashboard_closed(mut self) -> Result<Self> {
        if let Some(tui) = self.tui.take() {
            tui.await.context("the dashboard panicked")??;
        }
        Ok(self)
    }

    /// Stops the dashboard and the feed's sources.
    async fn end(self) -> Result<()> {
        let _ = self.end_view.send(true);
        if let Some(tui) = self.tui {
            tui.await.context("the dashboard panicked")??;
        }
        for task in self.view_sources {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Produces the synthetic stream while the members work, then waits until the group's
/// committed offsets reach the end of every partition (or a member stopped with an error).
/// Returns the records produced.
async fn produce_and_catch_up(
    args: &DemoArgs,
    synth_config: &SynthConfig,
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    produced: &Arc<AtomicU64>,
    members: &[(Arc<Health>, Member)],
) -> Result<u64> {
    // Produce on a blocking thread through the same bounded sink `generate --topic` uses.
    let mut sink = Sink::kafka(kafka, topics.clickstream.clone(), args.rate, 10_000)?;
    let generator_config = synth_config.clone();
    let counter = Arc::clone(produced);
    let (_, _end) = pump(
        &mut sink,
        &indicatif::ProgressBar::hidden(),
        move |emitter| {
            for record in synth::generate(&generator_config) {
                counter.fetch_add(1, Ordering::Relaxed);
                if !emitter.emit(record.key().to_owned(), record.to_bytes()) {
                    break;
                }
            }
        },
    )
    .await?;
    let total = sink.finish().await?.records;

    // Counting records is not enough: a rebalance replays records.
    let caught_up = Instant::now();
    let stream_ends = tokio::task::block_in_place(|| high_watermarks(kafka, &topics.clickstream))?;
    loop {
        let done: u64 = members.iter().map(|(h, _)| h.records()).sum();
        if members.iter().any(|(_, task)| task.is_finished()) {
            break;
        }
        if done >= total {
            let committed = tokio::task::block_in_place(|| {
                committed_offsets(kafka, GROUP, &topics.clickstream)
            })?;
            if committed == stream_ends {
                break;
            }
        }
        if caught_up.elapsed() > CATCH_UP {
            bail!("the pipeline processed {done} of {total} records in {CATCH_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(total)
}

fn segment_name(segment: Segment) -> String {
    segment.as_str().to_owned()
}

/// A status line a second (when `print`; the dashboard shows the same and more).
async fn report_progress(produced: Arc<AtomicU64>, members: Vec<Arc<Health>>, print: bool) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let started = Instant::now();
    let mut last = 0;
    loop {
        ticker.tick().await;
        let produced = produced.load(Ordering::Relaxed);
        let done: u64 = members.iter().map(|h| h.records()).sum();
        let batches: u64 = members.iter().map(|h| h.batches()).sum();
        if !print {
            last = done;
            continue;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "[{:>5.1}s] produced {produced:>8}  processed {done:>8} ({:>6}/s)  lag {:>7}  batches {batches:>5}",
            started.elapsed().as_secs_f64(),
            done - last,
            produced.saturating_sub(done),
        );
        last = done;
    }
}

/// What the pipeline published, read back from the output topics.
#[derive(Default)]
struct Outputs {
    tier_changed: Vec<TierChanged>,
    triggered: Vec<CampaignTriggered>,
    held: Vec<CampaignTriggered>,
    dead_letters: Vec<DeadLetter>,
}

impl Outputs {
    /// Blocking.
    fn read(kafka: &KafkaConfig, topics: &TopicsConfig) -> Result<Self> {
        fn all<T: tierflow_events::OutputRecord>(
            kafka: &KafkaConfig,
            topic: &str,
        ) -> Result<Vec<T>> {
            read_values(kafka, topic)?
                .iter()
                .map(|v| decode(v, Encoding::Json).with_context(|| format!("decoding {topic}")))
                .collect()
        }
        Ok(Self {
            tier_changed: all(kafka, &topics.tier_changed)?,
            triggered: all(kafka, &topics.campaign_triggered)?,
            held: all(kafka, &topics.campaign_control)?,
            dead_letters: all(kafka, &topics.dead_letter)?,
        })
    }
}

/// Every value of `topic`, from the beginning to its current end. Blocking.
fn read_values(kafka: &KafkaConfig, topic: &str) -> Result<Vec<Vec<u8>>> {
    let ends = high_watermarks(kafka, topic)?;
    // Ends are known: no end-of-partition events (librdkafka logs them as errors).
    let consumer: BaseConsumer = assign_only_config(kafka)
        .set("enable.partition.eof", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    let mut open: Vec<i32> = Vec::new();
    for (partition, end) in &ends {
        if *end > 0 {
            list.add_partition_offset(topic, *partition, Offset::Beginning)?;
            open.push(*partition);
        }
    }
    let mut values = Vec::new();
    if open.is_empty() {
        return Ok(values);
    }
    consumer.assign(&list)?;
    drop(list);
    let started = Instant::now();
    while !open.is_empty() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{topic}: partitions {open:?} did not reach their end in 30 s");
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                values.push(message.payload().unwrap_or_default().to_vec());
                if message.offset() + 1 >= ends[&message.partition()] {
                    open.retain(|p| *p != message.partition());
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => open.retain(|p| *p != partition),
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
        }
    }
    Ok(values)
}

struct Report<'a> {
    total: u64,
    elapsed: Duration,
    summary: &'a RunSummary,
    outputs: &'a Outputs,
    tiers: usize,
    by_segment: &'a BTreeMap<(String, Option<u8>), u64>,
    committed: &'a BTreeMap<i32, i64>,
    ends: &'a BTreeMap<i32, i64>,
    topics: &'a TopicsConfig,
}

fn print_summary(r: &Report<'_>) -> Result<()> {
    let s = r.summary;
    let o = r.outputs;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n== {} records through the pipeline in {:.1}s ({} batches): {} applied, {} duplicates skipped, {} dead letters",
        r.total,
        r.elapsed.as_secs_f64(),
        s.batches,
        s.counts.applied,
        s.counts.duplicates,
        o.dead_letters.len(),
    )?;
    let mut reasons: BTreeMap<String, (u64, &str)> = BTreeMap::new();
    for letter in &o.dead_letters {
        let entry = reasons
            .entry(format!("{:?}", letter.error_class).to_lowercase())
            .or_insert((0, letter.reason.as_str()));
        entry.0 += 1;
    }
    for (class, (n, example)) in &reasons {
        writeln!(
            out,
            "   dead letters → {}: {n} {class}, e.g. \"{example}\"",
            r.topics.dead_letter
        )?;
    }

    writeln!(
        out,
        "\n== tier changes: {} published on {} (hysteresis: a margin past the boundary)",
        o.tier_changed.len(),
        r.topics.tier_changed
    )?;
    let mut moves: BTreeMap<(Option<u8>, u8), u64> = BTreeMap::new();
    for change in &o.tier_changed {
        *moves.entry((change.from_tier, change.to_tier)).or_default() += 1;
    }
    for ((from, to), n) in &moves {
        let from = from.map_or_else(|| "new".to_owned(), |t| format!("tier {t}"));
        writeln!(out, "   {from:>7} → tier {to}: {n:>6}")?;
    }

    writeln!(
        out,
        "\n== users by latent segment (generator truth) and latest tier"
    )?;
    write!(out, "   {:<20}", "segment")?;
    for tier in 0..r.tiers {
        write!(out, " {:>7}", format!("tier {tier}"))?;
    }
    writeln!(out, " {:>7}", "none")?;
    let segments: Vec<&String> = {
        let mut s: Vec<&String> = r.by_segment.keys().map(|(s, _)| s).collect();
        s.dedup();
        s
    };
    for segment in segments {
        write!(out, "   {segment:<20}")?;
        for tier in (0..r.tiers).map(|t| Some(t as u8)).chain([None]) {
            let n = r
                .by_segment
                .get(&(segment.clone(), tier))
                .copied()
                .unwrap_or(0);
            write!(out, " {n:>7}")?;
        }
        writeln!(out)?;
    }

    writeln!(
        out,
        "\n== campaign triggers: {} sent on {}, {} held out for control groups on {}",
        o.triggered.len(),
        r.topics.campaign_triggered,
        o.held.len(),
        r.topics.campaign_control
    )?;
    let mut per_campaign: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for t in &o.triggered {
        per_campaign.entry(&t.campaign).or_default().0 += 1;
    }
    for t in &o.held {
        per_campaign.entry(&t.campaign).or_default().1 += 1;
    }
    writeln!(out, "   {:<24} {:>7} {:>9}", "campaign", "sent", "held out")?;
    for (campaign, (sent, held)) in &per_campaign {
        writeln!(out, "   {campaign:<24} {sent:>7} {held:>9}")?;
    }

    if let Some(change) = o.tier_changed.iter().find(|c| c.from_tier.is_some()) {
        writeln!(
            out,
            "\n== one tier_changed record:\n{}",
            serde_json::to_string_pretty(change)?
        )?;
    }
    if let Some(trigger) = o.triggered.first() {
        writeln!(
            out,
            "\n== one campaign_triggered record:\n{}",
            serde_json::to_string_pretty(trigger)?
        )?;
    }

    writeln!(
        out,
        "\n== committed offsets (group {GROUP}, after outputs and state):"
    )?;
    for (partition, end) in r.ends {
        let committed = r.committed.get(partition).copied().unwrap_or(-1);
        let mark = if committed == *end { '✓' } else { '✗' };
        writeln!(out, "   partition {partition}: {committed}/{end} {mark}")?;
    }
    writeln!(
        out,
        "\nSame binary against real Kafka and Redis: `tierflow run --config deploy/tierflow.toml` \
         (set [kafka] brokers, [redis] url and [campaigns] rules)."
    )?;
    Ok(())
}
