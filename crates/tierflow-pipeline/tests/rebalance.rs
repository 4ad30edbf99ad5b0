//! Members joining and leaving one consumer group mid-stream (real broker, real Redis): each
//! revocation waits until the batches in flight are durable and committed, so the next
//! owner of a partition starts exactly after them — no record is processed twice, none is
//! lost, and state, outputs and offsets equal the offline replay of the same events. The
//! members run campaigns with budgets that span partitions: no limit is ever exceeded, and
//! opted-out users get nothing from any member.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use burn::prelude::Device;
use common::{
    Read, check, check_exposures, generated, model, observe, produce_records, synthetic,
    test_kafka, topics, wait_for,
};
use tierflow_events::CampaignTriggered;
use tierflow_model::{Artifact, Scorer};
use tierflow_pipeline::{
    Campaigns, Governance, Health, Pipeline, PipelineConfig, RunSummary, offline,
};
use tierflow_rules::RuleSet;
use tierflow_store::{Governor, RedisConfig, RedisStore};
use tierflow_stream::{KafkaConfig, ensure_topics};
use tierflow_testkit::{broker, redis, unique_name};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Member {
    health: Arc<Health>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<RunSummary, tierflow_pipeline::PipelineError>>,
}

/// Tight limits that span partitions and so members: budgets per campaign and event-time
/// hour, a daily cap per user, cooldowns.
const RULES: &str = r#"
tier_count = 5

[defaults]
cooldown = "1d"
daily_cap = 2

[[campaign]]
name = "first_purchase_thanks"
priority = 6
budget_per_hour = 1
when = { first_purchase = true }

[[campaign]]
name = "cart_reminder"
priority = 5
budget_per_hour = 2
cooldown = "6h"
when = { cart_abandoned = "30m" }

[[campaign]]
name = "vip_welcome"
priority = 10
control_fraction = 0.3
budget_per_hour = 1
when = { tier_reached = 4 }
"#;

/// A new member with its own governor connection, as a separate process would have.
async fn join(
    kafka: &KafkaConfig,
    topics: &tierflow_pipeline::TopicsConfig,
    store: &RedisStore,
    rules: &RuleSet,
    config: &PipelineConfig,
) -> Result<Member> {
    let health = Health::new();
    let (stop, shutdown) = watch::channel(false);
    let governor = Governor::connect(store.config().clone()).await?;
    let pipeline = Pipeline {
        config: config.clone(),
        kafka: kafka.clone(),
        topics: topics.clone(),
        store: store.clone(),
        model: model()?,
        health: Arc::clone(&health),
        campaigns: Some(Campaigns::new(rules.clone(), Governance::Redis(governor))),
        drift: Default::default(),
    };
    Ok(Member {
        health,
        stop,
        task: tokio::spawn(pipeline.run(shutdown)),
    })
}

impl Member {
    async fn leave(self) -> Result<RunSummary> {
        self.stop.send(true)?;
        Ok(self.task.await??)
    }
}

fn done(members: &[&Member]) -> u64 {
    members.iter().map(|m| m.health.records()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_mid_stream_process_every_record_once() -> Result<()> {
    // Shown when the test fails: who had which partitions, what was committed on handover.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("tierflow_pipeline=info")
        .try_init();
    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(6);
    ensure_topics(&kafka, &topics.specs()).await?;
    // The stream keeps flowing (about 1,000 records/s) while members join and leave.
    let generated = generated(&synthetic(300, 20, 11));
    let records = generated.len() as u64;
    // Every tenth user has opted out of campaigns, on every member.
    let mut users: Vec<String> = generated.iter().map(|(user, _)| user.clone()).collect();
    users.sort_unstable();
    users.dedup();
    let opted_out: BTreeSet<String> = users.into_iter().step_by(10).collect();
    let producer = {
        let (kafka, topic) = (kafka.clone(), topics.clickstream.clone());
        tokio::spawn(async move {
            for chunk in generated.chunks(500) {
                produce_records(&kafka, &topic, chunk).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            anyhow::Ok(())
        })
    };
    let redis_config = RedisConfig {
        key_prefix: unique_name("r"),
        ..RedisConfig::new(redis().url())
    };
    let store = RedisStore::connect(redis_config).await?;
    let opted: Vec<&str> = opted_out.iter().map(String::as_str).collect();
    Governor::connect(store.config().clone())
        .await?
        .opt_out(&opted)
        .await?;
    let rules = RuleSet::parse(RULES)?;
    let config = PipelineConfig {
        group_id: unique_name("group"),
        // Small batches, so a rebalance always finds batches in flight.
        batch_max_events: 50,
        // Event time only: the offline reference has no wall clock.
        idle_partition_secs: 0,
        ..PipelineConfig::default()
    };
    let long = Duration::from_secs(180);

    let first = join(&kafka, &topics, &store, &rules, &config).await?;
    wait_for("the first member to do a fifth", long, || {
        done(&[&first]) >= records / 5
    })
    .await?;
    let second = join(&kafka, &topics, &store, &rules, &config).await?;
    wait_for("the second member to get partitions", long, || {
        second.health.records() > 0
    })
    .await?;
    let third = join(&kafka, &topics, &store, &rules, &config).await?;
    wait_for("the third member to get partitions", long, || {
        third.health.records() > 0
    })
    .await?;
    ensure!(
        !producer.is_finished(),
        "the stream ended before every member joined; produce more"
    );
    // The first member leaves while the stream is still flowing.
    let mut summaries = vec![first.leave().await?];
    wait_for("the remaining members to finish", long, || {
        done(&[&second, &third]) + summaries[0].records >= records
    })
    .await?;
    producer.await??;
    summaries.push(second.leave().await?);
    summaries.push(third.leave().await?);

    let processed: u64 = summaries.iter().map(|s| s.records).sum();
    ensure!(
        processed == records,
        "{processed} records processed for {records} produced: a revocation replayed or lost records ({summaries:?})"
    );
    ensure!(summaries.iter().all(|s| s.batches > 0), "{summaries:?}");

    let observed = observe(&kafka, &topics, &config.group_id, records).await?;
    let scorer = Scorer::new(&Artifact::embedded_default()?, &Device::flex())?;
    let sources: Vec<_> = observed.input.iter().map(Read::source).collect();
    let expected = offline::replay_with(&scorer, &config, Some(&rules), &sources)?;
    let scored: u64 = summaries.iter().map(|s| s.counts.scored).sum();
    ensure!(
        scored == expected.scored,
        "scored {scored} != {}",
        expected.scored
    );
    // Strict: no output twice, state and committed offsets exactly the replay's.
    check(&observed, &expected, &store, scorer.version(), false).await?;
    check_exposures(&observed, &store, &rules).await?;
    // Opted-out users got nothing from any member, though their rules fired.
    for t in observed.triggered.iter().chain(&observed.held) {
        ensure!(
            !opted_out.contains(&t.user_id),
            "opted-out {} got {}",
            t.user_id,
            t.idempotency_key
        );
    }
    ensure!(
        expected
            .triggers
            .values()
            .any(|t| opted_out.contains(&t.user_id)),
        "no rule fired for an opted-out user: the test proves nothing about opt-outs"
    );
    limits_hold(&observed.triggered, &rules)
}

/// Budgets, daily caps and cooldowns held across the members: which trigger got the last
/// slot depends on timing, but no limit was ever exceeded, and the budgets did bind.
fn limits_hold(sent: &[CampaignTriggered], rules: &RuleSet) -> Result<()> {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let mut per_hour: BTreeMap<(&str, i64), u32> = BTreeMap::new();
    let mut per_day: BTreeMap<(&str, i64), u32> = BTreeMap::new();
    let mut times: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    let mut keys = BTreeSet::new();
    for t in sent {
        ensure!(
            keys.insert(&t.idempotency_key),
            "{} sent twice",
            t.idempotency_key
        );
        let at = t.event_time.unix_millis();
        *per_hour
            .entry((&t.campaign, at.div_euclid(HOUR)))
            .or_default() += 1;
        *per_day.entry((&t.user_id, at.div_euclid(DAY))).or_default() += 1;
        times.entry((&t.user_id, &t.campaign)).or_default().push(at);
    }
    ensure!(!sent.is_empty(), "nothing was sent");
    let mut at_budget = 0;
    for ((campaign, hour), n) in &per_hour {
        let budget = rules
            .campaign(campaign)
            .and_then(|c| c.budget_per_hour)
            .unwrap_or(u32::MAX);
        ensure!(
            *n <= budget,
            "{campaign} sent {n} in hour {hour}, budget {budget}"
        );
        at_budget += usize::from(*n == budget);
    }
    ensure!(
        at_budget > 0,
        "no budget ever bound: the test proves nothing about budgets"
    );
    for ((user, day), n) in &per_day {
        ensure!(
            *n <= rules.limits.daily_cap,
            "{user} got {n} sends on day {day}, cap {}",
            rules.limits.daily_cap
        );
    }
    for ((user, campaign), at) in &mut times {
        at.sort_unstable();
        let cooldown = rules.campaign(campaign).map_or(0, |c| c.cooldown_ms);
        for pair in at.windows(2) {
            ensure!(
                pair[1] - pair[0] >= cooldown,
                "{user} got {campaign} twice within {cooldown} ms"
            );
        }
    }
    Ok(())
}
