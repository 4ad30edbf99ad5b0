//! Drift monitoring end to end, against a real broker (tansu) and a real redis-server from
//! the testkit: the model's training profile is fitted on one generated population (the
//! dataset builder's event sample, as `tierflow train` does); the pipeline then reads the
//! same population from another seed — the drift gauges stay under the threshold — and then
//! a population with another segment mix — the PSI of the features that describe buying
//! crosses it and `tierflow_drift_alert` goes to 1. The offline computation
//! (`profile::tally` over the same events) reaches the same verdict both times.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use burn::prelude::Device;
use common::{metric, produce_records, test_kafka, topics, wait_for};
use tierflow_data::synth::{self, Record, Segment, SegmentMix, SynthConfig};
use tierflow_features::{DatasetBuilder, FeatureSpec};
use tierflow_model::{Artifact, ModelHandle, Scorer, profile};
use tierflow_pipeline::{DriftConfig, Health, Pipeline, PipelineConfig, telemetry};
use tierflow_store::{RedisConfig, RedisStore};
use tierflow_stream::ensure_topics;
use tierflow_testkit::{broker, redis, unique_name};
use tokio::sync::watch;

const DAYS: u32 = 20;

/// A clean population (no disorder, no malformed records: drift is about who the users are).
fn population(
    users: u64,
    seed: u64,
    mix: SegmentMix,
    prefix: &str,
) -> Vec<tierflow_events::ClickEvent> {
    let config = SynthConfig {
        users,
        days: DAYS,
        seed,
        mix,
        ..SynthConfig::default()
    };
    synth::generate(&config)
        .filter_map(|r| match r {
            Record::Event(mut e) => {
                e.user_id = format!("{prefix}{}", e.user_id);
                Some(e)
            }
            Record::Malformed { .. } => None,
        })
        .collect()
}

/// The online rows of `events` (one per applied event), as the builder samples them.
fn event_rows(events: &[tierflow_events::ClickEvent], rows: usize) -> Vec<f32> {
    let mut builder = DatasetBuilder::event_sample_only(None, rows);
    for e in events {
        builder.push(e);
    }
    builder.finish_with_sample().2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shifted_population_raises_the_drift_alert_and_the_same_one_does_not() -> Result<()> {
    let metrics = telemetry::install_recorder()?;
    // The model: the embedded default, with a profile fitted on one population.
    let reference = population(400, 1, SegmentMix::default(), "r");
    let device = Device::flex();
    let artifact = Artifact::embedded_default()?;
    let scorer = Scorer::new(&artifact, &device)?;
    let sample = event_rows(&reference, profile::SAMPLE_ROWS);
    let fitted = profile::fit(&scorer, FeatureSpec::current().names(), &sample)?;
    let artifact = artifact.with_profile(Some(fitted.clone()));
    let model = Arc::new(ModelHandle::fixed(&artifact, &device)?);

    let same = population(400, 2, SegmentMix::default(), "s");
    let shifted_mix = SegmentMix::only(Segment::LoyalHighSpender);
    let shifted = population(600, 3, shifted_mix, "d");
    // The window covers the whole first population (features such as tenure grow with
    // time, so the newest days alone would differ from a profile of the whole period), and
    // the second population alone fills it.
    let window_rows = same.len() as u64;
    ensure!(
        shifted.len() as u64 >= window_rows,
        "the shifted population ({}) must fill the window ({window_rows})",
        shifted.len()
    );
    let drift = DriftConfig {
        enabled: true,
        window_rows,
        min_rows: window_rows / 4,
        psi_threshold: 0.25,
    };

    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(2);
    ensure_topics(&kafka, &topics.specs()).await?;
    let store = RedisStore::connect(RedisConfig {
        key_prefix: unique_name("drift"),
        ..RedisConfig::new(redis().url())
    })
    .await?;
    let health = Health::new();
    let (stop, shutdown) = watch::channel(false);
    let pipeline = Pipeline {
        config: PipelineConfig {
            group_id: unique_name("group"),
            batch_max_events: 500,
            idle_partition_secs: 0,
            drift,
            ..PipelineConfig::default()
        },
        kafka: kafka.clone(),
        topics: topics.clone(),
        store,
        model,
        health: Arc::clone(&health),
        campaigns: None,
        drift: Default::default(),
    };
    let task = tokio::spawn(pipeline.run(shutdown));

    let records = |events: &[tierflow_events::ClickEvent]| -> Vec<(String, Vec<u8>)> {
        events
            .iter()
            .map(|e| (e.user_id.clone(), e.to_json()))
            .collect()
    };
    let gauge = |name: &str| metric(&metrics.render(), name);

    // The same population from another seed: counted, under the threshold, no alert.
    let first = produce_records(&kafka, &topics.clickstream, &records(&same)).await?;
    wait_for("the first population", Duration::from_secs(240), || {
        health.records() >= first || task.is_finished()
    })
    .await?;
    let rendered = metrics.render();
    ensure!(
        metric(&rendered, "tierflow_drift_window_rows") >= (window_rows / 2) as f64,
        "the window is not full:\n{rendered}"
    );
    let calm_max = metric(&rendered, "tierflow_drift_max_psi");
    ensure!(
        calm_max < 0.25 && metric(&rendered, "tierflow_drift_alert") == 0.0,
        "the same population shows drift (max PSI {calm_max}):\n{}",
        drift_lines(&rendered)
    );
    // Offline, over the same events, the same verdict.
    let offline =
        profile::tally(&scorer, &fitted, &event_rows(&same, usize::MAX))?.compare(&fitted);
    let offline_max = offline
        .features
        .iter()
        .chain(&offline.scores)
        .map(|c| c.psi)
        .fold(0.0_f64, f64::max);
    ensure!(
        offline_max < 0.25,
        "offline, the same population drifts: {offline_max}"
    );

    // Another population: the alert fires, led by the features of buying.
    let second = produce_records(&kafka, &topics.clickstream, &records(&shifted)).await?;
    wait_for("the shifted population", Duration::from_secs(240), || {
        health.records() >= first + second || task.is_finished()
    })
    .await?;
    stop.send(true)?;
    task.await??;
    let rendered = metrics.render();
    ensure!(
        gauge("tierflow_drift_alert") == 1.0
            && gauge("tierflow_drift_columns_over_threshold") >= 1.0,
        "a shifted population raised no alert:\n{}",
        drift_lines(&rendered)
    );
    let purchases = labelled(&rendered, "tierflow_drift_psi", "purchase_30d");
    ensure!(
        purchases > 0.25,
        "purchase_30d PSI {purchases}:\n{}",
        drift_lines(&rendered)
    );
    let offline =
        profile::tally(&scorer, &fitted, &event_rows(&shifted, usize::MAX))?.compare(&fitted);
    ensure!(
        offline.over(0.25).iter().any(|c| c.name == "purchase_30d"),
        "offline, purchase_30d does not drift: {offline:?}"
    );
    Ok(())
}

/// The `tierflow_drift_*` lines (for failure messages).
fn drift_lines(rendered: &str) -> String {
    rendered
        .lines()
        .filter(|l| l.starts_with("tierflow_drift_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `name` on the line labelled `column="{column}"`.
fn labelled(rendered: &str, name: &str, column: &str) -> f64 {
    let label = format!("column=\"{column}\"");
    rendered
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
        .unwrap_or(f64::NAN)
}
