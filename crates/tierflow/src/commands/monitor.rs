//! `tierflow monitor`: the training profile the pipeline's drift metrics compare with
//! (`profile`), and the drift of an event log from it, offline (`drift`). Both read the
//! feature vectors the pipeline would compute, through the dataset builder's event sample.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tierflow_events::EventTime;
use tierflow_features::{DatasetBuilder, FeatureSpec};
use tierflow_model::profile::{self, ColumnDrift, Drift};
use tierflow_model::{Artifact, Scorer};

use crate::cli::{MonitorCommand, MonitorDriftArgs, MonitorProfileArgs};
use crate::commands::features::build_rows;
use crate::config::Config;

pub(crate) async fn run(command: MonitorCommand, config: &Config) -> Result<()> {
    let device = config.model.backend.device();
    tokio::task::spawn_blocking(move || match command {
        MonitorCommand::Profile(args) => fit_profile(&args, &device),
        MonitorCommand::Drift(args) => drift(&args, &device),
    })
    .await
    .context("the monitor command panicked")?
}

/// The pipeline's feature vectors of the events in `events` up to `cutoff` (all without
/// one): at most `rows`, chosen by event-id hash.
fn event_rows(events: &Path, cutoff: Option<EventTime>, rows: usize) -> Result<Vec<f32>> {
    let built = build_rows(events, DatasetBuilder::event_sample_only(cutoff, rows))?;
    if built.event_sample.is_empty() {
        bail!(
            "no usable events in {} (before the cutoff, if one was given)",
            events.display()
        );
    }
    Ok(built.event_sample)
}

fn fit_profile(args: &MonitorProfileArgs, device: &burn::prelude::Device) -> Result<()> {
    let artifact = Artifact::load(&args.model)
        .with_context(|| format!("loading the model from {}", args.model.display()))?;
    let cutoff = args
        .cutoff
        .as_deref()
        .map(|c| EventTime::parse_rfc3339(c).with_context(|| format!("--cutoff {c}")))
        .transpose()?;
    let sample = event_rows(&args.events, cutoff, args.sample_rows)?;
    let scorer = Scorer::new(&artifact, device)?;
    let fitted = profile::fit(&scorer, FeatureSpec::current().names(), &sample)?;
    let rows = fitted.rows;
    let artifact = artifact.with_profile(Some(fitted));
    let output = args.output.as_deref().unwrap_or(&args.model);
    artifact
        .save(output, &[])
        .with_context(|| format!("writing the artifact to {}", output.display()))?;
    eprintln!(
        "profile of model {} fitted on {rows} feature vectors from {}, written to {}",
        artifact.version(),
        args.events.display(),
        output
            .join(tierflow_model::artifact::MANIFEST_FILE)
            .display()
    );
    Ok(())
}

fn drift(args: &MonitorDriftArgs, device: &burn::prelude::Device) -> Result<()> {
    let artifact = match &args.model {
        Some(dir) => Artifact::load(dir)
            .with_context(|| format!("loading the model from {}", dir.display()))?,
        None => Artifact::embedded_default().context("loading the embedded default model")?,
    };
    let Some(reference) = artifact.manifest.profile.clone() else {
        bail!(
            "model {} has no training profile: add one with `tierflow monitor profile --model DIR --events TRAINING_EVENTS`",
            artifact.version()
        );
    };
    let sample = event_rows(&args.events, None, args.sample_rows)?;
    let scorer = Scorer::new(&artifact, device)?;
    let drift = profile::tally(&scorer, &reference, &sample)?.compare(&reference);
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = serde_json::json!({
            "model_version": artifact.version(),
            "reference_rows": reference.rows,
            "threshold": args.threshold,
            "drifted": drift.over(args.threshold).iter().map(|c| &c.name).collect::<Vec<_>>(),
            "drift": drift,
        });
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    print_table(&mut out, &artifact, reference.rows, &drift, args)?;
    Ok(())
}

fn print_table(
    out: &mut impl Write,
    artifact: &Artifact,
    reference_rows: usize,
    drift: &Drift,
    args: &MonitorDriftArgs,
) -> Result<()> {
    let over = drift.over(args.threshold);
    writeln!(
        out,
        "model {}: {} live feature vectors against a profile of {reference_rows}",
        artifact.version(),
        drift.rows
    )?;
    if over.is_empty() {
        writeln!(
            out,
            "no feature or score drifted past PSI {} (worst shown below)",
            args.threshold
        )?;
    } else {
        writeln!(
            out,
            "DRIFT: {} of {} columns past PSI {}",
            over.len(),
            drift.features.len() + drift.scores.len(),
            args.threshold
        )?;
    }
    let mut columns: Vec<(&str, &ColumnDrift)> = drift
        .features
        .iter()
        .map(|c| ("feature", c))
        .chain(drift.scores.iter().map(|c| ("score", c)))
        .collect();
    columns.sort_by(|a, b| b.1.psi.total_cmp(&a.1.psi));
    let shown = args.top.max(over.len()).min(columns.len());
    let width = columns[..shown]
        .iter()
        .map(|(_, c)| c.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(out)?;
    writeln!(
        out,
        "{:<7}  {:<width$}  {:>7}  {:>6}",
        "kind", "column", "PSI", "KS"
    )?;
    for (kind, column) in &columns[..shown] {
        let flag = if column.psi > args.threshold {
            "  drifted"
        } else {
            ""
        };
        writeln!(
            out,
            "{kind:<7}  {:<width$}  {:>7.3}  {:>6.3}{flag}",
            column.name, column.psi, column.ks
        )?;
    }
    Ok(())
}
