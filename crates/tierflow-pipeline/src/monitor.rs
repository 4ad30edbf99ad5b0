//! Drift of the live population from the one the model was trained on, as gauges on
//! `/metrics`.
//!
//! Every scored row's feature vector and scores are counted in the bins of the live model's
//! training profile (`tierflow_eval::drift`, saved in the artifact's manifest): one binary
//! search per column, no allocation, a few hundred counters whatever the traffic. The window
//! slides in two halves: counts go to the newer half; when it holds `window_rows / 2` rows it
//! becomes the older half and the previous older half is dropped, so a comparison always
//! covers the newest `window_rows / 2` to `window_rows` rows. A new model version (hot
//! reload) starts a new window against its own profile.
//!
//! The gauges carry no model version: they describe the model in use
//! (`tierflow_model_info` names it) and start again at its first rows after a reload, so an
//! alert about a replaced model does not linger.

use std::sync::{Arc, Mutex, PoisonError};

use tierflow_model::profile::{Drift, Profile, ScoreSlots, Tally, count_row};
use tierflow_model::{ScoreBatch, Scorer};

use crate::config::DriftConfig;
use crate::telemetry;

/// The comparison of the live model's window with its profile.
#[derive(Debug)]
struct Window {
    version: String,
    profile: Arc<Profile>,
    /// Where the profile keeps each score column.
    slots: ScoreSlots,
    newer: Tally,
    older: Tally,
    /// Scratch for `newer + older`.
    both: Tally,
}

/// Counts live rows and publishes their drift. Owned by the stage that scores.
#[derive(Debug)]
pub struct DriftMonitor {
    config: DriftConfig,
    window: Option<Window>,
    /// The version last seen without a profile (warned about once).
    unprofiled: Option<String>,
}

impl DriftMonitor {
    pub fn new(config: DriftConfig) -> Self {
        Self {
            config,
            window: None,
            unprofiled: None,
        }
    }

    /// Counts a batch's rows (`rows`: row-major raw feature vectors, scored in `scores`
    /// chunk after chunk by `scorer`) and updates the gauges. Returns the current comparison,
    /// if the model has a profile.
    pub fn observe(
        &mut self,
        scorer: &Scorer,
        rows: &[f32],
        scores: &[ScoreBatch],
    ) -> Option<Drift> {
        if !self.config.enabled {
            return None;
        }
        let version = scorer.version();
        if self.window.is_none() && self.unprofiled.as_deref() == Some(version) {
            return None;
        }
        if self.window.as_ref().is_none_or(|w| w.version != version) {
            self.switch(scorer)?;
        }
        let window = self.window.as_mut()?;
        let profile = Arc::clone(&window.profile);
        let width = profile.width();
        if width != scorer.width() || width == 0 {
            return None;
        }
        let half = (self.config.window_rows / 2).max(1);
        let mut feature_rows = rows.chunks_exact(width);
        for batch in scores {
            for r in 0..batch.len() {
                let Some(row) = feature_rows.next() else {
                    break;
                };
                if window.newer.rows() >= half {
                    std::mem::swap(&mut window.newer, &mut window.older);
                    window.newer.clear();
                }
                count_row(&mut window.newer, &profile, window.slots, row, batch, r);
            }
        }
        window.both.clone_from(&window.newer);
        window.both.merge(&window.older);
        let drift = window.both.compare(&profile);
        self.publish(&drift);
        Some(drift)
    }

    /// Starts a window for `scorer`'s model; `None` (and the gauges at rest) when it has no
    /// profile.
    fn switch(&mut self, scorer: &Scorer) -> Option<()> {
        self.window = None;
        reset_gauges();
        let version = scorer.version();
        let Some(profile) = scorer.manifest().profile.clone() else {
            if self.unprofiled.as_deref() != Some(version) {
                tracing::warn!(
                    model = version,
                    "the model artifact has no training profile: no drift metrics for it \
                     (retrain, or add one with `tierflow monitor profile`)"
                );
                self.unprofiled = Some(version.to_owned());
            }
            return None;
        };
        let profile = Arc::new(profile);
        let slots = ScoreSlots::of(&profile);
        let tally = Tally::new(&profile);
        self.window = Some(Window {
            version: version.to_owned(),
            profile,
            slots,
            newer: tally.clone(),
            older: tally.clone(),
            both: tally,
        });
        Some(())
    }

    fn publish(&self, drift: &Drift) {
        for (kind, columns) in [("feature", &drift.features), ("score", &drift.scores)] {
            for column in columns {
                metrics::gauge!(telemetry::DRIFT_PSI, "kind" => kind, "column" => column.name.clone())
                    .set(column.psi);
                metrics::gauge!(telemetry::DRIFT_KS, "kind" => kind, "column" => column.name.clone())
                    .set(column.ks);
            }
        }
        let over = drift.over(self.config.psi_threshold);
        let counted = drift.rows >= self.config.min_rows;
        let max_psi = drift
            .features
            .iter()
            .chain(&drift.scores)
            .map(|c| c.psi)
            .fold(0.0_f64, f64::max);
        metrics::gauge!(telemetry::DRIFT_ROWS).set(drift.rows as f64);
        metrics::gauge!(telemetry::DRIFT_MAX_PSI).set(max_psi);
        metrics::gauge!(telemetry::DRIFT_COLUMNS_OVER).set(if counted {
            over.len() as f64
        } else {
            0.0
        });
        metrics::gauge!(telemetry::DRIFT_ALERT).set(if counted && !over.is_empty() {
            1.0
        } else {
            0.0
        });
    }
}

/// A new window: nothing counted, nothing to alert on.
fn reset_gauges() {
    metrics::gauge!(telemetry::DRIFT_ROWS).set(0.0);
    metrics::gauge!(telemetry::DRIFT_MAX_PSI).set(0.0);
    metrics::gauge!(telemetry::DRIFT_COLUMNS_OVER).set(0.0);
    metrics::gauge!(telemetry::DRIFT_ALERT).set(0.0);
}

/// The pipeline's drift monitor, made on first use from the pipeline's configuration (only
/// the loading stage scores, so the lock is never contended).
#[derive(Debug, Default)]
pub struct DriftSlot(Mutex<Option<DriftMonitor>>);

impl DriftSlot {
    /// [`DriftMonitor::observe`] on the pipeline's monitor.
    pub fn observe(
        &self,
        config: &DriftConfig,
        scorer: &Scorer,
        rows: &[f32],
        scores: &[ScoreBatch],
    ) -> Option<Drift> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert_with(|| DriftMonitor::new(config.clone()))
            .observe(scorer, rows, scores)
    }
}
