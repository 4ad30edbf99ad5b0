//! The Redis governor against a real redis-server from the testkit: cooldowns, daily caps,
//! suppression, budgets, priorities, control holdouts and idempotent replays each give the
//! hand-worked verdicts, a batch of users costs one round trip, and consumers racing on the
//! same user or campaign never get more sends than the caps allow.

use anyhow::{Result, ensure};
use tierflow_events::EventTime;
use tierflow_store::governance::IDEMPOTENCY_TTL_MS;
use tierflow_store::{GovernCandidate, GovernRequest, GovernVerdict, Governor, RedisConfig};
use tierflow_testkit::{redis, unique_name};

use GovernVerdict::*;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = EventTime::MILLIS_PER_HOUR;
const DAY: i64 = EventTime::MILLIS_PER_DAY;

async fn governor() -> Result<Governor> {
    let mut config = RedisConfig::new(redis().url());
    config.key_prefix = unique_name("gov");
    Ok(Governor::connect(config).await?)
}

/// Another consumer's governor on the same keys (its own connection).
async fn same_keys(prefix: &str) -> Result<Governor> {
    let mut config = RedisConfig::new(redis().url());
    config.key_prefix = prefix.to_owned();
    Ok(Governor::connect(config).await?)
}

/// A candidate of `campaign` fired `ms` after T0; no cooldown, budget or control unless set.
fn cand(campaign: &str, ms: i64) -> GovernCandidate {
    GovernCandidate {
        campaign: campaign.to_owned(),
        idempotency_key: format!("ct/{campaign}/{ms}"),
        fired_at: EventTime::from_unix_millis(T0 + ms),
        priority: 0,
        cooldown_ms: 0,
        budget_per_hour: None,
        in_control: false,
    }
}

fn request(user: &str, candidates: Vec<GovernCandidate>) -> GovernRequest {
    GovernRequest {
        user_id: user.to_owned(),
        daily_cap: 3,
        max_simultaneous: 1,
        candidates: candidates
            .into_iter()
            .map(|mut c| {
                c.idempotency_key = format!("{user}/{}", c.idempotency_key);
                c
            })
            .collect(),
    }
}

async fn decide_one(governor: &Governor, request: GovernRequest) -> Result<Vec<GovernVerdict>> {
    Ok(governor.decide(&[request]).await?.remove(0))
}

#[tokio::test]
async fn cooldown_holds_in_event_time_both_ways() -> Result<()> {
    let g = governor().await?;
    let a = |ms| GovernCandidate {
        cooldown_ms: 7 * DAY,
        ..cand("a", ms)
    };
    let check = async |ms: i64, expected: GovernVerdict| -> Result<()> {
        let got = decide_one(&g, request("u", vec![a(ms)])).await?;
        ensure!(
            got == [expected],
            "at {} days: {got:?}",
            ms as f64 / DAY as f64
        );
        Ok(())
    };
    check(10 * DAY, Send).await?;
    check(16 * DAY, Cooldown).await?;
    check(5 * DAY, Cooldown).await?;
    check(17 * DAY, Send).await?;
    // Other users and campaigns are unaffected.
    ensure!(decide_one(&g, request("v", vec![a(17 * DAY + 1)])).await? == [Send]);
    ensure!(decide_one(&g, request("u", vec![cand("b", 17 * DAY + 1)])).await? == [Send]);
    Ok(())
}

#[tokio::test]
async fn daily_cap_counts_across_campaigns_per_event_time_day() -> Result<()> {
    let g = governor().await?;
    let got = decide_one(
        &g,
        request(
            "u",
            vec![
                cand("d", 4 * HOUR),
                cand("a", HOUR),
                cand("b", 2 * HOUR),
                cand("c", 3 * HOUR),
            ],
        ),
    )
    .await?;
    // Event-time order: a, b, c sent; d capped.
    ensure!(got == [DailyCap, Send, Send, Send], "{got:?}");
    ensure!(decide_one(&g, request("u", vec![cand("e", DAY - 1)])).await? == [DailyCap]);
    ensure!(decide_one(&g, request("u", vec![cand("e", DAY)])).await? == [Send]);
    Ok(())
}

#[tokio::test]
async fn simultaneous_triggers_send_the_highest_priority_only() -> Result<()> {
    let g = governor().await?;
    let with_priority = |campaign, ms, priority| GovernCandidate {
        priority,
        ..cand(campaign, ms)
    };
    let got = decide_one(
        &g,
        request(
            "u",
            vec![
                with_priority("c", 0, 1),
                with_priority("a", 0, 3),
                with_priority("b", 0, 2),
                with_priority("d", 60_000, 0),
            ],
        ),
    )
    .await?;
    ensure!(got == [LowerPriority, Send, LowerPriority, Send], "{got:?}");
    // Two at once when allowed.
    let mut two = request(
        "v",
        vec![
            with_priority("a", 0, 3),
            with_priority("b", 0, 2),
            with_priority("c", 0, 1),
        ],
    );
    two.max_simultaneous = 2;
    let got = decide_one(&g, two).await?;
    ensure!(got == [Send, Send, LowerPriority], "{got:?}");
    Ok(())
}

#[tokio::test]
async fn a_control_holdout_takes_no_slot_but_starts_the_cooldown() -> Result<()> {
    let g = governor().await?;
    let held = GovernCandidate {
        priority: 9,
        in_control: true,
        cooldown_ms: 7 * DAY,
        ..cand("held", 0)
    };
    let got = decide_one(&g, request("u", vec![held.clone(), cand("a", 0)])).await?;
    ensure!(got == [ControlHoldout, Send], "{got:?}");
    let later = GovernCandidate {
        fired_at: EventTime::from_unix_millis(T0 + HOUR),
        idempotency_key: "held-later".into(),
        ..held.clone()
    };
    ensure!(decide_one(&g, request("u", vec![later])).await? == [Cooldown]);
    // Only eligible users are held out: a capped user is capped, not held out.
    let held_after_three_sends = GovernCandidate {
        fired_at: EventTime::from_unix_millis(T0 + 4),
        ..held
    };
    let capped = decide_one(
        &g,
        request(
            "w",
            vec![
                cand("a", 1),
                cand("b", 2),
                cand("c", 3),
                held_after_three_sends,
            ],
        ),
    )
    .await?;
    ensure!(capped == [Send, Send, Send, DailyCap], "{capped:?}");
    Ok(())
}

#[tokio::test]
async fn opted_out_users_get_nothing_until_they_opt_in() -> Result<()> {
    let g = governor().await?;
    g.opt_out(&["u"]).await?;
    let got = decide_one(&g, request("u", vec![cand("a", 0), cand("b", HOUR)])).await?;
    ensure!(got == [OptedOut, OptedOut], "{got:?}");
    ensure!(decide_one(&g, request("v", vec![cand("a", 0)])).await? == [Send]);
    g.opt_in(&["u"]).await?;
    ensure!(decide_one(&g, request("u", vec![cand("c", 2 * HOUR)])).await? == [Send]);
    Ok(())
}

#[tokio::test]
async fn budget_caps_a_campaign_per_event_time_hour() -> Result<()> {
    let g = governor().await?;
    let b = |ms| GovernCandidate {
        budget_per_hour: Some(2),
        ..cand("budgeted", ms)
    };
    ensure!(decide_one(&g, request("u1", vec![b(0)])).await? == [Send]);
    ensure!(decide_one(&g, request("u2", vec![b(1)])).await? == [Send]);
    ensure!(decide_one(&g, request("u3", vec![b(HOUR - 1)])).await? == [Budget]);
    ensure!(decide_one(&g, request("u3", vec![b(HOUR)])).await? == [Send]);
    Ok(())
}

#[tokio::test]
async fn a_replay_gets_the_earlier_verdicts_and_consumes_nothing() -> Result<()> {
    let g = governor().await?;
    let first = request("u", vec![cand("a", 0), cand("b", 0), cand("c", HOUR)]);
    let verdicts = decide_one(&g, first.clone()).await?;
    ensure!(verdicts == [Send, LowerPriority, Send], "{verdicts:?}");
    for _ in 0..3 {
        ensure!(decide_one(&g, first.clone()).await? == verdicts);
    }
    // Two sends so far whatever the replays: one slot left today.
    let got = decide_one(
        &g,
        request("u", vec![cand("d", 2 * HOUR), cand("e", 3 * HOUR)]),
    )
    .await?;
    ensure!(got == [Send, DailyCap], "{got:?}");
    ensure!(IDEMPOTENCY_TTL_MS == 8 * DAY);
    Ok(())
}

#[tokio::test]
async fn a_batch_of_users_costs_one_round_trip() -> Result<()> {
    let g = governor().await?;
    let requests: Vec<GovernRequest> = (0..200)
        .map(|u| request(&format!("u{u}"), vec![cand("a", 0), cand("b", HOUR)]))
        .chain([request("nobody", vec![])])
        .collect();
    let before = g.round_trips();
    let decided = g.decide(&requests).await?;
    ensure!(
        g.round_trips() - before == 1,
        "{} round trips",
        g.round_trips() - before
    );
    ensure!(decided.len() == 201);
    ensure!(decided[..200].iter().all(|v| v == &[Send, Send]));
    ensure!(decided[200].is_empty());
    Ok(())
}

#[tokio::test]
async fn a_lost_script_is_reloaded() -> Result<()> {
    let g = governor().await?;
    let client = ::redis::Client::open(redis().url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut connection)
        .await?;
    let before = g.round_trips();
    ensure!(decide_one(&g, request("u", vec![cand("a", 0)])).await? == [Send]);
    // NOSCRIPT, SCRIPT LOAD, the retry.
    ensure!(
        g.round_trips() - before == 3,
        "{}",
        g.round_trips() - before
    );
    Ok(())
}

/// Consumers on several partitions (here: 8 tasks, each with its own connection) racing on
/// one user get exactly `daily_cap` sends between them, and on one campaign exactly its
/// budget; a trigger replayed by all of them at once is decided once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_consumers_never_exceed_the_caps() -> Result<()> {
    const TASKS: usize = 8;
    let first = governor().await?;
    let prefix = first.config().key_prefix.clone();
    let mut consumers = vec![first];
    for _ in 1..TASKS {
        consumers.push(same_keys(&prefix).await?);
    }

    // Same user, same campaign, distinct triggers all on one day: daily cap 3.
    let mut tasks = tokio::task::JoinSet::new();
    for (t, g) in consumers.iter().cloned().enumerate() {
        tasks.spawn(async move {
            let mut sends = 0;
            for n in 0..25 {
                let ms = ((t * 25 + n) as i64) * 60_000;
                let verdicts = decide_one(&g, request("hot", vec![cand("a", ms)])).await?;
                sends += usize::from(verdicts == [Send]);
            }
            anyhow::Ok(sends)
        });
    }
    let sends: usize = tasks.join_all().await.into_iter().sum::<Result<usize>>()?;
    ensure!(
        sends == 3,
        "{sends} sends to one user with a daily cap of 3"
    );

    // Many users, one campaign, budget 10 per hour.
    let mut tasks = tokio::task::JoinSet::new();
    for (t, g) in consumers.iter().cloned().enumerate() {
        tasks.spawn(async move {
            let requests: Vec<GovernRequest> = (0..20)
                .map(|u| {
                    request(
                        &format!("t{t}u{u}"),
                        vec![GovernCandidate {
                            budget_per_hour: Some(10),
                            ..cand("budgeted", 5 * 60_000)
                        }],
                    )
                })
                .collect();
            let decided = g.decide(&requests).await?;
            anyhow::Ok(decided.iter().filter(|v| v.as_slice() == [Send]).count())
        });
    }
    let sends: usize = tasks.join_all().await.into_iter().sum::<Result<usize>>()?;
    ensure!(sends == 10, "{sends} sends with a budget of 10");

    // The same trigger replayed by every consumer at once: one decision, one slot.
    let mut tasks = tokio::task::JoinSet::new();
    for g in &consumers {
        let g = g.clone();
        tasks.spawn(async move { decide_one(&g, request("replayed", vec![cand("a", 0)])).await });
    }
    for verdicts in tasks.join_all().await {
        ensure!(verdicts? == [Send]);
    }
    let got = decide_one(
        &consumers[0],
        request(
            "replayed",
            vec![cand("b", HOUR), cand("c", 2 * HOUR), cand("d", 3 * HOUR)],
        ),
    )
    .await?;
    ensure!(got == [Send, Send, DailyCap], "{got:?}");
    Ok(())
}

/// On a 3-master Redis Cluster: every governance key shares one slot, so the script stays
/// atomic; the verdicts are the single node's (cooldown, daily cap, opt-out, budget,
/// replay), racing consumers with their own connections still get exactly the caps, and a
/// batch of users costs one round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_governs_like_a_single_node() -> Result<()> {
    let cluster = tokio::task::spawn_blocking(tierflow_testkit::RedisCluster::start).await??;
    let mut config = RedisConfig::new(cluster.urls());
    config.cluster = true;
    config.key_prefix = unique_name("gov");
    let g = Governor::connect(config.clone()).await?;

    // Cooldown both ways, then the daily cap (3).
    let cool = |ms| GovernCandidate {
        cooldown_ms: 2 * HOUR,
        ..cand("cool", ms)
    };
    ensure!(decide_one(&g, request("u", vec![cool(5 * HOUR)])).await? == [Send]);
    ensure!(decide_one(&g, request("u", vec![cool(4 * HOUR)])).await? == [Cooldown]);
    ensure!(decide_one(&g, request("u", vec![cool(7 * HOUR)])).await? == [Send]);
    let got = decide_one(
        &g,
        request("u", vec![cand("x", 8 * HOUR), cand("y", 9 * HOUR)]),
    )
    .await?;
    ensure!(got == [Send, DailyCap], "{got:?}");
    // A replay gets the same verdicts.
    ensure!(
        decide_one(
            &g,
            request("u", vec![cand("x", 8 * HOUR), cand("y", 9 * HOUR)])
        )
        .await?
            == got
    );
    // Opt-out.
    g.opt_out(&["quiet"]).await?;
    ensure!(decide_one(&g, request("quiet", vec![cand("a", 0)])).await? == [OptedOut]);

    // Racing consumers, one connection each: a budget of 10 per hour holds across them.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4 {
        let config = config.clone();
        tasks.spawn(async move {
            let g = Governor::connect(config).await?;
            let requests: Vec<GovernRequest> = (0..20)
                .map(|u| {
                    request(
                        &format!("t{t}u{u}"),
                        vec![GovernCandidate {
                            budget_per_hour: Some(10),
                            ..cand("budgeted", 5 * 60_000)
                        }],
                    )
                })
                .collect();
            let trips = g.round_trips();
            let decided = g.decide(&requests).await?;
            ensure!(g.round_trips() == trips + 1, "20 users in one round trip");
            anyhow::Ok(decided.iter().filter(|v| v.as_slice() == [Send]).count())
        });
    }
    let sends: usize = tasks.join_all().await.into_iter().sum::<Result<usize>>()?;
    ensure!(
        sends == 10,
        "{sends} sends with a budget of 10 on a cluster"
    );

    // All of it on one master: the keys share a slot.
    let mut holding = 0;
    for port in cluster.ports() {
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys: i64 = ::redis::cmd("DBSIZE").query_async(&mut conn).await?;
        holding += usize::from(keys > 0);
    }
    ensure!(
        holding == 1,
        "governance keys spread over {holding} masters"
    );
    Ok(())
}
