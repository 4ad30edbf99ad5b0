//! The tier policy: when a new score moves a user's published tier. A user near a boundary
//! must not flap, so a move needs a margin past the boundary and, optionally, a minimum time
//! in the current tier. Pure and in event time: a replay reaches the same decisions.

use serde::{Deserialize, Serialize};
use tierflow_events::Tier;
use tierflow_features::Published;

/// Hysteresis settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierPolicy {
    /// A move from tier `c` to the most probable tier `t` needs `p[t] - p[c] >= margin`
    /// (the boundary is `p[t] = p[c]`). 0 = move whenever the most probable tier changes.
    pub margin: f32,
    /// Minimum event time a user stays in a tier before moving again; 0 = none.
    pub min_dwell_secs: u64,
}

impl Default for TierPolicy {
    fn default() -> Self {
        Self {
            margin: 0.10,
            min_dwell_secs: 0,
        }
    }
}

/// What the policy decided for one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The user's first score: `to` is published with no `from`.
    First { to: Tier },
    /// A real transition.
    Move { from: Tier, to: Tier },
    /// No change (same tier, inside the margin, or still dwelling).
    Stay { tier: Tier },
}

impl Decision {
    /// The published tier after this decision.
    pub fn tier(self) -> Tier {
        match self {
            Self::First { to } | Self::Move { to, .. } => to,
            Self::Stay { tier } => tier,
        }
    }

    /// `(from, to)` when a `tier_changed` is published.
    pub fn change(self) -> Option<(Option<Tier>, Tier)> {
        match self {
            Self::First { to } => Some((None, to)),
            Self::Move { from, to } => Some((Some(from), to)),
            Self::Stay { .. } => None,
        }
    }
}

impl TierPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.margin) {
            return Err(format!(
                "pipeline.policy.margin must be in [0, 1), got {}",
                self.margin
            ));
        }
        Ok(())
    }

    /// Decides on one score of a user at event time `at_ms` and updates `published`.
    /// `probabilities` is indexed by tier; a tier the current model does not have (after a
    /// model with fewer tiers was deployed) counts as probability 0.
    pub fn decide(&self, published: &mut Published, probabilities: &[f32], at_ms: i64) -> Decision {
        let best = most_probable(probabilities);
        let decision = match published.tier {
            None => Decision::First { to: best },
            Some(current) if current == best => Decision::Stay { tier: current },
            Some(current) => {
                let p = |t: Tier| probabilities.get(usize::from(t)).copied().unwrap_or(0.0);
                let past_margin = p(best) - p(current) >= self.margin;
                let dwelled = at_ms.saturating_sub(published.tier_since_ms)
                    >= (self.min_dwell_secs as i64).saturating_mul(1000);
                if past_margin && dwelled {
                    Decision::Move {
                        from: current,
                        to: best,
                    }
                } else {
                    Decision::Stay { tier: current }
                }
            }
        };
        if decision.change().is_some() {
            published.tier = Some(decision.tier());
            published.tier_since_ms = at_ms;
        }
        decision
    }
}

/// Whether a `user_score` record is due for a score at `at_ms` (every update with interval
/// 0; otherwise at most one per interval of event time, and always on a tier change); when
/// due, it is recorded in `published`.
pub fn take_score_slot(
    published: &mut Published,
    at_ms: i64,
    min_interval_secs: u64,
    decision: Decision,
) -> bool {
    let min_interval_ms = (min_interval_secs as i64).saturating_mul(1000);
    let due = decision.change().is_some()
        || match published.score_ms {
            None => true,
            Some(last) => at_ms.saturating_sub(last) >= min_interval_ms,
        };
    if due {
        published.score_ms = Some(at_ms);
    }
    due
}

/// The most probable tier, the lowest on a tie (as `ScoreBatch::tier`).
pub fn most_probable(probabilities: &[f32]) -> Tier {
    let mut best = 0;
    for (i, p) in probabilities.iter().enumerate() {
        if *p > probabilities[best] {
            best = i;
        }
    }
    best.min(usize::from(Tier::MAX)) as Tier
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(margin: f32, dwell: u64) -> TierPolicy {
        TierPolicy {
            margin,
            min_dwell_secs: dwell,
        }
    }

    #[test]
    fn first_score_publishes_the_most_probable_tier() {
        let mut published = Published::default();
        let d = policy(0.1, 0).decide(&mut published, &[0.1, 0.2, 0.7], 1_000);
        assert_eq!(d, Decision::First { to: 2 });
        assert_eq!(published.tier, Some(2));
        assert_eq!(published.tier_since_ms, 1_000);
    }

    #[test]
    fn a_move_needs_the_margin() {
        let p = policy(0.1, 0);
        let mut published = Published {
            tier: Some(1),
            tier_since_ms: 0,
            score_ms: None,
        };
        // Tier 2 is most probable, but only 0.05 ahead of tier 1: stay.
        assert_eq!(
            p.decide(&mut published, &[0.0, 0.45, 0.5], 10),
            Decision::Stay { tier: 1 }
        );
        assert_eq!(published.tier_since_ms, 0);
        // 0.2 ahead: move.
        assert_eq!(
            p.decide(&mut published, &[0.0, 0.35, 0.55, 0.1], 20),
            Decision::Move { from: 1, to: 2 }
        );
        assert_eq!(published.tier, Some(2));
        assert_eq!(published.tier_since_ms, 20);
    }

    #[test]
    fn a_move_waits_for_the_dwell_time() {
        let p = policy(0.0, 60);
        let mut published = Published {
            tier: Some(0),
            tier_since_ms: 1_000,
            score_ms: None,
        };
        assert_eq!(
            p.decide(&mut published, &[0.1, 0.9], 1_000 + 59_999),
            Decision::Stay { tier: 0 }
        );
        assert_eq!(
            p.decide(&mut published, &[0.1, 0.9], 1_000 + 60_000),
            Decision::Move { from: 0, to: 1 }
        );
    }

    #[test]
    fn a_tier_the_model_no_longer_has_is_left_for_the_best() {
        let mut published = Published {
            tier: Some(7),
            tier_since_ms: 0,
            score_ms: None,
        };
        assert_eq!(
            policy(0.1, 0).decide(&mut published, &[0.2, 0.8], 5),
            Decision::Move { from: 7, to: 1 }
        );
    }

    fn probabilities(tiers: usize) -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(0.0f32..1.0, tiers).prop_map(|v| {
            let sum: f32 = v.iter().sum::<f32>().max(1e-6);
            v.into_iter().map(|x| x / sum).collect()
        })
    }

    proptest! {
        /// Any score sequence: the published tier only changes by a margin, every change is
        /// reported, and with a margin no pair of scores inside it makes the tier flap.
        #[test]
        fn changes_are_real_and_reported(
            margin in 0.0f32..0.5,
            scores in prop::collection::vec(probabilities(4), 1..60),
        ) {
            let p = policy(margin, 0);
            let mut published = Published::default();
            let mut last: Option<Tier> = None;
            for (i, probs) in scores.iter().enumerate() {
                let d = p.decide(&mut published, probs, i as i64);
                match d.change() {
                    Some((from, to)) => {
                        prop_assert_eq!(from, last);
                        prop_assert_ne!(Some(to), last);
                        if let Some(from) = from {
                            prop_assert!(probs[usize::from(to)] - probs[usize::from(from)] >= margin);
                        }
                        prop_assert_eq!(to, most_probable(probs));
                    }
                    None => prop_assert_eq!(Some(d.tier()), last),
                }
                last = published.tier;
                prop_assert_eq!(last, Some(d.tier()));
            }
        }

        /// Scores alternating between two tiers by less than the margin never flap.
        #[test]
        fn no_flapping_inside_the_margin(swing in 0.0f32..0.049, n in 2usize..50) {
            let p = policy(0.1, 0);
            let mut published = Published::default();
            let mut changes = 0;
            for i in 0..n {
                let a = 0.5 + if i % 2 == 0 { swing } else { -swing };
                if p.decide(&mut published, &[a, 1.0 - a], i as i64).change().is_some() {
                    changes += 1;
                }
            }
            prop_assert_eq!(changes, 1, "only the first score publishes");
        }
    }
}
