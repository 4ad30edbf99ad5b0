//! What the pure feature code costs on one core (issue 3): rolling-window updates per second
//! over a realistic generated stream, the feature vector per user, and the stored form of a
//! typical active user's state (encode, decode, bytes). Results go to BENCHMARKS.md; nothing
//! here asserts a timing.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tierflow_data::synth::{self, Dials, SynthConfig};
use tierflow_events::{ClickEvent, EventTime};
use tierflow_features::spec::FEATURE_COUNT;
use tierflow_features::{UserState, decode_state, encode_state, write_features};

/// The population: 2,000 users over 90 days, with a little of every kind of producer mess.
fn population() -> SynthConfig {
    SynthConfig {
        users: 2_000,
        days: 90,
        seed: 42,
        dials: Dials {
            out_of_order: 0.02,
            late: 0.005,
            duplicate: 0.01,
            malformed: 0.001,
        },
        ..SynthConfig::default()
    }
}

/// Events emitted before day 60 build the warm states; the rest is the timed stream.
const WARM_DAYS: i64 = 60;

/// Everything the benchmarks need, built once outside the timed loops.
struct Fixture {
    config: SynthConfig,
    /// States after the first `WARM_DAYS` days of emissions, one slot per user seen.
    warm: Vec<UserState>,
    /// The remaining emissions, in emission order, each with its user's slot.
    tail: Vec<(usize, ClickEvent)>,
    /// States after every event: what a consumer holds at the end of the span.
    end: Vec<UserState>,
}

impl Fixture {
    fn build() -> Self {
        let config = population();
        let cutoff = config
            .start
            .plus_millis(WARM_DAYS * EventTime::MILLIS_PER_DAY);
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut warm: Vec<UserState> = Vec::new();
        let mut tail = Vec::new();
        let mut in_tail = false;
        for record in synth::generate(&config) {
            let Some(event) = record.event() else {
                continue;
            };
            let slot = *slots.entry(event.user_id.clone()).or_insert_with(|| {
                warm.push(UserState::default());
                warm.len() - 1
            });
            // Split by emission position, as a consumer sees the stream: a late record
            // emitted after the cutoff belongs to the tail whatever its `ts`.
            in_tail |= event.ts >= cutoff;
            if in_tail {
                tail.push((slot, event.clone()));
            } else {
                warm[slot].apply(event);
            }
        }
        let mut end = warm.clone();
        apply_all(&mut end, &tail);
        Self {
            config,
            warm,
            tail,
            end,
        }
    }

    /// The state whose encoded size is the median among users active in the last 7 days.
    fn typical_active_user(&self) -> &UserState {
        let week_ago = self
            .config
            .end()
            .plus_millis(-7 * EventTime::MILLIS_PER_DAY);
        let mut active: Vec<(usize, &UserState)> = self
            .end
            .iter()
            .filter(|s| s.newest().is_some_and(|t| t >= week_ago))
            .map(|s| (encode_state(s).len(), s))
            .collect();
        active.sort_by_key(|(bytes, _)| *bytes);
        active[active.len() / 2].1
    }

    fn largest(&self) -> &UserState {
        self.end
            .iter()
            .max_by_key(|s| encode_state(s).len())
            .expect("the population has users")
    }
}

fn apply_all(states: &mut [UserState], stream: &[(usize, ClickEvent)]) {
    for (slot, event) in stream {
        black_box(states[*slot].apply(event));
    }
}

fn benches(c: &mut Criterion) {
    let fixture = Fixture::build();
    eprintln!(
        "fixture: {} users with events; timed stream of {} events (days {WARM_DAYS}-{} of {})",
        fixture.warm.len(),
        fixture.tail.len(),
        fixture.config.days,
        fixture.config.days,
    );

    // Window updates: one core folding a realistic stream into many users' states.
    let mut group = c.benchmark_group("window_updates");
    // Each sample also rebuilds the states (untimed), so give it the time that takes.
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(fixture.tail.len() as u64));
    group.bench_function("30d_stream_from_empty_states", |b| {
        b.iter_batched_ref(
            || vec![UserState::default(); fixture.warm.len()],
            |states| apply_all(states, &fixture.tail),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("30d_stream_onto_60d_warm_states", |b| {
        b.iter_batched_ref(
            || fixture.warm.clone(),
            |states| apply_all(states, &fixture.tail),
            BatchSize::PerIteration,
        );
    });
    group.finish();

    // Feature vectors at the end of the span, into one reused buffer.
    let as_of = fixture.config.end();
    let typical = fixture.typical_active_user();
    let mut buffer = vec![0.0f32; FEATURE_COUNT];
    let mut group = c.benchmark_group("feature_vector");
    group.throughput(Throughput::Elements(1));
    group.bench_function("typical_active_user", |b| {
        b.iter(|| write_features(black_box(typical), black_box(as_of), &mut buffer));
    });
    group.throughput(Throughput::Elements(fixture.end.len() as u64));
    group.bench_function("every_user", |b| {
        b.iter(|| {
            for state in &fixture.end {
                write_features(black_box(state), as_of, &mut buffer);
                black_box(&buffer);
            }
        });
    });
    group.finish();

    // The stored form.
    let mut group = c.benchmark_group("state_codec");
    for (name, state) in [
        ("typical_active_user", typical),
        ("largest", fixture.largest()),
    ] {
        let bytes = encode_state(state);
        eprintln!("state_codec/{name}: {} bytes encoded", bytes.len());
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode_state(black_box(state)));
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_state(black_box(&bytes)).expect("encoded by this build"));
        });
    }
    group.finish();
}

criterion_group! {
    name = windows;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    targets = benches
}
criterion_main!(windows);
