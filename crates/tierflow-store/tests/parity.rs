//! Online and offline features are identical: a generated log (with out-of-order, late and
//! duplicate records) streamed in batches through the Redis path gives, for every user,
//! bit-for-bit the vector the offline dataset builder computes at the same cutoff.

use anyhow::{Result, ensure};
use tierflow_data::synth::{self, Dials, SynthConfig};
use tierflow_events::{ClickEvent, EventTime};
use tierflow_features::dataset::DatasetBuilder;
use tierflow_features::features;
use tierflow_store::{RedisConfig, RedisStore, SourceEvent, StateStore, apply_batch};
use tierflow_testkit::{redis, unique_name};

#[tokio::test]
async fn redis_path_and_offline_builder_give_bit_identical_vectors() -> Result<()> {
    let config = SynthConfig {
        users: 300,
        days: 40,
        seed: 9,
        dials: Dials {
            out_of_order: 0.03,
            late: 0.005,
            duplicate: 0.02,
            malformed: 0.0,
        },
        ..SynthConfig::default()
    };
    let log: Vec<ClickEvent> = synth::generate(&config)
        .filter_map(|r| r.event().cloned())
        .collect();
    ensure!(log.len() > 10_000, "{} events", log.len());
    let newest = log.iter().map(|e| e.ts).max().unwrap();
    let middle = config.start.plus_millis(20 * EventTime::MILLIS_PER_DAY);
    let cutoffs = [middle, newest];

    let mut builder = DatasetBuilder::new(&cutoffs, 30 * EventTime::MILLIS_PER_DAY);
    for event in &log {
        builder.push(event);
    }
    let (rows, stats) = builder.finish();
    ensure!(
        stats.duplicates > 0,
        "the log should exercise dedupe: {stats:?}"
    );

    for cutoff in cutoffs {
        // Online: the records a consumer would have seen up to the cutoff, in log order,
        // in batches, through Redis.
        let mut redis_config = RedisConfig::new(redis().url());
        redis_config.key_prefix = unique_name("parity");
        let store = RedisStore::connect(redis_config).await?;
        let seen: Vec<(i64, &ClickEvent)> = log
            .iter()
            .enumerate()
            .filter(|(_, e)| e.ts <= cutoff)
            .map(|(offset, e)| (offset as i64, e))
            .collect();
        for chunk in seen.chunks(256) {
            let batch: Vec<SourceEvent<'_>> = chunk
                .iter()
                .map(|(offset, event)| SourceEvent {
                    partition: 0,
                    offset: *offset,
                    event,
                })
                .collect();
            apply_batch(&store, &batch).await?;
        }

        let offline: Vec<_> = rows.iter().filter(|r| r.cutoff == cutoff).collect();
        let users: Vec<&str> = offline.iter().map(|r| r.user_id.as_str()).collect();
        let loaded = store.load(&users).await?;
        ensure!(offline.len() > 100, "{} users at {cutoff}", offline.len());
        for (row, state) in offline.iter().zip(loaded) {
            let state = state?.expect("every offline user has online state");
            let online = features(&state, cutoff);
            let same_bits = online
                .iter()
                .zip(&row.features)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            ensure!(
                same_bits,
                "user {} at {cutoff}: online {online:?} != offline {:?}",
                row.user_id,
                row.features
            );
        }
    }
    Ok(())
}
