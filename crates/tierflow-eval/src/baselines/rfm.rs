//! RFM quintile score: the oldest segmentation in direct marketing. Recency, frequency and
//! monetary value are each cut into quintiles on the training customers, scored 1 (worst)
//! to 5 (best), and summed; each score 3..=15 predicts its training customers' outcomes.

use serde::{Deserialize, Serialize};

use super::{Baseline, BaselineError, Customer, GroupOutcomes, check_training, tiers_by_rank};
use crate::metrics::{Predictions, Truth};

/// The 20th, 40th, 60th and 80th percentiles of `values` by nearest rank
/// (`sorted[⌈k·n/5⌉ − 1]`); all 0 for no values.
pub fn quintile_edges(values: &[f64]) -> [f64; 4] {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    std::array::from_fn(|k| {
        if n == 0 {
            0.0
        } else {
            sorted[((k + 1) * n).div_ceil(5).saturating_sub(1)]
        }
    })
}

/// 1..=5: one plus the number of edges strictly below `value` (higher values are better).
/// Values tied at an edge share the lower quintile, so a mass of ties at the bottom (the
/// many customers with no orders) all score 1.
pub fn quintile_score(value: f64, edges: &[f64; 4]) -> u8 {
    1 + edges.iter().filter(|e| **e < value).count() as u8
}

const SCORES: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmFit {
    /// Edges of the negated recency (so that, as for F and M, higher is better).
    pub recency_edges: [f64; 4],
    pub frequency_edges: [f64; 4],
    pub monetary_edges: [f64; 4],
    /// Indexed by score 0..=15 (0..=2 never occur).
    pub outcomes: GroupOutcomes,
    pub tier_shares: Vec<f64>,
}

impl RfmFit {
    /// R + F + M, 3..=15.
    pub fn score(&self, c: &Customer) -> u8 {
        quintile_score(-c.recency_days, &self.recency_edges)
            + quintile_score(f64::from(c.frequency), &self.frequency_edges)
            + quintile_score(c.monetary, &self.monetary_edges)
    }
}

/// Expected spend = mean training future spend of customers with the same RFM score;
/// churn probability = their churn rate. A score no training customer had gets the overall
/// training mean and rate.
#[derive(Debug, Clone, Default)]
pub struct RfmQuintiles {
    pub fitted: Option<RfmFit>,
}

impl Baseline for RfmQuintiles {
    fn name(&self) -> &'static str {
        "RFM quintile score"
    }

    fn fit(
        &mut self,
        train: &[Customer],
        truth: &Truth,
        _horizon_days: f64,
        tier_shares: &[f64],
    ) -> Result<(), BaselineError> {
        check_training(train, truth)?;
        let column = |f: fn(&Customer) -> f64| train.iter().map(f).collect::<Vec<f64>>();
        let mut fit = RfmFit {
            recency_edges: quintile_edges(&column(|c| -c.recency_days)),
            frequency_edges: quintile_edges(&column(|c| f64::from(c.frequency))),
            monetary_edges: quintile_edges(&column(|c| c.monetary)),
            outcomes: GroupOutcomes::default(),
            tier_shares: tier_shares.to_vec(),
        };
        let scores: Vec<usize> = train.iter().map(|c| usize::from(fit.score(c))).collect();
        fit.outcomes = GroupOutcomes::fit(&scores, truth, SCORES);
        self.fitted = Some(fit);
        Ok(())
    }

    fn predict(&self, customers: &[Customer]) -> Predictions {
        let fit = self.fitted.as_ref().expect("RfmQuintiles::fit first");
        let scores: Vec<usize> = customers
            .iter()
            .map(|c| usize::from(fit.score(c)))
            .collect();
        let spend: Vec<f64> = scores.iter().map(|s| fit.outcomes.spend[*s]).collect();
        Predictions {
            tiers: tiers_by_rank(&spend, &fit.tier_shares),
            churn: scores.iter().map(|s| fit.outcomes.churn[*s]).collect(),
            spend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(recency_days: f64, frequency: u32, monetary: f64) -> Customer {
        Customer {
            has_purchased: frequency > 0,
            recency_days,
            frequency,
            monetary,
            last_period_spend: 0.0,
            x: 0.0,
            t_x: 0.0,
            t: 0.0,
            purchase_days: frequency,
            value_per_purchase_day: 0.0,
        }
    }

    #[test]
    fn quintile_edges_by_nearest_rank() {
        let check = |values: &[f64], expected: [f64; 4]| {
            assert_eq!(quintile_edges(values), expected, "{values:?}");
        };
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        check(&ten, [2.0, 4.0, 6.0, 8.0]);
        // n = 7: ranks ⌈1.4⌉, ⌈2.8⌉, ⌈4.2⌉, ⌈5.6⌉ = 2, 3, 5, 6.
        check(
            &[70.0, 10.0, 60.0, 20.0, 50.0, 30.0, 40.0],
            [20.0, 30.0, 50.0, 60.0],
        );
        check(&[0.0, 0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]);
        check(&[], [0.0; 4]);
    }

    #[test]
    fn quintile_scores_put_ties_at_an_edge_in_the_lower_quintile() {
        let edges = [2.0, 4.0, 6.0, 8.0];
        let scores: Vec<u8> = (1..=10)
            .map(|v| quintile_score(f64::from(v), &edges))
            .collect();
        assert_eq!(scores, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        // Mostly zeros: the zeros score 1, the one buyer 5.
        let edges = quintile_edges(&[0.0, 0.0, 0.0, 0.0, 5.0]);
        assert_eq!(
            (quintile_score(0.0, &edges), quintile_score(5.0, &edges)),
            (1, 5)
        );
    }

    #[test]
    fn rfm_scores_and_predicts_per_score_means() {
        // Ten customers, each better than the last on R, F and M.
        let train: Vec<Customer> = (1..=10)
            .map(|i| customer(f64::from(100 - 10 * i), i, f64::from(10 * i)))
            .collect();
        let truth = Truth {
            tiers: vec![0; 10],
            churned: (1..=10).map(|i| i <= 5).collect(),
            spend: (1..=10).map(|i| f64::from(i * i)).collect(),
        };
        let mut rfm = RfmQuintiles::default();
        rfm.fit(&train, &truth, 30.0, &[0.5, 0.5]).expect("fits");
        let fit = rfm.fitted.as_ref().expect("fitted");
        let scores: Vec<u8> = train.iter().map(|c| fit.score(c)).collect();
        assert_eq!(scores, vec![3, 3, 6, 6, 9, 9, 12, 12, 15, 15]);

        let predictions = rfm.predict(&[train[0], train[9], customer(0.0, 1, 1e6)]);
        // Score 3: mean of 1 and 4; score 15: mean of 81 and 100.
        assert_eq!(predictions.spend[..2], [2.5, 90.5]);
        assert_eq!(predictions.churn[..2], [1.0, 0.0]);
        // R 5 + F 1 + M 5 = 11: no training customer, so the overall mean.
        assert_eq!(predictions.spend[2], 38.5);
        assert_eq!(predictions.tiers, vec![0, 1, 0]);
    }
}
