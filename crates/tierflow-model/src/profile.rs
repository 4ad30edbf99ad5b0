//! The drift reference saved with a model: the training population's distribution of every
//! input feature and every output score ([`tierflow_eval::drift::Profile`]), fitted on the
//! dataset builder's event sample (the feature vectors the pipeline computes, one per event)
//! and on what the trained model says about them. The pipeline counts its live rows in the
//! same bins and exports the drift.

use tierflow_eval::drift::{Binned, DEFAULT_BINS};
pub use tierflow_eval::drift::{ColumnDrift, Drift, Profile, Tally};

use crate::scorer::{ScoreBatch, ScoreError, Scorer};

/// The score columns of a profile, in order: churn risk, expected value (as published,
/// never negative) and the most probable tier.
pub const SCORE_COLUMNS: [&str; 3] = ["churn_risk", "expected_value", "tier"];

/// Event rows a training run keeps for the profile (bottom-k by event-id hash).
pub const SAMPLE_ROWS: usize = 20_000;

/// Rows per forward pass while profiling.
const CHUNK_ROWS: usize = 4096;

/// The score columns of one scored row, in [`SCORE_COLUMNS`] order. The pipeline and the
/// profile read scores through this one function.
pub fn score_columns(batch: &ScoreBatch, row: usize) -> [f64; 3] {
    [
        f64::from(batch.churn_risk[row].clamp(0.0, 1.0)),
        f64::from(batch.expected_value[row].max(0.0)),
        f64::from(batch.tier(row)),
    ]
}

/// Where each of [`SCORE_COLUMNS`] sits in a profile's scores (a profile may lack one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreSlots([Option<usize>; 3]);

impl ScoreSlots {
    pub fn of(profile: &Profile) -> Self {
        Self(SCORE_COLUMNS.map(|name| profile.score(name)))
    }
}

/// Counts one scored row in `tally`: its feature vector and row `r` of `batch`. The pipeline's
/// monitor and [`tally`] count through this one function.
pub fn count_row(
    tally: &mut Tally,
    profile: &Profile,
    slots: ScoreSlots,
    features: &[f32],
    batch: &ScoreBatch,
    r: usize,
) {
    tally.add_features(profile, features);
    for (slot, value) in slots.0.iter().zip(score_columns(batch, r)) {
        if let Some(index) = slot {
            tally.add_score(profile, *index, value);
        }
    }
}

/// Fits the profile of `scorer`'s model on `sample` (row-major raw feature vectors).
pub fn fit(scorer: &Scorer, names: &[String], sample: &[f32]) -> Result<Profile, ScoreError> {
    let width = scorer.width();
    let mut columns: [Vec<f64>; 3] = Default::default();
    for chunk in sample.chunks(CHUNK_ROWS * width.max(1)) {
        let batch = scorer.score(chunk)?;
        for r in 0..batch.len() {
            for (column, value) in columns.iter_mut().zip(score_columns(&batch, r)) {
                column.push(value);
            }
        }
    }
    let [churn, value, tier] = columns;
    // The tier column is categorical: one bin per tier, whatever the quantiles say.
    let mut profile = Profile::fit(
        names,
        sample,
        &[(SCORE_COLUMNS[0], churn), (SCORE_COLUMNS[1], value)],
        DEFAULT_BINS,
    );
    profile
        .scores
        .push(Binned::categorical(SCORE_COLUMNS[2], &tier, scorer.tiers()));
    Ok(profile)
}

/// Counts `sample` (row-major raw feature vectors) and `scorer`'s scores of it in the bins of
/// `profile`, as the pipeline's drift monitor counts live rows.
pub fn tally(scorer: &Scorer, profile: &Profile, sample: &[f32]) -> Result<Tally, ScoreError> {
    let width = scorer.width();
    let mut tally = Tally::new(profile);
    let slots = ScoreSlots::of(profile);
    for chunk in sample.chunks(CHUNK_ROWS * width.max(1)) {
        let batch = scorer.score(chunk)?;
        for (r, row) in chunk.chunks_exact(width).enumerate() {
            count_row(&mut tally, profile, slots, row, &batch, r);
        }
    }
    Ok(tally)
}
