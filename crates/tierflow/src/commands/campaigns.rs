//! `tierflow campaigns report`: did the campaigns work? Purchases attributed to sent and
//! held-out triggers (`tierflow_rules::attribution`), summed per campaign and arm, and the
//! uplift of treated over control with 95 % intervals (`tierflow_rules::uplift`).
//!
//! The inputs are bounded: each topic is read from its beginning to the end found at start,
//! outside any consumer group, or JSON-lines files are read. Everything is attributed in
//! memory (triggers and purchases only), then printed; `--publish` writes the attributions as
//! `campaign_outcome` records.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flate2::read::MultiGzDecoder;
use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use tierflow_events::codec::decode_click;
use tierflow_events::{
    CampaignArm, CampaignTriggered, ClickEvent, Contract, Encoding, EventType, HEADER_ENCODING,
    encode,
};
use tierflow_rules::{
    Arm, Attribution, CampaignMeasurement, Interval, MIN_USERS_PER_ARM, Measurement, UserExposure,
    format_duration, measure,
};
use tierflow_stream::{BoundedProducer, KafkaConfig, OutRecord, OutputHeaders, TopicSpec};

use crate::cli::{CampaignsCommand, CampaignsReportArgs, ReportFormat};
use crate::config::Config;
use crate::topic_reader::{self, Span, assign_only_config};

/// A topic that yields nothing for this long before its end is an error, not a hang.
const STALL: Duration = Duration::from_secs(30);
/// Skipped records whose reasons are logged one by one (the rest are only counted).
const LOGGED_SKIPS: usize = 5;
/// Unacknowledged `campaign_outcome` records allowed while publishing.
const PUBLISH_IN_FLIGHT: usize = 10_000;

pub(crate) async fn run(command: CampaignsCommand, config: Config) -> Result<()> {
    match command {
        CampaignsCommand::Report(args) => report(args, config).await,
    }
}

async fn report(args: CampaignsReportArgs, config: Config) -> Result<()> {
    let rules_path = super::rules::rules_path(args.rules.clone(), &config)?;
    let rules = super::rules::load_rules(&rules_path)?;
    let inputs = match (&args.triggered, &args.control, &args.events) {
        (Some(triggered), Some(control), Some(events)) => {
            let files = [triggered.clone(), control.clone(), events.clone()];
            tokio::task::spawn_blocking(move || read_files(&files))
                .await
                .context("reading the files panicked")??
        }
        _ => {
            let kafka = config.kafka.clone();
            let topics = [
                config.topics.campaign_triggered.clone(),
                config.topics.campaign_control.clone(),
                config.topics.clickstream.clone(),
            ];
            tokio::task::spawn_blocking(move || read_topics(&kafka, &topics))
                .await
                .context("reading the topics panicked")??
        }
    };
    let measurement = measure(&rules, inputs.exposures, &inputs.purchases);
    let outcome_topic = args
        .outcome_topic
        .clone()
        .unwrap_or_else(|| config.topics.campaign_outcome.clone());
    let published = if args.publish {
        Some(publish(&config, &outcome_topic, &measurement.attributions).await?)
    } else {
        None
    };
    let report = Report::new(
        rules_path.display().to_string(),
        inputs.source,
        inputs.counts,
        &measurement,
        published.map(|delivered| Published {
            topic: outcome_topic.clone(),
            records: delivered,
        }),
    );
    let mut out = std::io::stdout().lock();
    match args.format {
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        ReportFormat::Table => report.write_table(&mut out)?,
        ReportFormat::Prometheus => report.write_prometheus(&mut out)?,
    }
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inputs.

/// Triggers and purchases, from wherever they were read.
struct Inputs {
    source: Source,
    counts: InputCounts,
    exposures: Vec<UserExposure>,
    /// Only `purchase` events are kept.
    purchases: Vec<ClickEvent>,
}

/// Where the records came from.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    Kafka {
        triggered: String,
        control: String,
        clickstream: String,
    },
    Files {
        triggered: PathBuf,
        control: PathBuf,
        events: PathBuf,
    },
}

/// Records read, before deduplication.
#[derive(Debug, Default, Serialize)]
struct InputCounts {
    /// Sent trigger records (campaign_triggered).
    triggered: u64,
    /// Held-out trigger records (campaign_control).
    control: u64,
    /// Clickstream records, and the purchases among them.
    events: u64,
    purchases: u64,
    /// Records that could not be decoded (tombstones included), per input.
    skipped: BTreeMap<&'static str, u64>,
}

/// What one input contributes.
#[derive(Clone, Copy)]
enum Input {
    Triggered,
    Control,
    Clickstream,
}

impl Input {
    const ALL: [Input; 3] = [Self::Triggered, Self::Control, Self::Clickstream];

    const fn name(self) -> &'static str {
        match self {
            Self::Triggered => "triggered",
            Self::Control => "control",
            Self::Clickstream => "clickstream",
        }
    }
}

/// Collects decoded records into [`Inputs`]; undecodable ones are counted and the first few
/// logged.
struct Collector {
    counts: InputCounts,
    exposures: Vec<UserExposure>,
    purchases: Vec<ClickEvent>,
}

impl Collector {
    fn new() -> Self {
        Self {
            counts: InputCounts::default(),
            exposures: Vec::new(),
            purchases: Vec::new(),
        }
    }

    /// One record of `input`; `position` says where it was (for the log).
    fn add(&mut self, input: Input, payload: Option<&[u8]>, encoding: Encoding, position: &str) {
        let result = match payload {
            None => Err("no value (tombstone)".to_owned()),
            Some(bytes) => self.decode(input, bytes, encoding),
        };
        if let Err(reason) = result {
            let skipped = self.counts.skipped.entry(input.name()).or_default();
            *skipped += 1;
            if *skipped as usize <= LOGGED_SKIPS {
                tracing::warn!(input = input.name(), at = position, %reason, "record skipped");
            }
        }
    }

    fn decode(&mut self, input: Input, bytes: &[u8], encoding: Encoding) -> Result<(), String> {
        match input {
            Input::Triggered | Input::Control => {
                let record = tierflow_events::decode::<CampaignTriggered>(bytes, encoding)
                    .map_err(|e| e.to_string())?;
                let arm = if matches!(input, Input::Triggered) {
                    self.counts.triggered += 1;
                    CampaignArm::Treated
                } else {
                    self.counts.control += 1;
                    CampaignArm::Control
                };
                self.exposures
                    .push(UserExposure::from_trigger(&record, arm));
            }
            Input::Clickstream => {
                let event = decode_click(bytes).map_err(|e| e.to_string())?;
                self.counts.events += 1;
                if event.event_type == EventType::Purchase {
                    self.counts.purchases += 1;
                    self.purchases.push(event);
                }
            }
        }
        Ok(())
    }

    fn finish(self, source: Source) -> Inputs {
        for (input, skipped) in &self.counts.skipped {
            if *skipped as usize > LOGGED_SKIPS {
                tracing::warn!(input, skipped, "records skipped in all");
            }
        }
        Inputs {
            source,
            counts: self.counts,
            exposures: self.exposures,
            purchases: self.purchases,
        }
    }
}

/// `[triggered, control, events]` JSON-lines files (`.gz` decompressed, `-` stdin).
fn read_files(files: &[PathBuf; 3]) -> Result<Inputs> {
    let mut collector = Collector::new();
    for (input, path) in Input::ALL.into_iter().zip(files) {
        let reader: Box<dyn Read> = if path == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            if path.extension().is_some_and(|e| e == "gz") {
                Box::new(MultiGzDecoder::new(file))
            } else {
                Box::new(file)
            }
        };
        for (index, line) in BufReader::with_capacity(1 << 20, reader)
            .split(b'\n')
            .enumerate()
        {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let position = format!("{}:{}", path.display(), index + 1);
            collector.add(input, Some(&line), Encoding::Json, &position);
        }
    }
    let [triggered, control, events] = files.clone();
    Ok(collector.finish(Source::Files {
        triggered,
        control,
        events,
    }))
}

/// `[campaign_triggered, campaign_control, clickstream]` topics, each from its beginning to
/// the end found at start. Blocking.
fn read_topics(kafka: &KafkaConfig, topics: &[String; 3]) -> Result<Inputs> {
    // Every end first: records produced while the report reads are not part of it.
    let spans: Vec<BTreeMap<i32, Span>> = topics
        .iter()
        .map(|topic| topic_reader::spans(kafka, topic))
        .collect::<Result<_>>()?;
    let total: i64 = spans
        .iter()
        .flat_map(|s| s.values())
        .map(|s| s.end - s.low)
        .sum();
    let bar = crate::progress::records(Some(total.max(0) as u64), "reading topics");
    let mut collector = Collector::new();
    for ((input, topic), spans) in Input::ALL.into_iter().zip(topics).zip(&spans) {
        read_topic(kafka, topic, spans, &bar, |message| {
            let encoding = header(message, HEADER_ENCODING)
                .and_then(|e| e.parse().ok())
                .unwrap_or(Encoding::Json);
            let position = format!("{topic}/{}@{}", message.partition(), message.offset());
            collector.add(input, message.payload(), encoding, &position);
        })?;
    }
    bar.finish_and_clear();
    let [triggered, control, clickstream] = topics.clone();
    Ok(collector.finish(Source::Kafka {
        triggered,
        control,
        clickstream,
    }))
}

/// Hands every record of `topic` below the `spans`' ends to `each`, in partition order.
fn read_topic(
    kafka: &KafkaConfig,
    topic: &str,
    spans: &BTreeMap<i32, Span>,
    bar: &ProgressBar,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<()> {
    let mut open: BTreeMap<i32, i64> = spans
        .iter()
        .filter(|(_, span)| span.end > span.low)
        .map(|(p, span)| (*p, span.end))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let consumer: BaseConsumer = assign_only_config(kafka)
        .create()
        .context("creating a reader")?;
    let mut list = TopicPartitionList::new();
    for partition in open.keys() {
        list.add_partition_offset(topic, *partition, Offset::Offset(spans[partition].low))?;
    }
    consumer.assign(&list)?;
    drop(list);
    let mut last_progress = Instant::now();
    while !open.is_empty() {
        if last_progress.elapsed() > STALL {
            bail!(
                "{topic}: nothing read for {} s before the end of partitions {:?}",
                STALL.as_secs(),
                open.keys().collect::<Vec<_>>()
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let partition = message.partition();
                let Some(end) = open.get(&partition).copied() else {
                    continue;
                };
                if message.offset() < end {
                    each(&message);
                    bar.inc(1);
                }
                if message.offset() + 1 >= end {
                    open.remove(&partition);
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
        }
    }
    Ok(())
}

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Produces one `campaign_outcome` record per attribution (JSON, keyed by user) and waits for
/// every acknowledgement; returns how many the broker acknowledged.
async fn publish(config: &Config, topic: &str, attributions: &[Attribution]) -> Result<u64> {
    tierflow_stream::ensure_topics(
        &config.kafka,
        &[TopicSpec::new(topic, config.topics.partitions)],
    )
    .await
    .with_context(|| format!("creating topic {topic} on {}", config.kafka.brokers))?;
    let mut producer = BoundedProducer::new(&config.kafka, PUBLISH_IN_FLIGHT)?;
    let headers = OutputHeaders::new(Contract::CampaignOutcome, Encoding::Json);
    for attribution in attributions {
        let value = encode(&attribution.to_outcome(), Encoding::Json);
        producer
            .send(OutRecord {
                topic,
                key: Some(attribution.user_id.as_bytes()),
                value: &value,
                headers: &headers.pairs(),
            })
            .await
            .with_context(|| format!("producing to {topic}"))?;
    }
    let stats = producer
        .flush()
        .await
        .with_context(|| format!("waiting for {topic} acknowledgements"))?;
    tracing::info!(
        topic,
        records = stats.delivered,
        "campaign outcomes published"
    );
    Ok(stats.delivered)
}

// ---------------------------------------------------------------------------------------------
// The report.

/// What `--format json` prints.
#[derive(Debug, Serialize)]
struct Report {
    rules: String,
    source: Source,
    inputs: InputCounts,
    /// Purchases attributed to a trigger, counted once per campaign.
    attributions: usize,
    /// Below this many users in an arm a campaign is marked `not_enough_data`.
    min_users_per_arm: u64,
    /// `--publish`: where the campaign_outcome records went.
    published: Option<Published>,
    campaigns: Vec<CampaignReport>,
}

#[derive(Debug, Serialize)]
struct Published {
    topic: String,
    /// Records the broker acknowledged.
    records: u64,
}

#[derive(Debug, Serialize)]
struct CampaignReport {
    campaign: String,
    attribution_window: String,
    /// `false`: not in the rules file; the `[defaults]` window applied.
    in_rules: bool,
    treated: ArmReport,
    control: ArmReport,
    uplift: UpliftReport,
    users_in_both_arms: u64,
    /// Currencies of the attributed purchases; revenue sums them as they are.
    currencies: Vec<String>,
    /// Why the numbers cannot be trusted yet; `null` when they can.
    not_enough_data: Option<String>,
}

#[derive(Debug, Serialize)]
struct ArmReport {
    users: u64,
    /// Users with at least one attributed purchase.
    converters: u64,
    conversion_rate: f64,
    /// Attributed purchases.
    purchases: u64,
    /// Attributed revenue: exact in cents, and in currency units.
    revenue_cents: i64,
    revenue: f64,
    revenue_per_user: f64,
}

impl ArmReport {
    fn new(arm: &Arm, purchases: u64) -> Self {
        Self {
            users: arm.users,
            converters: arm.converters,
            conversion_rate: arm.conversion_rate(),
            purchases,
            revenue_cents: arm.revenue_cents_sum,
            revenue: arm.revenue_cents_sum as f64 / 100.0,
            revenue_per_user: arm.revenue_per_user() / 100.0,
        }
    }
}

#[derive(Debug, Serialize)]
struct UpliftReport {
    conversion: ConversionUplift,
    revenue_per_user: RevenueUplift,
}

/// Treated minus control conversion rate (a difference of proportions).
#[derive(Debug, Serialize)]
struct ConversionUplift {
    absolute: f64,
    /// Newcombe's hybrid score interval; `null` when an arm is empty.
    ci95: Option<Interval>,
    /// `absolute / control rate`; `null` when control has no conversions.
    relative: Option<f64>,
}

/// Treated minus control revenue per user, in currency units.
#[derive(Debug, Serialize)]
struct RevenueUplift {
    difference: f64,
    /// Welch's interval; `null` when an arm has fewer than two users.
    ci95: Option<Interval>,
    /// Welch–Satterthwaite degrees of freedom.
    df: Option<f64>,
}

impl Report {
    fn new(
        rules: String,
        source: Source,
        inputs: InputCounts,
        measurement: &Measurement,
        published: Option<Published>,
    ) -> Self {
        Self {
            rules,
            source,
            inputs,
            attributions: measurement.attributions.len(),
            min_users_per_arm: MIN_USERS_PER_ARM,
            published,
            campaigns: measurement
                .campaigns
                .iter()
                .map(CampaignReport::new)
                .collect(),
        }
    }

    fn write_table(&self, out: &mut impl Write) -> Result<()> {
        let skipped: u64 = self.inputs.skipped.values().sum();
        writeln!(
            out,
            "rules {}: {} sent and {} held-out triggers, {} purchases in {} events{}; {} \
             attributions",
            self.rules,
            self.inputs.triggered,
            self.inputs.control,
            self.inputs.purchases,
            self.inputs.events,
            if skipped > 0 {
                format!(" ({skipped} records skipped)")
            } else {
                String::new()
            },
            self.attributions
        )?;
        if let Some(published) = &self.published {
            writeln!(
                out,
                "published {} campaign_outcome records to {}",
                published.records, published.topic
            )?;
        }
        for c in &self.campaigns {
            c.write_table(out)?;
        }
        Ok(())
    }
}

impl CampaignReport {
    fn new(m: &CampaignMeasurement) -> Self {
        let u = &m.uplift;
        let in_units = |i: Interval| Interval {
            low: i.low / 100.0,
            high: i.high / 100.0,
        };
        Self {
            campaign: m.campaign.clone(),
            attribution_window: format_duration(m.attribution_window_ms),
            in_rules: m.in_rules,
            treated: ArmReport::new(&m.treated, m.treated_purchases),
            control: ArmReport::new(&m.control, m.control_purchases),
            uplift: UpliftReport {
                conversion: ConversionUplift {
                    absolute: u.absolute,
                    ci95: u.absolute_ci,
                    relative: u.relative,
                },
                revenue_per_user: RevenueUplift {
                    difference: u.revenue_difference / 100.0,
                    ci95: u.revenue_ci.map(in_units),
                    df: u.revenue_df,
                },
            },
            users_in_both_arms: m.users_in_both_arms,
            currencies: m.currencies.clone(),
            not_enough_data: m.not_enough_data(),
        }
    }

    /// One block: the arms as a table, then the uplift and any warning.
    fn write_table(&self, out: &mut impl Write) -> Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "{}  (attribution window {}{})",
            self.campaign,
            self.attribution_window,
            if self.in_rules {
                ""
            } else {
                "; not in the rules file"
            }
        )?;
        if self.treated.users + self.control.users > 0 {
            let header = [
                "arm",
                "users",
                "converted",
                "rate",
                "purchases",
                "revenue",
                "revenue/user",
            ]
            .map(String::from);
            let row = |name: &str, a: &ArmReport| {
                [
                    name.to_owned(),
                    a.users.to_string(),
                    a.converters.to_string(),
                    format!("{:.2}%", 100.0 * a.conversion_rate),
                    a.purchases.to_string(),
                    format!("{:.2}", a.revenue),
                    format!("{:.2}", a.revenue_per_user),
                ]
            };
            let rows = [row("treated", &self.treated), row("control", &self.control)];
            write_aligned(out, &header, &rows)?;
            let conversion = &self.uplift.conversion;
            let revenue = &self.uplift.revenue_per_user;
            let ci = |i: Option<Interval>, scale: f64| {
                i.map_or_else(
                    || "no interval".to_owned(),
                    |i| format!("95% CI {:+.2} to {:+.2}", i.low * scale, i.high * scale),
                )
            };
            writeln!(
                out,
                "  uplift: conversion {:+.2} points ({}); revenue/user {:+.2} ({})",
                100.0 * conversion.absolute,
                ci(conversion.ci95, 100.0),
                revenue.difference,
                ci(revenue.ci95, 1.0)
            )?;
        }
        if self.currencies.len() > 1 {
            writeln!(
                out,
                "  warning: revenue mixes currencies {}",
                self.currencies.join(", ")
            )?;
        }
        if self.users_in_both_arms > 0 {
            writeln!(
                out,
                "  warning: {} users have triggers in both arms (control_fraction changed?)",
                self.users_in_both_arms
            )?;
        }
        if let Some(reason) = &self.not_enough_data {
            writeln!(out, "  not enough data: {reason}")?;
        }
        Ok(())
    }
}

impl Report {
    /// Gauges in the Prometheus text format (0.0.4): per campaign and arm the totals, per
    /// campaign the uplift and its interval bounds (absent when there is no interval).
    fn write_prometheus(&self, out: &mut impl Write) -> Result<()> {
        type ArmValue = fn(&ArmReport) -> f64;
        let arm_gauges: [(&str, &str, ArmValue); 5] = [
            ("users", "Users with a trigger of the campaign.", |a| {
                a.users as f64
            }),
            ("converters", "Users with an attributed purchase.", |a| {
                a.converters as f64
            }),
            ("purchases", "Attributed purchases.", |a| a.purchases as f64),
            ("revenue", "Attributed revenue, currency units.", |a| {
                a.revenue
            }),
            ("conversion_rate", "Converters per user.", |a| {
                a.conversion_rate
            }),
        ];
        for (name, help, value) in arm_gauges {
            writeln!(out, "# HELP tierflow_campaign_report_{name} {help}")?;
            writeln!(out, "# TYPE tierflow_campaign_report_{name} gauge")?;
            for c in &self.campaigns {
                for (arm, a) in [("treated", &c.treated), ("control", &c.control)] {
                    writeln!(
                        out,
                        "tierflow_campaign_report_{name}{{campaign=\"{}\",arm=\"{arm}\"}} {}",
                        label(&c.campaign),
                        value(a)
                    )?;
                }
            }
        }
        type UpliftValue = fn(&UpliftReport) -> Option<f64>;
        let uplift_gauges: [(&str, &str, UpliftValue); 6] = [
            (
                "conversion_uplift",
                "Treated minus control conversion rate.",
                |u| Some(u.conversion.absolute),
            ),
            (
                "conversion_uplift_low",
                "Lower bound of its 95 % interval.",
                |u| u.conversion.ci95.map(|i| i.low),
            ),
            (
                "conversion_uplift_high",
                "Upper bound of its 95 % interval.",
                |u| u.conversion.ci95.map(|i| i.high),
            ),
            (
                "revenue_per_user_uplift",
                "Treated minus control revenue per user, currency units.",
                |u| Some(u.revenue_per_user.difference),
            ),
            (
                "revenue_per_user_uplift_low",
                "Lower bound of its 95 % interval.",
                |u| u.revenue_per_user.ci95.map(|i| i.low),
            ),
            (
                "revenue_per_user_uplift_high",
                "Upper bound of its 95 % interval.",
                |u| u.revenue_per_user.ci95.map(|i| i.high),
            ),
        ];
        for (name, help, value) in uplift_gauges {
            writeln!(out, "# HELP tierflow_campaign_report_{name} {help}")?;
            writeln!(out, "# TYPE tierflow_campaign_report_{name} gauge")?;
            for c in &self.campaigns {
                if let Some(v) = value(&c.uplift).filter(|v| v.is_finite()) {
                    writeln!(
                        out,
                        "tierflow_campaign_report_{name}{{campaign=\"{}\"}} {v}",
                        label(&c.campaign)
                    )?;
                }
            }
        }
        writeln!(
            out,
            "# HELP tierflow_campaign_report_enough_data 1 when both arms have enough users and \
             some conversions, else 0."
        )?;
        writeln!(out, "# TYPE tierflow_campaign_report_enough_data gauge")?;
        for c in &self.campaigns {
            writeln!(
                out,
                "tierflow_campaign_report_enough_data{{campaign=\"{}\"}} {}",
                label(&c.campaign),
                u8::from(c.not_enough_data.is_none())
            )?;
        }
        Ok(())
    }
}

/// A Prometheus label value, escaped (campaigns read from topics may be named anything).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Two-space indented columns: the first left-aligned, the others right-aligned.
fn write_aligned<const N: usize>(
    out: &mut impl Write,
    header: &[String; N],
    rows: &[[String; N]],
) -> Result<()> {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        writeln!(out, "  {}", cells.join("  "))?;
    }
    Ok(())
}
