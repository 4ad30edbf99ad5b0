//! Drift: how far a live population has moved from the one a model was trained on.
//!
//! A [`Profile`] is the reference: for every input feature and every output score, the
//! deciles of the training population (as bin edges) and the share of that population in
//! each bin. A [`Tally`] counts live values in the same bins. Comparing the two gives, per
//! column, the population stability index ([`psi`]) and the Kolmogorov–Smirnov distance of
//! the binned distributions ([`ks`]).
//!
//! Why fixed bins at the reference's quantiles rather than a mergeable quantile sketch of the
//! live values: PSI is *defined* on the reference's bins, so counting live values straight into
//! them is exact for PSI, costs one binary search over at most `bins − 1` edges per value, and
//! holds `bins` counters per column whatever the traffic. The binned KS is the largest gap
//! between the two cumulative distributions at the edges (a lower bound of the exact KS
//! statistic, and equal to it when the live values are binned the same way).
//!
//! Conventional reading of PSI: below 0.1 no real change, 0.1–0.25 a moderate shift worth a
//! look, above 0.25 a shift that calls for retraining.

use serde::{Deserialize, Serialize};

/// Deciles: ten bins per column unless the caller asks otherwise.
pub const DEFAULT_BINS: usize = 10;

/// Shares below this are raised to it before the logarithm in [`psi`], so that a bin that is
/// empty on one side contributes a large but finite term (the usual practice).
pub const SHARE_FLOOR: f64 = 1e-4;

/// The conventional PSI above which a population has shifted enough to act on.
pub const PSI_ALERT: f64 = 0.25;

/// One column of the reference: its bins and the reference population's share in each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binned {
    pub name: String,
    /// Ascending, distinct upper bounds: bin `i` holds the values in `(edges[i−1], edges[i]]`,
    /// the first bin everything up to `edges[0]`, the last bin everything above the last edge
    /// (and NaN).
    pub edges: Vec<f64>,
    /// Share of the reference values in each bin: `edges.len() + 1` values summing to 1.
    pub shares: Vec<f64>,
}

impl Binned {
    /// Bins at the `bins`-quantiles of `values` (ties merged, so a column that is mostly
    /// zero gets one bin for the zeros), and the share of `values` in each.
    ///
    /// Each edge lies halfway between the quantile value and the next larger value seen, never
    /// on a value: feature columns are discrete (counts, or a few distinct estimates), and an
    /// edge equal to a common value would put that value on either side after a 1-ulp change
    /// (JSON round trips of the profile are not guaranteed bit-exact), moving a whole bin.
    pub fn fit(name: impl Into<String>, values: &[f64], bins: usize) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = Vec::new();
        let n = sorted.len();
        for q in 1..bins.max(1) {
            if n == 0 {
                break;
            }
            let at = (q * n).div_ceil(bins).saturating_sub(1).min(n - 1);
            let value = sorted[at];
            // The next larger value; none (the maximum) would leave the last bin empty.
            let next = sorted.partition_point(|v| *v <= value);
            if next == n {
                continue;
            }
            let edge = value + (sorted[next] - value) / 2.0;
            if edge > value && edges.last().is_none_or(|last| *last < edge) {
                edges.push(edge);
            }
        }
        let mut binned = Self {
            name: name.into(),
            edges,
            shares: Vec::new(),
        };
        let mut counts = vec![0_u64; binned.bins()];
        for v in values {
            counts[binned.bin(*v)] += 1;
        }
        binned.shares = shares_of(&counts);
        binned
    }

    /// One bin per category `0..categories` (values are rounded to the nearest category;
    /// anything above the last lands in the last bin), and the share of `values` in each.
    pub fn categorical(name: impl Into<String>, values: &[f64], categories: usize) -> Self {
        let edges: Vec<f64> = (1..categories.max(1)).map(|c| c as f64 - 0.5).collect();
        let mut binned = Self {
            name: name.into(),
            edges,
            shares: Vec::new(),
        };
        let mut counts = vec![0_u64; binned.bins()];
        for v in values {
            counts[binned.bin(*v)] += 1;
        }
        binned.shares = shares_of(&counts);
        binned
    }

    pub fn bins(&self) -> usize {
        self.edges.len() + 1
    }

    /// The bin of `value`.
    pub fn bin(&self, value: f64) -> usize {
        if value.is_nan() {
            return self.edges.len();
        }
        self.edges.partition_point(|edge| *edge < value)
    }
}

/// Each count's share of the total; all in the first bin when nothing was counted (an empty
/// reference says nothing, and must still sum to 1).
fn shares_of(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        let mut shares = vec![0.0; counts.len()];
        shares[0] = 1.0;
        return shares;
    }
    counts.iter().map(|c| *c as f64 / total as f64).collect()
}

/// Population stability index of the live `counts` against the reference `shares`:
/// `Σ (live − ref) · ln(live / ref)` over the bins, with both shares floored at
/// [`SHARE_FLOOR`]. Zero for identical distributions, symmetric, and 0 when nothing was
/// counted (no evidence of drift).
pub fn psi(shares: &[f64], counts: &[u64]) -> f64 {
    debug_assert_eq!(shares.len(), counts.len());
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    shares
        .iter()
        .zip(counts)
        .map(|(reference, count)| {
            let reference = reference.max(SHARE_FLOOR);
            let live = (*count as f64 / total as f64).max(SHARE_FLOOR);
            (live - reference) * (live / reference).ln()
        })
        .sum()
}

/// Kolmogorov–Smirnov distance of the binned distributions: the largest gap between the
/// reference's and the live values' cumulative shares at the bin edges (0 when nothing was
/// counted).
pub fn ks(shares: &[f64], counts: &[u64]) -> f64 {
    debug_assert_eq!(shares.len(), counts.len());
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let (mut reference, mut live, mut gap) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (share, count) in shares.iter().zip(counts) {
        reference += share;
        live += *count as f64 / total as f64;
        gap = gap.max((reference - live).abs());
    }
    gap
}

/// The reference of a model: every input feature (in feature-vector order) and every output
/// score, binned on the population the model was trained on. Saved in the model artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// How many reference rows the bins were fitted on.
    pub rows: usize,
    /// One per feature, in the order of the feature vector.
    pub features: Vec<Binned>,
    /// One per score (for example churn risk, expected value, tier).
    pub scores: Vec<Binned>,
}

impl Profile {
    /// Fits a profile on `rows` row-major feature vectors (`names.len()` wide) and, for each
    /// named score, one value per row.
    pub fn fit(
        names: &[String],
        features: &[f32],
        scores: &[(&str, Vec<f64>)],
        bins: usize,
    ) -> Self {
        let width = names.len();
        let rows = features.len().checked_div(width).unwrap_or(0);
        let mut column: Vec<f64> = Vec::with_capacity(rows);
        let features = names
            .iter()
            .enumerate()
            .map(|(j, name)| {
                column.clear();
                column.extend((0..rows).map(|i| f64::from(features[i * width + j])));
                Binned::fit(name.as_str(), &column, bins)
            })
            .collect();
        let scores = scores
            .iter()
            .map(|(name, values)| Binned::fit(*name, values, bins))
            .collect();
        Self {
            rows,
            features,
            scores,
        }
    }

    pub fn width(&self) -> usize {
        self.features.len()
    }

    /// The score column called `name`.
    pub fn score(&self, name: &str) -> Option<usize> {
        self.scores.iter().position(|s| s.name == name)
    }
}

/// Live counts in a profile's bins: one flat array for every column, so counting a row is
/// one binary search per column and no allocation.
#[derive(Debug, PartialEq, Eq)]
pub struct Tally {
    /// Where each column's counters start in `counts` (features first, then scores), plus the
    /// end.
    starts: Vec<usize>,
    counts: Vec<u64>,
    rows: u64,
}

impl Clone for Tally {
    fn clone(&self) -> Self {
        Self {
            starts: self.starts.clone(),
            counts: self.counts.clone(),
            rows: self.rows,
        }
    }

    /// Reuses this tally's buffers (the monitor copies a tally every batch).
    fn clone_from(&mut self, source: &Self) {
        self.starts.clone_from(&source.starts);
        self.counts.clone_from(&source.counts);
        self.rows = source.rows;
    }
}

impl Tally {
    pub fn new(profile: &Profile) -> Self {
        let mut starts = Vec::with_capacity(profile.features.len() + profile.scores.len() + 1);
        let mut at = 0;
        for column in profile.features.iter().chain(&profile.scores) {
            starts.push(at);
            at += column.bins();
        }
        starts.push(at);
        Self {
            starts,
            counts: vec![0; at],
            rows: 0,
        }
    }

    /// Rows counted (feature vectors; scores are counted beside them).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Counts one feature vector (`profile.width()` values).
    pub fn add_features(&mut self, profile: &Profile, row: &[f32]) {
        debug_assert_eq!(row.len(), profile.features.len());
        for (j, (column, value)) in profile.features.iter().zip(row).enumerate() {
            self.counts[self.starts[j] + column.bin(f64::from(*value))] += 1;
        }
        self.rows += 1;
    }

    /// Counts one value of the score column `score` (an index into `profile.scores`).
    pub fn add_score(&mut self, profile: &Profile, score: usize, value: f64) {
        let j = profile.features.len() + score;
        self.counts[self.starts[j] + profile.scores[score].bin(value)] += 1;
    }

    /// Adds another tally of the same profile.
    pub fn merge(&mut self, other: &Self) {
        debug_assert_eq!(self.starts, other.starts);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.rows += other.rows;
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.rows = 0;
    }

    fn column(&self, j: usize) -> &[u64] {
        &self.counts[self.starts[j]..self.starts[j + 1]]
    }

    /// PSI and KS of every column against the profile.
    pub fn compare(&self, profile: &Profile) -> Drift {
        let measure = |j: usize, column: &Binned| ColumnDrift {
            name: column.name.clone(),
            psi: psi(&column.shares, self.column(j)),
            ks: ks(&column.shares, self.column(j)),
        };
        let width = profile.features.len();
        Drift {
            rows: self.rows,
            features: profile
                .features
                .iter()
                .enumerate()
                .map(|(j, c)| measure(j, c))
                .collect(),
            scores: profile
                .scores
                .iter()
                .enumerate()
                .map(|(j, c)| measure(width + j, c))
                .collect(),
        }
    }
}

/// One column's distance from its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    pub name: String,
    pub psi: f64,
    pub ks: f64,
}

/// Every column's distance from the reference, over `rows` live rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub rows: u64,
    pub features: Vec<ColumnDrift>,
    pub scores: Vec<ColumnDrift>,
}

impl Drift {
    /// The columns (features and scores) whose PSI is above `threshold`, largest first.
    pub fn over(&self, threshold: f64) -> Vec<&ColumnDrift> {
        let mut over: Vec<&ColumnDrift> = self
            .features
            .iter()
            .chain(&self.scores)
            .filter(|c| c.psi > threshold)
            .collect();
        over.sort_by(|a, b| b.psi.total_cmp(&a.psi));
        over
    }

    /// The largest feature PSI and its feature.
    pub fn worst_feature(&self) -> Option<&ColumnDrift> {
        self.features.iter().max_by(|a, b| a.psi.total_cmp(&b.psi))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn deciles_split_a_continuous_column_evenly_and_merge_ties() {
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let binned = Binned::fit("x", &values, 10);
        assert_eq!(binned.bins(), 10);
        for share in &binned.shares {
            assert!((share - 0.1).abs() < 1e-9, "{:?}", binned.shares);
        }
        assert_eq!(binned.edges[0], 99.5, "edges lie between values");
        // 70 % zeros: one bin holds all of them.
        let mut values = vec![0.0; 700];
        values.extend((1..=300).map(f64::from));
        let binned = Binned::fit("y", &values, 10);
        assert_eq!(binned.bin(0.0), 0);
        assert!((binned.shares[0] - 0.7).abs() < 1e-9, "{:?}", binned.shares);
        assert_eq!(binned.edges, vec![0.5, 100.5, 200.5]);
        // A value a hair off a reference value stays in that value's bin.
        assert_eq!(binned.bin(100.0 + 1e-9), binned.bin(100.0));
        // A constant column is one bin; values beyond either side still land somewhere.
        let binned = Binned::fit("z", &[3.0; 50], 10);
        assert_eq!(binned.bins(), 1);
        assert_eq!(binned.bin(-1e9), 0);
        assert_eq!(binned.bin(1e9), 0);
        assert_eq!(binned.bin(f64::NAN), 0);
    }

    #[test]
    fn categorical_bins_are_one_per_category() {
        let binned = Binned::categorical("tier", &[0.0, 0.0, 1.0, 4.0, 7.0], 5);
        assert_eq!(binned.bins(), 5);
        assert_eq!(binned.shares, vec![0.4, 0.2, 0.0, 0.0, 0.4]);
        assert_eq!(binned.bin(2.0), 2);
        assert_eq!(binned.bin(9.0), 4);
    }

    #[test]
    fn psi_and_ks_are_zero_for_the_reference_itself_and_large_for_a_shift() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let reference: Vec<f64> = (0..20_000).map(|_| rng.random::<f64>()).collect();
        let binned = Binned::fit("u", &reference, 10);
        let count = |values: &[f64]| {
            let mut counts = vec![0; binned.bins()];
            for v in values {
                counts[binned.bin(*v)] += 1;
            }
            counts
        };
        let same: Vec<f64> = (0..20_000).map(|_| rng.random::<f64>()).collect();
        let shifted: Vec<f64> = (0..20_000)
            .map(|_| rng.random::<f64>() * 0.6 + 0.4)
            .collect();
        assert!(psi(&binned.shares, &count(&reference)) < 1e-12);
        assert!(psi(&binned.shares, &count(&same)) < 0.01);
        assert!(ks(&binned.shares, &count(&same)) < 0.02);
        let moved = psi(&binned.shares, &count(&shifted));
        assert!(moved > PSI_ALERT, "{moved}");
        assert!((ks(&binned.shares, &count(&shifted)) - 0.4).abs() < 0.02);
        assert_eq!(psi(&binned.shares, &vec![0; binned.bins()]), 0.0);
    }

    #[test]
    fn a_tally_compares_every_column_of_a_profile() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        // a: 0..100, b: constant 1.
        let rows: Vec<f32> = (0..100).flat_map(|i| [i as f32, 1.0]).collect();
        let churn: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        let profile = Profile::fit(&names, &rows, &[("churn_risk", churn)], 10);
        assert_eq!(profile.rows, 100);
        assert_eq!(profile.width(), 2);
        assert_eq!(profile.score("churn_risk"), Some(0));
        let mut tally = Tally::new(&profile);
        for i in 0..100 {
            tally.add_features(&profile, &[(i % 10) as f32, 5.0]);
            tally.add_score(&profile, 0, f64::from(i) / 100.0);
        }
        let drift = tally.compare(&profile);
        assert_eq!(drift.rows, 100);
        assert!(drift.features[0].psi > PSI_ALERT, "{drift:?}");
        // b's single bin takes every value: no drift visible in one bin.
        assert!(drift.features[1].psi < 1e-12);
        assert!(drift.scores[0].psi < 1e-12);
        let over = drift.over(PSI_ALERT);
        assert_eq!(over.len(), 1);
        assert_eq!(over[0].name, "a");
        assert_eq!(drift.worst_feature().unwrap().name, "a");
        let mut twice = tally.clone();
        twice.merge(&tally);
        assert_eq!(twice.rows(), 200);
        assert_eq!(
            twice.compare(&profile).features[0].psi,
            drift.features[0].psi
        );
        twice.clear();
        assert_eq!(twice.rows(), 0);
        assert_eq!(twice.compare(&profile).features[0].psi, 0.0);
    }

    proptest! {
        #[test]
        fn shares_sum_to_one_and_every_value_lands_in_a_bin(
            values in proptest::collection::vec(-1e6_f64..1e6, 1..400),
            bins in 1_usize..20,
        ) {
            let binned = Binned::fit("p", &values, bins);
            prop_assert!(binned.bins() <= bins.max(1));
            prop_assert!((binned.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            prop_assert!(binned.edges.windows(2).all(|w| w[0] < w[1]));
            for v in &values {
                let b = binned.bin(*v);
                prop_assert!(b < binned.bins());
                prop_assert!(b == 0 || binned.edges[b - 1] < *v);
                prop_assert!(b == binned.edges.len() || *v <= binned.edges[b]);
            }
        }

        #[test]
        fn psi_is_zero_for_the_reference_and_non_negative_otherwise(
            counts in proptest::collection::vec(0_u64..1000, 2..12),
        ) {
            let total: u64 = counts.iter().sum();
            prop_assume!(total > 0);
            let shares: Vec<f64> = counts.iter().map(|c| *c as f64 / total as f64).collect();
            prop_assert!(psi(&shares, &counts).abs() < 1e-9);
            let uniform = vec![1.0 / counts.len() as f64; counts.len()];
            let value = psi(&uniform, &counts);
            prop_assert!(value >= 0.0);
            let k = ks(&uniform, &counts);
            prop_assert!((0.0..=1.0 + 1e-9).contains(&k));
            if value < 1e-12 {
                prop_assert!(k < 1e-6);
            }
        }
    }
}
