//! Metrics and health: every metric name in one place (dashboards and tests read them from
//! here), the Prometheus recorder, and the HTTP endpoints `/metrics`, `/healthz`, `/readyz`.
//! No user id is ever a label.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Records consumed, label `topic`.
pub const EVENTS_IN: &str = "tierflow_events_in_total";
/// Records produced and acknowledged, label `topic`.
pub const RECORDS_OUT: &str = "tierflow_records_out_total";
/// Seconds per stage of a batch, label `stage` (collect, decode, load, process, produce,
/// store, commit, batch).
pub const STAGE_SECONDS: &str = "tierflow_stage_seconds";
/// Records per batch.
pub const BATCH_RECORDS: &str = "tierflow_batch_records";
/// Consumer lag per partition (librdkafka statistics), labels `topic`, `partition`.
pub const CONSUMER_LAG: &str = "tierflow_consumer_lag";
/// Dead letters, label `reason` (a decode error kind, `too_late` or `corrupt_state`).
pub const DEAD_LETTERS: &str = "tierflow_dead_letters_total";
/// Redis round-trip seconds, label `op` (load, store).
pub const REDIS_SECONDS: &str = "tierflow_redis_seconds";
/// Seconds to score a batch's rows (forward passes and reason codes).
pub const SCORING_SECONDS: &str = "tierflow_scoring_seconds";
/// Rows scored, label `tier` (the published tier after the policy).
pub const SCORED: &str = "tierflow_scored_total";
/// Users whose published tier this process moved into each tier, net (label `tier`); the
/// sum over the group's processes is the tier distribution of users seen since start.
pub const TIER_USERS: &str = "tierflow_tier_users";
/// Tier changes, labels `from` (`none` for a first tier) and `to`.
pub const TIER_CHANGES: &str = "tierflow_tier_changes_total";
/// Inputs by outcome: applied, duplicate, replayed, too_late, corrupt_state, undecodable.
pub const OUTCOMES: &str = "tierflow_input_outcomes_total";
/// Retries of a stage after a retriable failure, label `stage`.
pub const RETRIES: &str = "tierflow_stage_retries_total";
/// Stages retrying or waiting too long right now (Redis or broker unavailable); above 0,
/// consumption is paused and `/readyz` fails.
pub const STALLED: &str = "tierflow_stalled";
/// Campaign rules that fired, by campaign and governance outcome (`send`,
/// `control_holdout`, `cooldown`, `daily_cap`, `budget`, `opted_out`, `lower_priority`,
/// `retired`).
pub const CAMPAIGN_DECISIONS: &str = "tierflow_campaign_decisions_total";
/// Purchases attributed to a campaign's trigger within its attribution window, by campaign
/// and arm (`treated`, `control`), counted when the `campaign_outcome` record is
/// acknowledged (a replay after a crash may count one again; the topic's idempotency keys
/// are exact).
pub const CAMPAIGN_OUTCOMES: &str = "tierflow_campaign_outcomes_total";
/// Revenue of those purchases in cents (whatever each purchase's currency), by campaign and
/// arm.
pub const CAMPAIGN_REVENUE_CENTS: &str = "tierflow_campaign_revenue_cents_total";
/// Errors the consumer reported (broker unreachable, fetch failures); logged at most every
/// 10 s.
pub const CONSUMER_ERRORS: &str = "tierflow_consumer_errors_total";
/// Polls of the rules file, label `outcome`: reloaded, unchanged, refused.
pub const RULES_RELOADS: &str = "tierflow_rules_reloads_total";
/// Partition leases taken from a previous owner that never released them.
pub const LEASE_TAKEOVERS: &str = "tierflow_lease_takeovers_total";
/// Offset commits that failed (the batch will be replayed, idempotently), label `reason`.
pub const COMMIT_FAILURES: &str = "tierflow_commit_failures_total";
/// Partitions assigned to this process.
pub const ASSIGNED_PARTITIONS: &str = "tierflow_assigned_partitions";
/// Model version in use (value 1), label `version`.
pub const MODEL_INFO: &str = "tierflow_model_info";
/// Event time to output acknowledgement, seconds (for live traffic; replays show their age).
pub const EVENT_TO_OUTPUT_SECONDS: &str = "tierflow_event_to_output_seconds";

/// Kafka transactions by outcome (committed, aborted), transactional mode.
pub const TRANSACTIONS: &str = "tierflow_transactions_total";
/// Users whose stored state was rolled back to its undo image (a transaction never committed).
pub const ROLLED_BACK: &str = "tierflow_rolled_back_total";

/// Population stability index of a live column against the model's training profile,
/// labels `kind` (`feature`, `score`) and `column` (feature name, or `churn_risk`,
/// `expected_value`, `tier`), over the drift window (`monitor.rs`).
pub const DRIFT_PSI: &str = "tierflow_drift_psi";
/// Binned Kolmogorov–Smirnov distance, same labels as [`DRIFT_PSI`].
pub const DRIFT_KS: &str = "tierflow_drift_ks";
/// Rows the drift window covers (0 when the model has no profile).
pub const DRIFT_ROWS: &str = "tierflow_drift_window_rows";
/// The largest PSI of any feature or score.
pub const DRIFT_MAX_PSI: &str = "tierflow_drift_max_psi";
/// Features and scores whose PSI is above `pipeline.drift.psi_threshold` (once the window
/// holds `min_rows`).
pub const DRIFT_COLUMNS_OVER: &str = "tierflow_drift_columns_over_threshold";
/// 1 when some feature or score drifted past the threshold: alert on it.
pub const DRIFT_ALERT: &str = "tierflow_drift_alert";

/// Every metric this crate exports (for dashboards and their tests).
pub const ALL: &[&str] = &[
    EVENTS_IN,
    RECORDS_OUT,
    STAGE_SECONDS,
    BATCH_RECORDS,
    CONSUMER_LAG,
    DEAD_LETTERS,
    REDIS_SECONDS,
    SCORING_SECONDS,
    SCORED,
    TIER_USERS,
    TIER_CHANGES,
    OUTCOMES,
    RETRIES,
    STALLED,
    CAMPAIGN_DECISIONS,
    CAMPAIGN_OUTCOMES,
    CAMPAIGN_REVENUE_CENTS,
    CONSUMER_ERRORS,
    RULES_RELOADS,
    LEASE_TAKEOVERS,
    COMMIT_FAILURES,
    ASSIGNED_PARTITIONS,
    MODEL_INFO,
    EVENT_TO_OUTPUT_SECONDS,
    TRANSACTIONS,
    ROLLED_BACK,
    DRIFT_PSI,
    DRIFT_KS,
    DRIFT_ROWS,
    DRIFT_MAX_PSI,
    DRIFT_COLUMNS_OVER,
    DRIFT_ALERT,
];

/// Installs the process-wide Prometheus recorder with histogram buckets fit for each metric.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let seconds = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)?
        .set_buckets_for_metric(
            Matcher::Full(BATCH_RECORDS.into()),
            &[1.0, 10.0, 100.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(EVENTS_IN, "Records consumed from the input topics");
    describe_counter!(CONSUMER_ERRORS, "Errors the consumer reported");
    describe_counter!(
        LEASE_TAKEOVERS,
        "Partition leases taken from a previous owner that never released them"
    );
    describe_counter!(
        RULES_RELOADS,
        "Polls of the campaign rules file, by outcome"
    );
    describe_counter!(
        CAMPAIGN_DECISIONS,
        "Campaign rules that fired, by campaign and governance outcome"
    );
    describe_counter!(
        CAMPAIGN_OUTCOMES,
        "Purchases attributed to a campaign trigger, by campaign and arm"
    );
    describe_counter!(
        CAMPAIGN_REVENUE_CENTS,
        "Revenue of attributed purchases in cents, by campaign and arm"
    );
    describe_counter!(RECORDS_OUT, "Records produced and acknowledged, per topic");
    describe_histogram!(STAGE_SECONDS, Unit::Seconds, "Time per pipeline stage");
    describe_histogram!(BATCH_RECORDS, Unit::Count, "Records per micro-batch");
    describe_gauge!(CONSUMER_LAG, Unit::Count, "Consumer lag per partition");
    describe_counter!(
        DEAD_LETTERS,
        "Records sent to the dead-letter topic, by reason"
    );
    describe_histogram!(REDIS_SECONDS, Unit::Seconds, "Redis round-trip time");
    describe_histogram!(
        SCORING_SECONDS,
        Unit::Seconds,
        "Model scoring time per batch"
    );
    describe_counter!(SCORED, "Rows scored, by published tier");
    describe_gauge!(TIER_USERS, "Net users moved into each tier by this process");
    describe_counter!(TIER_CHANGES, "Tier changes published, by from and to tier");
    describe_counter!(OUTCOMES, "Input records by outcome");
    describe_counter!(RETRIES, "Retries after retriable failures, by stage");
    describe_gauge!(
        STALLED,
        "Stages retrying or waiting too long; consumption is paused above 0"
    );
    describe_counter!(
        COMMIT_FAILURES,
        "Failed offset commits (replayed idempotently)"
    );
    describe_gauge!(ASSIGNED_PARTITIONS, "Partitions assigned to this process");
    describe_gauge!(MODEL_INFO, "Model version in use");
    describe_counter!(TRANSACTIONS, "Kafka transactions by outcome");
    describe_counter!(
        ROLLED_BACK,
        "User states rolled back from uncommitted transactions"
    );
    describe_gauge!(
        DRIFT_PSI,
        "Population stability index of a live feature or score against the model's training profile"
    );
    describe_gauge!(
        DRIFT_KS,
        "Binned Kolmogorov-Smirnov distance of a live feature or score from the training profile"
    );
    describe_gauge!(DRIFT_ROWS, Unit::Count, "Scored rows in the drift window");
    describe_gauge!(DRIFT_MAX_PSI, "Largest PSI of any feature or score");
    describe_gauge!(
        DRIFT_COLUMNS_OVER,
        "Features and scores with PSI above pipeline.drift.psi_threshold"
    );
    describe_gauge!(
        DRIFT_ALERT,
        "1 when a feature or score drifted past pipeline.drift.psi_threshold"
    );
    describe_histogram!(
        EVENT_TO_OUTPUT_SECONDS,
        Unit::Seconds,
        "Event time to acknowledged output"
    );
}

/// What `/healthz` and `/readyz` report.
#[derive(Debug, Default)]
pub struct Health {
    /// The consumer joined its group and no stage is stalled.
    joined: AtomicBool,
    /// Stages stalled right now (the loading and the durable stage run concurrently).
    stalled: AtomicU64,
    /// Batches and records completed (for logs and tests).
    batches: AtomicU64,
    records: AtomicU64,
    rolled_back: AtomicU64,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_joined(&self, joined: bool) {
        self.joined.store(joined, Ordering::SeqCst);
    }

    /// One stage starts (`true`) or stops (`false`) being stalled; calls come in pairs.
    pub fn set_stalled(&self, stalled: bool) {
        let now = if stalled {
            self.stalled.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.stalled
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(1))
                })
                .map_or(0, |n| n.saturating_sub(1))
        };
        metrics::gauge!(STALLED).set(now as f64);
    }

    pub fn batch_done(&self, records: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Counts users rolled back from an uncommitted transaction.
    pub fn rolled_back(&self, users: u64) {
        self.rolled_back.fetch_add(users, Ordering::Relaxed);
    }

    /// Users rolled back so far.
    pub fn rollbacks(&self) -> u64 {
        self.rolled_back.load(Ordering::Relaxed)
    }

    /// Records whose batch completed (outputs acknowledged, state stored, commit sent).
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Joined the group and not stalled.
    pub fn ready(&self) -> bool {
        self.joined.load(Ordering::SeqCst) && self.stalled.load(Ordering::SeqCst) == 0
    }
}

#[derive(Clone)]
struct Endpoints {
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
}

/// The HTTP router: `/metrics` (Prometheus text), `/healthz` (the process serves),
/// `/readyz` (joined and not stalled: 503 otherwise).
pub fn router(metrics: Option<PrometheusHandle>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Endpoints { metrics, health })
}

async fn render_metrics(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    match &endpoints.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".into(),
        ),
    }
}

async fn ready(State(endpoints): State<Endpoints>) -> (StatusCode, &'static str) {
    if endpoints.health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: joining the group or a stage is stalled\n",
        )
    }
}

/// Serves the router on `addr` until the task is aborted. Returns the bound address (port 0
/// picks a free one).
pub async fn serve(
    addr: SocketAddr,
    router: Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok((bound, task))
}
