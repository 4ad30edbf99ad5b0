//! The comparison a model report is about: the model and every baseline on the same
//! held-out rows, and the model's margin over the best baseline on each headline metric.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::metrics::Evaluation;

/// A headline metric. Serialised as its [`Metric::id`] (`"tier_macro_f1"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    TierMacroF1,
    TierAccuracy,
    ChurnAuc,
    ChurnPrAuc,
    SpendGini,
    SpendSpearman,
    SpendDecileMape,
}

impl Metric {
    /// Every headline metric, in report order.
    pub const ALL: [Self; 7] = [
        Self::TierMacroF1,
        Self::TierAccuracy,
        Self::ChurnAuc,
        Self::ChurnPrAuc,
        Self::SpendGini,
        Self::SpendSpearman,
        Self::SpendDecileMape,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::TierMacroF1 => "tier_macro_f1",
            Self::TierAccuracy => "tier_accuracy",
            Self::ChurnAuc => "churn_auc",
            Self::ChurnPrAuc => "churn_pr_auc",
            Self::SpendGini => "spend_gini",
            Self::SpendSpearman => "spend_spearman",
            Self::SpendDecileMape => "spend_decile_mape",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::TierMacroF1 => "tier macro F1",
            Self::TierAccuracy => "tier accuracy",
            Self::ChurnAuc => "churn ROC AUC",
            Self::ChurnPrAuc => "churn PR AUC",
            Self::SpendGini => "spend normalised Gini",
            Self::SpendSpearman => "spend Spearman",
            Self::SpendDecileMape => "spend decile MAPE",
        }
    }

    /// Only decile MAPE, an error, is better lower.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Self::SpendDecileMape)
    }

    pub fn of(self, e: &Evaluation) -> f64 {
        match self {
            Self::TierMacroF1 => e.tier.macro_f1,
            Self::TierAccuracy => e.tier.accuracy,
            Self::ChurnAuc => e.churn.auc,
            Self::ChurnPrAuc => e.churn.pr_auc,
            Self::SpendGini => e.spend.normalized_gini,
            Self::SpendSpearman => e.spend.spearman,
            Self::SpendDecileMape => e.spend.decile_mape,
        }
    }

    /// Whether `a` is strictly better than `b` on this metric.
    fn better(self, a: f64, b: f64) -> bool {
        if self.higher_is_better() {
            a > b
        } else {
            a < b
        }
    }
}

/// The model against the best baseline on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    pub metric: Metric,
    pub model: f64,
    /// The first baseline (in report order) with the best value.
    pub best_baseline_name: String,
    pub best_baseline: f64,
    /// Signed so that positive means the model is better: `model − best` for metrics where
    /// higher is better, `best − model` for decile MAPE.
    pub margin: f64,
    /// `margin > 0`: a tie is not a win.
    pub model_wins: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub model: Evaluation,
    /// `(name, evaluation)` in report order.
    pub baselines: Vec<(String, Evaluation)>,
    /// One per [`Metric::ALL`]; empty when there are no baselines.
    pub margins: Vec<Margin>,
}

impl Comparison {
    pub fn new(model: Evaluation, baselines: Vec<(String, Evaluation)>) -> Self {
        let margins = Metric::ALL
            .into_iter()
            .filter_map(|metric| {
                let mut best: Option<(&str, f64)> = None;
                for (name, evaluation) in &baselines {
                    let value = metric.of(evaluation);
                    if best.is_none_or(|(_, b)| metric.better(value, b)) {
                        best = Some((name, value));
                    }
                }
                let (name, best) = best?;
                let model_value = metric.of(&model);
                let margin = if metric.higher_is_better() {
                    model_value - best
                } else {
                    best - model_value
                };
                Some(Margin {
                    metric,
                    model: model_value,
                    best_baseline_name: name.to_owned(),
                    best_baseline: best,
                    margin,
                    model_wins: margin > 0.0,
                })
            })
            .collect();
        Self {
            model,
            baselines,
            margins,
        }
    }

    pub fn margin(&self, metric: Metric) -> Option<&Margin> {
        self.margins.iter().find(|m| m.metric == metric)
    }

    /// Whether the model is strictly better than every baseline on each of `metrics`.
    /// False when there are no baselines: a gate should not pass for want of a comparison.
    pub fn model_beats_all_baselines_on(&self, metrics: &[Metric]) -> bool {
        metrics
            .iter()
            .all(|m| self.margin(*m).is_some_and(|m| m.model_wins))
    }

    /// Metrics as rows and the model and each baseline as columns (the best value of each
    /// row in bold), then the margins, then the model's per-tier metrics and confusion
    /// matrix.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let columns: Vec<(&str, &Evaluation)> = std::iter::once(("model", &self.model))
            .chain(self.baselines.iter().map(|(n, e)| (n.as_str(), e)))
            .collect();
        out.push_str("| metric |");
        for (name, _) in &columns {
            let _ = write!(out, " {} |", cell(name));
        }
        let _ = writeln!(out, "\n|---|{}", "---:|".repeat(columns.len()));
        for metric in Metric::ALL {
            let arrow = if metric.higher_is_better() {
                "↑"
            } else {
                "↓"
            };
            let values: Vec<f64> = columns.iter().map(|(_, e)| metric.of(e)).collect();
            let best = values
                .iter()
                .copied()
                .reduce(|a, b| if metric.better(b, a) { b } else { a });
            let _ = write!(out, "| {} {arrow} |", metric.label());
            for v in &values {
                if Some(*v) == best {
                    let _ = write!(out, " **{v:.4}** |");
                } else {
                    let _ = write!(out, " {v:.4} |");
                }
            }
            out.push('\n');
        }
        let extra: [(&str, Reading); 4] = [
            ("churn Brier score ↓", |e| e.churn.brier),
            ("churn base rate", |e| e.churn.base_rate),
            ("spend mean actual", |e| e.spend.mean_actual),
            ("spend mean predicted", |e| e.spend.mean_predicted),
        ];
        for (label, value) in extra {
            let _ = write!(out, "| {label} |");
            for (_, e) in &columns {
                let _ = write!(out, " {:.4} |", value(e));
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "\n{} test rows. ↑ higher is better, ↓ lower is better.",
            self.model.rows
        );

        if !self.margins.is_empty() {
            out.push_str(
                "\n| metric | model | best baseline | baseline value | margin | model wins |\n\
                 |---|---:|---|---:|---:|:---:|\n",
            );
            for m in &self.margins {
                let _ = writeln!(
                    out,
                    "| {} | {:.4} | {} | {:.4} | {:+.4} | {} |",
                    m.metric.label(),
                    m.model,
                    cell(&m.best_baseline_name),
                    m.best_baseline,
                    m.margin,
                    if m.model_wins { "yes" } else { "no" }
                );
            }
            out.push_str("\nMargin: how much better the model is than the best baseline (positive = better).\n");
        }

        out.push_str("\nModel, per tier:\n\n| tier | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|\n");
        for (t, c) in self.model.tier.per_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {t} | {:.4} | {:.4} | {:.4} | {} |",
                c.precision, c.recall, c.f1, c.support
            );
        }
        let k = self.model.tier.confusion.len();
        out.push_str(
            "\nModel confusion matrix (rows: actual tier, columns: predicted tier):\n\n| |",
        );
        for t in 0..k {
            let _ = write!(out, " {t} |");
        }
        let _ = writeln!(out, "\n|---|{}", "---:|".repeat(k));
        for (t, row) in self.model.tier.confusion.iter().enumerate() {
            let _ = write!(out, "| **{t}** |");
            for count in row {
                let _ = write!(out, " {count} |");
            }
            out.push('\n');
        }
        out
    }
}

/// Reads one number off an evaluation.
type Reading = fn(&Evaluation) -> f64;

/// A name safe inside a Markdown table cell.
fn cell(name: &str) -> String {
    name.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Predictions, Truth, evaluate};

    fn evaluation(macro_f1: f64, auc: f64, mape: f64) -> Evaluation {
        let mut e = evaluate(&Truth::default(), &Predictions::default(), 2);
        e.tier.macro_f1 = macro_f1;
        e.churn.auc = auc;
        e.spend.decile_mape = mape;
        e
    }

    fn comparison() -> Comparison {
        Comparison::new(
            evaluation(0.6, 0.70, 0.30),
            vec![
                ("RFM quintile score".to_owned(), evaluation(0.5, 0.75, 0.20)),
                (
                    "BG/NBD + Gamma-Gamma".to_owned(),
                    evaluation(0.55, 0.75, 0.40),
                ),
            ],
        )
    }

    #[test]
    fn margins_against_the_best_baseline_in_each_direction() {
        let c = comparison();
        let check = |metric: Metric, best: &str, margin: f64, wins: bool| {
            let m = c.margin(metric).expect("a margin");
            assert_eq!(m.best_baseline_name, best, "{metric:?}");
            assert!(
                (m.margin - margin).abs() < 1e-12,
                "{metric:?}: {}",
                m.margin
            );
            assert_eq!(m.model_wins, wins, "{metric:?}");
        };
        check(Metric::TierMacroF1, "BG/NBD + Gamma-Gamma", 0.05, true);
        // A tie between baselines goes to the first.
        check(Metric::ChurnAuc, "RFM quintile score", -0.05, false);
        // Lower is better: the best baseline has the smallest error.
        check(Metric::SpendDecileMape, "RFM quintile score", -0.1, false);
        // All equal: a tie is not a win.
        check(Metric::TierAccuracy, "RFM quintile score", 0.0, false);

        assert!(c.model_beats_all_baselines_on(&[Metric::TierMacroF1]));
        assert!(!c.model_beats_all_baselines_on(&[Metric::TierMacroF1, Metric::ChurnAuc]));
        let alone = Comparison::new(evaluation(1.0, 1.0, 0.0), Vec::new());
        assert!(alone.margins.is_empty());
        assert!(!alone.model_beats_all_baselines_on(&[Metric::TierMacroF1]));
    }

    #[test]
    fn serialises_metrics_by_id() {
        let json = serde_json::to_value(comparison()).expect("serialises");
        let ids: Vec<&str> = json["margins"]
            .as_array()
            .expect("margins")
            .iter()
            .map(|m| m["metric"].as_str().expect("a string"))
            .collect();
        let expected: Vec<&str> = Metric::ALL.iter().map(|m| m.id()).collect();
        assert_eq!(ids, expected);
        let back: Comparison = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, comparison());
    }

    #[test]
    fn markdown_has_a_column_per_model_and_the_margins() {
        let md = comparison().to_markdown();
        assert!(
            md.starts_with("| metric | model | RFM quintile score | BG/NBD + Gamma-Gamma |"),
            "{md}"
        );
        assert!(
            md.contains("| tier macro F1 ↑ | **0.6000** | 0.5000 | 0.5500 |"),
            "{md}"
        );
        assert!(
            md.contains("| spend decile MAPE ↓ | 0.3000 | **0.2000** | 0.4000 |"),
            "{md}"
        );
        assert!(
            md.contains("| churn ROC AUC | 0.7000 | RFM quintile score | 0.7500 | -0.0500 | no |"),
            "{md}"
        );
        assert!(md.contains("Model confusion matrix"), "{md}");
    }
}
