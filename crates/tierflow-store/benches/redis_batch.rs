//! What one Redis batch of 1,000 users costs (issue 3): `apply_batch` through `RedisStore`
//! (one `MGET`, the events applied, one pipelined `SET … PX`), and the load and the store on
//! their own, against a private redis-server from the testkit. Results go to BENCHMARKS.md;
//! nothing here asserts a timing.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tierflow_data::synth::{self, Dials, SynthConfig};
use tierflow_events::ClickEvent;
use tierflow_features::UserState;
use tierflow_store::{EventOutcome, RedisConfig, RedisStore, SourceEvent, StateStore, apply_batch};
use tierflow_testkit::{RedisServer, unique_name};

const BATCH_USERS: usize = 1_000;
const PARTITION: i32 = 0;

/// 1,000 users with warm state, and a batch holding each user's next event.
struct Fixture {
    /// `(user, state after all but the user's last event)`, in user order.
    warm: Vec<(String, UserState)>,
    /// Each user's last emitted event with its source offset (emission position).
    batch: Vec<(i64, ClickEvent)>,
}

impl Fixture {
    /// Generates 90 days for a few more users than needed (some have fewer than two events),
    /// holds back each user's last event as the batch, and folds the rest into warm state.
    fn build() -> Self {
        let config = SynthConfig {
            users: BATCH_USERS as u64 * 11 / 10,
            days: 90,
            seed: 42,
            dials: Dials {
                out_of_order: 0.02,
                late: 0.005,
                duplicate: 0.01,
                malformed: 0.0,
            },
            ..SynthConfig::default()
        };
        let mut per_user: HashMap<String, Vec<(i64, ClickEvent)>> = HashMap::new();
        for (offset, record) in synth::generate(&config).enumerate() {
            if let Some(event) = record.event() {
                per_user
                    .entry(event.user_id.clone())
                    .or_default()
                    .push((offset as i64, event.clone()));
            }
        }
        let mut warm = Vec::with_capacity(BATCH_USERS);
        let mut batch = Vec::with_capacity(BATCH_USERS);
        for index in 0..config.users {
            let user = synth::user_id(index);
            let Some(mut events) = per_user.remove(&user) else {
                continue;
            };
            if events.len() < 2 {
                continue;
            }
            let last = events.pop().expect("at least two events");
            let mut state = UserState::default();
            for (offset, event) in &events {
                state.apply(event);
                state.mark_applied(PARTITION, *offset);
            }
            warm.push((user, state));
            batch.push(last);
            if warm.len() == BATCH_USERS {
                break;
            }
        }
        assert_eq!(
            warm.len(),
            BATCH_USERS,
            "population too small for the batch"
        );
        // The batch arrives in emission order, as a consumer would read it.
        batch.sort_by_key(|(offset, _)| *offset);
        Self { warm, batch }
    }

    fn warm_pairs(&self) -> Vec<(&str, &UserState)> {
        self.warm.iter().map(|(u, s)| (u.as_str(), s)).collect()
    }

    fn users(&self) -> Vec<&str> {
        self.warm.iter().map(|(u, _)| u.as_str()).collect()
    }

    fn source_events(&self) -> Vec<SourceEvent<'_>> {
        self.batch
            .iter()
            .map(|(offset, event)| SourceEvent {
                partition: PARTITION,
                offset: *offset,
                event,
            })
            .collect()
    }
}

fn benches(c: &mut Criterion) {
    let fixture = Fixture::build();
    let server = RedisServer::start().expect("starting a private redis-server");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let mut config = RedisConfig::new(server.url());
    config.key_prefix = unique_name("bench");
    let store = runtime
        .block_on(RedisStore::connect(config))
        .expect("connecting to the private redis-server");

    let warm = fixture.warm_pairs();
    let users = fixture.users();
    let events = fixture.source_events();
    let encoded: usize = fixture
        .warm
        .iter()
        .map(|(_, s)| tierflow_features::encode_state(s).len())
        .sum();
    eprintln!(
        "fixture: {} users, {} events in the batch, {} bytes of encoded warm state ({} per user)",
        users.len(),
        events.len(),
        encoded,
        encoded / users.len(),
    );
    runtime.block_on(store.store(&warm)).expect("seeding state");
    let once = runtime
        .block_on(apply_batch(&store, &events))
        .expect("apply_batch");
    let applied = once
        .outcomes
        .iter()
        .filter(|o| **o == EventOutcome::Applied)
        .count();
    eprintln!(
        "one apply_batch: {applied} of {} events applied, {} states stored",
        once.outcomes.len(),
        once.updated.len()
    );

    let mut group = c.benchmark_group("redis_batch_1000_users");
    group.throughput(Throughput::Elements(BATCH_USERS as u64));
    // apply_batch samples also reset the states (untimed), so give them the time that takes.
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("apply_batch", |b| {
        // Each iteration starts from the warm states (reset untimed), so every event is a
        // real update rather than a replay the store would skip.
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                runtime
                    .block_on(store.store(&warm))
                    .expect("resetting state");
                let started = Instant::now();
                let outcome = runtime
                    .block_on(apply_batch(&store, &events))
                    .expect("apply_batch");
                timed += started.elapsed();
                black_box(outcome);
            }
            timed
        });
    });
    group.bench_function("load", |b| {
        b.iter(|| runtime.block_on(store.load(&users)).expect("load"));
    });
    group.bench_function("store", |b| {
        b.iter(|| runtime.block_on(store.store(&warm)).expect("store"));
    });
    group.finish();
    eprintln!(
        "round trips to redis during the run: {}",
        store.round_trips()
    );
}

criterion_group! {
    name = redis_batch;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    targets = benches
}
criterion_main!(redis_batch);
