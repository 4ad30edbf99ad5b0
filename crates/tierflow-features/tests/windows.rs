//! Window maths against a naive recomputation from the raw event list, for any arrival order
//! within the allowed lateness; dedupe; expiry; bounded state.

use proptest::prelude::*;
use tierflow_events::{ClickEvent, EventTime, EventType};
use tierflow_features::spec::{
    ALLOWED_LATENESS_MS, DEDUPE_MEMORY, HORIZONS, LEVELS, PURCHASE_MEMORY, SESSION_MEMORY,
};
use tierflow_features::state::to_cents;
use tierflow_features::vector::{WindowTotals, window_totals};
use tierflow_features::{Applied, FeatureSpec, UserState, decode_state, encode_state, features};

const DAY: i64 = EventTime::MILLIS_PER_DAY;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn event(
    n: usize,
    ts: i64,
    kind: EventType,
    amount_cents: i64,
    category: u8,
    session: u8,
) -> ClickEvent {
    ClickEvent {
        schema_version: 1,
        event_id: format!("e{n}"),
        user_id: "u1".into(),
        event_type: kind,
        ts: EventTime::from_unix_millis(ts),
        session_id: format!("s{session}"),
        product_id: None,
        category: Some(format!("c{category}")),
        price: Some(amount_cents as f64 / 100.0),
        quantity: Some(1),
        currency: Some("EUR".into()),
        order_id: None,
        revenue: kind
            .requires_revenue()
            .then_some(amount_cents as f64 / 100.0),
        channel: None,
        device: None,
    }
}

/// The definition, computed the slow way: every accepted event whose bucket is among the
/// horizon's newest buckets at `as_of`.
fn naive(events: &[ClickEvent], horizon: usize, as_of: EventTime) -> WindowTotals {
    let h = HORIZONS[horizon];
    let level = LEVELS[h.level];
    let newest = level.bucket_of(as_of);
    let mut totals = WindowTotals::default();
    for e in events {
        let index = level.bucket_of(e.ts);
        if index > newest - h.buckets && index <= newest {
            totals.counts[e.event_type.index()] += 1;
            match e.event_type {
                EventType::Purchase => totals.revenue_cents += to_cents(e.revenue.unwrap()),
                EventType::Refund => totals.refund_cents += to_cents(e.revenue.unwrap()),
                _ => {}
            }
            let bit = tierflow_features_test_hash(e.category.as_deref().unwrap());
            totals.categories |= bit;
        }
    }
    totals
}

/// Same sketch bit as the crate (FNV-1a % 32), restated so a change there is caught.
fn tierflow_features_test_hash(category: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in category.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    1 << (hash % 32)
}

fn kinds() -> impl Strategy<Value = EventType> {
    prop::sample::select(EventType::ALL.to_vec())
}

/// Events of one user over up to 200 days, in time order, with unique ids.
fn history() -> impl Strategy<Value = Vec<ClickEvent>> {
    prop::collection::vec(
        (0..200 * DAY, kinds(), 0i64..50_000, 0u8..20, 0u8..30),
        1..120,
    )
    .prop_map(|mut raw| {
        raw.sort_by_key(|r| r.0);
        raw.into_iter()
            .enumerate()
            .map(|(n, (offset, kind, cents, cat, session))| {
                event(n, T0 + offset, kind, cents, cat, session)
            })
            .collect()
    })
}

/// Reorders a time-ordered history so that no event arrives later than the allowed
/// lateness behind the newest event before it: each event may be held back, but only
/// while events no more than `ALLOWED_LATENESS_MS` younger overtake it.
fn shuffle_within_lateness(events: &[ClickEvent], keys: &[u64]) -> Vec<ClickEvent> {
    let mut keyed: Vec<(i64, &ClickEvent)> = events
        .iter()
        .zip(keys.iter().cycle())
        .map(|(e, k)| {
            let delay = (*k as i64).rem_euclid(ALLOWED_LATENESS_MS);
            (e.ts.unix_millis() + delay, e)
        })
        .collect();
    keyed.sort_by_key(|(arrival, e)| (*arrival, e.event_id.clone()));
    keyed.into_iter().map(|(_, e)| e.clone()).collect()
}

fn apply_all(events: &[ClickEvent]) -> (UserState, Vec<Applied>) {
    let mut state = UserState::default();
    let outcomes = events.iter().map(|e| state.apply(e)).collect();
    (state, outcomes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn windows_equal_naive_recomputation_for_any_order_within_lateness(
        events in history(),
        keys in prop::collection::vec(any::<u64>(), 1..50),
        later in 0..40 * DAY,
    ) {
        let arrival = shuffle_within_lateness(&events, &keys);
        let (state, outcomes) = apply_all(&arrival);
        // Nothing was too late: every held-back event stayed within the lateness.
        let accepted: Vec<ClickEvent> = arrival
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == Applied::Updated)
            .map(|(e, _)| e.clone())
            .collect();
        prop_assert!(outcomes.iter().all(|o| *o == Applied::Updated), "{outcomes:?}");
        let newest = state.newest().unwrap();
        for as_of in [newest, newest.plus_millis(later)] {
            for (h, horizon) in HORIZONS.iter().enumerate() {
                let got = window_totals(&state, h, as_of);
                let want = naive(&accepted, h, as_of);
                prop_assert_eq!(&got.counts, &want.counts, "horizon {}", horizon.name);
                prop_assert_eq!(got.revenue_cents, want.revenue_cents);
                prop_assert_eq!(got.refund_cents, want.refund_cents);
                prop_assert_eq!(got.categories, want.categories);
            }
        }
        // And the in-order state has exactly the same windows.
        let (ordered, _) = apply_all(&events);
        for h in 0..HORIZONS.len() {
            let a = window_totals(&state, h, newest);
            let b = window_totals(&ordered, h, newest);
            prop_assert_eq!(a.counts, b.counts);
            prop_assert_eq!(a.revenue_cents, b.revenue_cents);
        }
    }

    #[test]
    fn state_stays_bounded_and_round_trips(events in history()) {
        let (state, _) = apply_all(&events);
        for (level, ring) in LEVELS.iter().zip(&state.levels) {
            prop_assert!(ring.len() as i64 <= level.buckets);
            prop_assert!(ring.windows(2).all(|w| w[0].index < w[1].index));
        }
        prop_assert!(state.recent_ids.len() <= DEDUPE_MEMORY);
        prop_assert!(state.sessions.len() <= SESSION_MEMORY);
        prop_assert!(state.purchases_ms.len() <= PURCHASE_MEMORY);
        let bytes = encode_state(&state);
        prop_assert_eq!(decode_state(&bytes).unwrap(), state);
    }

    #[test]
    fn absurd_amounts_and_times_never_panic(
        prices in prop::collection::vec(prop_oneof![Just(0.0), Just(1e300), Just(f64::MAX), 0.0..1e12], 1..30),
        offsets in prop::collection::vec(-300_000 * DAY..300_000 * DAY, 1..30),
    ) {
        let mut state = UserState::default();
        for (n, (price, offset)) in prices.iter().zip(offsets.iter().cycle()).enumerate() {
            let kinds = [EventType::Purchase, EventType::Refund, EventType::AddToCart, EventType::RemoveFromCart];
            let mut e = event(n, T0.saturating_add(*offset), kinds[n % 4], 0, 0, 0);
            e.price = Some(*price);
            if e.event_type.requires_revenue() {
                e.revenue = Some(*price);
            }
            state.apply(&e);
        }
        let as_of = state.newest().unwrap();
        let vector = features(&state, as_of);
        prop_assert!(vector.iter().all(|v| !v.is_nan()));
        prop_assert_eq!(decode_state(&encode_state(&state)).unwrap(), state);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_state(&bytes);
    }
}

#[test]
fn duplicates_are_ignored_and_too_late_events_are_refused() {
    let mut state = UserState::default();
    let first = event(1, T0, EventType::Purchase, 1_000, 1, 1);
    assert_eq!(state.apply(&first), Applied::Updated);
    assert_eq!(state.apply(&first), Applied::Duplicate);
    let newer = event(2, T0 + 10 * DAY, EventType::PageView, 0, 1, 2);
    assert_eq!(state.apply(&newer), Applied::Updated);
    let late_ok = event(
        3,
        T0 + 10 * DAY - ALLOWED_LATENESS_MS,
        EventType::Purchase,
        500,
        1,
        3,
    );
    assert_eq!(state.apply(&late_ok), Applied::Updated);
    let too_late = event(
        4,
        T0 + 10 * DAY - ALLOWED_LATENESS_MS - 1,
        EventType::Purchase,
        500,
        1,
        3,
    );
    assert_eq!(
        state.apply(&too_late),
        Applied::TooLate {
            newest: EventTime::from_unix_millis(T0 + 10 * DAY)
        }
    );
    let as_of = EventTime::from_unix_millis(T0 + 10 * DAY);
    let month = window_totals(&state, 3, as_of);
    assert_eq!(month.count(EventType::Purchase), 2);
    assert_eq!(month.revenue_cents, 1_500);
}

#[test]
fn dedupe_memory_is_bounded_and_recent() {
    let mut state = UserState::default();
    for n in 0..DEDUPE_MEMORY + 1 {
        state.apply(&event(n, T0 + n as i64, EventType::PageView, 0, 0, 0));
    }
    // The most recent ids are remembered; the oldest fell out of the bounded memory.
    let recent = event(
        DEDUPE_MEMORY,
        T0 + DEDUPE_MEMORY as i64,
        EventType::PageView,
        0,
        0,
        0,
    );
    assert_eq!(state.apply(&recent), Applied::Duplicate);
    let forgotten = event(0, T0, EventType::PageView, 0, 0, 0);
    assert_eq!(state.apply(&forgotten), Applied::Updated);
}

#[test]
fn windows_expire_as_time_passes() {
    let mut state = UserState::default();
    state.apply(&event(1, T0, EventType::Purchase, 2_500, 1, 1));
    let at = |days: i64| EventTime::from_unix_millis(T0 + days * DAY);
    let purchases =
        |h: usize, days: i64| window_totals(&state, h, at(days)).count(EventType::Purchase);
    assert_eq!(purchases(2, 0), 1); // 7d
    assert_eq!(purchases(2, 6), 1);
    assert_eq!(purchases(2, 7), 0);
    assert_eq!(purchases(3, 29), 1); // 30d
    assert_eq!(purchases(3, 30), 0);
    assert_eq!(purchases(4, 85), 1); // 90d, in 10-day buckets
    assert_eq!(purchases(4, 90), 0);
    // A new event 100 days later evicts the old buckets from the stored state too.
    state.apply(&event(2, T0 + 100 * DAY, EventType::PageView, 0, 1, 2));
    assert!(state.levels.iter().all(|ring| ring.len() == 1));
}

#[test]
fn replayed_offsets_are_recognised_per_partition() {
    let mut state = UserState::default();
    assert!(!state.already_applied(3, 0));
    state.mark_applied(3, 41);
    assert!(state.already_applied(3, 41));
    assert!(state.already_applied(3, 7));
    assert!(!state.already_applied(3, 42));
    assert!(!state.already_applied(4, 1));
    state.mark_applied(3, 10); // never moves back
    assert!(state.already_applied(3, 41));
}

#[test]
fn feature_vector_matches_the_spec_and_known_values() {
    let spec = FeatureSpec::current();
    let mut state = UserState::default();
    state.apply(&event(1, T0, EventType::AddToCart, 4_000, 1, 1));
    state.apply(&event(2, T0 + 60_000, EventType::Purchase, 4_000, 1, 1));
    state.apply(&event(3, T0 + 20 * DAY, EventType::Purchase, 1_000, 2, 2));
    state.apply(&event(
        4,
        T0 + 20 * DAY + 120_000,
        EventType::Refund,
        500,
        2,
        2,
    ));
    let as_of = EventTime::from_unix_millis(T0 + 21 * DAY);
    let vector = features(&state, as_of);
    assert_eq!(vector.len(), spec.len());
    let get = |name: &str| vector[spec.index_of(name).unwrap_or_else(|| panic!("{name}"))];
    assert_eq!(get("purchase_30d"), 2.0);
    assert_eq!(get("purchase_7d"), 1.0);
    assert_eq!(get("revenue_30d"), 50.0);
    assert_eq!(get("refunds_30d"), 5.0);
    assert_eq!(get("sessions_30d"), 2.0);
    assert_eq!(get("days_since_last_purchase"), 1.0);
    assert_eq!(get("has_purchased"), 1.0);
    assert_eq!(get("tenure_days"), 21.0);
    assert_eq!(
        get("purchase_gap_mean_days"),
        (20.0 * DAY as f64 - 60_000.0) as f32 / DAY as f32
    );
    assert_eq!(get("rfm_frequency_90d"), 2.0);
    assert_eq!(get("rfm_monetary_90d"), 45.0);
    assert_eq!(get("open_cart_value"), 0.0, "a purchase empties the cart");
    assert_eq!(get("session_length_current_min"), 2.0);
}

#[test]
fn typical_active_user_state_is_small() {
    // An active user: 3 sessions a week for 90 days, ~12 events each, some purchases.
    let mut state = UserState::default();
    let mut n = 0;
    for day in 0..90 {
        if day % 7 > 2 {
            continue;
        }
        for i in 0..12 {
            let kind = match i {
                11 if day % 3 == 0 => EventType::Purchase,
                9 | 10 => EventType::AddToCart,
                _ => EventType::ProductView,
            };
            let ts = T0 + day * DAY + 19 * EventTime::MILLIS_PER_HOUR + i * 60_000;
            state.apply(&event(n, ts, kind, 2_999, (i % 5) as u8, day as u8));
            n += 1;
        }
    }
    let bytes = encode_state(&state).len();
    assert!(bytes <= 1_024, "typical active user state is {bytes} bytes");
}

#[test]
fn dataset_labels_come_from_the_following_horizon_only() {
    use tierflow_features::dataset::DatasetBuilder;
    let cutoff = EventTime::from_unix_millis(T0 + 10 * DAY);
    let mut builder =
        DatasetBuilder::new(&[cutoff], 30 * DAY).with_tier_thresholds(vec![100.0, 1.0]);
    let log = [
        event(1, T0, EventType::Purchase, 5_000, 1, 1), // feature, not label
        event(2, T0 + 11 * DAY, EventType::Purchase, 20_000, 1, 2), // label
        event(2, T0 + 11 * DAY, EventType::Purchase, 20_000, 1, 2), // duplicate: once
        event(3, T0 + 12 * DAY, EventType::Refund, 2_500, 1, 2), // label, negative
        event(4, T0 + 41 * DAY, EventType::Purchase, 9_999, 1, 3), // after the horizon
        event(5, T0 + 9 * DAY + 1, EventType::Purchase, 1_000, 1, 4), // late but before: feature
    ];
    for e in &log {
        builder.push(e);
    }
    let (rows, stats) = builder.finish();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.label.future_spend, 175.0);
    assert_eq!(row.label.future_orders, 1);
    assert!(row.label.purchased);
    assert_eq!(
        row.label.future_tier,
        Some(2),
        "175 reaches thresholds 1 and 100"
    );
    let spec = FeatureSpec::current();
    assert_eq!(row.features[spec.index_of("purchase_30d").unwrap()], 2.0);
    assert_eq!(stats.events, 6);
}

/// The builder's event sample is what the pipeline scores: for each applied event before the
/// last cutoff, the user's features as of their newest event (the same `apply` and
/// `write_features`); bounded, and the kept rows are the lowest event-id hashes whatever the
/// capacity.
#[test]
fn the_event_sample_is_the_online_feature_vector_of_each_applied_event() {
    use std::collections::HashMap;
    use tierflow_features::dataset::DatasetBuilder;
    let cutoff = EventTime::from_unix_millis(T0 + 20 * DAY);
    let mut log = Vec::new();
    for n in 0..60_usize {
        let mut e = event(
            n,
            T0 + (n as i64) * DAY / 3,
            if n % 5 == 0 {
                EventType::Purchase
            } else {
                EventType::ProductView
            },
            1_000 + n as i64,
            (n % 3) as u8,
            (n / 4) as u8,
        );
        e.user_id = format!("u{}", n % 4);
        log.push(e);
    }
    log.push(log[7].clone()); // a duplicate: not applied, no row
    // Online: one row per applied event up to the cutoff, as of the user's newest event.
    let mut states: HashMap<String, UserState> = HashMap::new();
    let mut online: Vec<Vec<f32>> = Vec::new();
    for e in &log {
        if e.ts > cutoff {
            continue;
        }
        let state = states.entry(e.user_id.clone()).or_default();
        if state.apply(e) == Applied::Updated {
            online.push(features(state, state.newest().unwrap()));
        }
    }
    assert_eq!(
        online.len(),
        60,
        "events up to day 20 are the first 60 (day 0..19.67)"
    );
    let sample = |capacity: usize| {
        let mut builder = DatasetBuilder::new(&[cutoff], 30 * DAY).with_event_sample(capacity);
        for e in &log {
            builder.push(e);
        }
        let (_, _, sample) = builder.finish_with_sample();
        sample
    };
    let width = FeatureSpec::current().len();
    let all = sample(1_000);
    assert_eq!(all.len(), online.len() * width);
    let mut kept: Vec<&[f32]> = all.chunks(width).collect();
    let mut expected: Vec<&[f32]> = online.iter().map(Vec::as_slice).collect();
    kept.sort_by(|a, b| a.partial_cmp(b).unwrap());
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(kept, expected);
    // Bounded: the 10 rows kept are the first 10 of the full sample (ordered by hash).
    let ten = sample(10);
    assert_eq!(ten.len(), 10 * width);
    assert_eq!(ten, all[..10 * width]);
    assert!(sample(0).is_empty());
}
