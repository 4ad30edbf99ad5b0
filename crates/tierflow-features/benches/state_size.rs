//! How big a user's stored state gets (issue 3): generates a realistic population, applies
//! every event, and prints the distribution of `encode_state` bytes per user, overall and per
//! segment. A report for BENCHMARKS.md, not a timing and not a test.
//!
//! `cargo bench -p tierflow-features --bench state_size` runs the full size; under
//! `cargo test` (no `--bench` argument) it runs a tiny population as a smoke check.
//! Sizes: `TIERFLOW_BENCH_USERS` (default 20,000), `TIERFLOW_BENCH_DAYS` (default 90),
//! `TIERFLOW_BENCH_SEED` (default 42).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::time::Instant;

use tierflow_data::synth::{self, Dials, Segment, SynthConfig};
use tierflow_features::{Applied, UserState, encode_state};

/// The dials used: a little of every kind of producer mess, as in production.
const DIALS: Dials = Dials {
    out_of_order: 0.02,
    late: 0.005,
    duplicate: 0.01,
    malformed: 0.001,
};

fn main() -> io::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let config = SynthConfig {
        users: env_or("TIERFLOW_BENCH_USERS", if full { 20_000 } else { 200 }),
        days: env_or("TIERFLOW_BENCH_DAYS", if full { 90 } else { 14 }),
        seed: env_or("TIERFLOW_BENCH_SEED", 42),
        dials: DIALS,
        ..SynthConfig::default()
    };

    let started = Instant::now();
    let mut states: HashMap<String, UserState> = HashMap::with_capacity(config.users as usize);
    let mut tally = Tally::default();
    for record in synth::generate(&config) {
        let Some(event) = record.event() else {
            tally.malformed += 1;
            continue;
        };
        let state = match states.get_mut(event.user_id.as_str()) {
            Some(state) => state,
            None => states.entry(event.user_id.clone()).or_default(),
        };
        match state.apply(event) {
            Applied::Updated => tally.applied += 1,
            Applied::Duplicate => tally.duplicates += 1,
            Applied::TooLate { .. } => tally.too_late += 1,
        }
    }
    let elapsed = started.elapsed();

    let mut overall = Vec::with_capacity(states.len());
    let mut by_segment: BTreeMap<Segment, Vec<usize>> = BTreeMap::new();
    let mut users_without_events = 0u64;
    for index in 0..config.users {
        match states.get(&synth::user_id(index)) {
            Some(state) => {
                let bytes = encode_state(state).len();
                overall.push(bytes);
                by_segment
                    .entry(synth::segment_of(&config, index))
                    .or_default()
                    .push(bytes);
            }
            None => users_without_events += 1,
        }
    }

    let mut out = io::stdout().lock();
    writeln!(
        out,
        "state_size: {} users x {} days, seed {}, dials {:?}",
        config.users, config.days, config.seed, config.dials
    )?;
    writeln!(
        out,
        "records: {} events ({} applied, {} duplicates, {} too late), {} malformed skipped; \
         generated and applied in {:.1} s",
        tally.applied + tally.duplicates + tally.too_late,
        tally.applied,
        tally.duplicates,
        tally.too_late,
        tally.malformed,
        elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "users with state: {} ({} without any event)",
        overall.len(),
        users_without_events
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| segment | users | min | p50 | p90 | p99 | max | mean |"
    )?;
    writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (segment, sizes) in &mut by_segment {
        write_row(&mut out, segment.as_str(), sizes)?;
    }
    write_row(&mut out, "**all**", &mut overall)?;
    Ok(())
}

#[derive(Debug, Default)]
struct Tally {
    applied: u64,
    duplicates: u64,
    too_late: u64,
    malformed: u64,
}

/// One markdown table row: encoded bytes per user (nearest-rank percentiles).
fn write_row(out: &mut impl Write, label: &str, sizes: &mut [usize]) -> io::Result<()> {
    if sizes.is_empty() {
        return writeln!(out, "| {label} | 0 | | | | | | |");
    }
    sizes.sort_unstable();
    let rank = |p: f64| sizes[((p * sizes.len() as f64).ceil() as usize).clamp(1, sizes.len()) - 1];
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {} | {} | {mean:.0} |",
        sizes.len(),
        sizes[0],
        rank(0.50),
        rank(0.90),
        rank(0.99),
        sizes[sizes.len() - 1],
    )
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a valid number")),
        Err(_) => default,
    }
}
