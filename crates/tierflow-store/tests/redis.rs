//! The Redis store against a real redis-server from the testkit: batches cost one round trip
//! each way, replays are idempotent, state expires by TTL, and the in-memory store behaves
//! the same.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use tierflow_events::{ClickEvent, EventTime, EventType};
use tierflow_features::UserState;
use tierflow_store::{
    BatchWrites, EventOutcome, HISTORY_LEN, MemoryStore, RedisConfig, RedisStore, SourceEvent,
    StateStore, apply_batch,
};
use tierflow_testkit::{redis, unique_name};

const T0: i64 = 1_767_225_600_000;

fn event(user: usize, n: usize, kind: EventType) -> ClickEvent {
    ClickEvent {
        schema_version: 1,
        event_id: format!("e{user}-{n}"),
        user_id: format!("u{user}"),
        event_type: kind,
        ts: EventTime::from_unix_millis(T0 + (n as i64) * 60_000),
        session_id: format!("s{user}"),
        product_id: None,
        category: Some("shoes".into()),
        price: Some(10.0),
        quantity: Some(1),
        currency: Some("EUR".into()),
        order_id: None,
        revenue: kind.requires_revenue().then_some(25.0),
        channel: None,
        device: None,
    }
}

async fn store_with_prefix() -> Result<RedisStore> {
    let mut config = RedisConfig::new(redis().url());
    config.key_prefix = unique_name("tf");
    Ok(RedisStore::connect(config).await?)
}

/// 1,000 users × 3 events on one partition.
fn batch() -> Vec<ClickEvent> {
    (0..3)
        .flat_map(|n| {
            (0..1_000).map(move |u| {
                event(
                    u,
                    n,
                    if n == 2 {
                        EventType::Purchase
                    } else {
                        EventType::ProductView
                    },
                )
            })
        })
        .collect()
}

fn sourced(events: &[ClickEvent]) -> Vec<SourceEvent<'_>> {
    events
        .iter()
        .enumerate()
        .map(|(offset, event)| SourceEvent {
            partition: 0,
            offset: offset as i64,
            event,
        })
        .collect()
}

async fn batches_cost_one_round_trip_each_way<S: StateStore>(store: &S) -> Result<()> {
    let events = batch();
    let before = store.round_trips();
    let outcome = apply_batch(store, &sourced(&events)).await?;
    ensure!(
        store.round_trips() - before == 2,
        "a batch of 1,000 users took {} round trips",
        store.round_trips() - before
    );
    ensure!(outcome.outcomes.iter().all(|o| *o == EventOutcome::Applied));
    ensure!(outcome.updated.len() == 1_000);

    let users: Vec<String> = (0..1_000)
        .map(|u| format!("u{u}"))
        .chain(["nobody".into()])
        .collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let loaded = store.load(&names).await?;
    for ((user, state), loaded) in outcome.updated.iter().zip(&loaded) {
        ensure!(
            loaded.as_ref().ok() == Some(&Some(state.clone())),
            "{user} differs"
        );
    }
    ensure!(
        matches!(loaded.last(), Some(Ok(None))),
        "unknown users load as absent"
    );
    Ok(())
}

async fn replays_are_idempotent<S: StateStore>(store: &S) -> Result<()> {
    let events = batch();
    let first = apply_batch(store, &sourced(&events)).await?;
    // The same records again (a crash before the commit): nothing changes.
    let replay = apply_batch(store, &sourced(&events)).await?;
    ensure!(replay.outcomes.iter().all(|o| *o == EventOutcome::Replayed));
    let names: Vec<&str> = first.updated.iter().map(|(u, _)| u.as_str()).collect();
    let loaded = store.load(&names).await?;
    for ((_, state), loaded) in first.updated.iter().zip(loaded) {
        ensure!(loaded? == Some(state.clone()));
    }
    // A new record with the same event id at a new offset is a duplicate, not a replay.
    let again = [event(7, 0, EventType::ProductView)];
    let dup = apply_batch(
        store,
        &[SourceEvent {
            partition: 0,
            offset: 10_000,
            event: &again[0],
        }],
    )
    .await?;
    ensure!(dup.outcomes == [EventOutcome::Duplicate]);
    Ok(())
}

#[tokio::test]
async fn redis_batches_cost_one_round_trip_each_way() -> Result<()> {
    batches_cost_one_round_trip_each_way(&store_with_prefix().await?).await
}

#[tokio::test]
async fn memory_batches_cost_one_round_trip_each_way() -> Result<()> {
    batches_cost_one_round_trip_each_way(&MemoryStore::new()).await
}

#[tokio::test]
async fn redis_replays_are_idempotent() -> Result<()> {
    replays_are_idempotent(&store_with_prefix().await?).await
}

#[tokio::test]
async fn memory_replays_are_idempotent() -> Result<()> {
    replays_are_idempotent(&MemoryStore::new()).await
}

#[tokio::test]
async fn state_expires_after_its_ttl() -> Result<()> {
    let mut config = RedisConfig::new(redis().url());
    config.key_prefix = unique_name("ttl");
    config.state_ttl_secs = 1;
    let store = RedisStore::connect(config.clone()).await?;
    store.store(&[("quiet", &UserState::default())]).await?;
    let client = ::redis::Client::open(redis().url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(config.state_key("quiet"))
        .query_async(&mut conn)
        .await?;
    ensure!((1..=1_000).contains(&pttl), "PTTL {pttl}");
    // Wait for the condition (expiry), not for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if matches!(store.load(&["quiet"]).await?.as_slice(), [Ok(None)]) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "state outlived its TTL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn default_ttl_covers_the_longest_window_plus_lateness() {
    let ttl = tierflow_store::default_ttl();
    assert_eq!(ttl, Duration::from_secs((90 + 7 + 1) * 86_400));
}

#[tokio::test]
async fn corrupt_state_is_poison_for_that_user_only() -> Result<()> {
    let store = store_with_prefix().await?;
    let client = ::redis::Client::open(redis().url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let () = ::redis::cmd("SET")
        .arg(store.config().state_key("u1"))
        .arg(b"\x09garbage".as_slice())
        .query_async(&mut conn)
        .await?;
    let events = [
        event(1, 0, EventType::PageView),
        event(2, 0, EventType::PageView),
    ];
    let outcome = apply_batch(&store, &sourced(&events)).await?;
    ensure!(
        matches!(outcome.outcomes[0], EventOutcome::CorruptState(ref r) if r.contains("format 9"))
    );
    ensure!(outcome.outcomes[1] == EventOutcome::Applied);
    // The unreadable state is left for an operator, not overwritten.
    let raw: Vec<u8> = ::redis::cmd("GET")
        .arg(store.config().state_key("u1"))
        .query_async(&mut conn)
        .await?;
    ensure!(raw == b"\x09garbage");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_redis_is_a_retriable_error() -> Result<()> {
    let mut config = RedisConfig::new("redis://127.0.0.1:1/");
    config.connect_timeout_ms = 200;
    config.retries = 1;
    let err = RedisStore::connect(config)
        .await
        .expect_err("nothing listens on port 1");
    ensure!(err.is_retriable(), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_holds_a_batch_across_slots_in_one_round_trip_per_operation() -> Result<()>
{
    let cluster = tokio::task::spawn_blocking(tierflow_testkit::RedisCluster::start).await??;
    let mut config = RedisConfig::new(cluster.urls());
    config.cluster = true;
    config.key_prefix = unique_name("cluster");
    let store = RedisStore::connect(config.clone()).await?;
    // 1,000 users spread over all three masters' slots.
    batches_cost_one_round_trip_each_way(&store).await?;
    replays_are_idempotent(&store).await?;
    history_keeps_the_newest_entries(&store).await?;
    // Every master holds some of the users: the keys really are spread.
    for port in cluster.ports() {
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys: i64 = ::redis::cmd("DBSIZE").query_async(&mut conn).await?;
        ensure!(keys > 100, "master on {port} holds only {keys} keys");
    }
    Ok(())
}

#[tokio::test]
async fn auth_by_url_works_and_a_wrong_password_is_fatal() -> Result<()> {
    let server = tokio::task::spawn_blocking(|| {
        tierflow_testkit::RedisServer::start_with_password("s3cret")
    })
    .await??;
    let store = RedisStore::connect(RedisConfig::new(server.url())).await?;
    store.store(&[("u1", &UserState::default())]).await?;
    ensure!(matches!(
        store.load(&["u1"]).await?.as_slice(),
        [Ok(Some(_))]
    ));

    let wrong = server.url().replace("s3cret", "wrong");
    let err = RedisStore::connect(RedisConfig::new(wrong))
        .await
        .expect_err("bad password");
    ensure!(
        !err.is_retriable(),
        "a wrong password must not be retried forever: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn rediss_connects_with_a_trusted_ca_and_refuses_an_untrusted_server() -> Result<()> {
    let server = tokio::task::spawn_blocking(tierflow_testkit::RedisServer::start_tls).await??;
    ensure!(server.url().starts_with("rediss://"));
    let mut config = RedisConfig::new(server.url());
    config.tls_ca_file = Some(server.tls_ca_file().unwrap().display().to_string());
    let store = RedisStore::connect(config).await?;
    store.store(&[("u1", &UserState::default())]).await?;
    ensure!(matches!(
        store.load(&["u1"]).await?.as_slice(),
        [Ok(Some(_))]
    ));

    // Without the CA, the server's certificate is not trusted: no connection.
    let mut untrusting = RedisConfig::new(server.url());
    untrusting.retries = 0;
    ensure!(
        RedisStore::connect(untrusting).await.is_err(),
        "an untrusted certificate was accepted"
    );
    Ok(())
}

/// Partition leases: one owner at a time, renewable by the owner, released only by it,
/// expiring by themselves, taken by force when asked.
async fn leases_have_one_owner(store: &impl StateStore) -> Result<()> {
    let names = vec!["t:0".to_owned(), "t:1".to_owned()];
    let long = Duration::from_secs(60);
    ensure!(store.claim_leases("a", &names, long, false).await? == [None, None]);
    // The owner renews; another member is told who holds them.
    ensure!(store.claim_leases("a", &names, long, false).await? == [None, None]);
    ensure!(
        store.claim_leases("b", &names, long, false).await?
            == [Some("a".to_owned()), Some("a".to_owned())]
    );
    // Only the owner's release counts.
    store.release_leases("b", &names[..1]).await?;
    ensure!(store.claim_leases("b", &names[..1], long, false).await? == [Some("a".to_owned())]);
    store.release_leases("a", &names[..1]).await?;
    ensure!(store.claim_leases("b", &names[..1], long, false).await? == [None]);
    // Forced: taken from its owner, who learns it at its next renewal.
    ensure!(store.claim_leases("b", &names[1..], long, true).await? == [None]);
    ensure!(store.claim_leases("a", &names[1..], long, false).await? == [Some("b".to_owned())]);
    // A lease runs out by itself.
    let short = vec!["t:2".to_owned()];
    ensure!(
        store
            .claim_leases("a", &short, Duration::from_millis(50), false)
            .await?
            == [None]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.claim_leases("b", &short, long, false).await? != [None] {
        ensure!(Instant::now() < deadline, "the lease outlived its TTL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn redis_leases_have_one_owner() -> Result<()> {
    leases_have_one_owner(&store_with_prefix().await?).await
}

#[tokio::test]
async fn memory_leases_have_one_owner() -> Result<()> {
    leases_have_one_owner(&MemoryStore::new()).await
}

/// Each user's history: entries appended batch after batch come back newest first, capped at
/// `HISTORY_LEN`, in the same round trip as the states; other users' histories are apart.
async fn history_keeps_the_newest_entries(store: &impl StateStore) -> Result<()> {
    let entries: Vec<Vec<u8>> = (0..HISTORY_LEN + 5)
        .map(|i| format!("{{\"n\":{i}}}").into_bytes())
        .collect();
    let trips = store.round_trips();
    // Two batches: the first 3 entries of "a" and one of "b", then the rest of "a".
    let first = BatchWrites {
        history: vec![
            ("a", entries[0].as_slice()),
            ("b", b"only".as_slice()),
            ("a", entries[1].as_slice()),
            ("a", entries[2].as_slice()),
        ],
        ..BatchWrites::default()
    };
    store.store_raw(&[], &[], &first).await?;
    ensure!(store.round_trips() == trips + 1, "one round trip per batch");
    let rest = BatchWrites {
        history: entries[3..].iter().map(|e| ("a", e.as_slice())).collect(),
        ..BatchWrites::default()
    };
    store.store_raw(&[], &[], &rest).await?;
    let a = store.history("a").await?;
    let newest: Vec<Vec<u8>> = entries.iter().rev().take(HISTORY_LEN).cloned().collect();
    ensure!(
        a == newest,
        "history of a: {} entries, not the newest {HISTORY_LEN}",
        a.len()
    );
    ensure!(store.history("b").await? == vec![b"only".to_vec()]);
    ensure!(store.history("nobody").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn redis_history_keeps_the_newest_entries() -> Result<()> {
    let store = store_with_prefix().await?;
    history_keeps_the_newest_entries(&store).await?;
    // Forgetting a user deletes the history too.
    let forgotten = store.forget(&["a"]).await?;
    ensure!(forgotten[0].history, "{forgotten:?}");
    ensure!(store.history("a").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn memory_history_keeps_the_newest_entries() -> Result<()> {
    history_keeps_the_newest_entries(&MemoryStore::new()).await
}
