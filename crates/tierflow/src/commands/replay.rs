//! `tierflow replay`: the pipeline again, from a chosen point of the clickstream, into a
//! namespace of its own — Redis keys under `{key_prefix}.{NAME}`, output topics
//! `{topic}.{NAME}`, consumer group `{group_id}.replay.{NAME}`. The same `Pipeline` runs with
//! an adjusted configuration, so a replay decides exactly as `tierflow run` does (same
//! idempotency keys); only the places it reads from and writes to differ.
//!
//! Progress is the group's committed offsets against the end offsets found at start: a
//! committed offset means the records before it are applied, stored and their outputs
//! acknowledged.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tierflow_pipeline::{Health, Pipeline, RunSummary, shutdown_on_signals};
use tierflow_store::RedisStore;
use tierflow_stream::{KafkaConfig, ensure_topics};

use crate::cli::ReplayArgs;
use crate::config::Config;
use crate::progress;
use crate::topic_reader::{self, Span};

/// How often progress is read from the group's committed offsets.
const POLL: Duration = Duration::from_millis(250);

pub(crate) async fn run(args: ReplayArgs, mut config: Config) -> Result<()> {
    if let Some(url) = args.redis {
        config.redis.url = url;
    }
    if let Some(model) = args.model {
        config.model.artifact = Some(model);
    }
    let namespace = args.namespace.as_str();
    let config = namespaced(config, namespace)?;
    config
        .pipeline
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let kafka = config.kafka.clone();
    let clickstream = config.topics.clickstream.clone();
    let group = config.pipeline.group_id.clone();

    // Output topics first (the clickstream must exist already; it is only read).
    let outputs: Vec<_> = config
        .topics
        .specs()
        .into_iter()
        .filter(|spec| spec.name != clickstream)
        .collect();
    ensure_topics(&kafka, &outputs)
        .await
        .context("creating the namespace's output topics")?;
    let (spans, starts) = tokio::task::block_in_place(|| {
        let spans = topic_reader::spans(&kafka, &clickstream)?;
        let starts = topic_reader::starts(&kafka, &clickstream, &spans, args.from)?;
        topic_reader::commit_positions(&kafka, &group, &clickstream, &starts)?;
        anyhow::Ok((spans, starts))
    })?;
    let total: i64 = spans.iter().map(|(p, s)| s.end - starts[p]).sum();
    tracing::info!(
        namespace,
        group = %group,
        key_prefix = %config.redis.key_prefix,
        records = total,
        ?starts,
        "replaying"
    );

    let model = Arc::new(super::open_model(&config)?);
    let _watcher = (config.model.artifact.is_some() && config.model.reload_interval_secs > 0)
        .then(|| model.watch(Duration::from_secs(config.model.reload_interval_secs)));
    let store = RedisStore::connect(config.redis.clone())
        .await
        .context("connecting to Redis")?;
    // Governance in the namespace too: a replay must not spend the live campaigns' slots.
    let campaigns = super::open_campaigns(&config, &config.redis, model.current().tiers()).await?;
    let (stop, shutdown, signals) = shutdown_on_signals();
    let signalled = tokio::spawn(signals);
    let pipeline = Pipeline {
        config: config.pipeline.clone(),
        kafka: kafka.clone(),
        topics: config.topics.clone(),
        store,
        model,
        health: Health::new(),
        campaigns,
        drift: Default::default(),
    };
    let started = Instant::now();
    let mut running = tokio::spawn(pipeline.run(shutdown));

    let bar = progress::records(Some(total.max(0) as u64), "replaying");
    let offsets = Committed::new(&kafka, &group, &clickstream, &spans)?;
    // Records done and whether every partition reached its end, from committed offsets.
    let measure = |committed: &BTreeMap<i32, i64>| {
        let at = |p: &i32| committed.get(p).copied().unwrap_or(starts[p]);
        let done: i64 = spans
            .iter()
            .map(|(p, s)| at(p).min(s.end) - starts[p])
            .sum();
        let reached = spans.iter().all(|(p, s)| at(p) >= s.end);
        (done.max(0) as u64, reached)
    };
    let mut caught_up = false;
    let finished = loop {
        tokio::select! {
            finished = &mut running => break finished,
            _ = tokio::time::sleep(POLL) => {}
        }
        let committed = match tokio::task::block_in_place(|| offsets.read()) {
            Ok(committed) => committed,
            // Only the progress display depends on it: try again at the next tick.
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reading progress");
                continue;
            }
        };
        let (done, reached) = measure(&committed);
        bar.set_position(done);
        if reached && !caught_up {
            caught_up = true;
            if args.until_caught_up {
                // Finish the batch in flight, commit, leave the group.
                let _ = stop.send(true);
            } else {
                bar.println(
                    "caught up with the end offsets found at start; following new records \
                     (Ctrl-C stops)",
                );
            }
        }
    };
    bar.finish_and_clear();
    signalled.abort();
    let summary = finished.context("the pipeline task panicked")??;
    // The last batches may have been committed after the last look.
    if let Ok(committed) = tokio::task::block_in_place(|| offsets.read()) {
        caught_up |= measure(&committed).1;
    }
    drop(offsets);

    let mut out = std::io::stdout().lock();
    print_summary(
        &mut out,
        &config,
        namespace,
        &spans,
        &starts,
        &summary,
        started.elapsed(),
    )?;
    if !caught_up {
        writeln!(
            out,
            "  stopped before the end offsets found at start; the next replay of this namespace \
             starts again from --from (applied events are skipped, outputs republished with \
             the same idempotency keys)"
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The configuration of namespace `name`: its own Redis prefix, output topics and group; the
/// clickstream, brokers, model and pipeline settings as configured.
fn namespaced(mut config: Config, name: &str) -> Result<Config> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!("--namespace {name:?}: use letters, digits, `-` and `_` only");
    }
    config.redis.key_prefix = format!("{}.{name}", config.redis.key_prefix);
    let topics = &mut config.topics;
    for topic in [
        &mut topics.tier_changed,
        &mut topics.campaign_triggered,
        &mut topics.campaign_control,
        &mut topics.campaign_outcome,
        &mut topics.user_score,
        &mut topics.dead_letter,
    ] {
        *topic = format!("{topic}.{name}");
    }
    config.pipeline.group_id = format!("{}.replay.{name}", config.pipeline.group_id);
    // History's clock is its event time: once the replay is read to its end the wall clock
    // would fire every timer of every user at once.
    config.pipeline.idle_partition_secs = 0;
    // Transactions would fence the live process if the id were shared.
    if let Some(id) = &mut config.pipeline.transactional_id {
        *id = format!("{id}.replay.{name}");
    }
    Ok(config)
}

/// Reads a group's committed offsets with one long-lived client.
struct Committed {
    consumer: BaseConsumer,
    wanted: TopicPartitionList,
}

impl Committed {
    fn new(
        kafka: &KafkaConfig,
        group: &str,
        topic: &str,
        spans: &BTreeMap<i32, Span>,
    ) -> Result<Self> {
        let consumer: BaseConsumer = kafka
            .consumer_config(group)
            .create()
            .context("creating an offset client")?;
        let mut wanted = TopicPartitionList::new();
        for partition in spans.keys() {
            wanted.add_partition(topic, *partition);
        }
        Ok(Self { consumer, wanted })
    }

    fn read(&self) -> Result<BTreeMap<i32, i64>> {
        let committed = self
            .consumer
            .committed_offsets(self.wanted.clone(), Duration::from_secs(10))
            .context("reading the replay's committed offsets")?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}

fn print_summary(
    out: &mut impl Write,
    config: &Config,
    namespace: &str,
    spans: &BTreeMap<i32, Span>,
    starts: &BTreeMap<i32, i64>,
    summary: &RunSummary,
    elapsed: Duration,
) -> Result<()> {
    let ranges: Vec<String> = spans
        .iter()
        .map(|(p, s)| format!("{p}:{}..{}", starts[p], s.end))
        .collect();
    let topics = &config.topics;
    writeln!(
        out,
        "replay {namespace}: {} records of {} (partition:from..end {}) in {:.1} s",
        summary.records,
        topics.clickstream,
        ranges.join(" "),
        elapsed.as_secs_f64()
    )?;
    let c = &summary.counts;
    writeln!(
        out,
        "  events: {} applied, {} duplicates, {} too late, {} already applied, {} undecodable",
        c.applied, c.duplicates, c.too_late, c.replayed, summary.undecodable
    )?;
    writeln!(
        out,
        "  state: redis keys {}:u:*, latest scores {}:s:*",
        config.redis.key_prefix, config.redis.key_prefix
    )?;
    writeln!(
        out,
        "  outputs: {} tier changes -> {}, {} user scores -> {}, {} dead letters -> {}",
        summary.tier_changes,
        topics.tier_changed,
        summary.user_scores,
        topics.user_score,
        summary.dead_letters,
        topics.dead_letter
    )?;
    writeln!(out, "  consumer group: {}", config.pipeline.group_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_moves_state_outputs_and_group_but_not_the_input() {
        let config = namespaced(Config::default(), "bt-1").unwrap();
        assert_eq!(config.redis.key_prefix, "tierflow.bt-1");
        assert_eq!(config.topics.clickstream, "tierflow.clickstream");
        assert_eq!(config.topics.tier_changed, "tierflow.tier_changed.bt-1");
        assert_eq!(config.topics.user_score, "tierflow.user_score.bt-1");
        assert_eq!(config.topics.dead_letter, "tierflow.dead_letter.bt-1");
        assert_eq!(
            config.topics.campaign_triggered,
            "tierflow.campaign_triggered.bt-1"
        );
        assert_eq!(config.pipeline.group_id, "tierflow.replay.bt-1");
        for bad in ["", "a b", "x:y", "ns.1"] {
            assert!(namespaced(Config::default(), bad).is_err(), "{bad:?}");
        }
    }
}
