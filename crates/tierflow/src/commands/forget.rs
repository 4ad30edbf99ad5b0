//! `tierflow forget-user ID`: the right to be forgotten. Deletes the user's state (windows,
//! timers, decision memory), latest score and history in Redis, then publishes a tombstone to the compacted `user_score` topic so that
//! readers' local tables drop the user too.
//!
//! Redis first: were the tombstone first and the deletion then failed, readers would have
//! dropped a user tierflow still scores. Either order is safe to repeat. A pipeline that
//! receives a new event of the user afterwards starts a new state: stop the user's events
//! upstream first.

use std::io::Write;

use anyhow::{Context, Result};
use tierflow_events::{Contract, Encoding};
use tierflow_store::RedisStore;
use tierflow_stream::{BoundedProducer, OutputHeaders, TopicSpec, ensure_topics};

use crate::cli::ForgetUserArgs;
use crate::config::Config;

pub(crate) async fn run(args: ForgetUserArgs, mut config: Config) -> Result<()> {
    if let Some(url) = args.redis {
        config.redis.url = url;
    }
    let user = args.id.as_str();
    let store = RedisStore::connect(config.redis.clone())
        .await
        .context("connecting to Redis")?;
    let forgotten = store
        .forget(&[user])
        .await
        .context("deleting the user's keys")?
        .pop()
        .unwrap_or_default();

    let topic = &config.topics.user_score;
    ensure_topics(
        &config.kafka,
        &[TopicSpec::new(topic, config.topics.partitions).compacted()],
    )
    .await
    .with_context(|| format!("creating {topic}"))?;
    let mut producer = BoundedProducer::new(&config.kafka, 1)?;
    // The headers name the contract, so `tierflow tail` and readers know what was deleted.
    let headers = OutputHeaders::new(Contract::UserScore, Encoding::Json);
    let (partition, offset) = producer
        .send_tombstone(topic, user.as_bytes(), &headers.pairs())
        .await
        .with_context(|| format!("publishing the tombstone to {topic}"))?;

    let mut out = std::io::stdout().lock();
    for (key, deleted, what) in [
        (config.redis.state_key(user), forgotten.state, "state"),
        (
            config.redis.score_key(user),
            forgotten.score,
            "latest score",
        ),
        (
            config.redis.history_key(user),
            forgotten.history,
            "tier history and triggers",
        ),
    ] {
        let verb = if deleted { "deleted" } else { "absent " };
        writeln!(out, "{verb} {key} ({what})")?;
    }
    writeln!(
        out,
        "tombstone for {user} on {topic} partition {partition} offset {offset}"
    )?;
    out.flush()?;
    tracing::info!(
        state_deleted = forgotten.state,
        score_deleted = forgotten.score,
        history_deleted = forgotten.history,
        %topic,
        partition,
        offset,
        "user forgotten"
    );
    Ok(())
}
