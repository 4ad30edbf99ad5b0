//! One module per command; `run` dispatches.

mod demo;
mod features;
mod generate;
mod import;
mod run;
mod schemas;
mod train;

use anyhow::{Context, Result};

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
