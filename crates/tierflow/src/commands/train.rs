//! `tierflow train` and `tierflow evaluate`: the model protocol of `tierflow_model::workflow`
//! over an event log, with progress bars and a readable summary.

use anyhow::{Context, Result, bail};
use burn::config::Config as _;
use indicatif::{ProgressBar, ProgressStyle};
use tierflow_events::EventTime;
use tierflow_features::{DatasetBuilder, FeatureSpec};
use tierflow_model::model::{LossWeights, ModelConfig};
use tierflow_model::profile;
use tierflow_model::workflow::{self, TierChoice, TrainPlan};
use tierflow_model::{Artifact, Dataset, TrainingConfig};

use crate::cli::{DataArgs, EvaluateArgs, TrainArgs};
use crate::commands::features::{build_rows, parse_cutoffs};
use crate::config::Config;

pub(crate) async fn train(args: TrainArgs, config: &Config) -> Result<()> {
    let device = config.model.backend.device();
    tokio::task::spawn_blocking(move || train_blocking(&args, &device))
        .await
        .context("training panicked")?
}

pub(crate) async fn evaluate(args: EvaluateArgs, config: &Config) -> Result<()> {
    let device = config.model.backend.device();
    tokio::task::spawn_blocking(move || evaluate_blocking(&args, &device))
        .await
        .context("evaluation panicked")?
}

/// The labelled rows of `data`, and with `event_sample` > 0 that many online-shaped rows for
/// the drift profile.
fn load_rows(data: &DataArgs, event_sample: usize) -> Result<Dataset> {
    let cutoffs = parse_cutoffs(&data.cutoffs)?;
    let horizon_ms = i64::from(data.horizon_days) * EventTime::MILLIS_PER_DAY;
    let built = build_rows(
        &data.events,
        DatasetBuilder::new(&cutoffs, horizon_ms).with_event_sample(event_sample),
    )?;
    let skipped: u64 = built.rejected.values().sum();
    tracing::info!(
        rows = built.rows.len(),
        events = built.stats.events,
        invalid_lines = skipped,
        duplicates = built.stats.duplicates,
        too_late = built.stats.too_late,
        "built labelled rows"
    );
    if built.rows.is_empty() {
        bail!(
            "no rows: no user has events before the cutoffs {:?} in {}",
            data.cutoffs,
            data.events.display()
        );
    }
    let mut dataset = Dataset::from_rows(&built.rows, FeatureSpec::current().len());
    dataset.event_sample = built.event_sample;
    Ok(dataset)
}

fn training_config(args: &TrainArgs) -> Result<TrainingConfig> {
    let spec = FeatureSpec::current();
    let mut config = match &args.training_config {
        Some(path) => TrainingConfig::load(path)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading {}", path.display()))?,
        None => TrainingConfig::new(ModelConfig::new(spec.len()), LossWeights::new()),
    };
    config.model.inputs = spec.len();
    if !args.hidden.is_empty() {
        config.model.hidden = args.hidden.clone();
    }
    if let Some(tiers) = args.tiers {
        if tiers < 2 {
            bail!("--tiers must be at least 2");
        }
        config.model.tiers = tiers;
    }
    macro_rules! set {
        ($($field:ident => $target:expr),*) => {$(
            if let Some(value) = args.$field { $target = value; }
        )*};
    }
    set!(dropout => config.model.dropout, epochs => config.epochs, patience => config.patience,
        batch_size => config.batch_size, learning_rate => config.learning_rate,
        weight_decay => config.weight_decay, seed => config.seed,
        validation_fraction => config.validation_fraction, test_fraction => config.test_fraction);
    if config.validation_fraction + config.test_fraction >= 0.9 {
        bail!("validation and test fractions leave less than 10% of users to train on");
    }
    if args.no_class_weights {
        config.class_weights = false;
    }
    if !(0.0..1.0).contains(&config.model.dropout) {
        bail!("dropout must be in [0, 1)");
    }
    Ok(config)
}

fn train_blocking(args: &TrainArgs, device: &burn::prelude::Device) -> Result<()> {
    let config = training_config(args)?;
    let data = load_rows(&args.data, profile::SAMPLE_ROWS)?;
    let tiers = if args.tier_thresholds.is_empty() {
        TierChoice::Quantiles(config.model.tiers)
    } else {
        TierChoice::Thresholds(args.tier_thresholds.clone())
    };
    let plan = TrainPlan {
        config: config.clone(),
        tiers,
        horizon_days: args.data.horizon_days,
        source: args.source.clone().unwrap_or_else(|| {
            args.data
                .events
                .file_name()
                .map_or_else(|| "stdin".to_owned(), |n| n.to_string_lossy().into_owned())
        }),
        created_at: EventTime::now().to_rfc3339(),
    };
    let bar = epoch_bar(config.epochs as u64);
    let run = workflow::train_and_evaluate(&data, &plan, device, |epoch| {
        bar.set_position(epoch.epoch as u64);
        bar.set_message(format!(
            "train loss {:.4}, validation loss {:.4}{}",
            epoch.train_loss,
            epoch.validation_loss,
            if epoch.best { " (best)" } else { "" }
        ));
        tracing::debug!(?epoch, "epoch");
    })?;
    bar.finish_and_clear();
    run.artifact
        .save(&args.output, &[])
        .with_context(|| format!("writing the artifact to {}", args.output.display()))?;
    workflow::write_report(&run.report, &args.output)?;
    summary(&run.report.to_markdown());
    eprintln!(
        "model {} ({} epochs, best {}) written to {}",
        run.artifact.version(),
        run.artifact.manifest.data.epochs_run,
        run.artifact.manifest.data.best_epoch,
        args.output.display()
    );
    Ok(())
}

fn evaluate_blocking(args: &EvaluateArgs, device: &burn::prelude::Device) -> Result<()> {
    let artifact = Artifact::load(&args.model)
        .with_context(|| format!("loading the model from {}", args.model.display()))?;
    if artifact.manifest.horizon_days != args.data.horizon_days {
        tracing::warn!(
            model = artifact.manifest.horizon_days,
            given = args.data.horizon_days,
            "the model was trained for another horizon; its spend and churn refer to its own"
        );
    }
    let data = load_rows(&args.data, 0)?;
    let report = workflow::evaluate_artifact(&artifact, &data, args.all_users, device)?;
    workflow::write_report(&report, &args.output)?;
    summary(&report.to_markdown());
    eprintln!(
        "report written to {}",
        args.output.join("report.md").display()
    );
    Ok(())
}

fn epoch_bar(epochs: u64) -> ProgressBar {
    let bar = ProgressBar::new(epochs).with_style(
        ProgressStyle::with_template("training [{bar:30}] epoch {pos}/{len} {msg} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The readable report goes to stdout (it is the command's output).
fn summary(markdown: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(markdown.as_bytes());
    let _ = out.flush();
}
