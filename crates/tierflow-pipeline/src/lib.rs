//! The streaming job behind `tierflow run`: a Kafka consumer-group member that turns the
//! clickstream into per-user windows in Redis, scores every update with the value model,
//! applies the tier policy and publishes `tier_changed`, `user_score` and dead letters,
//! committing offsets only after state and outputs are durable.
//!
//! [`process`] is the deterministic, I/O-free core (also the reference for replays and
//! tests); [`run`] drives it against Kafka and a [`tierflow_store::StateStore`];
//! [`telemetry`] has the metric names and the `/metrics`, `/healthz`, `/readyz` endpoints.

pub mod campaigns;
pub mod config;
pub mod history;
mod leases;
pub mod monitor;
pub mod offline;
pub mod policy;
pub mod process;
pub mod run;
pub mod telemetry;

pub use campaigns::{Campaigns, Fired, Governance, Outcome, RulesWatcher};
pub use config::{DriftConfig, PipelineConfig, TopicsConfig};
pub use monitor::DriftMonitor;
pub use policy::{Decision, TierPolicy};
pub use process::{BatchCounts, Input, Processed, Rejected, process, tier_change_key, users_of};
pub use run::{Pipeline, PipelineError, RunSummary, shutdown_on_signals};
pub use telemetry::Health;
