//! `tierflow generate`: the synthetic clickstream to JSON lines or a Kafka topic.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};
use tierflow_data::synth::{self, Dials, Record, SegmentMix, SynthConfig};
use tierflow_events::EventTime;

use crate::cli::GenerateArgs;
use crate::config::Config;
use crate::progress;
use crate::sink::{PumpEnd, Sink, pump};

pub(crate) async fn run(args: GenerateArgs, config: &Config) -> Result<()> {
    let synth_config = synth_config(&args)?;
    if let Some(path) = &args.truth {
        write_truth(&synth_config, path)?;
    }
    let mut sink = Sink::open(&args.output, config).await?;
    let progress = progress::records(args.limit, "generating");
    let limit = args.limit.unwrap_or(u64::MAX);
    let generator_config = synth_config.clone();
    let (counts, end) = pump(&mut sink, &progress, move |emitter| {
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        for record in synth::generate(&generator_config).take(limit as usize) {
            let kind = match &record {
                Record::Event(event) => event.event_type.as_str(),
                Record::Malformed { .. } => "malformed",
            };
            *counts.entry(kind).or_default() += 1;
            if !emitter.emit(record.key().to_owned(), record.to_bytes()) {
                break;
            }
        }
        counts
    })
    .await?;
    progress.finish_and_clear();
    let summary = sink.finish().await?;
    tracing::info!(
        records = summary.records,
        bytes = summary.bytes,
        destination = %summary.destination,
        users = synth_config.users,
        interrupted = end == PumpEnd::Interrupted,
        by_type = ?counts,
        "generated"
    );
    Ok(())
}

fn synth_config(args: &GenerateArgs) -> Result<SynthConfig> {
    let start = EventTime::parse_rfc3339(&args.start).context("--start")?;
    let config = SynthConfig {
        users: args.users,
        seed: args.seed,
        start,
        days: args.days,
        dials: Dials {
            out_of_order: args.out_of_order,
            late: args.late,
            duplicate: args.duplicate,
            malformed: args.malformed,
        },
        mix: args
            .mix
            .iter()
            .fold(SegmentMix::default(), |mix, (segment, weight)| {
                mix.with(*segment, *weight)
            }),
    };
    config.validate().context("invalid generator settings")?;
    Ok(config)
}

/// `user_id,segment` for every user: the latent truth a model should recover.
fn write_truth(config: &SynthConfig, path: &std::path::Path) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "user_id,segment")?;
    for user in 0..config.users {
        writeln!(
            out,
            "{},{}",
            synth::user_id(user),
            synth::segment_of(config, user).as_str()
        )?;
    }
    out.flush()?;
    Ok(())
}
