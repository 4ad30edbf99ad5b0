//! The training and evaluation protocol, end to end and in one place, so the command line,
//! the tests and anyone rerunning it on their own data do exactly the same thing:
//!
//! 1. rows at every cutoff (features up to the cutoff, labels from the horizon after it);
//! 2. users split by a seeded hash into train / validation / test; all rows of a user go to
//!    one part;
//! 3. tiers, normalisation and class weights fitted on training rows only;
//! 4. training with early stopping on the validation users;
//! 5. the test users are scored at the LAST cutoff, and the classic baselines — fitted on the
//!    same training rows — predict the same test rows; one report compares them.

use std::path::Path;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use tierflow_eval::baselines::{self, Customer};
use tierflow_eval::metrics::{self, Evaluation, Predictions, Truth};
use tierflow_eval::plots;
use tierflow_eval::report::Comparison;
use tierflow_features::FeatureSpec;

use crate::artifact::{Artifact, ArtifactError, DataSummary};
use crate::calibration::SpendCalibration;
use crate::data::{Dataset, Normalizer, Part, TierDefinition, part_of};
use crate::model::ValueModel;
use crate::profile;
use crate::scorer::Scorer;
use crate::train::{EpochReport, TrainingConfig, train};

/// How tiers are defined for a training run.
#[derive(Debug, Clone, PartialEq)]
pub enum TierChoice {
    /// `k` tiers: no spend, then equal-count bins of positive training spend.
    Quantiles(usize),
    /// Business thresholds (ascending); `len + 1` tiers.
    Thresholds(Vec<f64>),
}

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    pub config: TrainingConfig,
    pub tiers: TierChoice,
    pub horizon_days: u32,
    /// Recorded in the artifact: where the rows came from.
    pub source: String,
    /// Recorded in the artifact (RFC 3339); the caller owns the clock.
    pub created_at: String,
}

/// The report of one evaluation: the model and every baseline on the same test rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub model_version: String,
    pub feature_spec: String,
    pub horizon_days: u32,
    /// Cutoff of the test rows (RFC 3339 is the caller's; here Unix ms).
    pub evaluation_cutoff_ms: i64,
    pub tiers: TierDefinition,
    pub train_rows: usize,
    pub test_rows: usize,
    pub test_churn_rate: f64,
    pub comparison: Comparison,
    /// Baselines that could not be fitted on this data, with the reason.
    pub skipped_baselines: Vec<(String, String)>,
    /// Training curve (empty for a stand-alone evaluation).
    pub epochs: Vec<EpochReport>,
    /// Plot data: cumulative gain per ranking (model first).
    pub gain: Vec<(String, Vec<(f64, f64)>)>,
    /// Plot data: lift by decile per ranking (model first).
    pub lift: Vec<(String, Vec<f64>)>,
    /// Plot data: churn calibration per model (model first).
    pub calibration: Vec<(String, Vec<metrics::CalibrationBin>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("no rows to {0}: check the cutoffs against the event log's time range")]
    Empty(&'static str),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("writing the report: {0}")]
    Report(String),
}

/// The rows of each part; test rows only at the evaluation cutoff.
#[derive(Debug)]
pub struct Split {
    pub train: Dataset,
    pub validation: Dataset,
    pub test: Dataset,
    pub evaluation_cutoff_ms: i64,
}

pub fn split(data: &Dataset, config: &TrainingConfig) -> Split {
    let evaluation_cutoff_ms = data.cutoffs_ms.iter().copied().max().unwrap_or(0);
    let mut parts: [Vec<usize>; 3] = Default::default();
    for i in 0..data.len() {
        let part = part_of(
            &data.user_ids[i],
            config.seed,
            config.validation_fraction,
            config.test_fraction,
        );
        match part {
            Part::Train => parts[0].push(i),
            Part::Validation => parts[1].push(i),
            Part::Test if data.cutoffs_ms[i] == evaluation_cutoff_ms => parts[2].push(i),
            Part::Test => {}
        }
    }
    Split {
        train: data.select(&parts[0]),
        validation: data.select(&parts[1]),
        test: data.select(&parts[2]),
        evaluation_cutoff_ms,
    }
}

/// A trained artifact and its report.
#[derive(Debug)]
pub struct TrainRun {
    pub artifact: Artifact,
    pub report: Report,
    pub model: ValueModel,
}

/// Steps 2–5 of the protocol on prepared rows.
pub fn train_and_evaluate(
    data: &Dataset,
    plan: &TrainPlan,
    device: &Device,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<TrainRun, WorkflowError> {
    let parts = split(data, &plan.config);
    if parts.train.is_empty() {
        return Err(WorkflowError::Empty("train on"));
    }
    if parts.validation.is_empty() {
        return Err(WorkflowError::Empty(
            "validate on (too few users for the split)",
        ));
    }
    let tiers = match &plan.tiers {
        TierChoice::Quantiles(k) => TierDefinition::fit_quantiles(&parts.train.spend, *k),
        TierChoice::Thresholds(t) => TierDefinition::from_thresholds(t.clone()),
    };
    let mut config = plan.config.clone();
    config.model.tiers = tiers.tiers();
    let spec = FeatureSpec::current();
    let normalizer = Normalizer::fit(&parts.train, spec.names());
    let trained = train(
        &parts.train,
        &parts.validation,
        &normalizer,
        &tiers,
        &config,
        device,
        on_epoch,
    );
    let summary = DataSummary {
        source: plan.source.clone(),
        cutoffs: distinct_cutoffs(data),
        rows: data.len(),
        users: distinct_users(data),
        train_rows: parts.train.len(),
        validation_rows: parts.validation.len(),
        test_rows: parts.test.len(),
        train_churn_rate: share(&parts.train.churned),
        train_tier_shares: tiers.shares(&parts.train.spend),
        class_weights: trained.class_weights.clone(),
        epochs_run: trained.epochs.len(),
        best_epoch: trained.best_epoch,
    };
    let artifact = Artifact::new(
        &trained.model,
        config.clone(),
        normalizer,
        tiers,
        plan.horizon_days,
        plan.created_at.clone(),
        summary,
    )?;
    // Calibrate expected spend on training and validation users (never on the test users).
    let uncalibrated = Scorer::new(&artifact, device)?;
    let mut raw: Vec<f32> = Vec::new();
    let mut actual: Vec<f64> = Vec::new();
    for part in [&parts.train, &parts.validation] {
        raw.extend(predict(&uncalibrated, part).spend.iter().map(|v| *v as f32));
        actual.extend_from_slice(&part.spend);
    }
    let calibration = SpendCalibration::fit(&raw, &actual);
    let artifact = artifact.with_spend_calibration(calibration);
    let artifact = if data.event_sample.is_empty() {
        artifact
    } else {
        let scorer = Scorer::new(&artifact, device)?;
        let fitted = profile::fit(&scorer, spec.names(), &data.event_sample)
            .map_err(|e| WorkflowError::Report(e.to_string()))?;
        artifact.with_profile(Some(fitted))
    };
    let mut report = evaluate(&artifact, &parts, device)?;
    report.epochs = trained.epochs;
    Ok(TrainRun {
        artifact,
        report,
        model: trained.model,
    })
}

/// Step 5 for an existing artifact: its own split of `data` (or, with `all_users`, every
/// user at the last cutoff, baselines fitted on the earlier cutoffs' rows).
pub fn evaluate_artifact(
    artifact: &Artifact,
    data: &Dataset,
    all_users: bool,
    device: &Device,
) -> Result<Report, WorkflowError> {
    let parts = if all_users {
        let last = data.cutoffs_ms.iter().copied().max().unwrap_or(0);
        let (test, train): (Vec<usize>, Vec<usize>) =
            (0..data.len()).partition(|i| data.cutoffs_ms[*i] == last);
        Split {
            train: data.select(&train),
            validation: Dataset::default(),
            test: data.select(&test),
            evaluation_cutoff_ms: last,
        }
    } else {
        split(data, &artifact.training_config)
    };
    evaluate(artifact, &parts, device)
}

fn evaluate(artifact: &Artifact, parts: &Split, device: &Device) -> Result<Report, WorkflowError> {
    if parts.test.is_empty() {
        return Err(WorkflowError::Empty("test on"));
    }
    if parts.train.is_empty() {
        return Err(WorkflowError::Empty("fit the baselines on"));
    }
    let tiers = &artifact.manifest.tiers;
    let k = tiers.tiers();
    let truth = truth_of(&parts.test, tiers);
    let train_truth = truth_of(&parts.train, tiers);

    let scorer = Scorer::new(artifact, device)?;
    let model = predict(&scorer, &parts.test);
    metrics::check_inputs(&truth, &model, k).map_err(|e| WorkflowError::Report(e.to_string()))?;
    let model_eval = metrics::evaluate(&truth, &model, k);

    let customers = |d: &Dataset| -> Vec<Customer> {
        d.history
            .iter()
            .zip(&d.cutoffs_ms)
            .map(|(h, c)| Customer::from_history(h, *c))
            .collect()
    };
    let train_customers = customers(&parts.train);
    let test_customers = customers(&parts.test);
    let shares = tiers.shares(&parts.train.spend);
    let horizon = f64::from(artifact.manifest.horizon_days);
    let mut baseline_evals: Vec<(String, Evaluation)> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut baseline_predictions: Vec<(String, Predictions)> = Vec::new();
    for mut baseline in baselines::all() {
        if let Err(e) = baseline.fit(&train_customers, &train_truth, horizon, &shares) {
            tracing::warn!(baseline = baseline.name(), error = %e, "baseline left out of the report");
            skipped.push((baseline.name().to_owned(), e.to_string()));
            continue;
        }
        let predictions = baseline.predict(&test_customers);
        baseline_evals.push((
            baseline.name().to_owned(),
            metrics::evaluate(&truth, &predictions, k),
        ));
        baseline_predictions.push((baseline.name().to_owned(), predictions));
    }
    let comparison = Comparison::new(model_eval, baseline_evals);
    let mut gain = vec![(
        "model".to_owned(),
        metrics::gain_curve(&truth.spend, &model.spend, 50),
    )];
    let mut lift = vec![(
        "model".to_owned(),
        metrics::lift_by_decile(&truth.spend, &model.spend),
    )];
    let mut calibration = vec![(
        "model".to_owned(),
        metrics::calibration(&model.churn, &truth.churned, 10),
    )];
    for (name, p) in &baseline_predictions {
        gain.push((
            name.clone(),
            metrics::gain_curve(&truth.spend, &p.spend, 50),
        ));
        lift.push((
            name.clone(),
            metrics::lift_by_decile(&truth.spend, &p.spend),
        ));
        calibration.push((
            name.clone(),
            metrics::calibration(&p.churn, &truth.churned, 10),
        ));
    }
    Ok(Report {
        model_version: artifact.version().to_owned(),
        feature_spec: artifact.manifest.feature_spec.clone(),
        horizon_days: artifact.manifest.horizon_days,
        evaluation_cutoff_ms: parts.evaluation_cutoff_ms,
        tiers: tiers.clone(),
        train_rows: parts.train.len(),
        test_rows: parts.test.len(),
        test_churn_rate: share(&parts.test.churned),
        comparison,
        skipped_baselines: skipped,
        epochs: Vec::new(),
        gain,
        lift,
        calibration,
    })
}

/// Model predictions for every row of `data`, scored in batches.
pub fn predict(scorer: &Scorer, data: &Dataset) -> Predictions {
    const BATCH: usize = 4096;
    let mut out = Predictions {
        tiers: Vec::with_capacity(data.len()),
        churn: Vec::with_capacity(data.len()),
        spend: Vec::with_capacity(data.len()),
    };
    for chunk in data.features.chunks(BATCH * data.width.max(1)) {
        let batch = scorer
            .score(chunk)
            .unwrap_or_else(|e| unreachable!("dataset rows have the spec's width: {e}"));
        for row in 0..batch.len() {
            out.tiers.push(batch.tier(row));
            out.churn.push(f64::from(batch.churn_risk[row]));
            out.spend.push(f64::from(batch.expected_value[row]));
        }
    }
    out
}

fn truth_of(data: &Dataset, tiers: &TierDefinition) -> Truth {
    Truth {
        tiers: data.spend.iter().map(|s| tiers.tier_of(*s)).collect(),
        churned: data.churned.clone(),
        spend: data.spend.iter().map(|s| s.max(0.0)).collect(),
    }
}

fn share(flags: &[bool]) -> f64 {
    flags.iter().filter(|f| **f).count() as f64 / flags.len().max(1) as f64
}

fn distinct_users(data: &Dataset) -> usize {
    let mut ids: Vec<&str> = data.user_ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

fn distinct_cutoffs(data: &Dataset) -> Vec<String> {
    let mut cutoffs = data.cutoffs_ms.clone();
    cutoffs.sort_unstable();
    cutoffs.dedup();
    cutoffs
        .into_iter()
        .map(|ms| tierflow_events::EventTime::from_unix_millis(ms).to_rfc3339())
        .collect()
}

/// Writes report.json, report.md and plots/*.svg into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<(), WorkflowError> {
    let err = |e: &dyn std::fmt::Display| WorkflowError::Report(e.to_string());
    std::fs::create_dir_all(dir.join("plots")).map_err(|e| err(&e))?;
    let json = serde_json::to_vec_pretty(report).map_err(|e| err(&e))?;
    std::fs::write(dir.join("report.json"), json).map_err(|e| err(&e))?;
    std::fs::write(dir.join("report.md"), report.to_markdown()).map_err(|e| err(&e))?;
    let gain: Vec<(&str, Vec<(f64, f64)>)> = report
        .gain
        .iter()
        .map(|(n, p)| (n.as_str(), p.clone()))
        .collect();
    let plots_dir = dir.join("plots");
    plots::gain_chart(&plots_dir.join("gain.svg"), &gain).map_err(|e| err(&e))?;
    let lift: Vec<(&str, Vec<f64>)> = report
        .lift
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    plots::lift_chart(&plots_dir.join("lift.svg"), &lift).map_err(|e| err(&e))?;
    let calibration: Vec<(&str, &[metrics::CalibrationBin])> = report
        .calibration
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    plots::calibration_chart(&plots_dir.join("calibration.svg"), &calibration)
        .map_err(|e| err(&e))?;
    plots::confusion_matrix(
        &plots_dir.join("confusion.svg"),
        &format!("Value tiers, model {}", report.model_version),
        &report.comparison.model.tier.confusion,
    )
    .map_err(|e| err(&e))?;
    Ok(())
}

impl Report {
    /// A readable summary: the protocol, the comparison table and the margins.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("# Model report: {}\n\n", self.model_version));
        out.push_str(&format!(
            "Feature spec `{}`; horizon {} days; evaluation cutoff {}; {} test rows (held-out users), baselines fitted on {} training rows; test churn rate {:.1}%.\n\n",
            self.feature_spec,
            self.horizon_days,
            tierflow_events::EventTime::from_unix_millis(self.evaluation_cutoff_ms).to_rfc3339(),
            self.test_rows,
            self.train_rows,
            self.test_churn_rate * 100.0
        ));
        out.push_str(&format!(
            "Tiers ({:?}): thresholds on future spend {:?}.\n\n",
            self.tiers.scheme, self.tiers.thresholds
        ));
        out.push_str(&self.comparison.to_markdown());
        for (name, reason) in &self.skipped_baselines {
            out.push_str(&format!("\nBaseline {name} left out: {reason}.\n"));
        }
        if let Some(last) = self.epochs.last() {
            let best = self.epochs.iter().rfind(|e| e.best);
            out.push_str(&format!(
                "\nTraining: {} epochs; best validation loss {:.4} at epoch {} (last epoch: train {:.4}, validation {:.4}).\n",
                self.epochs.len(),
                best.map_or(f64::NAN, |b| b.validation_loss),
                best.map_or(0, |b| b.epoch),
                last.train_loss,
                last.validation_loss
            ));
        }
        out.push_str("\nPlots: plots/gain.svg, plots/lift.svg, plots/calibration.svg, plots/confusion.svg.\n");
        out
    }
}
