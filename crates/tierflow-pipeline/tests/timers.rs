//! Campaign timers of users who send nothing more (real broker, real Redis): a cart left at
//! the end of the stream is reminded about once the partition's clock passes the deadline,
//! even though no record arrives on its partition any more and the member that saw the cart
//! is gone: the timer index and the partition's clock were stored with the batch, and the
//! next member of the group picks them up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use common::{model, produce_records, read_all, test_kafka, topics, wait_for};
use tierflow_events::{CampaignTriggered, ClickEvent, Encoding, EventTime, EventType, decode};
use tierflow_pipeline::{Campaigns, Governance, Health, Pipeline, PipelineConfig, RunSummary};
use tierflow_rules::RuleSet;
use tierflow_store::{Governor, RedisConfig, RedisStore, StateStore};
use tierflow_stream::consume::committed_offsets;
use tierflow_stream::{KafkaConfig, ensure_topics};
use tierflow_testkit::{broker, redis, unique_name};
use tokio::sync::watch;

const RULES: &str = r#"
tier_count = 5

[[campaign]]
name = "cart_reminder"
when = { cart_abandoned = "12s" }
"#;

fn event(id: &str, kind: EventType, ts: i64) -> ClickEvent {
    ClickEvent {
        schema_version: 1,
        event_id: id.into(),
        user_id: "quiet".into(),
        event_type: kind,
        ts: EventTime::from_unix_millis(ts),
        session_id: "s1".into(),
        product_id: Some("p1".into()),
        category: Some("shoes".into()),
        price: Some(40.0),
        quantity: Some(1),
        currency: Some("EUR".into()),
        order_id: None,
        revenue: None,
        channel: None,
        device: None,
    }
}

async fn run_member(
    kafka: &KafkaConfig,
    topics: &tierflow_pipeline::TopicsConfig,
    store: &RedisStore,
    config: &PipelineConfig,
) -> Result<(
    Arc<Health>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<RunSummary, tierflow_pipeline::PipelineError>>,
)> {
    let health = Health::new();
    let (stop, shutdown) = watch::channel(false);
    let pipeline = Pipeline {
        config: config.clone(),
        kafka: kafka.clone(),
        topics: topics.clone(),
        store: store.clone(),
        model: model()?,
        health: Arc::clone(&health),
        campaigns: Some(Campaigns::new(
            RuleSet::parse(RULES)?,
            Governance::Redis(Governor::connect(store.config().clone()).await?),
        )),
        drift: Default::default(),
    };
    Ok((health, stop, tokio::spawn(pipeline.run(shutdown))))
}

async fn triggered(kafka: &KafkaConfig, topic: &str) -> Result<Vec<CampaignTriggered>> {
    read_all(kafka, topic, 0, Duration::from_secs(1))
        .await?
        .iter()
        .map(|r| Ok(decode(&r.payload, Encoding::Json)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_users_cart_timer_fires_after_a_restart_with_no_further_records() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("tierflow_pipeline=info")
        .try_init();
    let kafka = test_kafka(broker().bootstrap_servers());
    let topics = topics(2);
    ensure_topics(&kafka, &topics.specs()).await?;
    let store = RedisStore::connect(RedisConfig {
        key_prefix: unique_name("r"),
        ..RedisConfig::new(redis().url())
    })
    .await?;
    let config = PipelineConfig {
        group_id: unique_name("group"),
        timer_slack_ms: 500,
        idle_partition_secs: 1,
        ..PipelineConfig::default()
    };

    // A view, then a cart; nothing else ever arrives.
    let cart_at = EventTime::now().unix_millis();
    let due = cart_at + 12_000;
    let records: Vec<(String, Vec<u8>)> = [
        event("view-1", EventType::ProductView, cart_at - 1_000),
        event("cart-1", EventType::AddToCart, cart_at),
    ]
    .iter()
    .map(|e| ("quiet".to_owned(), e.to_json()))
    .collect();
    produce_records(&kafka, &topics.clickstream, &records).await?;

    // The first member sees both records and leaves well before the deadline.
    let (health, stop, task) = run_member(&kafka, &topics, &store, &config).await?;
    wait_for(
        "the first member to apply both records",
        Duration::from_secs(60),
        || health.records() >= 2,
    )
    .await?;
    stop.send(true)?;
    let first = task.await??;
    ensure!(first.records == 2, "{first:?}");
    ensure!(
        EventTime::now().unix_millis() < due,
        "the first member took past the deadline; the restart proves nothing"
    );
    ensure!(
        triggered(&kafka, &topics.campaign_triggered)
            .await?
            .is_empty(),
        "fired before its deadline"
    );
    let partition = tokio::task::block_in_place(|| {
        committed_offsets(&kafka, &config.group_id, &topics.clickstream)
    })?
    .into_iter()
    .find(|(_, offset)| *offset == 2)
    .map(|(p, _)| p);
    ensure!(
        partition.is_some(),
        "both records committed on one partition"
    );

    // A new member of the group: nothing left to read, yet the reminder goes out once the
    // partition's clock (the wall clock, the partition being quiet) passes the deadline.
    let (health, stop, task) = run_member(&kafka, &topics, &store, &config).await?;
    let mut sent = Vec::new();
    for _ in 0..60 {
        sent = triggered(&kafka, &topics.campaign_triggered).await?;
        if !sent.is_empty() {
            break;
        }
    }
    stop.send(true)?;
    let second = task.await??;
    ensure!(second.records == 0, "re-read records: {second:?}");
    ensure!(health.records() == 0);
    ensure!(sent.len() == 1, "expected one reminder, got {sent:?}");
    let reminder = &sent[0];
    ensure!(reminder.user_id == "quiet" && reminder.campaign == "cart_reminder");
    ensure!(reminder.event_time.unix_millis() == due, "{reminder:?}");
    ensure!(
        reminder.causing_event_id.as_deref() == Some("cart-1"),
        "{reminder:?}"
    );
    ensure!(
        reminder.processing_time.unix_millis() >= due + 500,
        "fired before the clock passed the deadline plus the slack: {reminder:?}"
    );
    // It reports the scores of the user's last update.
    ensure!(
        !reminder.scores.tier_probabilities.is_empty(),
        "{reminder:?}"
    );

    // The timer is gone from the user's state and from the partition's index.
    let partition = partition.unwrap_or_default();
    let left = store
        .due_users(&topics.clickstream, &[(partition, i64::MAX)], 10)
        .await?;
    ensure!(left == [Vec::<String>::new()], "still indexed: {left:?}");
    let state = store.load(&["quiet"]).await?.remove(0)?.expect("stored");
    let (rules, _) = tierflow_pipeline::campaigns::rule_state(&state);
    ensure!(rules.timers.is_empty(), "{:?}", rules.timers);
    Ok(())
}
