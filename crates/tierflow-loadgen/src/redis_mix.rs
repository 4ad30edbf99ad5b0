//! `--mode redis-only`: what Redis on this machine gives the pipeline's command mix, and what a
//! user costs in its memory.
//!
//! Values are real: states of a generated population (2,000 users × 90 days, encoded with
//! `encode_state`, so the size distribution of BENCHMARKS.md "State size per user") and a
//! `user_score` record as the pipeline stores it beside the state. First `--memory-users`
//! users are written (state and latest score, `SET … PX`, pipelined) and Redis's
//! `used_memory` growth is divided by them. Then, for `--duration-secs`, batches of
//! `--batch-max-events` random users of that keyspace do what a pipeline batch does to Redis:
//! one `MGET` of their states, then one pipeline of `SET … PX` for states and latest scores.
//! No codec, no Kafka, no model: the ceiling the pipeline's Redis stages can approach.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tierflow_data::synth::{self, SynthConfig};
use tierflow_events::output::OUTPUT_SCHEMA_VERSION;
use tierflow_events::{EventTime, Scores, UserScore};
use tierflow_features::{UserState, encode_state};
use tierflow_model::{Artifact, ModelHandle};
use tierflow_store::RedisConfig;

use crate::Args;
use crate::events::EventMaker;
use crate::measure::{self, RedisMemory};

#[derive(Debug, Serialize)]
pub(crate) struct RedisReport {
    prefix: String,
    /// Encoded states cycled through as values.
    state_values: usize,
    state_bytes_mean: f64,
    score_bytes: usize,
    memory: Option<Memory>,
    mix: Mix,
}

#[derive(Debug, Serialize)]
struct Memory {
    users: u64,
    before: RedisMemory,
    after: RedisMemory,
    /// `used_memory` growth per user (state key + latest-score key, values, expiry, overhead).
    bytes_per_user: f64,
    /// Of which value bytes (state + score).
    value_bytes_per_user: f64,
    fill_secs: f64,
    fill_users_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct Mix {
    batch_users: usize,
    batches: u64,
    secs: f64,
    /// Users per second through MGET + pipelined SETs (the pipeline's events/s ceiling from
    /// Redis alone when every event is a different user).
    users_per_sec: f64,
    /// Redis commands per second (MGET counted once per key).
    key_ops_per_sec: f64,
    mget_mean_ms: f64,
    set_pipeline_mean_ms: f64,
    /// MGET replies that held a value (all, if the fill covered the keyspace).
    hit_ratio: f64,
}

pub(crate) async fn run(args: &Args) -> Result<RedisReport> {
    let bar = measure::progress(args.quiet);
    bar.set_message("generating states (2,000 users × 90 days)");
    let states = generated_states();
    if states.is_empty() {
        bail!("the generator produced no states");
    }
    let state_bytes_mean = states.iter().map(Vec::len).sum::<usize>() as f64 / states.len() as f64;
    let score = score_record()?;
    let prefix = measure::run_name();
    let config = RedisConfig {
        key_prefix: prefix.clone(),
        ..RedisConfig::new(args.redis.clone())
    };
    let ttl_ms = config.ttl().as_millis() as u64;
    let mut redis = measure::redis_connection(&args.redis).await?;

    let keyspace = if args.memory_users > 0 {
        args.memory_users
    } else {
        args.users
    };
    let before = measure::redis_memory(&mut redis).await?;
    let fill_started = Instant::now();
    let mut user = 0u64;
    while user < keyspace {
        let end = (user + 1_000).min(keyspace);
        let mut pipe = redis::pipe();
        for u in user..end {
            let id = EventMaker::user_id(u);
            let state = &states[(u % states.len() as u64) as usize];
            pipe.cmd("SET")
                .arg(config.state_key(&id))
                .arg(state.as_slice())
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            pipe.cmd("SET")
                .arg(config.score_key(&id))
                .arg(score.as_slice())
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        pipe.query_async::<()>(&mut redis)
            .await
            .context("filling")?;
        user = end;
        if user.is_multiple_of(50_000) {
            bar.set_message(format!("filling: {user} of {keyspace} users"));
        }
    }
    let fill_secs = fill_started.elapsed().as_secs_f64();
    let after = measure::redis_memory(&mut redis).await?;
    let memory = (args.memory_users > 0).then(|| Memory {
        users: keyspace,
        before,
        after,
        bytes_per_user: after.used_memory.saturating_sub(before.used_memory) as f64
            / keyspace as f64,
        value_bytes_per_user: state_bytes_mean + score.len() as f64,
        fill_secs,
        fill_users_per_sec: keyspace as f64 / fill_secs,
    });

    // The command mix, one batch at a time as the pipeline does.
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let batch = args.batch_max_events.max(1);
    let duration = Duration::from_secs(args.duration_secs);
    let (mut batches, mut mget_secs, mut set_secs, mut hits, mut asked) =
        (0u64, 0.0, 0.0, 0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < duration {
        let users: Vec<String> = (0..batch)
            .map(|_| EventMaker::user_id(rng.random_range(0..keyspace)))
            .collect();
        let mut mget = redis::cmd("MGET");
        for id in &users {
            mget.arg(config.state_key(id));
        }
        let t = Instant::now();
        let loaded: Vec<Option<Vec<u8>>> = mget.query_async(&mut redis).await.context("MGET")?;
        mget_secs += t.elapsed().as_secs_f64();
        hits += loaded.iter().filter(|v| v.is_some()).count() as u64;
        asked += loaded.len() as u64;
        let mut pipe = redis::pipe();
        for (i, id) in users.iter().enumerate() {
            let state = loaded[i].as_deref().unwrap_or(&states[i % states.len()]);
            pipe.cmd("SET")
                .arg(config.state_key(id))
                .arg(state)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            pipe.cmd("SET")
                .arg(config.score_key(id))
                .arg(score.as_slice())
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        let t = Instant::now();
        pipe.query_async::<()>(&mut redis)
            .await
            .context("pipelined SET")?;
        set_secs += t.elapsed().as_secs_f64();
        batches += 1;
        if batches.is_multiple_of(20) {
            bar.set_message(format!(
                "command mix: {:.0} users/s",
                (batches * batch as u64) as f64 / started.elapsed().as_secs_f64()
            ));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let users = batches * batch as u64;
    Ok(RedisReport {
        prefix,
        state_values: states.len(),
        state_bytes_mean,
        score_bytes: score.len(),
        memory,
        mix: Mix {
            batch_users: batch,
            batches,
            secs,
            users_per_sec: users as f64 / secs,
            key_ops_per_sec: (users * 3) as f64 / secs,
            mget_mean_ms: mget_secs / batches.max(1) as f64 * 1_000.0,
            set_pipeline_mean_ms: set_secs / batches.max(1) as f64 * 1_000.0,
            hit_ratio: hits as f64 / asked.max(1) as f64,
        },
    })
}

/// Encoded states of a generated population (as stored after each user's last event).
fn generated_states() -> Vec<Vec<u8>> {
    let config = SynthConfig {
        users: 2_000,
        days: 90,
        seed: 42,
        ..SynthConfig::default()
    };
    let mut states: std::collections::HashMap<String, UserState> = std::collections::HashMap::new();
    for record in synth::generate(&config) {
        if let Some(event) = record.event() {
            states
                .entry(event.user_id.clone())
                .or_default()
                .apply(event);
        }
    }
    let mut users: Vec<_> = states.into_iter().collect();
    users.sort_by(|a, b| a.0.cmp(&b.0));
    users.iter().map(|(_, state)| encode_state(state)).collect()
}

/// A `user_score` record as the pipeline stores it as the latest score (JSON).
fn score_record() -> Result<Vec<u8>> {
    let model = ModelHandle::fixed(&Artifact::embedded_default()?, &Device::flex())?;
    let now = EventTime::now();
    let record = UserScore {
        schema_version: OUTPUT_SCHEMA_VERSION,
        user_id: EventMaker::user_id(123_456),
        tier: 2,
        scores: Scores {
            tier_probabilities: vec![0.112_345_6, 0.223_456_7, 0.334_567_8, 0.2, 0.129_629_9],
            churn_risk: 0.456_789,
            expected_value: 123.456_789,
        },
        model_version: model.version(),
        last_event_id: "bench1234567890ab-1234567".into(),
        event_time: now,
        processing_time: now,
    };
    Ok(tierflow_events::encode(
        &record,
        tierflow_events::Encoding::Json,
    ))
}
