//! The synthetic clickstream's promises: the same config gives the same bytes, every event is
//! valid, sessions follow real funnels, the dials do what they say, and future value can be
//! learned from the past.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use tierflow_data::synth::{
    self, Dials, MALFORMED_DEFECTS, Record, Segment, SegmentMix, SynthConfig, SynthConfigError,
};
use tierflow_events::{ClickEvent, EventTime, EventType};

const MINUTE: i64 = EventTime::MILLIS_PER_MINUTE;
const DAY: i64 = EventTime::MILLIS_PER_DAY;

fn config(users: u64, days: u32, seed: u64) -> SynthConfig {
    SynthConfig {
        users,
        days,
        seed,
        ..SynthConfig::default()
    }
}

fn messy() -> Dials {
    Dials {
        out_of_order: 0.05,
        late: 0.02,
        duplicate: 0.03,
        malformed: 0.04,
    }
}

/// The clean stream's events (panics on a malformed record, which clean dials never make).
fn events(config: &SynthConfig) -> Vec<ClickEvent> {
    synth::generate(config)
        .map(|record| match record {
            Record::Event(event) => event,
            Record::Malformed { defect, .. } => {
                panic!("malformed record ({defect}) with clean dials")
            }
        })
        .collect()
}

fn user_index(event: &ClickEvent) -> usize {
    event.user_id[1..].parse().expect("user ids are u + digits")
}

/// One module, so that `cargo test synth` selects these tests by name.
mod synth_generator {
    use super::*;

    #[test]
    fn same_config_gives_identical_bytes_and_another_seed_does_not() {
        let config = SynthConfig {
            dials: messy(),
            ..config(150, 20, 7)
        };
        let run = |config: &SynthConfig| -> Vec<(String, Vec<u8>)> {
            synth::generate(config)
                .map(|r| (r.key().to_owned(), r.to_bytes()))
                .collect()
        };
        let first = run(&config);
        assert!(first.len() > 5_000, "{}", first.len());
        assert!(first == run(&config), "same config, different stream");
        let other = run(&SynthConfig {
            seed: 8,
            ..config.clone()
        });
        assert!(first != other, "another seed gave the same stream");
        let mut clean = config.clone();
        clean.dials = Dials::default();
        assert!(first != run(&clean), "dials changed nothing");
    }

    #[test]
    fn a_users_events_do_not_depend_on_how_many_others_there_are() {
        let of_user = |users: u64, user: &str| -> Vec<Vec<u8>> {
            events(&config(users, 30, 3))
                .into_iter()
                .filter(|e| e.user_id == user)
                .map(|e| e.to_json())
                .collect()
        };
        for user in [0, 7, 29] {
            let id = synth::user_id(user);
            let few = of_user(30, &id);
            assert_eq!(few, of_user(90, &id), "{id}");
            assert_eq!(
                synth::segment_of(&config(30, 30, 3), user),
                synth::segment_of(&config(90, 30, 3), user)
            );
        }
    }

    #[test]
    fn clean_stream_is_valid_unique_and_in_event_time_order() {
        let config = config(300, 30, 11);
        let (start, end) = (config.start, config.end());
        let mut ids = HashSet::new();
        let mut previous = start;
        let mut count = 0;
        for event in events(&config) {
            count += 1;
            event
                .validate()
                .unwrap_or_else(|e| panic!("{event:?}: {e}"));
            assert_eq!(ClickEvent::from_json(&event.to_json()).as_ref(), Ok(&event));
            assert!(
                ids.insert(event.event_id.clone()),
                "{} twice",
                event.event_id
            );
            assert!(event.ts >= previous, "{} before {previous}", event.ts);
            assert!(
                event.ts >= start && event.ts < end,
                "{} outside the span",
                event.ts
            );
            previous = event.ts;
            assert!(user_index(&event) < 300);
            assert!(
                event
                    .session_id
                    .starts_with(&format!("s{}-", &event.user_id[1..]))
            );
            assert!(["web", "app", "email", "ads"].contains(&event.channel.as_deref().unwrap()));
            assert!(["desktop", "mobile", "tablet"].contains(&event.device.as_deref().unwrap()));
            let product_event = matches!(
                event.event_type,
                EventType::ProductView
                    | EventType::AddToCart
                    | EventType::RemoveFromCart
                    | EventType::WishlistAdd
            );
            if product_event {
                assert!(
                    event.product_id.is_some() && event.category.is_some(),
                    "{event:?}"
                );
                assert!(
                    event.price.is_some_and(|p| p > 0.0 && p < 2_000.0),
                    "{event:?}"
                );
            }
            if event.price.is_some() || event.revenue.is_some() {
                assert_eq!(event.currency.as_deref(), Some("EUR"));
            }
            if event.event_type.requires_revenue() {
                assert!(event.order_id.is_some() && event.revenue.is_some_and(|r| r > 0.0));
            }
        }
        assert!(count > 20_000, "{count}");
    }

    /// Replays each visit and checks it against the funnel a shop would log.
    #[test]
    fn sessions_follow_the_funnel_and_refunds_follow_orders() {
        let config = config(400, 45, 5);
        let mut sessions: HashMap<String, Vec<ClickEvent>> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for event in events(&config) {
            let visits = sessions.entry(event.session_id.clone()).or_default();
            if visits.is_empty() {
                order.push(event.session_id.clone());
            }
            visits.push(event);
        }
        let mut counts = [0u64; 9];
        // order id → (user, ts, revenue)
        let mut orders: HashMap<String, (String, EventTime, f64)> = HashMap::new();
        let mut refunds = Vec::new();
        let mut last_visit_end: HashMap<String, EventTime> = HashMap::new();
        for id in &order {
            let session = &sessions[id];
            if session[0].event_type == EventType::Refund {
                assert_eq!(session.len(), 1, "a refund session holds the refund only");
                refunds.push(session[0].clone());
                continue;
            }
            let user = &session[0].user_id;
            if let Some(end) = last_visit_end.get(user) {
                let gap = session[0].ts.unix_millis() - end.unix_millis();
                assert!(
                    gap >= 30 * MINUTE,
                    "{id} starts {gap} ms after the previous visit"
                );
            }
            last_visit_end.insert(user.clone(), session.last().unwrap().ts);
            assert!(
                matches!(
                    session[0].event_type,
                    EventType::PageView | EventType::Search
                ),
                "{id} lands on {}",
                session[0].event_type
            );
            let mut cart: HashMap<String, (f64, u32)> = HashMap::new();
            let mut added = false;
            let mut checkout_items = None;
            for (i, event) in session.iter().enumerate() {
                counts[event.event_type.index()] += 1;
                assert_eq!(&event.user_id, user);
                if i > 0 {
                    let gap = event.ts.unix_millis() - session[i - 1].ts.unix_millis();
                    assert!((1_000..=20 * MINUTE).contains(&gap), "{id}: gap {gap} ms");
                }
                let product = || event.product_id.clone().unwrap();
                match event.event_type {
                    EventType::AddToCart => {
                        added = true;
                        let line = cart.entry(product()).or_insert((event.price.unwrap(), 0));
                        line.1 += event.quantity.unwrap();
                    }
                    EventType::RemoveFromCart => {
                        let line = cart
                            .remove(&product())
                            .expect("removes what is in the cart");
                        assert_eq!(Some(line.1), event.quantity, "{id}: removes the whole line");
                    }
                    EventType::CheckoutStart => {
                        assert!(!cart.is_empty());
                        let items: u32 = cart.values().map(|l| l.1).sum();
                        assert_eq!(event.quantity, Some(items));
                        checkout_items = Some(items);
                    }
                    EventType::Purchase => {
                        assert_eq!(i, session.len() - 1, "{id}: the purchase ends the visit");
                        assert!(added, "{id}: purchase without add_to_cart");
                        assert_eq!(session[i - 1].event_type, EventType::CheckoutStart, "{id}");
                        assert_eq!(event.quantity, checkout_items);
                        let cart_total: f64 = cart.values().map(|(p, q)| p * f64::from(*q)).sum();
                        let revenue = event.revenue.unwrap();
                        assert!(
                            (revenue - cart_total).abs() < 0.005,
                            "{id}: {revenue} vs {cart_total}"
                        );
                        let order_id = event.order_id.clone().unwrap();
                        let previous = orders.insert(order_id, (user.clone(), event.ts, revenue));
                        assert!(previous.is_none(), "order ids are unique");
                    }
                    EventType::Refund => panic!("{id}: a refund inside a visit"),
                    _ => {}
                }
            }
        }
        let [views, adds, checkouts, purchases] = [
            EventType::ProductView,
            EventType::AddToCart,
            EventType::CheckoutStart,
            EventType::Purchase,
        ]
        .map(|t| counts[t.index()]);
        assert!(
            views > 3 * adds && adds > checkouts && checkouts > purchases && purchases > 200,
            "funnel {views} > {adds} > {checkouts} > {purchases}"
        );
        assert!(counts[EventType::RemoveFromCart.index()] > 0);
        assert!(counts[EventType::WishlistAdd.index()] > 0);
        assert!(refunds.len() > 5, "{} refunds", refunds.len());
        let mut refunded = HashSet::new();
        for refund in refunds {
            let order_id = refund.order_id.clone().unwrap();
            let (user, ts, revenue) = orders.get(&order_id).expect("refund of a known order");
            assert_eq!(user, &refund.user_id);
            let days = (refund.ts.unix_millis() - ts.unix_millis()) as f64 / DAY as f64;
            assert!(
                (2.0..=21.0).contains(&days),
                "refund {days} days after the order"
            );
            let amount = refund.revenue.unwrap();
            assert!(
                amount > 0.0 && amount <= revenue + 1e-9,
                "{amount} of {revenue}"
            );
            assert!(refunded.insert(order_id), "one refund per order");
        }
    }

    #[test]
    fn dials_move_duplicate_and_corrupt_the_fractions_they_promise() {
        // Dense enough (20k users) that a record delayed by seconds is overtaken.
        let dials = messy();
        let config = SynthConfig {
            dials,
            ..config(20_000, 3, 21)
        };
        let mut generator = synth::generate(&config);
        let (mut seen, mut events, mut malformed) = (HashSet::new(), 0u64, 0u64);
        let (mut shifted, mut late, mut max_ts) = (0u64, 0u64, i64::MIN);
        let mut defects = HashSet::new();
        for record in generator.by_ref() {
            match record {
                Record::Malformed {
                    user_id,
                    bytes,
                    defect,
                } => {
                    malformed += 1;
                    assert!(ClickEvent::from_json(&bytes).is_err(), "{defect}: decodes");
                    assert!(MALFORMED_DEFECTS.contains(&defect));
                    assert!(!bytes.contains(&b'\n'));
                    assert!(user_id.starts_with('u'));
                    defects.insert(defect);
                }
                Record::Event(event) => {
                    events += 1;
                    event.validate().unwrap();
                    let ts = event.ts.unix_millis();
                    if seen.insert(event.event_id.clone()) {
                        // How far behind the stream this first copy arrives.
                        let behind = max_ts.saturating_sub(ts);
                        if behind > 30 * MINUTE {
                            late += 1;
                        } else if behind > 0 {
                            shifted += 1;
                        }
                    }
                    max_ts = max_ts.max(ts);
                }
            }
        }
        let unique = seen.len() as u64;
        let stats = generator.stats();
        assert_eq!(stats.malformed, malformed);
        assert_eq!(stats.duplicates, events - unique);
        assert_eq!(stats.source_events, unique + malformed);
        let fraction = |n: u64, of: u64| n as f64 / of as f64;
        let measured = [
            (
                "malformed",
                fraction(malformed, unique + malformed),
                dials.malformed,
            ),
            (
                "duplicate",
                fraction(events - unique, unique),
                dials.duplicate,
            ),
            ("late", fraction(late, unique), dials.late),
        ];
        eprintln!(
            "{} source events; measured {measured:?}; overtaken {:.4}",
            stats.source_events,
            fraction(shifted, unique)
        );
        for (dial, got, want) in measured {
            assert!(
                (got - want).abs() < 0.12 * want,
                "{dial}: measured {got}, dial {want}"
            );
        }
        // Out-of-order records are overtaken unless nothing else happened in their delay.
        let overtaken = fraction(shifted, unique);
        assert!(
            (0.7 * dials.out_of_order..1.1 * dials.out_of_order).contains(&overtaken),
            "out of order: measured {overtaken}, dial {}",
            dials.out_of_order
        );
        let recorded = fraction(stats.out_of_order, stats.source_events);
        assert!((recorded - dials.out_of_order).abs() < 0.1 * dials.out_of_order);
        assert_eq!(defects.len(), MALFORMED_DEFECTS.len(), "{defects:?}");
    }

    #[test]
    fn fully_malformed_stream_never_decodes_and_keeps_its_keys() {
        let config = SynthConfig {
            dials: Dials {
                malformed: 1.0,
                ..Dials::default()
            },
            ..config(20, 10, 2)
        };
        let clean: Vec<String> = events(&SynthConfig {
            dials: Dials::default(),
            ..config.clone()
        })
        .into_iter()
        .map(|e| e.user_id)
        .collect();
        let keys: Vec<String> = synth::generate(&config)
            .map(|record| {
                let Record::Malformed { bytes, defect, .. } = &record else {
                    panic!("an event got through: {record:?}");
                };
                let err = ClickEvent::from_json(bytes).expect_err(defect);
                assert!(!err.reason.is_empty());
                record.key().to_owned()
            })
            .collect();
        assert_eq!(
            keys, clean,
            "one malformed record per event, in the same order"
        );
    }

    /// Past spend must predict future spend, and segments must differ in what a model can see.
    #[test]
    fn future_value_is_learnable_from_the_first_half() {
        let config = config(2_000, 120, 42);
        let split = config.start.unix_millis() + 60 * DAY;
        let users = config.users as usize;
        let (mut first, mut second) = (vec![0.0; users], vec![0.0; users]);
        let mut orders_second = vec![0u32; users];
        for event in events(&config) {
            let sign = match event.event_type {
                EventType::Purchase => 1.0,
                EventType::Refund => -1.0,
                _ => continue,
            };
            let user = user_index(&event);
            let revenue = sign * event.revenue.unwrap();
            if event.ts.unix_millis() < split {
                first[user] += revenue;
            } else {
                second[user] += revenue;
                orders_second[user] += u32::from(event.event_type == EventType::Purchase);
            }
        }
        let segments: &[Segment] = &(0..config.users)
            .map(|u| synth::segment_of(&config, u))
            .collect::<Vec<_>>();
        let in_segment = |segment: Segment| (0..users).filter(move |&u| segments[u] == segment);
        let mean = |values: &[f64], segment: Segment| {
            let picked: Vec<f64> = in_segment(segment).map(|u| values[u]).collect();
            picked.iter().sum::<f64>() / picked.len() as f64
        };
        let silent = |users: &mut dyn Iterator<Item = usize>| {
            let (mut none, mut all) = (0, 0);
            for u in users {
                all += 1;
                none += u32::from(orders_second[u] == 0);
            }
            f64::from(none) / f64::from(all)
        };
        let loyal = mean(&second, Segment::LoyalHighSpender);
        let browser = mean(&second, Segment::Browser);
        let decaying_silent = silent(&mut in_segment(Segment::Decaying));
        let buyers_silent = silent(
            &mut in_segment(Segment::LoyalHighSpender).chain(in_segment(Segment::BargainHunter)),
        );
        let bought_first = |segment| in_segment(segment).filter(|&u| first[u] > 0.0);
        let decaying_buyers_silent = silent(&mut bought_first(Segment::Decaying));
        let other_buyers_silent =
            silent(&mut (0..users).filter(|&u| first[u] > 0.0 && segments[u] != Segment::Decaying));
        let spearman = spearman(&first, &second);
        let pearson = pearson(&first, &second);
        eprintln!(
            "second-half spend per user: {}; loyal {loyal:.0} vs browser {browser:.0}\n\
             no purchase in the second half: decaying {decaying_silent:.2} vs loyal+bargain \
             {buyers_silent:.2}; among first-half buyers: decaying {decaying_buyers_silent:.2} vs \
             others {other_buyers_silent:.2}\n\
             first vs second half spend: spearman {spearman:.3}, pearson {pearson:.3}",
            Segment::ALL
                .map(|s| format!("{s} {:.0}", mean(&second, s)))
                .join(", "),
        );
        assert!(loyal > 10.0 * browser, "loyal {loyal} vs browser {browser}");
        assert!(
            decaying_silent > 0.5 && decaying_silent > 3.0 * buyers_silent,
            "decaying {decaying_silent} vs loyal+bargain {buyers_silent}"
        );
        assert!(decaying_buyers_silent > 2.0 * other_buyers_silent);
        assert!(spearman > 0.3, "spearman {spearman}");
        assert!(pearson > 0.3, "pearson {pearson}");
    }

    fn pearson(x: &[f64], y: &[f64]) -> f64 {
        let n = x.len() as f64;
        let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (a, b) in x.iter().zip(y) {
            sxy += (a - mx) * (b - my);
            sxx += (a - mx) * (a - mx);
            syy += (b - my) * (b - my);
        }
        sxy / (sxx * syy).sqrt()
    }

    /// Pearson on ranks, ties sharing their average rank.
    fn spearman(x: &[f64], y: &[f64]) -> f64 {
        fn ranks(values: &[f64]) -> Vec<f64> {
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
            let mut ranks = vec![0.0; values.len()];
            let mut i = 0;
            while i < order.len() {
                let mut j = i;
                while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
                    j += 1;
                }
                for &k in &order[i..=j] {
                    ranks[k] = (i + j) as f64 / 2.0;
                }
                i = j + 1;
            }
            ranks
        }
        pearson(&ranks(x), &ranks(y))
    }

    #[test]
    fn segments_follow_the_mix_new_users_arrive_late_and_churners_stop() {
        let config = config(3_000, 90, 17);
        let truths: Vec<_> = synth::ground_truths(&config).collect();
        for segment in Segment::ALL {
            let share = truths.iter().filter(|t| t.segment == segment).count() as f64 / 3_000.0;
            let want = config.mix.fraction(segment);
            assert!((share - want).abs() < 0.03, "{segment}: {share} vs {want}");
        }
        let mut first_seen: HashMap<usize, EventTime> = HashMap::new();
        let mut last_seen: HashMap<usize, EventTime> = HashMap::new();
        let (mut early, mut late) = (0u64, 0u64);
        for event in events(&config) {
            let user = user_index(&event);
            first_seen.entry(user).or_insert(event.ts);
            if event.event_type != EventType::Refund {
                // Refunds of earlier orders may come after a user has left.
                last_seen.insert(user, event.ts);
            }
            if truths[user].segment == Segment::Decaying {
                let day = (event.ts.unix_millis() - config.start.unix_millis()) / DAY;
                early += u64::from(day < 20);
                late += u64::from(day >= 70);
            }
        }
        let span = config.end().unix_millis() - config.start.unix_millis();
        for truth in &truths {
            let user = truth.user_index as usize;
            if let Some(first) = first_seen.get(&user) {
                assert!(*first >= truth.active_from);
            }
            if truth.segment == Segment::NewUser {
                let offset = truth.active_from.unix_millis() - config.start.unix_millis();
                assert!(offset >= span / 25, "{truth:?}");
            }
            if let (Some(churn), Some(last)) = (truth.churns_at, last_seen.get(&user)) {
                // A visit that began before the churn may finish after it.
                assert!(last.unix_millis() < churn.unix_millis() + 3 * 60 * MINUTE);
            }
        }
        assert!(
            early > 8 * late,
            "decaying users: {early} events in days 0–20, {late} in 70–90"
        );
    }

    #[test]
    fn visits_follow_the_daily_and_weekly_rhythm() {
        let config = config(1_000, 28, 4);
        let (mut by_hour, mut by_weekday) = ([0u64; 24], [0u64; 7]);
        for event in events(&config) {
            if event.event_type != EventType::PageView && event.event_type != EventType::Search {
                continue;
            }
            let ms = event.ts.unix_millis();
            by_hour[(ms.rem_euclid(DAY) / (60 * MINUTE)) as usize] += 1;
            // 1970-01-01 was a Thursday; Monday = 0.
            by_weekday[(ms.div_euclid(DAY) + 3).rem_euclid(7) as usize] += 1;
        }
        let night: u64 = by_hour[2..6].iter().sum();
        let evening: u64 = by_hour[18..22].iter().sum();
        assert!(
            evening > 5 * night,
            "evening {evening}, night {night}: {by_hour:?}"
        );
        let weekday = by_weekday[..5].iter().sum::<u64>() as f64 / 5.0;
        let weekend = by_weekday[5..].iter().sum::<u64>() as f64 / 2.0;
        assert!(weekend > 1.05 * weekday, "{by_weekday:?}");
    }

    #[test]
    fn validate_refuses_what_generate_would_repair() {
        fn check(change: fn(&mut SynthConfig), expected: Result<(), &str>) {
            let mut config = SynthConfig::default();
            change(&mut config);
            let got = config.validate().map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{config:?}");
        }
        check(|_| {}, Ok(()));
        check(|c| c.dials = messy(), Ok(()));
        check(
            |c| c.dials.duplicate = 1.5,
            Err("dial `duplicate` must be a probability from 0 to 1, got 1.5"),
        );
        check(
            |c| c.dials.malformed = f64::NAN,
            Err("dial `malformed` must be a probability from 0 to 1, got NaN"),
        );
        check(
            |c| {
                c.dials.late = 0.6;
                c.dials.out_of_order = 0.6;
            },
            Err("dials `late` (0.6) and `out_of_order` (0.6) must not sum above 1"),
        );
        check(
            |c| c.mix.browser = -1.0,
            Err("segment mix weight `browser` must be a finite number ≥ 0, got -1"),
        );
        check(
            |c| {
                c.mix = SegmentMix {
                    new_user: 0.0,
                    ..SegmentMix::only(Segment::NewUser)
                }
            },
            Err("segment mix weights are all 0"),
        );
        check(
            |c| c.start = EventTime::from_unix_millis(-1),
            Err(
                "the span from 1969-12-31T23:59:59.999Z over 90 days (plus late emissions) must lie between 1970 and 9999",
            ),
        );
        let err = SynthConfig {
            start: EventTime::parse_rfc3339("9999-12-01T00:00:00Z").unwrap(),
            ..SynthConfig::default()
        }
        .validate();
        assert!(matches!(err, Err(SynthConfigError::SpanOutOfRange { .. })));
    }

    #[test]
    fn generate_repairs_a_bad_config_instead_of_panicking() {
        let config = SynthConfig {
            dials: Dials {
                out_of_order: 3.0,
                late: f64::NAN,
                duplicate: -1.0,
                malformed: 0.0,
            },
            mix: SegmentMix {
                browser: f64::INFINITY,
                ..SegmentMix::only(Segment::LoyalHighSpender)
            },
            ..config(10, 5, 1)
        };
        assert!(config.validate().is_err());
        let mut generator = synth::generate(&config);
        let mut previous_ts = EventTime::from_unix_millis(i64::MIN);
        let mut overtaken = 0;
        for record in generator.by_ref() {
            let event = record.event().expect("no malformed dial");
            event.validate().unwrap();
            overtaken += u32::from(event.ts < previous_ts);
            previous_ts = previous_ts.max(event.ts);
        }
        let stats = generator.stats();
        assert_eq!(
            stats.out_of_order, stats.source_events,
            "out_of_order clamped to 1"
        );
        assert_eq!(stats.duplicates + stats.late + stats.malformed, 0);
        assert!(overtaken > 0);
        for user in 0..10 {
            assert_eq!(synth::segment_of(&config, user), Segment::LoyalHighSpender);
        }
    }

    #[test]
    fn config_reads_from_toml_and_refuses_unknown_fields() {
        let config: SynthConfig = toml::from_str(
            r#"
            users = 10
            start = "2026-03-01T00:00:00Z"
            [dials]
            late = 0.01
            [mix]
            browser = 2.0
            "#,
        )
        .unwrap();
        assert_eq!(config.users, 10);
        assert_eq!(config.days, SynthConfig::default().days);
        assert_eq!(config.dials.late, 0.01);
        assert_eq!(config.mix.browser, 2.0);
        assert_eq!(config.mix.decaying, SegmentMix::default().decaying);
        let err = toml::from_str::<SynthConfig>("user = 10").unwrap_err();
        assert!(err.to_string().contains("unknown field `user`"), "{err}");
    }

    proptest! {
        // No regression files: a failure prints its minimal config, which a data-driven test
        // can then pin.
        #![proptest_config(ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn small_configs_emit_only_valid_events_and_undecodable_junk(
            users in 0u64..25,
            days in 0u32..15,
            seed in any::<u64>(),
            start_ms in 946_684_800_000i64..4_102_444_800_000,
            dials in (0.0..0.3f64, 0.0..0.3f64, 0.0..0.3f64, 0.0..0.3f64),
            mix in proptest::array::uniform5(0.0..1.0f64),
        ) {
            let config = SynthConfig {
                users,
                seed,
                start: EventTime::from_unix_millis(start_ms),
                days,
                dials: Dials { out_of_order: dials.0, late: dials.1, duplicate: dials.2, malformed: dials.3 },
                mix: SegmentMix {
                    loyal_high_spender: mix[0],
                    bargain_hunter: mix[1],
                    browser: mix[2],
                    decaying: mix[3],
                    new_user: mix[4],
                },
            };
            let (start, end) = (config.start, config.end());
            let mut generator = synth::generate(&config);
            let mut records = 0u64;
            for record in generator.by_ref() {
                records += 1;
                prop_assert!(record.key().starts_with('u'));
                match &record {
                    Record::Event(event) => {
                        prop_assert!(event.validate().is_ok(), "{:?}", event);
                        prop_assert!(event.ts >= start && event.ts < end);
                    }
                    Record::Malformed { bytes, .. } => {
                        prop_assert!(ClickEvent::from_json(bytes).is_err());
                    }
                }
            }
            let stats = generator.stats();
            prop_assert_eq!(records, stats.source_events + stats.duplicates);
            if days == 0 || users == 0 {
                prop_assert_eq!(records, 0);
            }
        }
    }
}
