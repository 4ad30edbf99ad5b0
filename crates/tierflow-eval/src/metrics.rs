//! Metrics for the three things a value model predicts: the tier (classification), churn
//! (a probability) and future spend (a ranking and a level). Every function returns a
//! finite number for every finite input, including empty input and a single class; the
//! doc comment of each says what it returns in those cases.
//!
//! Ties in a ranking are averaged, never broken by input order: a metric of a prediction
//! with tied scores is the expectation over all orders of the tied rows. That keeps the
//! coarse baselines (13 RFM scores, many zero last-period spends) from gaining or losing
//! by the accident of row order.

use serde::{Deserialize, Serialize};

/// What happened in the horizon after each row's cutoff.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// Value tier of the future spend, 0 = lowest.
    pub tiers: Vec<u8>,
    /// No purchase in the horizon.
    pub churned: Vec<bool>,
    /// Future spend in currency units.
    pub spend: Vec<f64>,
}

impl Truth {
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }
}

/// One model's (or baseline's) predictions for the same rows as a [`Truth`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    pub tiers: Vec<u8>,
    /// Probability of no purchase in the horizon.
    pub churn: Vec<f64>,
    /// Expected future spend in currency units.
    pub spend: Vec<f64>,
}

impl Predictions {
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }
}

/// Why a truth and a prediction cannot be evaluated together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("{field} has {actual} rows, expected {expected}")]
    LengthMismatch {
        field: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("{field}[{index}] is tier {tier}, but there are only {k} tiers")]
    TierOutOfRange {
        field: &'static str,
        index: usize,
        tier: u8,
        k: usize,
    },
    #[error("{field}[{index}] is not finite")]
    NonFinite { field: &'static str, index: usize },
    #[error("predicted churn[{index}] = {value} is not a probability")]
    NotAProbability { index: usize, value: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// 0 when the class is never predicted.
    pub precision: f64,
    /// 0 when the class never occurs.
    pub recall: f64,
    /// 0 when precision and recall are both 0.
    pub f1: f64,
    /// Rows whose actual class is this one.
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Share of rows predicted correctly; 0 for no rows.
    pub accuracy: f64,
    /// One entry per class `0..k`.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted means over the classes that occur in `actual` or `predicted` (as
    /// scikit-learn does), so a tier absent from both does not count as a failure; 0 when
    /// there are no rows.
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// `confusion[actual][predicted]` counts, `k × k`.
    pub confusion: Vec<Vec<u64>>,
}

/// Tier accuracy, per-class and macro precision/recall/F1 and the confusion matrix over
/// classes `0..k`.
///
/// The precision of a class that is never predicted is 0 (not undefined), and so is the
/// recall of a class that never occurs.
///
/// # Panics
/// If the slices differ in length or a class is `>= k`.
pub fn classification(actual: &[u8], predicted: &[u8], k: usize) -> ClassificationReport {
    assert_same_len(actual.len(), predicted.len());
    let mut confusion = vec![vec![0_u64; k]; k];
    for (a, p) in actual.iter().zip(predicted) {
        let (a, p) = (usize::from(*a), usize::from(*p));
        assert!(a < k && p < k, "class {} or {} out of 0..{k}", a, p);
        confusion[a][p] += 1;
    }
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let support: u64 = confusion[c].iter().sum();
            let predicted_c: u64 = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(tp, predicted_c as f64);
            let recall = ratio(tp, support as f64);
            ClassMetrics {
                precision,
                recall,
                f1: ratio(2.0 * precision * recall, precision + recall),
                support,
            }
        })
        .collect();
    let present: Vec<&ClassMetrics> = (0..k)
        .filter(|c| per_class[*c].support > 0 || confusion.iter().any(|row| row[*c] > 0))
        .map(|c| &per_class[c])
        .collect();
    let mean_of = |f: fn(&ClassMetrics) -> f64| {
        ratio(present.iter().map(|m| f(m)).sum(), present.len() as f64)
    };
    ClassificationReport {
        accuracy: ratio(correct as f64, actual.len() as f64),
        macro_precision: mean_of(|m| m.precision),
        macro_recall: mean_of(|m| m.recall),
        macro_f1: mean_of(|m| m.f1),
        per_class,
        confusion,
    }
}

/// Area under the ROC curve of `scores` for finding `positives`: the Mann–Whitney
/// statistic with average ranks, so a tied positive/negative pair counts one half.
///
/// 0.5 (no discrimination) when there are no positives or no negatives.
///
/// # Panics
/// If the slices differ in length.
pub fn roc_auc(scores: &[f64], positives: &[bool]) -> f64 {
    assert_same_len(scores.len(), positives.len());
    let n_pos = positives.iter().filter(|p| **p).count() as f64;
    let n_neg = positives.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return 0.5;
    }
    let ranks = average_ranks(scores);
    let rank_sum: f64 = ranks
        .iter()
        .zip(positives)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    let u = rank_sum - n_pos * (n_pos + 1.0) / 2.0;
    (u / (n_pos * n_neg)).clamp(0.0, 1.0)
}

/// Average precision (the area under the precision–recall curve as scikit-learn's
/// `average_precision_score` computes it): `Σ (R_i − R_{i−1}) · P_i` over thresholds at
/// each distinct score, from the highest down. Tied scores form one threshold, so the
/// result does not depend on row order.
///
/// 0 when there are no positives (recall is undefined; nothing is found).
///
/// # Panics
/// If the slices differ in length.
pub fn pr_auc(scores: &[f64], positives: &[bool]) -> f64 {
    assert_same_len(scores.len(), positives.len());
    let n_pos = positives.iter().filter(|p| **p).count();
    if n_pos == 0 {
        return 0.0;
    }
    let order = descending(scores);
    let (mut tp, mut fp, mut ap) = (0_usize, 0_usize, 0.0);
    for group in tie_groups(&order, scores) {
        let pos_in_group = group.iter().filter(|i| positives[**i]).count();
        tp += pos_in_group;
        fp += group.len() - pos_in_group;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += pos_in_group as f64 / n_pos as f64 * precision;
    }
    ap.clamp(0.0, 1.0)
}

/// Normalised Gini of a spend ranking, as in the Kaggle "Porto Seguro" metric and Wang,
/// Liu & Miao (2019): `gini(actual, predicted) / gini(actual, actual)`, where
/// `gini(a, p) = (Σ_i cumsum_i(a sorted by p descending) / Σ a − (n + 1) / 2) / n`.
///
/// 1 for a perfect ranking, about 0 for a random or constant one, −1 for the reverse.
/// Tie rule: rows with tied predictions share their mean actual value (the expectation
/// over all orders of the tie), so a constant prediction scores exactly 0.
/// 0 when there are fewer than 2 rows, the actual total is 0 or all actuals are equal.
///
/// # Panics
/// If the slices differ in length.
pub fn normalized_gini(actual: &[f64], predicted: &[f64]) -> f64 {
    assert_same_len(actual.len(), predicted.len());
    let best = gini(actual, actual);
    if best == 0.0 || !best.is_finite() {
        return 0.0;
    }
    let g = gini(actual, predicted) / best;
    if g.is_finite() { g } else { 0.0 }
}

fn gini(actual: &[f64], predicted: &[f64]) -> f64 {
    let n = actual.len();
    let total: f64 = actual.iter().sum();
    if n < 2 || total == 0.0 {
        return 0.0;
    }
    let curve = RankedMass::new(actual, predicted);
    let cumulative_sum: f64 = (1..=n).map(|i| curve.prefix[i]).sum();
    (cumulative_sum / total - (n as f64 + 1.0) / 2.0) / n as f64
}

/// Spearman rank correlation: Pearson correlation of average ranks.
///
/// 0 when there are fewer than 2 rows or either side is constant.
///
/// # Panics
/// If the slices differ in length.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    assert_same_len(a.len(), b.len());
    if a.len() < 2 {
        return 0.0;
    }
    pearson(&average_ranks(a), &average_ranks(b))
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (mean_a, mean_b) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - mean_a, y - mean_b);
        cov += dx * dy;
        var_a += dx * dx;
        var_b += dy * dy;
    }
    if var_a == 0.0 || var_b == 0.0 {
        return 0.0;
    }
    (cov / (var_a.sqrt() * var_b.sqrt())).clamp(-1.0, 1.0)
}

/// Number of groups in [`decile_table`], [`decile_mape`] and [`lift_by_decile`].
pub const DECILES: usize = 10;

/// One tenth of the rows, ranked by prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decile {
    pub mean_predicted: f64,
    pub mean_actual: f64,
    /// Rows in the decile: `n / 10`, fractional when 10 does not divide `n`.
    pub rows: f64,
}

/// The rows sorted by prediction, highest first, cut into 10 groups of exactly `n / 10`
/// rows each. A row that straddles a boundary (when 10 does not divide `n`) or a tie that
/// straddles one is shared between the deciles in proportion, so the table does not depend
/// on row order. Empty input gives 10 deciles of zeros.
///
/// # Panics
/// If the slices differ in length.
pub fn decile_table(actual: &[f64], predicted: &[f64]) -> Vec<Decile> {
    assert_same_len(actual.len(), predicted.len());
    let n = actual.len() as f64;
    let rows = n / DECILES as f64;
    let actual_curve = RankedMass::new(actual, predicted);
    let predicted_curve = RankedMass::new(predicted, predicted);
    (0..DECILES)
        .map(|d| {
            let (from, to) = (d as f64 * rows, (d + 1) as f64 * rows);
            Decile {
                mean_predicted: ratio(predicted_curve.between(from, to), rows),
                mean_actual: ratio(actual_curve.between(from, to), rows),
                rows,
            }
        })
        .collect()
}

/// Decile-level MAPE of Wang, Liu & Miao (2019, "A deep probabilistic model for customer
/// lifetime value prediction"): rank rows by prediction into 10 equal groups
/// ([`decile_table`]) and average `|mean predicted − mean actual| / |mean actual|` over
/// the deciles. Lower is better; it measures calibration of the spend level per segment.
///
/// A decile whose actual mean is 0 has no defined percentage error and is left out of the
/// average (with many non-buyers the lowest deciles often are all zero); 0 when every
/// decile is left out, including for empty input.
///
/// # Panics
/// If the slices differ in length.
pub fn decile_mape(actual: &[f64], predicted: &[f64]) -> f64 {
    let errors: Vec<f64> = decile_table(actual, predicted)
        .iter()
        .filter(|d| d.mean_actual != 0.0)
        .map(|d| (d.mean_predicted - d.mean_actual).abs() / d.mean_actual.abs())
        .collect();
    ratio(errors.iter().sum(), errors.len() as f64)
}

/// Cumulative gain: rows ranked by prediction (highest first); for `x = i / points`,
/// `i = 0..=points`, the share of total actual spend held by the top `x` of rows. Returns
/// `points + 1` pairs from `(0, 0)` to `(1, 1)`. Ties share their mean (see the module
/// docs).
///
/// When the actual total is 0 the curve is the diagonal `y = x` (no ranking can do better
/// than random). `points` of 0 is treated as 1.
///
/// # Panics
/// If the slices differ in length.
pub fn gain_curve(actual: &[f64], predicted: &[f64], points: usize) -> Vec<(f64, f64)> {
    assert_same_len(actual.len(), predicted.len());
    let points = points.max(1);
    let n = actual.len() as f64;
    let curve = RankedMass::new(actual, predicted);
    let total = curve.between(0.0, n);
    (0..=points)
        .map(|i| {
            let x = i as f64 / points as f64;
            let y = if total == 0.0 {
                x
            } else {
                curve.between(0.0, x * n) / total
            };
            (x, y)
        })
        .collect()
}

/// Lift per decile, top predictions first: the decile's mean actual spend over the
/// overall mean. 1 everywhere means the ranking is no better than random.
///
/// When the overall mean is 0 the lift is undefined and every decile is reported as 1.
///
/// # Panics
/// If the slices differ in length.
pub fn lift_by_decile(actual: &[f64], predicted: &[f64]) -> Vec<f64> {
    let mean = ratio(actual.iter().sum(), actual.len() as f64);
    decile_table(actual, predicted)
        .iter()
        .map(|d| {
            if mean == 0.0 {
                1.0
            } else {
                d.mean_actual / mean
            }
        })
        .collect()
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// The bin covers `[lower, upper)` (the last bin includes 1).
    pub lower: f64,
    pub upper: f64,
    pub mean_predicted: f64,
    pub observed_rate: f64,
    pub count: u64,
}

/// Reliability diagram: `bins` equal-width bins on `[0, 1]` (probabilities outside are
/// clamped into it), each with its mean predicted probability and observed rate. Only
/// non-empty bins are returned, in ascending order; `bins` of 0 is treated as 1.
///
/// # Panics
/// If the slices differ in length.
pub fn calibration(probs: &[f64], outcomes: &[bool], bins: usize) -> Vec<CalibrationBin> {
    assert_same_len(probs.len(), outcomes.len());
    let bins = bins.max(1);
    let mut sums = vec![(0.0_f64, 0_u64, 0_u64); bins];
    for (p, y) in probs.iter().zip(outcomes) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        let bin = ((p * bins as f64) as usize).min(bins - 1);
        sums[bin].0 += p;
        sums[bin].1 += u64::from(*y);
        sums[bin].2 += 1;
    }
    sums.iter()
        .enumerate()
        .filter(|(_, (_, _, count))| *count > 0)
        .map(|(bin, (p_sum, hits, count))| CalibrationBin {
            lower: bin as f64 / bins as f64,
            upper: (bin + 1) as f64 / bins as f64,
            mean_predicted: p_sum / *count as f64,
            observed_rate: *hits as f64 / *count as f64,
            count: *count,
        })
        .collect()
}

/// Mean squared error of probabilities against outcomes; 0 for no rows.
///
/// # Panics
/// If the slices differ in length.
pub fn brier(probs: &[f64], outcomes: &[bool]) -> f64 {
    assert_same_len(probs.len(), outcomes.len());
    let sum: f64 = probs
        .iter()
        .zip(outcomes)
        .map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2))
        .sum();
    ratio(sum, probs.len() as f64)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnMetrics {
    /// ROC AUC of the churn probability for finding churners.
    pub auc: f64,
    /// Average precision for finding churners.
    pub pr_auc: f64,
    /// Share of churners: the PR-AUC of a random ranking.
    pub base_rate: f64,
    pub brier: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendMetrics {
    pub normalized_gini: f64,
    pub spearman: f64,
    pub decile_mape: f64,
    pub mean_actual: f64,
    pub mean_predicted: f64,
}

/// Everything measured about one set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub rows: usize,
    pub tier: ClassificationReport,
    pub churn: ChurnMetrics,
    pub spend: SpendMetrics,
}

/// Checks that `predictions` can be evaluated against `truth` with `k` tiers: equal
/// lengths, tiers below `k`, finite spend, churn probabilities in `[0, 1]`.
pub fn check_inputs(
    truth: &Truth,
    predictions: &Predictions,
    k: usize,
) -> Result<(), MetricsError> {
    let n = truth.tiers.len();
    let lengths = [
        ("truth.churned", truth.churned.len()),
        ("truth.spend", truth.spend.len()),
        ("predictions.tiers", predictions.tiers.len()),
        ("predictions.churn", predictions.churn.len()),
        ("predictions.spend", predictions.spend.len()),
    ];
    for (field, actual) in lengths {
        if actual != n {
            return Err(MetricsError::LengthMismatch {
                field,
                expected: n,
                actual,
            });
        }
    }
    for (field, tiers) in [
        ("truth.tiers", &truth.tiers),
        ("predictions.tiers", &predictions.tiers),
    ] {
        if let Some((index, tier)) = tiers
            .iter()
            .enumerate()
            .find(|(_, t)| usize::from(**t) >= k)
        {
            return Err(MetricsError::TierOutOfRange {
                field,
                index,
                tier: *tier,
                k,
            });
        }
    }
    for (field, values) in [
        ("truth.spend", &truth.spend),
        ("predictions.spend", &predictions.spend),
        ("predictions.churn", &predictions.churn),
    ] {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(MetricsError::NonFinite { field, index });
        }
    }
    if let Some((index, value)) = predictions
        .churn
        .iter()
        .enumerate()
        .find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        return Err(MetricsError::NotAProbability {
            index,
            value: *value,
        });
    }
    Ok(())
}

/// All metrics of `predictions` against `truth` with `k` tiers.
///
/// # Panics
/// If [`check_inputs`] fails: mismatched rows or an out-of-range value are a bug in the
/// caller, and a report built on them would be silently wrong. Call [`check_inputs`] first
/// to get the error as a value instead.
pub fn evaluate(truth: &Truth, predictions: &Predictions, k: usize) -> Evaluation {
    if let Err(e) = check_inputs(truth, predictions, k) {
        panic!("cannot evaluate: {e}");
    }
    let n = truth.len() as f64;
    Evaluation {
        rows: truth.len(),
        tier: classification(&truth.tiers, &predictions.tiers, k),
        churn: ChurnMetrics {
            auc: roc_auc(&predictions.churn, &truth.churned),
            pr_auc: pr_auc(&predictions.churn, &truth.churned),
            base_rate: ratio(truth.churned.iter().filter(|c| **c).count() as f64, n),
            brier: brier(&predictions.churn, &truth.churned),
        },
        spend: SpendMetrics {
            normalized_gini: normalized_gini(&truth.spend, &predictions.spend),
            spearman: spearman(&truth.spend, &predictions.spend),
            decile_mape: decile_mape(&truth.spend, &predictions.spend),
            mean_actual: ratio(truth.spend.iter().sum(), n),
            mean_predicted: ratio(predictions.spend.iter().sum(), n),
        },
    }
}

/// `num / den`, or 0 when `den` is 0.
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

fn assert_same_len(a: usize, b: usize) {
    assert_eq!(a, b, "metric inputs must have the same number of rows");
}

/// Row indices by score, highest first; ties in input order (only to make the grouping
/// deterministic: every metric here treats a tie group as a whole).
fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|i, j| scores[*j].total_cmp(&scores[*i]));
    order
}

/// Consecutive runs of equal score in `order`.
fn tie_groups<'a>(order: &'a [usize], scores: &'a [f64]) -> impl Iterator<Item = &'a [usize]> {
    order.chunk_by(|i, j| scores[*i].total_cmp(&scores[*j]).is_eq())
}

/// 1-based ranks, ascending, ties given the mean of the ranks they span.
pub(crate) fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|i, j| values[*i].total_cmp(&values[*j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    for group in tie_groups(&order, values) {
        // Ranks start + 1 ..= start + len; their mean:
        let rank = start as f64 + (group.len() as f64 + 1.0) / 2.0;
        for i in group {
            ranks[*i] = rank;
        }
        start += group.len();
    }
    ranks
}

/// `values` laid out by `ranking` (highest first) as a step function over positions
/// `[0, n]`, each tie group flattened to its mean, with prefix sums for integrals.
struct RankedMass {
    /// Value per unit of position `j..j + 1`.
    values: Vec<f64>,
    /// `prefix[j]` = integral over `[0, j]`.
    prefix: Vec<f64>,
}

impl RankedMass {
    fn new(values: &[f64], ranking: &[f64]) -> Self {
        let order = descending(ranking);
        let mut flat = Vec::with_capacity(values.len());
        for group in tie_groups(&order, ranking) {
            let mean = group.iter().map(|i| values[*i]).sum::<f64>() / group.len() as f64;
            flat.extend(std::iter::repeat_n(mean, group.len()));
        }
        let mut prefix = Vec::with_capacity(flat.len() + 1);
        prefix.push(0.0);
        let mut sum = 0.0;
        for v in &flat {
            sum += v;
            prefix.push(sum);
        }
        Self {
            values: flat,
            prefix,
        }
    }

    /// Integral over `[0, x]`, `x` clamped to `[0, n]`.
    fn up_to(&self, x: f64) -> f64 {
        let n = self.values.len();
        let x = x.clamp(0.0, n as f64);
        let whole = (x.floor() as usize).min(n);
        let part = if whole < n {
            (x - whole as f64) * self.values[whole]
        } else {
            0.0
        };
        self.prefix[whole] + part
    }

    fn between(&self, from: f64, to: f64) -> f64 {
        self.up_to(to) - self.up_to(from)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EPS: f64 = 1e-9;

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() < EPS
    }

    #[test]
    fn classification_counts_and_zero_precision_for_a_class_never_predicted() {
        let report = classification(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 1], 3);
        assert_eq!(
            report.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![0, 1, 0]]
        );
        assert!(close(report.accuracy, 0.6));
        let expected = [
            (1.0, 0.5, 2.0 / 3.0, 2),
            (0.5, 1.0, 2.0 / 3.0, 2),
            (0.0, 0.0, 0.0, 1),
        ];
        for (got, (p, r, f1, support)) in report.per_class.iter().zip(expected) {
            assert!(
                close(got.precision, p) && close(got.recall, r) && close(got.f1, f1),
                "{got:?}"
            );
            assert_eq!(got.support, support);
        }
        assert!(close(report.macro_precision, 0.5));
        assert!(close(report.macro_recall, 0.5));
        assert!(close(report.macro_f1, 4.0 / 9.0));
    }

    #[test]
    fn classification_macro_ignores_classes_absent_from_both_sides() {
        let report = classification(&[0, 1], &[0, 1], 4);
        assert!(close(report.macro_f1, 1.0));
        let empty = classification(&[], &[], 3);
        assert_eq!((empty.accuracy, empty.macro_f1), (0.0, 0.0));
    }

    #[test]
    fn roc_auc_cases() {
        let check = |scores: &[f64], positives: &[bool], expected: f64| {
            let got = roc_auc(scores, positives);
            assert!(
                close(got, expected),
                "{scores:?} {positives:?}: {got} != {expected}"
            );
        };
        // scikit-learn's documentation example.
        check(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true], 0.75);
        // One tied positive/negative pair counts one half: (1 + 0.5 + 1 + 1) / 4.
        check(&[0.1, 0.5, 0.5, 0.9], &[false, true, false, true], 0.875);
        check(&[0.5; 4], &[false, true, false, true], 0.5);
        check(&[0.9, 0.1], &[false, true], 0.0);
        // One class absent, or nothing at all.
        check(&[0.1, 0.2], &[true, true], 0.5);
        check(&[0.1, 0.2], &[false, false], 0.5);
        check(&[], &[], 0.5);
    }

    #[test]
    fn pr_auc_cases() {
        let check = |scores: &[f64], positives: &[bool], expected: f64| {
            let got = pr_auc(scores, positives);
            assert!(
                close(got, expected),
                "{scores:?} {positives:?}: {got} != {expected}"
            );
        };
        // scikit-learn's documentation example: 0.5 · 1 + 0.5 · 2/3.
        check(
            &[0.1, 0.4, 0.35, 0.8],
            &[false, false, true, true],
            5.0 / 6.0,
        );
        // Ties at 0.5 form one threshold: 1/3 · 1 + 1/3 · 2/3 + 1/3 · 3/4.
        check(
            &[0.9, 0.5, 0.5, 0.1],
            &[true, true, false, true],
            (1.0 + 2.0 / 3.0 + 0.75) / 3.0,
        );
        // A constant score gives the base rate.
        check(&[0.3; 4], &[true, false, false, false], 0.25);
        check(&[0.3, 0.4], &[false, false], 0.0);
    }

    #[test]
    fn normalized_gini_cases() {
        let check = |actual: &[f64], predicted: &[f64], expected: f64| {
            let got = normalized_gini(actual, predicted);
            assert!(
                close(got, expected),
                "{actual:?} {predicted:?}: {got} != {expected}"
            );
        };
        check(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0], 1.0);
        check(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0], -1.0);
        // Sorted by prediction: actuals 4, 2, 3, 1 → Σ cumsum 29 against 30 for the best;
        // gini = (29/10 − 2.5)/4 = 0.1, best = 0.125.
        check(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0], 0.8);
        // A tie shares its mean: values 5, 5, 0, 0 → (35/10 − 2.5)/4 against (40/10 − 2.5)/4.
        check(&[0.0, 10.0, 0.0, 0.0], &[1.0, 1.0, 0.0, 0.0], 2.0 / 3.0);
        check(&[0.0, 10.0, 0.0, 0.0], &[7.0; 4], 0.0);
        check(&[0.0, 0.0], &[1.0, 2.0], 0.0);
        check(&[3.0, 3.0], &[1.0, 2.0], 0.0);
        check(&[], &[], 0.0);
    }

    #[test]
    fn spearman_cases() {
        let check = |a: &[f64], b: &[f64], expected: f64| {
            let got = spearman(a, b);
            assert!(close(got, expected), "{a:?} {b:?}: {got} != {expected}");
        };
        check(&[1.0, 2.0, 3.0], &[1.0, 4.0, 9.0], 1.0);
        check(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0], -1.0);
        // Ranks 1..5 against 1, 2, 3.5, 5, 3.5: deviations −2..2 and −2, −1, ½, 2, ½,
        // so Σ products 8, Σ squares 10 and 9.5.
        check(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[5.0, 6.0, 7.0, 8.0, 7.0],
            8.0 / 95.0_f64.sqrt(),
        );
        check(&[1.0, 2.0, 3.0], &[2.0; 3], 0.0);
        check(&[1.0], &[1.0], 0.0);
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn decile_mape_cases() {
        let check = |actual: &[f64], predicted: &[f64], expected: f64| {
            let got = decile_mape(actual, predicted);
            assert!(
                close(got, expected),
                "{actual:?} {predicted:?}: {got} != {expected}"
            );
        };
        let actual: Vec<f64> = (1..=10).map(f64::from).collect();
        let doubled: Vec<f64> = actual.iter().map(|a| 2.0 * a).collect();
        check(&actual, &doubled, 1.0);
        check(&actual, &actual, 0.0);
        // The decile with actual mean 0 is left out: mean of 1/a for a = 1..9.
        let from_zero: Vec<f64> = (0..10).map(f64::from).collect();
        let plus_one: Vec<f64> = from_zero.iter().map(|a| a + 1.0).collect();
        let harmonic: f64 = (1..=9).map(|a| 1.0 / f64::from(a)).sum();
        check(&from_zero, &plus_one, harmonic / 9.0);
        // Twenty rows, two per decile: each decile's means are exact.
        let actual20: Vec<f64> = (1..=20).map(f64::from).collect();
        check(
            &actual20,
            &actual20.iter().map(|a| a + 1.0).collect::<Vec<_>>(),
            {
                (0..10)
                    .map(|d| 1.0 / (2.0 * f64::from(d) + 1.5))
                    .sum::<f64>()
                    / 10.0
            },
        );
        check(&[0.0; 5], &[1.0; 5], 0.0);
        check(&[], &[], 0.0);
    }

    #[test]
    fn decile_table_splits_ties_and_fractional_rows_in_proportion() {
        // Five rows: each decile is half a row; one tie of all five shares the mean 2.
        let table = decile_table(&[0.0, 0.0, 10.0, 0.0, 0.0], &[1.0; 5]);
        for d in &table {
            assert!(
                close(d.mean_actual, 2.0) && close(d.mean_predicted, 1.0) && close(d.rows, 0.5)
            );
        }
    }

    #[test]
    fn gain_curve_and_lift() {
        let curve = gain_curve(&[0.0, 10.0, 0.0, 30.0], &[0.1, 0.2, 0.3, 0.4], 4);
        let expected = [
            (0.0, 0.0),
            (0.25, 0.75),
            (0.5, 0.75),
            (0.75, 1.0),
            (1.0, 1.0),
        ];
        for ((x, y), (ex, ey)) in curve.iter().zip(expected) {
            assert!(close(*x, ex) && close(*y, ey), "{curve:?}");
        }
        assert_eq!(
            gain_curve(&[0.0; 3], &[1.0, 2.0, 3.0], 2),
            vec![(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]
        );

        let actual: Vec<f64> = (1..=10).map(f64::from).collect();
        let lift = lift_by_decile(&actual, &actual);
        assert!(
            close(lift[0], 10.0 / 5.5) && close(lift[9], 1.0 / 5.5),
            "{lift:?}"
        );
        assert_eq!(lift_by_decile(&[0.0; 4], &[1.0; 4]), vec![1.0; DECILES]);
    }

    #[test]
    fn calibration_bins() {
        let bins = calibration(&[0.1, 0.2, 0.8, 1.0], &[false, true, true, true], 2);
        assert_eq!(bins.len(), 2);
        assert!(close(bins[0].mean_predicted, 0.15) && close(bins[0].observed_rate, 0.5));
        assert!(close(bins[1].mean_predicted, 0.9) && close(bins[1].observed_rate, 1.0));
        assert_eq!((bins[0].count, bins[1].count), (2, 2));
        // Empty bins are left out.
        assert_eq!(calibration(&[0.05], &[true], 10).len(), 1);
        assert!(close(
            brier(&[0.1, 0.2, 0.8, 1.0], &[false, true, true, true]),
            (0.01 + 0.64 + 0.04) / 4.0
        ));
    }

    #[test]
    fn evaluate_combines_and_checks_inputs() {
        let truth = Truth {
            tiers: vec![0, 1, 2, 2],
            churned: vec![true, false, false, true],
            spend: vec![0.0, 5.0, 50.0, 0.0],
        };
        let predictions = Predictions {
            tiers: vec![0, 1, 2, 1],
            churn: vec![0.9, 0.2, 0.1, 0.6],
            spend: vec![0.0, 4.0, 60.0, 1.0],
        };
        let eval = evaluate(&truth, &predictions, 3);
        assert!(close(eval.tier.accuracy, 0.75));
        assert!(close(eval.churn.auc, 1.0) && close(eval.churn.base_rate, 0.5));
        assert!(close(eval.spend.mean_actual, 13.75) && close(eval.spend.mean_predicted, 16.25));
        assert!(serde_json::to_string(&eval).is_ok());

        let short = Predictions {
            churn: vec![0.5; 3],
            ..predictions.clone()
        };
        assert!(matches!(
            check_inputs(&truth, &short, 3),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            check_inputs(&truth, &predictions, 2),
            Err(MetricsError::TierOutOfRange { .. })
        ));
        let nan = Predictions {
            spend: vec![0.0, f64::NAN, 1.0, 1.0],
            ..predictions.clone()
        };
        assert!(matches!(
            check_inputs(&truth, &nan, 3),
            Err(MetricsError::NonFinite { .. })
        ));
        let over = Predictions {
            churn: vec![0.0, 1.5, 1.0, 1.0],
            ..predictions
        };
        assert!(matches!(
            check_inputs(&truth, &over, 3),
            Err(MetricsError::NotAProbability { .. })
        ));
    }

    #[test]
    fn empty_evaluation_is_finite() {
        let eval = evaluate(&Truth::default(), &Predictions::default(), 3);
        let json = serde_json::to_value(&eval).expect("serialises");
        assert!(!json.to_string().contains("null"), "{json}");
    }

    fn scores_and_labels() -> impl Strategy<Value = (Vec<f64>, Vec<bool>)> {
        (1_usize..60).prop_flat_map(|n| {
            (
                proptest::collection::vec(-1e3_f64..1e3, n),
                proptest::collection::vec(any::<bool>(), n),
            )
        })
    }

    proptest! {
        #[test]
        fn auc_is_a_probability_and_reverses((scores, labels) in scores_and_labels()) {
            let auc = roc_auc(&scores, &labels);
            prop_assert!((0.0..=1.0).contains(&auc));
            let negated: Vec<f64> = scores.iter().map(|s| -s).collect();
            // Holds with ties too: a tied pair counts one half either way.
            prop_assert!((auc + roc_auc(&negated, &labels) - 1.0).abs() < 1e-9);
            let ap = pr_auc(&scores, &labels);
            prop_assert!((0.0..=1.0).contains(&ap));
        }

        #[test]
        fn gini_of_a_perfect_ranking_is_one(actual in proptest::collection::vec(0.0_f64..1e4, 2..60)) {
            let distinct = actual.iter().any(|a| *a != actual[0]);
            let g = normalized_gini(&actual, &actual);
            if distinct && actual.iter().sum::<f64>() > 0.0 {
                prop_assert!((g - 1.0).abs() < 1e-12, "{}", g);
                // Any strictly increasing transform ranks the same.
                let squashed: Vec<f64> = actual.iter().map(|a| (a / 100.0).atan()).collect();
                prop_assert!((normalized_gini(&actual, &squashed) - 1.0).abs() < 1e-12);
            } else {
                prop_assert_eq!(g, 0.0);
            }
        }

        #[test]
        fn gini_is_bounded(
            (actual, predicted) in (2_usize..60).prop_flat_map(|n| (
                proptest::collection::vec(0.0_f64..1e4, n),
                proptest::collection::vec(0.0_f64..1e4, n),
            ))
        ) {
            let g = normalized_gini(&actual, &predicted);
            prop_assert!(g.is_finite() && (-1.0 - 1e-9..=1.0 + 1e-9).contains(&g));
        }

        #[test]
        fn spearman_of_a_monotone_transform_is_one(a in proptest::collection::vec(-1e3_f64..1e3, 2..60)) {
            let b: Vec<f64> = a.iter().map(|x| x.powi(3) + 2.0 * x).collect();
            let rho = spearman(&a, &b);
            if a.iter().any(|x| *x != a[0]) {
                prop_assert!((rho - 1.0).abs() < 1e-12, "{}", rho);
            } else {
                prop_assert_eq!(rho, 0.0);
            }
        }

        #[test]
        fn gain_curve_ends_at_one_and_deciles_cover_the_total(
            (actual, predicted) in (1_usize..60).prop_flat_map(|n| (
                proptest::collection::vec(0.0_f64..1e3, n),
                proptest::collection::vec(0.0_f64..10.0, n),
            ))
        ) {
            let curve = gain_curve(&actual, &predicted, 20);
            prop_assert_eq!(curve.len(), 21);
            prop_assert!((curve[20].1 - 1.0).abs() < 1e-9);
            let table = decile_table(&actual, &predicted);
            let total: f64 = table.iter().map(|d| d.mean_actual * d.rows).sum();
            prop_assert!((total - actual.iter().sum::<f64>()).abs() < 1e-6);
        }
    }
}
