//! The pipeline end to end, in process, against a real broker (tansu) and a real redis-server
//! from the testkit — and against librdkafka's mock cluster, the demo's embedded broker.
//! Generated events in (with duplicates, disorder, late and malformed records); then the
//! output topics, the Redis state, the latest scores and the committed offsets are checked
//! together against the offline reference (`offline::replay`: one event at a time, each
//! update scored on its own).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use burn::prelude::Device;
use common::{Read, ends, produce, read_all, synthetic, test_kafka, wait_for};
use tierflow_events::{DeadLetter, Encoding, ErrorClass, TierChanged, UserScore, decode};
use tierflow_model::{Artifact, ModelHandle, Scorer};
use tierflow_pipeline::offline::{self, Expected};
use tierflow_pipeline::{Health, Pipeline, PipelineConfig, TopicsConfig};
use tierflow_store::{RedisConfig, RedisStore, StateStore};
use tierflow_stream::consume::committed_offsets;
use tierflow_stream::{EmbeddedBroker, KafkaConfig, ensure_topics};
use tierflow_testkit::{broker, redis, unique_name};
use tokio::sync::watch;

fn topics(partitions: i32) -> TopicsConfig {
    let prefix = unique_name("t");
    TopicsConfig {
        clickstream: format!("{prefix}.clickstream"),
        tier_changed: format!("{prefix}.tier_changed"),
        campaign_triggered: format!("{prefix}.campaign_triggered"),
        user_score: format!("{prefix}.user_score"),
        dead_letter: format!("{prefix}.dead_letter"),
        partitions,
    }
}

fn model() -> Result<Arc<ModelHandle>> {
    Ok(Arc::new(ModelHandle::fixed(
        &Artifact::embedded_default()?,
        &Device::flex(),
    )?))
}

/// Everything a finished run left behind, read back.
struct Observed {
    input: Vec<Read>,
    tier_changed: Vec<TierChanged>,
    user_scores: Vec<UserScore>,
    dead_letters: Vec<DeadLetter>,
    committed: BTreeMap<i32, i64>,
}

async fn observe(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    group: &str,
    records: u64,
) -> Result<Observed> {
    let idle = Duration::from_secs(3);
    let input = read_all(kafka, &topics.clickstream, records as usize, idle).await?;
    fn decode_all<T: tierflow_events::OutputRecord>(reads: Vec<Read>) -> Result<Vec<T>> {
        reads
            .iter()
            .map(|r| Ok(decode(&r.payload, Encoding::Json)?))
            .collect()
    }
    let tier_changed = decode_all(read_all(kafka, &topics.tier_changed, 1, idle).await?)?;
    let user_scores = decode_all(read_all(kafka, &topics.user_score, 1, idle).await?)?;
    let dead_letters = decode_all(read_all(kafka, &topics.dead_letter, 1, idle).await?)?;
    let committed =
        tokio::task::block_in_place(|| committed_offsets(kafka, group, &topics.clickstream))?;
    Ok(Observed {
        input,
        tier_changed,
        user_scores,
        dead_letters,
        committed,
    })
}

/// Asserts outputs, Redis state, latest scores and offsets against the offline reference.
/// `deduped`: outputs may repeat (after crashes) and are compared as sets by key.
async fn check(
    observed: &Observed,
    expected: &Expected,
    store: &RedisStore,
    version: &str,
    deduped: bool,
) -> Result<()> {
    // Tier changes: exactly the predicted ones, by idempotency key, with from/to.
    let mut got: BTreeMap<String, (Option<u8>, u8)> = BTreeMap::new();
    for change in &observed.tier_changed {
        ensure!(
            change.model_version == version,
            "model version {}",
            change.model_version
        );
        ensure!(
            change.idempotency_key
                == tierflow_pipeline::tier_change_key(&change.user_id, &change.causing_event_id),
            "key {} does not name its user and event",
            change.idempotency_key
        );
        let previous = got.insert(
            change.idempotency_key.clone(),
            (change.from_tier, change.to_tier),
        );
        if let Some(previous) = previous {
            ensure!(
                deduped,
                "{} published twice in an uninterrupted run",
                change.idempotency_key
            );
            ensure!(
                previous == (change.from_tier, change.to_tier),
                "{} changed between replays",
                change.idempotency_key
            );
        }
    }
    let want: BTreeMap<String, (Option<u8>, u8)> = expected
        .tier_changes
        .iter()
        .map(|(k, c)| (k.clone(), (c.from, c.to)))
        .collect();
    if got != want {
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(5)
            .collect();
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .take(5)
            .collect();
        anyhow::bail!(
            "tier changes differ from the offline replay: {} published, {} expected; missing {missing:?}, extra {extra:?}, different {differ:?}",
            got.len(),
            want.len()
        );
    }
    ensure!(
        observed
            .tier_changed
            .iter()
            .any(|c| !c.reason_codes.is_empty()),
        "no tier change carries reason codes"
    );
    ensure!(
        observed.tier_changed.iter().any(|c| c.from_tier.is_some()),
        "the stream should contain real transitions, not only first tiers"
    );

    // Dead letters: one per malformed or too-late record, at its source position.
    let mut letters: BTreeMap<(i32, i64), ErrorClass> = BTreeMap::new();
    for letter in &observed.dead_letters {
        ensure!(!letter.reason.is_empty(), "a dead letter without a reason");
        let source = &observed.input[observed
            .input
            .binary_search_by_key(&(letter.source_partition, letter.source_offset), |r| {
                (r.partition, r.offset)
            })
            .map_err(|_| anyhow::anyhow!("dead letter for an unknown record"))?];
        ensure!(
            letter.original.0 == source.payload,
            "dead letter does not carry the original bytes"
        );
        let previous = letters.insert(
            (letter.source_partition, letter.source_offset),
            letter.error_class,
        );
        ensure!(
            deduped || previous.is_none(),
            "dead letter twice in an uninterrupted run"
        );
    }
    ensure!(
        letters == expected.dead_letters,
        "dead letters {letters:?} != expected {:?}",
        expected.dead_letters
    );
    ensure!(
        !letters.is_empty(),
        "the generated stream has malformed records"
    );

    // Redis: every user's state equals the reference's, and the latest score its tier.
    let users: Vec<&str> = expected.states.keys().map(String::as_str).collect();
    let loaded = store.load(&users).await?;
    for (user, state) in users.iter().zip(loaded) {
        let state = state?.with_context(|| format!("no state for {user} in Redis"))?;
        ensure!(
            state == expected.states[*user],
            "state of {user} differs from the offline replay"
        );
    }
    let latest = store.latest_scores(&users).await?;
    for (user, record) in users.iter().zip(latest) {
        match (record, expected.latest_tier.get(*user)) {
            (Some(bytes), Some(tier)) => {
                let score: UserScore = decode(&bytes, Encoding::Json)?;
                ensure!(
                    score.tier == *tier,
                    "latest score of {user}: tier {} != {tier}",
                    score.tier
                );
                ensure!(
                    score.model_version == version,
                    "latest score without the model version"
                );
            }
            (None, None) => {}
            (got, want) => anyhow::bail!(
                "latest score of {user}: {:?} vs expected tier {want:?}",
                got.map(|_| "present")
            ),
        }
    }

    // user_score topic: every scored user appears, and each user's last record has the tier
    // the reference ends with.
    let mut last_score: HashMap<&str, u8> = HashMap::new();
    for s in &observed.user_scores {
        last_score.insert(s.user_id.as_str(), s.tier);
    }
    for (user, tier) in &expected.latest_tier {
        ensure!(
            last_score.get(user.as_str()) == Some(tier),
            "user_score topic: last tier of {user}"
        );
    }

    // Offsets: committed up to the end of everything consumed.
    ensure!(
        observed.committed == ends(&observed.input),
        "committed {:?} != end of the input {:?}",
        observed.committed,
        ends(&observed.input)
    );
    Ok(())
}

async fn run_to_end(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    store: RedisStore,
    config: PipelineConfig,
    records: u64,
) -> Result<tierflow_pipeline::RunSummary> {
    let health = Health::new();
    let (stop, shutdown) = watch::channel(false);
    let pipeline = Pipeline {
        config,
        kafka: kafka.clone(),
        topics: topics.clone(),
        store,
        model: model()?,
        health: Arc::clone(&health),
    };
    let task = tokio::spawn(pipeline.run(shutdown));
    let waited = wait_for(
        "the pipeline to finish every record",
        Duration::from_secs(240),
        || health.records() >= records || task.is_finished(),
    )
    .await;
    stop.send(true)?;
    let summary = task.await??;
    waited?;
    ensure!(
        summary.records == records,
        "processed {} of {records}",
        summary.records
    );
    Ok(summary)
}

async fn end_to_end(kafka: KafkaConfig, topics: TopicsConfig, users: u64) -> Result<()> {
    let synth = synthetic(users, 20, 7);
    let records = produce(&kafka, &topics.clickstream, &synth).await?;
    let redis_config = RedisConfig {
        key_prefix: unique_name("p"),
        ..RedisConfig::new(redis().url())
    };
    let store = RedisStore::connect(redis_config).await?;
    let config = PipelineConfig {
        group_id: unique_name("group"),
        // Small batches: many batches, users spread over several of them.
        batch_max_events: 400,
        ..PipelineConfig::default()
    };
    let summary = run_to_end(&kafka, &topics, store.clone(), config.clone(), records).await?;
    ensure!(summary.batches > 5, "{summary:?}");

    let observed = observe(&kafka, &topics, &config.group_id, records).await?;
    ensure!(
        observed.input.len() as u64 == records,
        "input topic holds {}",
        observed.input.len()
    );
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let sources: Vec<_> = observed.input.iter().map(Read::source).collect();
    let expected = offline::replay(&scorer, &config, &sources)?;
    ensure!(
        summary.counts.scored == expected.scored,
        "scored {} != {}",
        summary.counts.scored,
        expected.scored
    );
    check(&observed, &expected, &store, scorer.version(), false).await?;
    let distinct: BTreeSet<&str> = observed
        .tier_changed
        .iter()
        .map(|c| c.user_id.as_str())
        .collect();
    ensure!(distinct.len() as u64 <= users);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_matches_the_offline_replay_on_a_real_broker_and_redis() -> Result<()> {
    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(3);
    ensure_topics(&kafka, &topics.specs()).await?;
    end_to_end(kafka, topics, 120).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_matches_the_offline_replay_on_the_embedded_broker() -> Result<()> {
    let embedded = EmbeddedBroker::start(1)?;
    let kafka = test_kafka(embedded.bootstrap_servers());
    let topics = topics(3);
    embedded.create_topics(&topics.specs())?;
    end_to_end(kafka, topics, 60).await
}
