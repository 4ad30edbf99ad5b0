//! Evaluation metrics, classic baselines and report plots (placeholder until the module lands).
