//! Last-period spend: "next period looks like the last one". The spend forecast is the net
//! spend of the horizon-long period before the cutoff; churn is the training churn rate of
//! customers in the same band of that spend.

use serde::{Deserialize, Serialize};

use super::{Baseline, BaselineError, Customer, GroupOutcomes, check_training, tiers_by_rank};
use crate::metrics::{Predictions, Truth};

/// Band 0: no positive spend in the last period; bands 1..=4: quartiles of the positive
/// training spends.
const BANDS: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastPeriodFit {
    /// Quartile edges (nearest rank) of the positive last-period spends in training.
    pub edges: [f64; 3],
    pub outcomes: GroupOutcomes,
    pub tier_shares: Vec<f64>,
}

impl LastPeriodFit {
    pub fn band(&self, c: &Customer) -> usize {
        if c.last_period_spend > 0.0 {
            1 + self
                .edges
                .iter()
                .filter(|e| **e < c.last_period_spend)
                .count()
        } else {
            0
        }
    }
}

/// Predicted spend = last-period net spend (a net refund predicts 0); churn probability =
/// the training churn rate in the customer's band (no spend, or a quartile of positive
/// spend). Tied spends (most often 0) are ranked into tiers by [`tiers_by_rank`]'s hash.
#[derive(Debug, Clone, Default)]
pub struct LastPeriodSpend {
    pub fitted: Option<LastPeriodFit>,
}

impl Baseline for LastPeriodSpend {
    fn name(&self) -> &'static str {
        "last-period spend"
    }

    fn fit(
        &mut self,
        train: &[Customer],
        truth: &Truth,
        _horizon_days: f64,
        tier_shares: &[f64],
    ) -> Result<(), BaselineError> {
        check_training(train, truth)?;
        let mut positive: Vec<f64> = train
            .iter()
            .map(|c| c.last_period_spend)
            .filter(|s| *s > 0.0)
            .collect();
        positive.sort_by(f64::total_cmp);
        let n = positive.len();
        let edges = std::array::from_fn(|k| {
            if n == 0 {
                0.0
            } else {
                positive[((k + 1) * n).div_ceil(4).saturating_sub(1)]
            }
        });
        let mut fit = LastPeriodFit {
            edges,
            outcomes: GroupOutcomes::default(),
            tier_shares: tier_shares.to_vec(),
        };
        let bands: Vec<usize> = train.iter().map(|c| fit.band(c)).collect();
        fit.outcomes = GroupOutcomes::fit(&bands, truth, BANDS);
        self.fitted = Some(fit);
        Ok(())
    }

    fn predict(&self, customers: &[Customer]) -> Predictions {
        let fit = self.fitted.as_ref().expect("LastPeriodSpend::fit first");
        let spend: Vec<f64> = customers
            .iter()
            .map(|c| c.last_period_spend.max(0.0))
            .collect();
        Predictions {
            tiers: tiers_by_rank(&spend, &fit.tier_shares),
            churn: customers
                .iter()
                .map(|c| fit.outcomes.churn[fit.band(c)])
                .collect(),
            spend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spent(last_period_spend: f64) -> Customer {
        Customer {
            has_purchased: true,
            recency_days: 1.0,
            frequency: 1,
            monetary: last_period_spend,
            last_period_spend,
            x: 0.0,
            t_x: 0.0,
            t: 1.0,
            purchase_days: 1,
            value_per_purchase_day: last_period_spend,
        }
    }

    #[test]
    fn bands_and_rates() {
        let train: Vec<Customer> = [0.0, 0.0, -5.0, 10.0, 20.0, 30.0, 40.0]
            .into_iter()
            .map(spent)
            .collect();
        let truth = Truth {
            tiers: vec![0; 7],
            churned: vec![true, true, false, true, false, false, false],
            spend: vec![0.0, 0.0, 3.0, 0.0, 25.0, 35.0, 45.0],
        };
        let mut baseline = LastPeriodSpend::default();
        baseline
            .fit(&train, &truth, 30.0, &[0.5, 0.5])
            .expect("fits");
        let fit = baseline.fitted.as_ref().expect("fitted");
        assert_eq!(fit.edges, [10.0, 20.0, 30.0]);
        let bands: Vec<usize> = train.iter().map(|c| fit.band(c)).collect();
        assert_eq!(bands, vec![0, 0, 0, 1, 2, 3, 4]);

        let predictions = baseline.predict(&[spent(-1.0), spent(15.0), spent(1000.0)]);
        assert_eq!(predictions.spend, vec![0.0, 15.0, 1000.0]);
        assert_eq!(predictions.churn, vec![2.0 / 3.0, 0.0, 0.0]);
        assert_eq!(predictions.tiers, vec![0, 0, 1]);
    }
}
