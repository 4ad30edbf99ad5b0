//! How good a customer-value model is, and whether it beats what an analyst already has:
//! metrics for tiers, churn and spend ([`metrics`]), the classic baselines fitted on the
//! same training rows ([`baselines`]: RFM, last-period spend, BG/NBD + Gamma-Gamma), the
//! model-versus-best-baseline comparison ([`report`]), SVG plots ([`plots`]) and the drift of
//! a live population from the training one ([`drift`]).
//!
//! Pure: no clock, no model code, no I/O except writing the plot files.

pub mod baselines;
pub mod drift;
pub mod metrics;
mod optimize;
pub mod plots;
pub mod report;

pub use baselines::{Baseline, BaselineError, Customer, tiers_by_rank};
pub use metrics::{Evaluation, MetricsError, Predictions, Truth, evaluate};
pub use plots::PlotError;
pub use report::{Comparison, Margin, Metric};
