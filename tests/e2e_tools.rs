//! The operator tools of the `tierflow` binary against a real broker (tansu) and a real
//! redis-server from the testkit: after `tierflow run` has processed a generated stream,
//! `inspect user` shows what `StateStore::load` holds, `tail` prints exactly one user's tier
//! changes, `replay` rebuilds the same states and tier changes in a namespace of its own, and
//! `forget-user` deletes the user's keys and leaves a tombstone on the compacted score topic.

#[path = "../crates/tierflow-pipeline/tests/common/mod.rs"]
mod pipeline_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::Device;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tierflow_data::synth::{self, Dials, SynthConfig};
use tierflow_events::{
    ClickEvent, Contract, Encoding, EventTime, EventType, Scores, TierChanged, UserScore, encode,
};
use tierflow_features::spec::HORIZONS;
use tierflow_features::vector::window_totals;
use tierflow_features::{UserState, features};
use tierflow_model::{Artifact, Scorer};
use tierflow_pipeline::offline::{self, SourceRecord};
use tierflow_pipeline::{PipelineConfig, TopicsConfig};
use tierflow_store::{RedisConfig, RedisStore, StateStore};
use tierflow_stream::consume::{committed_offsets, partitions};
use tierflow_stream::{BoundedProducer, KafkaConfig, OutRecord, OutputHeaders, ensure_topics};
use tierflow_testkit::{broker, redis, unique_name};

use pipeline_common::{produce_records, test_kafka, topics};

/// Index of the 30-day window in `HORIZONS`.
const H30D: usize = 3;

/// One record read back, with `None` for a tombstone's value.
#[derive(Debug, Clone)]
struct Record {
    partition: i32,
    offset: i64,
    /// The Kafka record timestamp (the producer's create time), ms.
    timestamp: Option<i64>,
    key: Option<String>,
    value: Option<Vec<u8>>,
}

/// Every record of `topic`, read outside any group up to the end of each partition (the
/// broker reports the end; no idle timeouts), sorted by partition and offset.
async fn read_topic(kafka: &KafkaConfig, topic: &str) -> Result<Vec<Record>> {
    let ids = tokio::task::block_in_place(|| partitions(kafka, topic))?;
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", "e2e-tools-reader-never-joined")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for p in &ids {
        list.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    drop(list);
    let mut open: BTreeSet<i32> = ids.into_iter().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !open.is_empty() {
        let message = tokio::time::timeout_at(deadline.into(), consumer.recv())
            .await
            .with_context(|| format!("{topic}: partitions {open:?} never reached their end"))?;
        match message {
            Ok(m) => out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(<[u8]>::to_vec),
            }),
            Err(KafkaError::PartitionEOF(p)) => {
                open.remove(&p);
            }
            Err(e) => bail!("reading {topic}: {e}"),
        }
    }
    drop(consumer);
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

fn ends(records: &[Record]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for r in records {
        let end = ends.entry(r.partition).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    ends
}

fn tier_changes(records: &[Record]) -> Result<Vec<TierChanged>> {
    records
        .iter()
        .map(|r| {
            let bytes = r
                .value
                .as_deref()
                .context("a tier change without a value")?;
            Ok(tierflow_events::decode(bytes, Encoding::Json)?)
        })
        .collect()
}

/// The binary with `args` after `--config FILE`, stdout and stderr captured.
fn tierflow(config: &Path, args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TIERFLOW_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .context("running tierflow")
}

fn succeeded(args: &[&str], output: Output) -> Result<String> {
    ensure!(
        output.status.success(),
        "tierflow {args:?} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn run_ok(config: &Path, args: &[&str]) -> Result<String> {
    succeeded(args, tierflow(config, args)?)
}

/// A config file naming the test's broker, topics, Redis prefix and group.
fn write_config(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    key_prefix: &str,
    group: &str,
) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    writeln!(
        file,
        r#"
[kafka]
brokers = "{brokers}"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[topics]
clickstream = "{clickstream}"
tier_changed = "{tier_changed}"
campaign_triggered = "{campaign_triggered}"
user_score = "{user_score}"
dead_letter = "{dead_letter}"
partitions = {partitions}

[redis]
url = "{redis_url}"
key_prefix = "{key_prefix}"

[pipeline]
group_id = "{group}"
batch_max_events = 500

[http]
listen = "127.0.0.1:0"
"#,
        brokers = kafka.brokers,
        clickstream = topics.clickstream,
        tier_changed = topics.tier_changed,
        campaign_triggered = topics.campaign_triggered,
        user_score = topics.user_score,
        dead_letter = topics.dead_letter,
        partitions = topics.partitions,
        redis_url = redis().url(),
    )?;
    Ok(file)
}

/// `tierflow ARGS` (a long-running command) until `group` has committed `end` on `topic`,
/// then SIGTERM, which must end it with exit 0. Returns its stdout.
async fn run_until_committed(
    config: &Path,
    args: &[&str],
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    end: &BTreeMap<i32, i64>,
) -> Result<String> {
    let log = tempfile::NamedTempFile::new()?;
    let stdout = tempfile::NamedTempFile::new()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TIERFLOW_CONFIG")
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdout(stdout.reopen()?)
        .stderr(log.reopen()?)
        .spawn()
        .with_context(|| format!("starting tierflow {args:?}"))?;
    let log_text = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "tierflow {args:?} exited early with {status}:\n{}",
                log_text()
            );
        }
        let committed = tokio::task::block_in_place(|| committed_offsets(kafka, group, topic))
            .unwrap_or_default();
        if committed == *end {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "committed {committed:?}, never {end:?}:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        ensure!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        status.success(),
        "exit {status} after SIGTERM:\n{}",
        log_text()
    );
    Ok(std::fs::read_to_string(stdout.path())?)
}

fn store(key_prefix: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: key_prefix.to_owned(),
        ..RedisConfig::new(redis().url())
    }
}

async fn exists(key: &str) -> Result<bool> {
    let client = redis::Client::open(redis().url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut connection)
        .await?;
    Ok(n == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_tail_replay_and_forget_after_a_pipeline_run() -> Result<()> {
    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(2);
    ensure_topics(&kafka, &topics.specs()).await?;
    // No late or duplicated events: every valid event is applied exactly once, so window
    // counts can be checked against the raw stream as well as against the stored state.
    let synth_config = SynthConfig {
        users: 80,
        days: 30,
        seed: 7,
        dials: Dials {
            out_of_order: 0.02,
            late: 0.0,
            duplicate: 0.0,
            malformed: 0.01,
        },
        ..SynthConfig::default()
    };
    let stream: Vec<(String, Vec<u8>)> = synth::generate(&synth_config)
        .map(|r| (r.key().to_owned(), r.to_bytes()))
        .collect();
    produce_records(&kafka, &topics.clickstream, &stream).await?;
    let input = read_topic(&kafka, &topics.clickstream).await?;
    ensure!(
        input.len() == stream.len(),
        "{} of {} records",
        input.len(),
        stream.len()
    );
    let end = ends(&input);

    let key_prefix = unique_name("tools");
    let group = unique_name("group");
    let config_file = write_config(&kafka, &topics, &key_prefix, &group)?;
    let config = config_file.path();
    let started = Instant::now();
    run_until_committed(config, &["run"], &kafka, &group, &topics.clickstream, &end).await?;
    eprintln!(
        "pipeline: {} records in {:?}",
        input.len(),
        started.elapsed()
    );

    // The reference: the same records through the offline replay.
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let sources: Vec<SourceRecord> = input
        .iter()
        .map(|r| SourceRecord {
            timestamp: r.timestamp,
            partition: r.partition,
            offset: r.offset,
            payload: r.value.clone().unwrap_or_default(),
        })
        .collect();
    let expected = offline::replay(&scorer, &PipelineConfig::default(), &sources)?;
    let changes = tier_changes(&read_topic(&kafka, &topics.tier_changed).await?)?;
    let keys: BTreeSet<String> = changes.iter().map(|c| c.idempotency_key.clone()).collect();
    ensure!(
        keys == expected.tier_changes.keys().cloned().collect(),
        "the run's tier changes differ from the offline replay"
    );

    // The user to look at: one with tier changes, and the most purchases in 30 days.
    let live = RedisStore::connect(store(&key_prefix)).await?;
    let mut users: Vec<&str> = expected.states.keys().map(String::as_str).collect();
    users.sort_unstable();
    let states: Vec<UserState> = live
        .load(&users)
        .await?
        .into_iter()
        .zip(&users)
        .map(|(s, u)| s?.with_context(|| format!("no state for {u}")))
        .collect::<Result<_>>()?;
    let purchases_30d = |state: &UserState| {
        window_totals(
            state,
            H30D,
            state.newest().expect("a stored user has events"),
        )
        .count(EventType::Purchase)
    };
    let (user, state) = users
        .iter()
        .zip(&states)
        .filter(|(u, _)| changes.iter().any(|c| c.user_id == **u))
        .max_by_key(|(u, s)| (purchases_30d(s), std::cmp::Reverse(**u)))
        .context("no user changed tier")?;
    let user = *user;
    ensure!(
        purchases_30d(state) > 0,
        "{user} made no purchase in 30 days"
    );

    inspect_shows_the_stored_state(config, user, state, &expected, &input, &changes).await?;
    tail_prints_exactly_the_users_tier_changes(config, user, &changes).await?;
    let ran = Ran {
        config,
        kafka: &kafka,
        topics: &topics,
        key_prefix: &key_prefix,
        group: &group,
        end: &end,
    };
    replay_rebuilds_the_same_states_and_changes(&ran, &users, &states, &keys).await?;
    replay_from_a_time_starts_at_the_first_record_of_that_time(&ran, &input).await?;
    forget_deletes_the_keys_and_publishes_a_tombstone(&ran, user).await?;
    eprintln!("whole test: {:?}", started.elapsed());
    Ok(())
}

async fn inspect_shows_the_stored_state(
    config: &Path,
    user: &str,
    state: &UserState,
    expected: &offline::Expected,
    input: &[Record],
    changes: &[TierChanged],
) -> Result<()> {
    let shown: Value =
        serde_json::from_str(&run_ok(config, &["inspect", "user", user, "--json"])?)?;
    // The tier history: the user's tier_changed records, newest first, as published.
    let mut published: Vec<&TierChanged> = changes.iter().filter(|c| c.user_id == user).collect();
    published.sort_by_key(|c| std::cmp::Reverse(c.event_time));
    let history = shown["history"].as_array().context("history is a list")?;
    let kept: Vec<(&str, &str)> = history
        .iter()
        .filter(|e| e["type"] == "tier_changed")
        .map(|e| {
            (
                e["record"]["idempotency_key"].as_str().unwrap_or_default(),
                e["record"]["causing_event_id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let want: Vec<(&str, &str)> = published
        .iter()
        .take(tierflow_store::HISTORY_LEN)
        .map(|c| (c.idempotency_key.as_str(), c.causing_event_id.as_str()))
        .collect();
    ensure!(
        !want.is_empty() && kept == want,
        "tier history shown {kept:?}, published {want:?}"
    );
    let newest = state.newest().context("newest event")?;
    ensure!(shown["user_id"] == user);
    ensure!(
        shown["newest_event"] == newest.to_string(),
        "{}",
        shown["newest_event"]
    );
    ensure!(shown["as_of"] == newest.to_string());

    // Every window, as computed from the state `StateStore::load` returns.
    for (h, horizon) in HORIZONS.iter().enumerate() {
        let window = &shown["windows"][h];
        ensure!(window["horizon"] == horizon.name);
        let totals = window_totals(state, h, newest);
        for t in EventType::ALL {
            ensure!(
                window["counts"][t.as_str()] == totals.count(t),
                "{} {}: shown {} stored {}",
                horizon.name,
                t.as_str(),
                window["counts"][t.as_str()],
                totals.count(t)
            );
        }
        ensure!(window["revenue"].as_f64() == Some(totals.revenue_cents as f64 / 100.0));
        ensure!(window["sessions"] == totals.sessions);
    }
    // The 30-day purchase count, also counted from the raw stream: the user's purchases in
    // the 30 day buckets up to the newest event's day.
    let newest_day = newest.unix_millis().div_euclid(EventTime::MILLIS_PER_DAY);
    let raw_purchases = input
        .iter()
        .filter(|r| r.key.as_deref() == Some(user))
        .filter_map(|r| ClickEvent::from_json(r.value.as_deref()?).ok())
        .filter(|e| e.event_type == EventType::Purchase)
        .filter(|e| e.ts.unix_millis().div_euclid(EventTime::MILLIS_PER_DAY) > newest_day - 30)
        .count() as u64;
    let shown_purchases = shown["windows"][H30D]["counts"]["purchase"].as_u64();
    ensure!(
        shown_purchases == Some(raw_purchases) && raw_purchases > 0,
        "30-day purchases: shown {shown_purchases:?}, in the stream {raw_purchases}"
    );

    // The published tier: the stored decision memory and the offline replay's last tier.
    let tier = state
        .published
        .tier
        .context("a user with tier changes has a tier")?;
    ensure!(expected.latest_tier.get(user) == Some(&tier));
    ensure!(shown["published"]["tier"] == tier, "{}", shown["published"]);
    ensure!(
        shown["published"]["since"]
            == EventTime::from_unix_millis(state.published.tier_since_ms).to_string()
    );
    ensure!(
        shown["latest_score"]["tier"] == tier,
        "{}",
        shown["latest_score"]
    );
    ensure!(shown["latest_score"]["user_id"] == user);

    // The feature vector by name, and the model's scores of it.
    let vector = features(state, newest);
    let spec = tierflow_features::FeatureSpec::current();
    ensure!(shown["features"].as_object().map(|f| f.len()) == Some(spec.len()));
    for (name, value) in spec.names().iter().zip(&vector) {
        // Printed as the shortest decimal of the f32; compare at f32 precision.
        let printed = shown["features"][name]
            .as_f64()
            .context("a feature is a number")?;
        ensure!(
            (printed - f64::from(*value)).abs() <= 1e-6 * f64::from(value.abs()).max(1.0),
            "feature {name}: shown {}, computed {value}",
            shown["features"][name]
        );
    }
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let scores = scorer.score(&vector)?;
    ensure!(shown["model"]["model_version"] == scorer.version());
    ensure!(shown["model"]["tier"] == scores.tier(0));
    ensure!(
        shown["model"]["reason_codes"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );

    // The table says the same.
    let table = run_ok(config, &["inspect", "user", user])?;
    ensure!(
        table.contains(&format!("published     tier {tier} since")),
        "{table}"
    );
    let newest_change = published.first().context("the user changed tier")?;
    ensure!(
        table.contains("tier history (newest first)")
            && table.contains(&format!("event {}", newest_change.causing_event_id)),
        "{table}"
    );
    let purchase_row = table
        .lines()
        .find(|l| l.starts_with("purchase "))
        .context("no purchase row")?;
    let cells: Vec<&str> = purchase_row.split_whitespace().collect();
    ensure!(
        cells.get(H30D + 1) == Some(&raw_purchases.to_string().as_str()),
        "{purchase_row}"
    );
    Ok(())
}

async fn tail_prints_exactly_the_users_tier_changes(
    config: &Path,
    user: &str,
    changes: &[TierChanged],
) -> Result<()> {
    let want: Vec<&str> = changes
        .iter()
        .filter(|c| c.user_id == user)
        .map(|c| c.idempotency_key.as_str())
        .collect();
    ensure!(!want.is_empty(), "{user} has no tier changes to tail");
    let out = run_ok(config, &["tail", "tier_changed", "--user", user])?;
    let lines: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    for line in &lines {
        ensure!(
            line["type"] == "tier_changed" && line["user_id"] == user,
            "{line}"
        );
    }
    // A user's records share a partition, so offsets order them as they were published.
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l["value"]["idempotency_key"].as_str().unwrap_or_default())
        .collect();
    ensure!(
        got == want,
        "tail printed {got:?}, the topic holds {want:?}"
    );

    let pretty = run_ok(
        config,
        &["tail", "tier_changed", "--user", user, "--pretty"],
    )?;
    ensure!(pretty.lines().count() == want.len(), "{pretty}");
    ensure!(
        pretty
            .lines()
            .all(|l| l.contains(user) && l.contains("tier ")),
        "{pretty}"
    );
    let limited = run_ok(config, &["tail", "tier_changed", "--limit", "1"])?;
    ensure!(limited.lines().count() == 1, "{limited}");
    Ok(())
}

/// Where the pipeline run of the main test left its state, outputs and offsets.
struct Ran<'a> {
    config: &'a Path,
    kafka: &'a KafkaConfig,
    topics: &'a TopicsConfig,
    key_prefix: &'a str,
    group: &'a str,
    /// The end of every clickstream partition (all of it was processed).
    end: &'a BTreeMap<i32, i64>,
}

/// `replay --from TIME` (Kafka record timestamps): each partition starts at its first record
/// stamped at or after TIME, as the broker's time index says, and runs to the end.
async fn replay_from_a_time_starts_at_the_first_record_of_that_time(
    ran: &Ran<'_>,
    input: &[Record],
) -> Result<()> {
    let Ran {
        config,
        kafka,
        topics,
        group,
        end,
        ..
    } = *ran;
    // A time in the middle of the stream: the timestamp of its median record.
    let mut stamps: Vec<i64> = input.iter().filter_map(|r| r.timestamp).collect();
    ensure!(stamps.len() == input.len(), "records without timestamps");
    stamps.sort_unstable();
    let at = stamps[stamps.len() / 2];
    ensure!(
        at > stamps[0],
        "every record has the same timestamp; the test needs a spread"
    );
    let mut starts: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, last) in end {
        let first = input
            .iter()
            .filter(|r| r.partition == *partition && r.timestamp.is_some_and(|t| t >= at))
            .map(|r| r.offset)
            .min()
            .unwrap_or(*last);
        starts.insert(*partition, first);
    }
    let records: i64 = end.iter().map(|(p, last)| last - starts[p]).sum();
    ensure!(records > 0 && records < end.values().sum::<i64>());
    let from = EventTime::from_unix_millis(at).to_string();
    let out = run_ok(
        config,
        &[
            "replay",
            "--from",
            &from,
            "--namespace",
            "t",
            "--until-caught-up",
        ],
    )?;
    let spans: Vec<String> = starts
        .iter()
        .map(|(p, first)| format!("{p}:{first}..{}", end[p]))
        .collect();
    ensure!(
        out.contains(&format!("replay t: {records} records")) && out.contains(&spans.join(" ")),
        "from {from}: expected {records} records over {spans:?}:\n{out}"
    );
    let committed = tokio::task::block_in_place(|| {
        committed_offsets(kafka, &format!("{group}.replay.t"), &topics.clickstream)
    })?;
    ensure!(
        committed == *end,
        "replay committed {committed:?}, end {end:?}"
    );
    Ok(())
}

async fn replay_rebuilds_the_same_states_and_changes(
    ran: &Ran<'_>,
    users: &[&str],
    states: &[UserState],
    keys: &BTreeSet<String>,
) -> Result<()> {
    let Ran {
        config,
        kafka,
        topics,
        key_prefix,
        group,
        end,
    } = *ran;
    let started = Instant::now();
    let args = [
        "replay",
        "--from",
        "0",
        "--namespace",
        "n",
        "--until-caught-up",
    ];
    let out = run_ok(config, &args)?;
    eprintln!("replay in {:?}:\n{out}", started.elapsed());
    let records: i64 = end.values().sum();
    ensure!(
        out.contains(&format!("replay n: {records} records")),
        "{out}"
    );

    let replayed = RedisStore::connect(store(&format!("{key_prefix}.n"))).await?;
    for ((user, state), loaded) in users.iter().zip(states).zip(replayed.load(users).await?) {
        let loaded = loaded?.with_context(|| format!("no replayed state for {user}"))?;
        ensure!(loaded == *state, "replayed state of {user} differs");
    }
    let replayed_changes =
        tier_changes(&read_topic(kafka, &format!("{}.n", topics.tier_changed)).await?)?;
    let replayed_keys: BTreeSet<String> = replayed_changes
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    ensure!(
        replayed_keys == *keys && replayed_changes.len() == keys.len(),
        "replay published {} tier changes ({} keys), the run {}",
        replayed_changes.len(),
        replayed_keys.len(),
        keys.len()
    );
    let committed = tokio::task::block_in_place(|| {
        committed_offsets(kafka, &format!("{group}.replay.n"), &topics.clickstream)
    })?;
    ensure!(
        committed == *end,
        "replay committed {committed:?}, end {end:?}"
    );
    // Without --until-caught-up a replay follows the stream; SIGTERM stops it cleanly.
    let following = run_until_committed(
        config,
        &["replay", "--from", "beginning", "--namespace", "m"],
        kafka,
        &format!("{group}.replay.m"),
        &topics.clickstream,
        end,
    )
    .await?;
    ensure!(
        following.contains(&format!("replay m: {records} records")),
        "{following}"
    );
    // The live namespace was not touched: its group is where the run left it.
    let live =
        tokio::task::block_in_place(|| committed_offsets(kafka, group, &topics.clickstream))?;
    ensure!(live == *end);
    Ok(())
}

async fn forget_deletes_the_keys_and_publishes_a_tombstone(
    ran: &Ran<'_>,
    user: &str,
) -> Result<()> {
    let Ran {
        config,
        kafka,
        topics,
        key_prefix,
        ..
    } = *ran;
    let state_key = format!("{key_prefix}:u:{user}");
    let score_key = format!("{key_prefix}:s:{user}");
    let history_key = format!("{key_prefix}:h:{user}");
    ensure!(exists(&state_key).await? && exists(&score_key).await? && exists(&history_key).await?);

    let out = run_ok(config, &["forget-user", user])?;
    for key in [&state_key, &score_key, &history_key] {
        ensure!(out.contains(&format!("deleted {key}")), "{out}");
        ensure!(!exists(key).await?, "{key} still exists");
    }
    // The replay's namespace is another prefix: untouched.
    ensure!(exists(&format!("{key_prefix}.n:u:{user}")).await?);

    let scores = read_topic(kafka, &topics.user_score).await?;
    let last = scores
        .iter()
        .rfind(|r| r.key.as_deref() == Some(user))
        .context("nothing keyed by the user on user_score")?;
    ensure!(
        last.value.is_none(),
        "the user's last user_score record is not a tombstone"
    );
    ensure!(
        scores.iter().filter(|r| r.value.is_none()).count() == 1,
        "exactly one tombstone"
    );

    // Again: nothing to delete, another tombstone, still exit 0.
    let again = run_ok(config, &["forget-user", user])?;
    ensure!(again.contains(&format!("absent  {state_key}")), "{again}");
    ensure!(again.contains(&format!("absent  {score_key}")), "{again}");
    let scores = read_topic(kafka, &topics.user_score).await?;
    ensure!(scores.iter().filter(|r| r.value.is_none()).count() == 2);

    // The user is gone for inspect too: a clear message and exit code 1.
    let output = tierflow(config, &["inspect", "user", user])?;
    ensure!(
        output.status.code() == Some(1),
        "inspect exited {}",
        output.status
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains(&format!("no state for user \"{user}\"")),
        "{stderr}"
    );
    Ok(())
}

/// `tail` decodes by the records' headers (JSON and bincode), shows tombstones and records
/// it cannot decode, and filters by type and user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_decodes_by_headers_and_filters() -> Result<()> {
    let kafka = test_kafka(broker().bootstrap_servers());
    let topic = unique_name("mixed");
    ensure_topics(&kafka, &[tierflow_stream::TopicSpec::new(&topic, 1)]).await?;
    let scores = Scores {
        tier_probabilities: vec![0.1, 0.2, 0.7],
        churn_risk: 0.25,
        expected_value: 12.5,
    };
    let at = EventTime::parse_rfc3339("2026-02-01T10:00:00Z")?;
    let change = TierChanged {
        schema_version: 1,
        idempotency_key: "tc/u1/e1".into(),
        user_id: "u1".into(),
        from_tier: Some(0),
        to_tier: 2,
        scores: scores.clone(),
        model_version: "m1-test".into(),
        reason_codes: Vec::new(),
        causing_event_id: "e1".into(),
        event_time: at,
        processing_time: at,
    };
    let score = UserScore {
        schema_version: 1,
        user_id: "u2".into(),
        tier: 1,
        scores,
        model_version: "m1-test".into(),
        last_event_id: "e2".into(),
        event_time: at,
        processing_time: at,
    };
    let json = OutputHeaders::new(Contract::TierChanged, Encoding::Json);
    let bincode = OutputHeaders::new(Contract::UserScore, Encoding::Bincode);
    // One record per batch: tansu 0.6.0 answers a fetch that starts inside a batch with the
    // next batch (ARCHITECTURE.md), which `--from 1` would otherwise meet.
    let mut single = kafka.clone();
    single
        .properties
        .insert("batch.num.messages".into(), "1".into());
    single.properties.insert("linger.ms".into(), "0".into());
    let mut producer = BoundedProducer::new(&single, 10)?;
    let change_bytes = encode(&change, Encoding::Json);
    let score_bytes = encode(&score, Encoding::Bincode);
    for (key, value, headers) in [
        ("u1", change_bytes.as_slice(), &json.pairs()[..]),
        ("u2", score_bytes.as_slice(), &bincode.pairs()[..]),
        ("u3", b"not a record".as_slice(), &[][..]),
    ] {
        producer
            .send(OutRecord {
                topic: &topic,
                key: Some(key.as_bytes()),
                value,
                headers,
            })
            .await?;
    }
    producer
        .send_tombstone(&topic, b"u2", &bincode.pairs())
        .await?;
    drop(producer);
    let config_file = write_config(&kafka, &topics(1), "unused", "unused")?;
    let config = config_file.path();

    let all = run_ok(config, &["tail", &topic])?;
    let lines: Vec<Value> = all
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().unwrap_or("?"))
        .collect();
    ensure!(
        kinds == ["tier_changed", "user_score", "undecodable", "tombstone"],
        "{all}"
    );
    ensure!(
        serde_json::from_value::<TierChanged>(lines[0]["value"].clone())? == change,
        "{}",
        lines[0]
    );
    ensure!(
        serde_json::from_value::<UserScore>(lines[1]["value"].clone())? == score,
        "{}",
        lines[1]
    );
    ensure!(
        lines[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("tierflow-schema"))
    );
    ensure!(lines[3]["value"].is_null() && lines[3]["key"] == "u2");

    let filtered = run_ok(
        config,
        &[
            "tail",
            &topic,
            "--type",
            "user_score,tombstone",
            "--user",
            "u2",
        ],
    )?;
    ensure!(filtered.lines().count() == 2, "{filtered}");
    let pretty = run_ok(
        config,
        &["tail", &topic, "--from", "1", "--pretty", "--limit", "1"],
    )?;
    ensure!(
        pretty.lines().count() == 1 && pretty.contains("user_score") && pretty.contains("u2"),
        "{pretty}"
    );
    let from_end = run_ok(config, &["tail", &topic, "--from", "end"])?;
    ensure!(from_end.is_empty(), "{from_end}");
    let bad = tierflow(config, &["tail", &topic, "--type", "nonsense"])?;
    ensure!(!bad.status.success());
    Ok(())
}
