//! One module per command; `run` dispatches.

mod campaigns;
mod demo;
mod features;
mod forget;
mod generate;
mod import;
mod inspect;
mod monitor;
mod replay;
mod rules;
mod run;
mod schemas;
mod tail;
mod train;

use anyhow::{Context, Result};
use tierflow_model::{Artifact, ModelHandle};

use crate::cli::{Cli, Command};
use crate::config::{self, Config};

pub(crate) async fn run(cli: Cli) -> Result<()> {
    let mut config = config::load(cli.config.as_deref())?;
    if let Some(brokers) = &cli.brokers {
        config.kafka.brokers = brokers.clone();
    }
    if let Some(backend) = cli.backend {
        config.model.backend = backend;
    }
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Generate(args) => generate::run(args, &config).await,
        Command::Import(args) => import::run(args, &config).await,
        Command::Features(args) => features::run(args).await,
        Command::Train(args) => train::train(args, &config).await,
        Command::Evaluate(args) => train::evaluate(args, &config).await,
        Command::Run(args) => run::run(args, config).await,
        Command::Inspect(command) => inspect::run(command, config).await,
        Command::Tail(args) => tail::run(args, &config).await,
        Command::ForgetUser(args) => forget::run(args, config).await,
        Command::Replay(args) => replay::run(args, config).await,
        Command::Rules(command) => rules::run(command, config).await,
        Command::Campaigns(command) => campaigns::run(command, config).await,
        Command::Monitor(command) => monitor::run(command, &config).await,
        Command::Topics => topics(&config).await,
        Command::Schemas(args) => schemas::run(&args),
    }
}

pub(crate) async fn topics(config: &Config) -> Result<()> {
    let specs = config.topics.specs();
    tierflow_stream::ensure_topics(&config.kafka, &specs)
        .await
        .with_context(|| format!("creating topics on {}", config.kafka.brokers))?;
    for spec in specs {
        tracing::info!(
            topic = %spec.name,
            partitions = spec.partitions,
            compacted = spec.compacted,
            "topic ready"
        );
    }
    Ok(())
}

/// The model `run` scores with: `model.artifact` (watched for new versions by the caller),
/// else the model compiled into the binary.
pub(crate) fn open_model(config: &Config) -> Result<ModelHandle> {
    let device = config.model.backend.device();
    match &config.model.artifact {
        Some(dir) => ModelHandle::open(dir, &device)
            .with_context(|| format!("loading the model artifact in {}", dir.display())),
        None => Ok(ModelHandle::fixed(
            &Artifact::embedded_default().context("loading the embedded default model")?,
            &device,
        )?),
    }
}

/// The campaign layer `run` and `replay` use: the rules file (checked against the model's
/// tier count) and a governor on the same Redis. `None` without `campaigns.rules`.
pub(crate) async fn open_campaigns(
    config: &Config,
    redis: &tierflow_store::RedisConfig,
    tiers: usize,
) -> Result<Option<tierflow_pipeline::Campaigns>> {
    let Some(path) = &config.campaigns.rules else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the rules file {}", path.display()))?;
    let rules = tierflow_rules::RuleSet::parse_named(&path.display().to_string(), &text)?;
    anyhow::ensure!(
        rules.tier_count as usize == tiers,
        "{}: tier_count = {} but the model scores {tiers} tiers",
        path.display(),
        rules.tier_count
    );
    let governor = tierflow_store::Governor::connect(redis.clone())
        .await
        .context("connecting the campaign governor to Redis")?;
    tracing::info!(rules = %path.display(), campaigns = rules.campaigns.len(), "campaign rules loaded");
    Ok(Some(tierflow_pipeline::Campaigns::new(
        rules,
        tierflow_pipeline::Governance::Redis(governor),
    )))
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
