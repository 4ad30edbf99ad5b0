//! `tierflow-loadgen`: offers clickstream load to the pipeline at a fixed rate and measures what
//! comes out (issue 5 §5). A report program, not a timed test: numbers depend on the machine
//! and its load, so they are printed (and recorded in BENCHMARKS.md), never asserted.
//!
//! Three modes share one command line so their numbers compare:
//! - `pipeline`: the streaming job in process (embedded default model, flex backend) against
//!   the given broker and Redis; events with `ts` = wall clock at produce time; latency is
//!   event time → the `user_score` record seen by a consumer. `--rate 0` fills the topic first
//!   and then times the pipeline draining it (capacity without the producer competing).
//! - `consume-only`: the same events produced, then read back by a consumer-group member: the
//!   broker's ceiling for the pipeline's input side.
//! - `redis-only`: the pipeline's Redis command mix (MGET of the batch's states, one pipeline
//!   of `SET … PX` for states and latest scores) with real encoded states; first fills
//!   `--users` users to measure Redis memory per user.
//!
//! A live pipeline run with `--series FILE` is also a soak (issue 8): a time series of rates,
//! lag, memory and latency every `--sample-secs`, a CSV, an SVG plot and a `soak` summary.

mod consume;
mod cpu;
mod events;
mod measure;
mod pipeline;
mod produce;
mod redis_mix;
mod soak;
mod soak_plot;

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Pipeline,
    ConsumeOnly,
    RedisOnly,
}

/// How events pick their user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum UserDistribution {
    Uniform,
    /// Zipf with exponent 1.0 over the users (a few very active users, a long tail).
    Zipf,
}

#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "tierflow-loadgen",
    about = "Offer clickstream load to the tierflow pipeline and measure throughput, latency and Redis memory",
    version
)]
pub(crate) struct Args {
    /// Kafka bootstrap servers, or `embedded` for librdkafka's in-process mock cluster.
    #[arg(long, default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Redis URL (a private, benchmark-only server: its memory is measured).
    #[arg(long, default_value = "redis://127.0.0.1:16379/")]
    redis: String,
    #[arg(long, value_enum, default_value = "pipeline")]
    mode: Mode,
    /// Offered events per second; 0 = as fast as possible (pipeline: fill first, then drain).
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// How long to offer load (with `--rate 0`: the longest fill).
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Seconds at the start of a live run left out of the latency histogram and the rate.
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    /// Most events to produce (bounds the broker's memory in fill runs).
    #[arg(long, default_value_t = 2_000_000)]
    max_events: u64,
    /// Distinct users events are drawn from.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    #[arg(long, value_enum, default_value = "uniform")]
    user_distribution: UserDistribution,
    /// Partitions of the topics created for the run.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Pipeline micro-batch size (`pipeline.batch_max_events`); also the redis-only batch.
    #[arg(long, default_value_t = 5_000)]
    batch_max_events: usize,
    /// Pipeline micro-batch wait (`pipeline.batch_max_wait_ms`).
    #[arg(long, default_value_t = 20)]
    batch_max_wait_ms: u64,
    /// Reason codes per tier change (`pipeline.reason_codes`; 0 skips the backward pass).
    #[arg(long, default_value_t = 3)]
    reason_codes: usize,
    /// redis-only: users written to measure memory (0 = skip the memory fill).
    #[arg(long, default_value_t = 1_000_000)]
    memory_users: u64,
    /// A librdkafka property for every client of the run (pipeline included), `KEY=VALUE`;
    /// repeatable. E.g. `fetch.wait.max.ms=10`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Live pipeline runs: write a time series (CSV) here, its plot beside it (same name,
    /// `.svg`) and add a `soak` summary to the result.
    #[arg(long, value_name = "FILE")]
    series: Option<std::path::PathBuf>,
    /// Seconds between two samples of `--series`.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// Seed of the event and user draws.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the result as one line of JSON on stdout (otherwise pretty-printed JSON).
    #[arg(long)]
    json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Two workers: the machine this is measured on has two cores, shared with the broker and
    // Redis.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(async {
        match args.mode {
            Mode::Pipeline => serde_json::to_value(pipeline::run(&args).await?),
            Mode::ConsumeOnly => serde_json::to_value(consume::run(&args).await?),
            Mode::RedisOnly => serde_json::to_value(redis_mix::run(&args).await?),
        }
        .context("serialising the result")
    })?;
    let report = serde_json::json!({
        "args": args,
        "machine": measure::machine(),
        "result": result,
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    }
    // librdkafka and the pipeline's tasks may still hold threads: the report is out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
