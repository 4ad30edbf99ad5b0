//! The classic customer-value methods a marketing analyst already has — RFM quintile score,
//! last-period spend, BG/NBD with Gamma-Gamma — fitted on the training rows and predicting
//! the test rows of the same split as the model, so the model has something to beat.

mod bgnbd;
mod last_period;
mod rfm;

pub use bgnbd::{
    BgNbd, BgNbdGammaGamma, BgNbdGammaGammaFit, GammaGamma, MIN_FIT_CUSTOMERS, PurchaseSummary,
    ValueSummary,
};
pub use last_period::{LastPeriodFit, LastPeriodSpend};
pub use rfm::{RfmFit, RfmQuintiles, quintile_edges, quintile_score};

use serde::{Deserialize, Serialize};
use tierflow_features::History;

use crate::metrics::{Predictions, Truth};

const DAY_MS: f64 = 86_400_000.0;

/// Recency of a customer who never purchased, and the most any recency counts for: beyond a
/// year, "long ago" is all RFM needs to know.
pub const RECENCY_CAP_DAYS: f64 = 365.0;

/// A user's purchase history at a cutoff, in days and currency units: what the baselines
/// see instead of the model's feature vector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub has_purchased: bool,
    /// Days since the last purchase, at most [`RECENCY_CAP_DAYS`] (the cap without one).
    pub recency_days: f64,
    /// Orders before the cutoff.
    pub frequency: u32,
    /// Net spend (purchases minus refunds) before the cutoff.
    pub monetary: f64,
    /// Net spend in the horizon-long period just before the cutoff.
    pub last_period_spend: f64,
    /// BG/NBD `x`: repeat purchase days (distinct purchase days − 1).
    pub x: f64,
    /// BG/NBD `t_x`: days from the first to the last purchase.
    pub t_x: f64,
    /// BG/NBD `T`: days from the first purchase to the cutoff.
    pub t: f64,
    /// Distinct purchase days: the transactions BG/NBD counts.
    pub purchase_days: u32,
    /// Purchase revenue (refunds not deducted) per purchase day: the Gamma-Gamma value.
    pub value_per_purchase_day: f64,
}

impl Customer {
    /// The summary of `history` as seen at `cutoff_ms`.
    pub fn from_history(history: &History, cutoff_ms: i64) -> Self {
        let days = |ms: i64| (ms.max(0) as f64) / DAY_MS;
        let money = |cents: i64| cents as f64 / 100.0;
        let monetary = money(history.spend_cents);
        let last_period_spend = money(history.last_period_spend_cents);
        match (history.first_purchase_ms, history.last_purchase_ms) {
            (Some(first), Some(last)) if history.orders > 0 => {
                let purchase_days = history.purchase_days.max(1);
                let t_x = days(last - first);
                Self {
                    has_purchased: true,
                    recency_days: days(cutoff_ms - last).min(RECENCY_CAP_DAYS),
                    frequency: history.orders,
                    monetary,
                    last_period_spend,
                    x: f64::from(purchase_days - 1),
                    t_x,
                    t: days(cutoff_ms - first).max(t_x),
                    purchase_days,
                    value_per_purchase_day: money(history.purchase_cents)
                        / f64::from(purchase_days),
                }
            }
            _ => Self {
                has_purchased: false,
                recency_days: RECENCY_CAP_DAYS,
                frequency: 0,
                monetary,
                last_period_spend,
                x: 0.0,
                t_x: 0.0,
                t: 0.0,
                purchase_days: 0,
                value_per_purchase_day: 0.0,
            },
        }
    }

    /// The BG/NBD summary, for customers who have purchased.
    pub fn purchase_summary(&self) -> Option<PurchaseSummary> {
        self.has_purchased.then_some(PurchaseSummary {
            x: self.x,
            t_x: self.t_x,
            t: self.t,
        })
    }

    /// The Gamma-Gamma summary, for customers who have purchased something of value.
    pub fn value_summary(&self) -> Option<ValueSummary> {
        (self.has_purchased && self.value_per_purchase_day > 0.0).then_some(ValueSummary {
            transactions: f64::from(self.purchase_days),
            mean_value: self.value_per_purchase_day,
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BaselineError {
    #[error("{customers} training customers but {truth} training outcomes")]
    LengthMismatch { customers: usize, truth: usize },
    #[error("no training customers")]
    Empty,
    #[error("{model} needs at least {needed} training customers {which}, found {found}")]
    TooFewCustomers {
        model: &'static str,
        which: &'static str,
        needed: usize,
        found: usize,
    },
    #[error("{model}: maximum likelihood found no finite optimum")]
    NoOptimum { model: &'static str },
}

/// A classic method: fitted on training customers and what they did next, then predicting
/// tier, churn probability and spend for other customers.
pub trait Baseline: std::fmt::Debug {
    fn name(&self) -> &'static str;

    /// Learns from `train` and its outcomes. `horizon_days` is the label horizon (and the
    /// length of the last period); `tier_shares` are the training share of each tier, tier 0
    /// lowest, which predicted tiers will match (see [`tiers_by_rank`]).
    fn fit(
        &mut self,
        train: &[Customer],
        truth: &Truth,
        horizon_days: f64,
        tier_shares: &[f64],
    ) -> Result<(), BaselineError>;

    /// # Panics
    /// If called before a successful [`Baseline::fit`].
    fn predict(&self, customers: &[Customer]) -> Predictions;
}

/// Every baseline, unfitted, in report order.
pub fn all() -> Vec<Box<dyn Baseline>> {
    vec![
        Box::new(RfmQuintiles::default()),
        Box::new(LastPeriodSpend::default()),
        Box::new(BgNbdGammaGamma::default()),
    ]
}

/// Share of each tier `0..k` in `tiers` (all 0 for no rows).
pub fn tier_shares(tiers: &[u8], k: usize) -> Vec<f64> {
    let mut counts = vec![0_usize; k];
    for t in tiers {
        if let Some(c) = counts.get_mut(usize::from(*t)) {
            *c += 1;
        }
    }
    let n = tiers.len().max(1) as f64;
    counts.iter().map(|c| *c as f64 / n).collect()
}

/// Tiers by rank of `scores` (tier 0 = lowest scores) so that the number of rows per tier
/// matches `shares` as closely as whole rows allow (largest-remainder rounding; negative or
/// non-finite shares count as 0; no positive share puts every row in tier 0).
///
/// Ties are broken by a fixed hash of the row position: deterministic, but unrelated to
/// input order, which may be sorted by something that correlates with the outcome.
pub fn tiers_by_rank(scores: &[f64], shares: &[f64]) -> Vec<u8> {
    let n = scores.len();
    let counts = tier_counts(n, shares);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|i, j| {
        scores[*i]
            .total_cmp(&scores[*j])
            .then_with(|| splitmix64(*i as u64).cmp(&splitmix64(*j as u64)))
    });
    let mut tiers = vec![0_u8; n];
    let mut rows = order.into_iter();
    for (tier, count) in counts.iter().enumerate() {
        for row in rows.by_ref().take(*count) {
            tiers[row] = u8::try_from(tier).unwrap_or(u8::MAX);
        }
    }
    tiers
}

/// Rows per tier: `n · share`, rounded by largest remainder so they sum to `n`.
fn tier_counts(n: usize, shares: &[f64]) -> Vec<usize> {
    let clean: Vec<f64> = shares
        .iter()
        .map(|s| if s.is_finite() && *s > 0.0 { *s } else { 0.0 })
        .collect();
    let total: f64 = clean.iter().sum();
    if total <= 0.0 {
        let mut counts = vec![0; shares.len().max(1)];
        counts[0] = n;
        return counts;
    }
    let quotas: Vec<f64> = clean.iter().map(|s| s / total * n as f64).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..quotas.len()).collect();
    by_remainder.sort_by(|i, j| {
        let (ri, rj) = (quotas[*i].fract(), quotas[*j].fract());
        rj.total_cmp(&ri).then(i.cmp(j))
    });
    let missing = n.saturating_sub(counts.iter().sum());
    for tier in by_remainder.into_iter().take(missing) {
        counts[tier] += 1;
    }
    counts
}

/// A fixed 64-bit mix (SplitMix64's finaliser): a stable pseudo-random key per position.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Training outcomes averaged per group (an RFM score, a spend band): mean future spend and
/// churn rate, with the overall training means for a group no training customer fell in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupOutcomes {
    pub spend: Vec<f64>,
    pub churn: Vec<f64>,
    /// Training customers per group.
    pub count: Vec<u64>,
    pub overall_spend: f64,
    pub overall_churn: f64,
}

impl GroupOutcomes {
    fn fit(groups: &[usize], truth: &Truth, group_count: usize) -> Self {
        let mut spend = vec![0.0; group_count];
        let mut churned = vec![0_u64; group_count];
        let mut count = vec![0_u64; group_count];
        for ((g, s), c) in groups.iter().zip(&truth.spend).zip(&truth.churned) {
            spend[*g] += s;
            churned[*g] += u64::from(*c);
            count[*g] += 1;
        }
        let n = groups.len().max(1) as f64;
        let overall_spend = spend.iter().sum::<f64>() / n;
        let overall_churn = churned.iter().sum::<u64>() as f64 / n;
        let mean = |sum: f64, c: u64, fallback: f64| if c == 0 { fallback } else { sum / c as f64 };
        Self {
            spend: (0..group_count)
                .map(|g| mean(spend[g], count[g], overall_spend))
                .collect(),
            churn: (0..group_count)
                .map(|g| mean(churned[g] as f64, count[g], overall_churn))
                .collect(),
            count,
            overall_spend,
            overall_churn,
        }
    }
}

fn check_training(train: &[Customer], truth: &Truth) -> Result<(), BaselineError> {
    let shortest = truth.spend.len().min(truth.churned.len());
    if train.len() != shortest || truth.spend.len() != truth.churned.len() {
        return Err(BaselineError::LengthMismatch {
            customers: train.len(),
            truth: shortest,
        });
    }
    if train.is_empty() {
        return Err(BaselineError::Empty);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_from_history() {
        let day = 86_400_000_i64;
        let history = History {
            first_seen_ms: 0,
            orders: 4,
            purchase_days: 3,
            first_purchase_ms: Some(10 * day),
            last_purchase_ms: Some(40 * day),
            spend_cents: 9_000,
            purchase_cents: 12_000,
            last_period_spend_cents: 3_000,
        };
        let c = Customer::from_history(&history, 50 * day);
        assert!(c.has_purchased);
        assert_eq!((c.recency_days, c.frequency, c.monetary), (10.0, 4, 90.0));
        assert_eq!((c.x, c.t_x, c.t), (2.0, 30.0, 40.0));
        assert_eq!(
            (c.last_period_spend, c.value_per_purchase_day),
            (30.0, 40.0)
        );

        let never = Customer::from_history(&History::default(), 50 * day);
        assert!(!never.has_purchased && never.purchase_summary().is_none());
        assert_eq!(never.recency_days, RECENCY_CAP_DAYS);
        let long_ago = History {
            last_purchase_ms: Some(0),
            first_purchase_ms: Some(0),
            orders: 1,
            purchase_days: 1,
            ..History::default()
        };
        assert_eq!(
            Customer::from_history(&long_ago, 1000 * day).recency_days,
            RECENCY_CAP_DAYS
        );
    }

    /// Customers of every kind (never bought, bought once, regulars, lapsed, refunders) and
    /// a future that loosely follows their past.
    fn population(n: u32) -> (Vec<Customer>, Truth) {
        let day = 86_400_000_i64;
        let cutoff = 200 * day;
        let mut customers = Vec::new();
        let mut truth = Truth::default();
        for i in 0..n {
            let kind = i % 5;
            let days = (i * 7) % 13 + 1;
            let first = i64::from(10 + i % 50) * day;
            let last = if kind == 3 {
                first + 20 * day
            } else {
                cutoff - i64::from(i % 30) * day
            };
            let history = match kind {
                0 => History::default(),
                _ => History {
                    first_seen_ms: first,
                    orders: days + kind,
                    purchase_days: if kind == 1 { 1 } else { days },
                    first_purchase_ms: Some(first),
                    last_purchase_ms: Some(if kind == 1 { first } else { last }),
                    spend_cents: i64::from(days) * 2_500 - if kind == 4 { 3_000 } else { 0 },
                    purchase_cents: i64::from(days) * 2_500,
                    last_period_spend_cents: if kind == 2 { i64::from(days) * 800 } else { 0 },
                },
            };
            customers.push(Customer::from_history(&history, cutoff));
            let spend = if kind == 2 || (kind == 4 && i % 3 == 0) {
                f64::from(days) * 9.0
            } else {
                0.0
            };
            truth
                .tiers
                .push(u8::from(spend > 0.0) + u8::from(spend > 60.0));
            truth.churned.push(spend == 0.0);
            truth.spend.push(spend);
        }
        (customers, truth)
    }

    #[test]
    fn every_baseline_fits_and_gives_finite_predictions() {
        let (train, train_truth) = population(600);
        let (test, test_truth) = population(250);
        let shares = tier_shares(&train_truth.tiers, 3);
        for mut baseline in all() {
            baseline
                .fit(&train, &train_truth, 30.0, &shares)
                .expect("fits");
            let predictions = baseline.predict(&test);
            assert_eq!(predictions.len(), test.len(), "{}", baseline.name());
            let evaluation = crate::metrics::evaluate(&test_truth, &predictions, 3);
            let json = serde_json::to_string(&evaluation).expect("serialises");
            assert!(!json.contains("null"), "{}: {json}", baseline.name());
            // Each of these baselines ranks future buyers above non-buyers here.
            assert!(
                evaluation.churn.auc > 0.5,
                "{}: {evaluation:?}",
                baseline.name()
            );
        }
    }

    #[test]
    fn fitting_checks_its_inputs() {
        let (train, truth) = population(20);
        for mut baseline in all() {
            let short = Truth {
                spend: truth.spend[..10].to_vec(),
                churned: truth.churned[..10].to_vec(),
                tiers: truth.tiers[..10].to_vec(),
            };
            let err = baseline
                .fit(&train, &short, 30.0, &[1.0])
                .expect_err("mismatch");
            assert!(matches!(err, BaselineError::LengthMismatch { .. }), "{err}");
            let err = baseline
                .fit(&[], &Truth::default(), 30.0, &[1.0])
                .expect_err("empty");
            assert_eq!(err, BaselineError::Empty);
        }
    }

    #[test]
    fn tiers_by_rank_matches_shares() {
        let check = |scores: &[f64], shares: &[f64], expected: &[u8]| {
            assert_eq!(
                tiers_by_rank(scores, shares),
                expected,
                "{scores:?} {shares:?}"
            );
        };
        check(
            &[5.0, 1.0, 3.0, 2.0, 4.0],
            &[0.4, 0.4, 0.2],
            &[2, 0, 1, 0, 1],
        );
        // Largest remainder: 10 · (1/3, 1/3, 1/3) = 3.33 each → 4, 3, 3.
        let scores: Vec<f64> = (0..10).map(f64::from).collect();
        check(&scores, &[1.0, 1.0, 1.0], &[0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        check(&[1.0, 2.0], &[], &[0, 0]);
        check(&[1.0, 2.0], &[0.0, f64::NAN], &[0, 0]);
        check(&[], &[0.5, 0.5], &[]);
    }

    #[test]
    fn tiers_by_rank_splits_ties_by_a_fixed_hash_not_input_order() {
        let scores = vec![0.0; 1000];
        let tiers = tiers_by_rank(&scores, &[0.5, 0.5]);
        assert_eq!(tiers.iter().filter(|t| **t == 1).count(), 500);
        // The first half of the rows is not simply tier 0.
        let first_half_high = tiers[..500].iter().filter(|t| **t == 1).count();
        assert!((150..350).contains(&first_half_high), "{first_half_high}");
        assert_eq!(tiers, tiers_by_rank(&scores, &[0.5, 0.5]));
    }

    #[test]
    fn tier_shares_count_each_tier() {
        assert_eq!(tier_shares(&[0, 1, 1, 3], 4), vec![0.25, 0.5, 0.0, 0.25]);
        assert_eq!(tier_shares(&[], 2), vec![0.0, 0.0]);
    }

    #[test]
    fn group_outcomes_fall_back_to_the_overall_mean() {
        let truth = Truth {
            tiers: vec![0; 4],
            churned: vec![true, false, false, true],
            spend: vec![0.0, 10.0, 30.0, 0.0],
        };
        let outcomes = GroupOutcomes::fit(&[0, 1, 1, 0], &truth, 3);
        assert_eq!(outcomes.spend, vec![0.0, 20.0, 10.0]);
        assert_eq!(outcomes.churn, vec![1.0, 0.0, 0.5]);
        assert_eq!(outcomes.count, vec![2, 2, 0]);
    }
}
