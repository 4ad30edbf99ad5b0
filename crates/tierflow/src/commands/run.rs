//! `tierflow run`: the streaming pipeline, wired from configuration, with its live view (the
//! web page beside /metrics, and `--dashboard` in the terminal).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tierflow_events::EventTime;
use tierflow_model::ModelHandle;
use tierflow_pipeline::{Health, Pipeline, shutdown_on_signals, telemetry};
use tierflow_store::{RedisConfig, RedisStore, StateStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{DashboardArgs, RunArgs};
use crate::config::Config;
use crate::live::{self, LiveFeed, UserLookup};

pub(crate) async fn run(args: RunArgs, mut config: Config) -> Result<()> {
    if let Some(url) = args.redis {
        config.redis.url = url;
    }
    if let Some(group) = args.group {
        config.pipeline.group_id = group;
    }
    if let Some(model) = args.model {
        config.model.artifact = Some(model);
    }
    if let Some(listen) = args.http_listen {
        config.http.listen = listen;
    }
    config
        .pipeline
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;

    if args.dashboard.dashboard {
        live::tui::ensure_terminal()?;
    }

    let metrics = match telemetry::install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
            None
        }
    };
    let health = Health::new();
    let listen: SocketAddr = config
        .http
        .listen
        .parse()
        .with_context(|| format!("http.listen {:?} is not HOST:PORT", config.http.listen))?;
    let feed = LiveFeed::new(
        format!("tierflow run · group {}", config.pipeline.group_id),
        EventTime::now(),
    );
    // The user search answers once Redis and the model are ready; /metrics serves before.
    let users = InspectUsers::<RedisStore>::new(config.redis.clone());
    let router = live::router(feed.clone(), users.clone())
        .merge(telemetry::router(metrics.clone(), Arc::clone(&health)));
    let (bound, server) = telemetry::serve(listen, router)
        .await
        .with_context(|| format!("listening on {listen} for /metrics"))?;
    tracing::info!(addr = %bound, "serving the live view at /, /metrics, /healthz and /readyz");
    let (end_view, view_ends) = watch::channel(false);
    let _live_sources = live::start(
        &feed,
        config.kafka.clone(),
        config.topics.clone(),
        live::StartFrom::End,
        metrics,
        view_ends.clone(),
    );

    let model = Arc::new(super::open_model(&config)?);
    let _watcher = (config.model.artifact.is_some() && config.model.reload_interval_secs > 0)
        .then(|| model.watch(Duration::from_secs(config.model.reload_interval_secs)));

    if args.create_topics {
        super::topics(&config).await?;
    }
    let store = RedisStore::connect(config.redis.clone())
        .await
        .context("connecting to Redis")?;

    let campaigns = super::open_campaigns(&config, &config.redis, model.current().tiers()).await?;
    let _rules_watcher = match (&campaigns, &config.campaigns.rules) {
        (Some(campaigns), Some(path)) if config.campaigns.reload_interval_secs > 0 => {
            Some(campaigns.watch(
                path.clone(),
                model.current().tiers(),
                Duration::from_secs(config.campaigns.reload_interval_secs),
            ))
        }
        _ => None,
    };
    users.ready(store.clone(), Arc::clone(&model));
    let (stop, shutdown, signals) = shutdown_on_signals();
    tokio::spawn(signals);
    let dashboard = args.dashboard.dashboard.then(|| {
        spawn_dashboard(
            &args.dashboard,
            feed.clone(),
            format!("group {}", config.pipeline.group_id),
            stop,
            view_ends,
        )
    });
    let pipeline = Pipeline {
        config: config.pipeline.clone(),
        kafka: config.kafka.clone(),
        topics: config.topics.clone(),
        store,
        model,
        health,
        campaigns,
        drift: Default::default(),
    };
    let summary = pipeline.run(shutdown).await;
    let _ = end_view.send(true);
    if let Some(dashboard) = dashboard {
        dashboard.await.context("the dashboard panicked")??;
    }
    let summary = summary?;
    server.abort();
    tracing::info!(
        batches = summary.batches,
        records = summary.records,
        applied = summary.counts.applied,
        tier_changes = summary.tier_changes,
        dead_letters = summary.dead_letters,
        "stopped cleanly"
    );
    Ok(())
}

/// Draws the terminal dashboard on a blocking thread until a key stops the command (`stop`)
/// or the view ends; logs go to the dashboard's log file meanwhile.
pub(super) fn spawn_dashboard(
    args: &DashboardArgs,
    feed: LiveFeed,
    title: String,
    stop: watch::Sender<bool>,
    view_ends: watch::Receiver<bool>,
) -> JoinHandle<Result<()>> {
    let log = args.dashboard_log.clone();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening the dashboard log {}", log.display()))?;
        crate::telemetry::logs_to_file(file);
        let result = live::tui::run(&feed, &title, &stop, &view_ends);
        crate::telemetry::logs_to_stderr();
        result
    })
}

/// `/api/user/{id}`: the user as `tierflow inspect user --json` shows them, from the state
/// store the pipeline writes and the model it scores with.
pub(super) struct InspectUsers<S> {
    ready: Arc<OnceLock<(S, Arc<ModelHandle>)>>,
    redis: RedisConfig,
}

impl<S> Clone for InspectUsers<S> {
    fn clone(&self) -> Self {
        Self {
            ready: Arc::clone(&self.ready),
            redis: self.redis.clone(),
        }
    }
}

impl<S> InspectUsers<S> {
    /// Not ready: lookups answer an error until [`Self::ready`].
    pub(super) fn new(redis: RedisConfig) -> Self {
        Self {
            ready: Arc::new(OnceLock::new()),
            redis,
        }
    }

    pub(super) fn ready(&self, store: S, model: Arc<ModelHandle>) {
        let _ = self.ready.set((store, model));
    }
}

impl<S: StateStore + Send + Sync + 'static> UserLookup for InspectUsers<S> {
    async fn user_json(&self, id: &str) -> Result<Option<String>> {
        let (store, model) = self
            .ready
            .get()
            .context("still starting: the state store is not connected yet")?;
        let report = super::inspect::user_report(store, &self.redis, model, id, None).await?;
        Ok(report.map(|r| serde_json::to_string(&r)).transpose()?)
    }
}
