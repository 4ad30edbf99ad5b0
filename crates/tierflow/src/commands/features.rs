//! `tierflow features`: the offline dataset builder over an event log, with a progress bar
//! and a report of every line that could not be used.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::read::MultiGzDecoder;
use tierflow_events::{ClickEvent, EventTime};
use tierflow_features::FeatureSpec;
use tierflow_features::dataset::{BuildStats, DatasetBuilder, Row};

use crate::cli::FeaturesArgs;
use crate::progress;

pub(crate) async fn run(args: FeaturesArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || build(&args))
        .await
        .context("the dataset builder panicked")?
}

fn build(args: &FeaturesArgs) -> Result<()> {
    let cutoffs = parse_cutoffs(&args.cutoffs)?;
    let horizon_ms = i64::from(args.horizon_days) * EventTime::MILLIS_PER_DAY;
    let built = build_rows(
        &args.events,
        DatasetBuilder::new(&cutoffs, horizon_ms)
            .with_tier_thresholds(args.tier_thresholds.clone()),
    )?;
    let spec = FeatureSpec::current();
    write_csv(
        &args.output,
        &spec,
        &built.rows,
        !args.tier_thresholds.is_empty(),
    )?;
    write_meta(
        args,
        &spec,
        &cutoffs,
        &built.rows,
        &built.stats,
        &built.rejected,
    )?;
    eprintln!(
        "{} rows ({} cutoffs, spec {}) from {} events; skipped {} invalid lines, {} duplicates, {} too late; {} users left out as expired; wrote {}",
        built.rows.len(),
        cutoffs.len(),
        spec.id(),
        built.stats.events,
        built.rejected.values().sum::<u64>(),
        built.stats.duplicates,
        built.stats.too_late,
        built.stats.expired_users,
        args.output.display()
    );
    Ok(())
}

pub(crate) fn parse_cutoffs(texts: &[String]) -> Result<Vec<EventTime>> {
    texts
        .iter()
        .map(|c| EventTime::parse_rfc3339(c).with_context(|| format!("--cutoff {c}")))
        .collect()
}

/// Rows of the dataset builder over an event log, and what could not be used.
pub(crate) struct BuiltRows {
    pub(crate) rows: Vec<Row>,
    pub(crate) stats: BuildStats,
    /// Invalid lines by "kind field".
    pub(crate) rejected: BTreeMap<String, u64>,
    /// Online-shaped feature vectors before the last cutoff, row-major (`event_sample` rows
    /// at most; see `DatasetBuilder::with_event_sample`).
    pub(crate) event_sample: Vec<f32>,
}

/// One pass over an event log (JSON lines, .gz, or `-` for stdin) through the dataset
/// builder, with a progress bar. Invalid lines are counted and skipped (the first of each
/// kind is logged with its line number).
pub(crate) fn build_rows(events: &Path, mut builder: DatasetBuilder) -> Result<BuiltRows> {
    let (reader, bar) = open(events)?;
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    for (number, line) in BufReader::with_capacity(1 << 20, reader)
        .split(b'\n')
        .enumerate()
    {
        let line = line.with_context(|| format!("reading {}", events.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match ClickEvent::from_json(&line) {
            Ok(event) => builder.push(&event),
            Err(e) => {
                let key = format!("{} {}", e.kind, e.field.as_deref().unwrap_or("-"));
                let count = rejected.entry(key).or_default();
                if *count == 0 {
                    tracing::warn!(line = number + 1, reason = %e, "skipping a line that is not a valid event");
                }
                *count += 1;
            }
        }
    }
    bar.finish_and_clear();
    let (rows, stats, event_sample) = builder.finish_with_sample();
    Ok(BuiltRows {
        rows,
        stats,
        rejected,
        event_sample,
    })
}

fn open(path: &Path) -> Result<(Box<dyn Read>, indicatif::ProgressBar)> {
    if path == Path::new("-") {
        return Ok((Box::new(std::io::stdin()), indicatif::ProgressBar::hidden()));
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let bar = progress::bytes(
        file.metadata().map(|m| m.len()).unwrap_or(0),
        "building features",
    );
    let reader = bar.wrap_read(file);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok((Box::new(MultiGzDecoder::new(reader)), bar))
    } else {
        Ok((Box::new(reader), bar))
    }
}

fn write_csv(path: &Path, spec: &FeatureSpec, rows: &[Row], tiers: bool) -> Result<()> {
    let mut out =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    let mut header = vec!["user_id".to_owned(), "cutoff".to_owned()];
    header.extend(spec.names().iter().cloned());
    header.extend(["future_spend", "future_orders", "purchased"].map(String::from));
    if tiers {
        header.push("future_tier".to_owned());
    }
    out.write_record(&header)?;
    let mut record = Vec::with_capacity(header.len());
    for row in rows {
        record.clear();
        record.push(row.user_id.clone());
        record.push(row.cutoff.to_rfc3339());
        // Display of f32 is the shortest text that parses back to the same bits.
        record.extend(row.features.iter().map(f32::to_string));
        record.push(format!("{:.2}", row.label.future_spend));
        record.push(row.label.future_orders.to_string());
        record.push(u8::from(row.label.purchased).to_string());
        if let Some(tier) = row.label.future_tier {
            record.push(tier.to_string());
        }
        out.write_record(&record)?;
    }
    out.flush()?;
    Ok(())
}

fn write_meta(
    args: &FeaturesArgs,
    spec: &FeatureSpec,
    cutoffs: &[EventTime],
    rows: &[Row],
    stats: &BuildStats,
    rejected: &BTreeMap<String, u64>,
) -> Result<()> {
    let meta = serde_json::json!({
        "feature_spec": spec.id(),
        "features": spec.names(),
        "cutoffs": cutoffs.iter().map(|c| c.to_rfc3339()).collect::<Vec<_>>(),
        "label_horizon_days": args.horizon_days,
        "tier_thresholds": args.tier_thresholds,
        "rows": rows.len(),
        "rows_purchased": rows.iter().filter(|r| r.label.purchased).count(),
        "events": stats.events,
        "duplicates_skipped": stats.duplicates,
        "too_late_skipped": stats.too_late,
        "expired_users_left_out": stats.expired_users,
        "invalid_lines": rejected,
    });
    let path = args.output.with_extension("meta.json");
    if path == args.output {
        bail!("choose an output name with an extension, e.g. dataset.csv");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&meta)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
