//! Training data in the shape the model wants: a dense row-major matrix, labels, the split by
//! user, the tier definition, and the normalisation fitted on training rows only.

use serde::{Deserialize, Serialize};
use tierflow_features::{History, Row};

/// Rows of the offline dataset builder, flattened.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub width: usize,
    /// Row-major, `len() * width` values.
    pub features: Vec<f32>,
    pub user_ids: Vec<String>,
    pub cutoffs_ms: Vec<i64>,
    /// Future spend (purchases minus refunds), currency units.
    pub spend: Vec<f64>,
    /// No purchase in the horizon.
    pub churned: Vec<bool>,
    pub history: Vec<History>,
    /// Online-shaped feature vectors (one per event, `DatasetBuilder::with_event_sample`),
    /// row-major: the population the drift profile is fitted on. May be empty (no profile).
    /// Not part of any split.
    pub event_sample: Vec<f32>,
}

impl Dataset {
    pub fn from_rows(rows: &[Row], width: usize) -> Self {
        let mut data = Self {
            width,
            features: Vec::with_capacity(rows.len() * width),
            ..Self::default()
        };
        for row in rows {
            assert_eq!(row.features.len(), width, "feature vector length");
            data.features.extend_from_slice(&row.features);
            data.user_ids.push(row.user_id.clone());
            data.cutoffs_ms.push(row.cutoff.unix_millis());
            data.spend.push(row.label.future_spend);
            data.churned.push(!row.label.purchased);
            data.history.push(row.history);
        }
        data
    }

    pub fn len(&self) -> usize {
        self.user_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.user_ids.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.width..(i + 1) * self.width]
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let mut out = Self {
            width: self.width,
            features: Vec::with_capacity(indices.len() * self.width),
            ..Self::default()
        };
        for &i in indices {
            out.features.extend_from_slice(self.row(i));
            out.user_ids.push(self.user_ids[i].clone());
            out.cutoffs_ms.push(self.cutoffs_ms[i]);
            out.spend.push(self.spend[i]);
            out.churned.push(self.churned[i]);
            out.history.push(self.history[i]);
        }
        out
    }
}

/// Which part of the data a user belongs to. All rows of one user (every cutoff) go to the
/// same part, so no user is both learned from and tested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Train,
    Validation,
    Test,
}

/// Assigns a user to a part by a seeded hash of the user id: stable across runs, machines and
/// data order, and independent of which other users exist.
pub fn part_of(user_id: &str, seed: u64, validation: f64, test: f64) -> Part {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for byte in user_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finalise (splitmix64) so that similar ids spread evenly.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    let u = (hash >> 11) as f64 / (1u64 << 53) as f64;
    if u < test {
        Part::Test
    } else if u < test + validation {
        Part::Validation
    } else {
        Part::Train
    }
}

/// How value tiers are defined. Tier `t` holds the users whose future spend reaches exactly
/// `t` of the ascending thresholds (the rule of `DatasetBuilder::with_tier_thresholds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierDefinition {
    /// `quantiles`: tier 0 = no spend in the horizon, tiers 1..K−1 = equal-count bins of the
    /// positive future spend of training rows. `thresholds`: business thresholds from config.
    pub scheme: TierScheme,
    /// Ascending, `tiers − 1` values, in currency units.
    pub thresholds: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierScheme {
    Quantiles,
    Thresholds,
}

/// Smallest spend that counts as "spent something": one cent.
const ONE_CENT: f64 = 0.01;

impl TierDefinition {
    /// Quantile tiers fitted on training spend (see `TierScheme::Quantiles`).
    pub fn fit_quantiles(train_spend: &[f64], tiers: usize) -> Self {
        assert!(tiers >= 2, "need at least two tiers");
        let mut positive: Vec<f64> = train_spend
            .iter()
            .copied()
            .filter(|s| *s >= ONE_CENT)
            .collect();
        positive.sort_by(f64::total_cmp);
        let mut thresholds = vec![ONE_CENT];
        let bins = tiers - 1;
        for b in 1..bins {
            let q = if positive.is_empty() {
                ONE_CENT
            } else {
                let at = (b * positive.len()) / bins;
                positive[at.min(positive.len() - 1)]
            };
            // Strictly ascending, so no tier is empty by construction.
            let floor = thresholds.last().copied().unwrap_or(ONE_CENT) + ONE_CENT;
            thresholds.push(q.max(floor));
        }
        Self {
            scheme: TierScheme::Quantiles,
            thresholds,
        }
    }

    pub fn from_thresholds(mut thresholds: Vec<f64>) -> Self {
        thresholds.retain(|t| t.is_finite());
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        Self {
            scheme: TierScheme::Thresholds,
            thresholds,
        }
    }

    pub fn tiers(&self) -> usize {
        self.thresholds.len() + 1
    }

    pub fn tier_of(&self, spend: f64) -> u8 {
        self.thresholds.iter().filter(|t| spend >= **t).count() as u8
    }

    /// Share of rows in each tier.
    pub fn shares(&self, spend: &[f64]) -> Vec<f64> {
        let mut counts = vec![0usize; self.tiers()];
        for s in spend {
            counts[usize::from(self.tier_of(*s))] += 1;
        }
        let n = spend.len().max(1) as f64;
        counts.into_iter().map(|c| c as f64 / n).collect()
    }
}

/// Per-feature normalisation fitted on training rows: signed log1p (counts and money are
/// heavy-tailed), then standardisation. Saved in the artifact (`normalization.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    pub feature_names: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalizer {
    pub fn fit(data: &Dataset, feature_names: &[String]) -> Self {
        let w = data.width;
        let n = data.len().max(1) as f64;
        let mut sum = vec![0f64; w];
        let mut sum_sq = vec![0f64; w];
        for i in 0..data.len() {
            for (j, x) in data.row(i).iter().enumerate() {
                let v = f64::from(squash(*x));
                sum[j] += v;
                sum_sq[j] += v * v;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sum_sq
            .iter()
            .zip(&mean)
            .map(|(sq, m)| {
                let sd = (sq / n - m * m).max(0.0).sqrt();
                // A constant feature carries nothing; keep it at 0 rather than dividing by 0.
                if sd < 1e-6 { 1.0 } else { sd as f32 }
            })
            .collect();
        Self {
            feature_names: feature_names.to_vec(),
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    pub fn width(&self) -> usize {
        self.mean.len()
    }

    /// Normalises row-major `input` into `out` (same length), without allocating.
    pub fn apply_into(&self, input: &[f32], out: &mut [f32]) {
        debug_assert_eq!(input.len(), out.len());
        for (row_in, row_out) in input
            .chunks_exact(self.width())
            .zip(out.chunks_exact_mut(self.width()))
        {
            for (((x, o), m), s) in row_in.iter().zip(row_out).zip(&self.mean).zip(&self.std) {
                let v = (squash(*x) - m) / s;
                // Non-finite input (NaN, ±inf) becomes the training mean, never a NaN score.
                *o = if v.is_finite() {
                    v.clamp(-50.0, 50.0)
                } else {
                    0.0
                };
            }
        }
    }

    pub fn apply(&self, input: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; input.len()];
        self.apply_into(input, &mut out);
        out
    }
}

/// Signed log1p. `ln(1 + |x|)` rather than `ln_1p`: twice as fast in the scoring hot path,
/// and the inputs are counts, minutes and money, where the precision `ln_1p` buys near 0
/// does not matter. Training and scoring share this function, so they agree exactly.
#[inline]
fn squash(x: f32) -> f32 {
    (1.0 + x.abs()).ln().copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stable_and_close_to_the_fractions() {
        let mut counts = [0usize; 3];
        for i in 0..20_000 {
            let id = format!("u{i:08}");
            let part = part_of(&id, 7, 0.15, 0.15);
            assert_eq!(part, part_of(&id, 7, 0.15, 0.15));
            counts[part as usize] += 1;
        }
        let share = |c: usize| c as f64 / 20_000.0;
        assert!((share(counts[0]) - 0.70).abs() < 0.02, "{counts:?}");
        assert!((share(counts[1]) - 0.15).abs() < 0.02, "{counts:?}");
        assert!((share(counts[2]) - 0.15).abs() < 0.02, "{counts:?}");
        // Another seed gives another split.
        let moved = (0..1000)
            .filter(|i| {
                let id = format!("u{i:08}");
                part_of(&id, 7, 0.15, 0.15) != part_of(&id, 8, 0.15, 0.15)
            })
            .count();
        assert!(moved > 200, "{moved}");
    }

    #[test]
    fn quantile_tiers_put_non_buyers_in_tier_zero_and_split_buyers_evenly() {
        let mut spend = vec![0.0; 100];
        spend.extend((1..=400).map(f64::from));
        let tiers = TierDefinition::fit_quantiles(&spend, 5);
        assert_eq!(tiers.thresholds, vec![0.01, 101.0, 201.0, 301.0]);
        let shares = tiers.shares(&spend);
        assert_eq!(shares, vec![0.2, 0.2, 0.2, 0.2, 0.2]);
        assert_eq!(tiers.tier_of(-5.0), 0);
        assert_eq!(tiers.tier_of(1e9), 4);
    }

    #[test]
    fn quantile_tiers_stay_ascending_when_spend_is_degenerate() {
        let tiers = TierDefinition::fit_quantiles(&[0.0, 5.0, 5.0, 5.0], 5);
        assert!(
            tiers.thresholds.windows(2).all(|w| w[0] < w[1]),
            "{tiers:?}"
        );
        let empty = TierDefinition::fit_quantiles(&[], 3);
        assert_eq!(empty.tiers(), 3);
    }

    #[test]
    fn normalizer_standardises_and_never_emits_nan() {
        let data = Dataset {
            width: 2,
            features: vec![0.0, 5.0, 10.0, 5.0, 100.0, 5.0],
            user_ids: vec!["a".into(), "b".into(), "c".into()],
            ..Dataset::default()
        };
        let norm = Normalizer::fit(&data, &["x".into(), "constant".into()]);
        let out = norm.apply(&data.features);
        let mean: f32 = out.iter().step_by(2).sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-5);
        assert!(out.iter().skip(1).step_by(2).all(|v| *v == 0.0));
        let odd = norm.apply(&[f32::NAN, f32::INFINITY]);
        assert_eq!(odd, vec![0.0, 0.0]);
    }
}
