//! `tierflow run`: the streaming pipeline, wired from configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tierflow_pipeline::{Health, Pipeline, shutdown_on_signals, telemetry};
use tierflow_store::RedisStore;

use crate::cli::RunArgs;
use crate::config::Config;

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
    let (bound, server) = telemetry::serve(listen, telemetry::router(metrics, Arc::clone(&health)))
        .await
        .with_context(|| format!("listening on {listen} for /metrics"))?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");

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
    let (_stop, shutdown, signals) = shutdown_on_signals();
    tokio::spawn(signals);
    let pipeline = Pipeline {
        config: config.pipeline.clone(),
        kafka: config.kafka.clone(),
        topics: config.topics.clone(),
        store,
        model,
        health,
        campaigns,
    };
    let summary = pipeline.run(shutdown).await?;
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
