//! Every trigger kind fires exactly when it should and not otherwise: data-driven scripts of
//! updates and clock ticks against the expected candidates, plus properties (candidates do not
//! depend on when time is advanced; state stays bounded).

use proptest::prelude::*;
use tierflow_events::{ClickEvent, EventTime, EventType, Scores, Tier};
use tierflow_rules::{Candidate, RuleSet, RuleState, Update};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = EventTime::MILLIS_PER_MINUTE;
const DAY: i64 = EventTime::MILLIS_PER_DAY;

fn at(minutes: i64) -> EventTime {
    EventTime::from_unix_millis(T0 + minutes * MINUTE)
}

/// One step of a script: an event (with the tier and churn risk it leads to) or the partition
/// watermark passing a minute.
#[derive(Debug, Clone, Copy)]
enum Step {
    Event {
        kind: EventType,
        minute: i64,
        tier: Tier,
        churn: f32,
    },
    Tick(i64),
}

use Step::Tick;

fn ev(kind: EventType, minute: i64) -> Step {
    Step::Event {
        kind,
        minute,
        tier: 1,
        churn: 0.1,
    }
}

fn tier(minute: i64, tier: Tier) -> Step {
    Step::Event {
        kind: EventType::PageView,
        minute,
        tier,
        churn: 0.1,
    }
}

fn risk(minute: i64, tier: Tier, churn: f32) -> Step {
    Step::Event {
        kind: EventType::PageView,
        minute,
        tier,
        churn,
    }
}

fn click(id: &str, kind: EventType, ts: EventTime) -> ClickEvent {
    ClickEvent {
        schema_version: 1,
        event_id: id.to_owned(),
        user_id: "u1".to_owned(),
        event_type: kind,
        ts,
        session_id: "s1".to_owned(),
        product_id: Some("p1".to_owned()),
        category: None,
        price: Some(10.0),
        quantity: Some(1),
        currency: Some("EUR".to_owned()),
        order_id: None,
        revenue: kind.requires_revenue().then_some(10.0),
        channel: None,
        device: None,
    }
}

/// Runs `steps` for one user; events are named `e0`, `e1`, ... in script order (ticks not
/// counted) and the tier before each event is the tier after the previous one.
fn run(rules: &RuleSet, state: &mut RuleState, steps: &[Step]) -> Vec<Candidate> {
    let mut fired = Vec::new();
    let mut previous_tier: Option<Tier> = None;
    let mut newest: Option<EventTime> = None;
    let mut events = 0;
    for step in steps {
        match *step {
            Step::Event {
                kind,
                minute,
                tier,
                churn,
            } => {
                let ts = at(minute);
                let event = click(&format!("e{events}"), kind, ts);
                events += 1;
                let scores = Scores {
                    tier_probabilities: vec![0.25; 4],
                    churn_risk: churn,
                    expected_value: 0.0,
                };
                let now = newest.map_or(ts, |n| n.max(ts));
                newest = Some(now);
                fired.extend(rules.on_update(
                    state,
                    &Update {
                        user_id: "u1",
                        event: &event,
                        from_tier: previous_tier,
                        to_tier: tier,
                        scores: &scores,
                        at: now,
                    },
                ));
                previous_tier = Some(tier);
            }
            Tick(minute) => fired.extend(rules.on_time(state, at(minute))),
        }
    }
    fired
}

fn rules(when: &str) -> RuleSet {
    RuleSet::parse(&format!(
        "tier_count = 4\n[[campaign]]\nname = \"c\"\nwhen = {{ {when} }}\n"
    ))
    .unwrap()
}

/// `expected`: (campaign, minute fired, causing event) of every candidate, in order.
fn check(rules: &RuleSet, steps: &[Step], expected: &[(&str, i64, Option<&str>)]) {
    let mut state = RuleState::default();
    let fired = run(rules, &mut state, steps);
    let actual: Vec<(&str, i64, Option<&str>)> = fired
        .iter()
        .map(|c| {
            (
                c.campaign.as_str(),
                (c.fired_at.unix_millis() - T0) / MINUTE,
                c.causing_event_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(actual, expected, "steps: {steps:?}");
}

#[test]
fn tier_reached_fires_on_crossing_up_into_the_tier() {
    let r = rules("tier_reached = 3");
    check(
        &r,
        &[tier(0, 1), tier(1, 2), tier(2, 3)],
        &[("c", 2, Some("e2"))],
    );
    // Staying there is not reaching it again; leaving and coming back is.
    check(
        &r,
        &[tier(0, 3), tier(1, 3), tier(2, 2), tier(3, 3)],
        &[("c", 0, Some("e0")), ("c", 3, Some("e3"))],
    );
    // Jumping over the tier counts (tier_count 4: 3 is the top, so use tier_reached = 2).
    check(
        &rules("tier_reached = 2"),
        &[tier(0, 1), tier(1, 3)],
        &[("c", 1, Some("e1"))],
    );
    check(&r, &[tier(0, 0), tier(1, 2), tier(2, 1)], &[]);
}

#[test]
fn tier_dropped_by_fires_on_a_drop_of_at_least_n() {
    let r = rules("tier_dropped_by = 2");
    check(&r, &[tier(0, 3), tier(1, 2), tier(2, 1)], &[]);
    check(&r, &[tier(0, 3), tier(1, 1)], &[("c", 1, Some("e1"))]);
    check(&r, &[tier(0, 3), tier(1, 0)], &[("c", 1, Some("e1"))]);
    // A first tier is not a drop.
    check(&r, &[tier(0, 0)], &[]);
}

#[test]
fn churn_threshold_fires_when_it_starts_to_hold() {
    let r = rules("churn_risk_at_least = 0.7, tier_at_least = 2");
    check(
        &r,
        &[
            risk(0, 2, 0.5),
            risk(1, 2, 0.7),  // starts to hold (≥ is inclusive): fires
            risk(2, 2, 0.8),  // still holds: nothing
            risk(3, 2, 0.6),  // stops
            risk(4, 3, 0.75), // holds again: fires
            risk(5, 1, 0.9),  // tier too low: stops
            risk(6, 2, 0.9),  // holds again: fires
        ],
        &[
            ("c", 1, Some("e1")),
            ("c", 4, Some("e4")),
            ("c", 6, Some("e6")),
        ],
    );
    check(
        &rules("churn_risk_at_least = 0.7"),
        &[risk(0, 0, 0.9)],
        &[("c", 0, Some("e0"))],
    );
}

#[test]
fn cart_abandonment_fires_once_after_the_delay_without_checkout() {
    use EventType::*;
    let r = rules("cart_abandoned = \"30m\"");
    check(&r, &[ev(AddToCart, 0), Tick(29)], &[]);
    check(
        &r,
        &[ev(AddToCart, 0), Tick(29), Tick(30), Tick(31), Tick(500)],
        &[("c", 30, Some("e0"))],
    );
    // Checkout or purchase within the delay (inclusive) disarms.
    check(
        &r,
        &[ev(AddToCart, 0), ev(CheckoutStart, 20), Tick(60)],
        &[],
    );
    check(&r, &[ev(AddToCart, 0), ev(Purchase, 30), Tick(60)], &[]);
    // A newer add moves the deadline and the cause.
    check(
        &r,
        &[ev(AddToCart, 0), ev(AddToCart, 10), Tick(39), Tick(40)],
        &[("c", 40, Some("e1"))],
    );
    // The user's own later event discovers the overdue timer, which fires at its due time
    // and before the event's own effects.
    check(
        &r,
        &[ev(AddToCart, 0), ev(CheckoutStart, 45)],
        &[("c", 30, Some("e0"))],
    );
    // An add older than the newest checkout arms nothing.
    check(
        &r,
        &[
            ev(AddToCart, 10),
            ev(CheckoutStart, 20),
            ev(AddToCart, 15),
            Tick(100),
        ],
        &[],
    );
    // Other events neither arm nor disarm.
    check(
        &r,
        &[
            ev(AddToCart, 0),
            ev(RemoveFromCart, 5),
            ev(Search, 6),
            Tick(30),
        ],
        &[("c", 30, Some("e0"))],
    );
}

#[test]
fn browse_abandonment_fires_after_views_without_cart_activity() {
    use EventType::*;
    let r = rules("browse_abandoned = \"1h\"");
    check(
        &r,
        &[ev(ProductView, 0), ev(ProductView, 20), Tick(79), Tick(80)],
        &[("c", 80, Some("e1"))],
    );
    check(&r, &[ev(ProductView, 0), ev(AddToCart, 10), Tick(200)], &[]);
    check(&r, &[ev(ProductView, 0), ev(Purchase, 10), Tick(200)], &[]);
    // Views older than the newest cart add arm nothing.
    check(&r, &[ev(AddToCart, 10), ev(ProductView, 5), Tick(200)], &[]);
    // After a cart add, new views arm again.
    check(
        &r,
        &[ev(AddToCart, 0), ev(ProductView, 10), Tick(70)],
        &[("c", 70, Some("e1"))],
    );
}

#[test]
fn browse_is_not_armed_while_a_cart_reminder_is_pending() {
    use EventType::*;
    let r = RuleSet::parse(
        "tier_count = 4\n\
         [[campaign]]\nname = \"cart\"\nwhen = { cart_abandoned = \"30m\" }\n\
         [[campaign]]\nname = \"browse\"\nwhen = { browse_abandoned = \"1h\" }\n",
    )
    .unwrap();
    check(
        &r,
        &[ev(AddToCart, 0), ev(ProductView, 10), Tick(200)],
        &[("cart", 30, Some("e0"))],
    );
}

#[test]
fn first_purchase_fires_on_the_first_purchase_only() {
    use EventType::*;
    let r = rules("first_purchase = true");
    check(
        &r,
        &[
            ev(ProductView, 0),
            ev(Purchase, 5),
            ev(Purchase, 10),
            ev(Refund, 11),
        ],
        &[("c", 5, Some("e1"))],
    );
    check(&r, &[ev(AddToCart, 0), ev(CheckoutStart, 1)], &[]);
}

#[test]
fn inactivity_fires_once_per_quiet_spell_and_rearms_on_the_next_visit() {
    use EventType::*;
    let r = rules("inactive_for = \"14d\"");
    let d = DAY / MINUTE;
    check(&r, &[ev(PageView, 0), Tick(14 * d - 1)], &[]);
    check(
        &r,
        &[
            ev(PageView, 0),
            Tick(14 * d),
            Tick(20 * d),
            ev(Search, 21 * d),
            Tick(34 * d),
            Tick(35 * d),
        ],
        &[("c", 14 * d, None), ("c", 35 * d, None)],
    );
    // Any visit pushes the deadline; a visit at exactly the deadline is in time.
    check(
        &r,
        &[ev(PageView, 0), ev(ProductView, 14 * d), Tick(28 * d - 1)],
        &[],
    );
    // A late event (older than the last visit) does not pull the deadline back or re-arm.
    check(
        &r,
        &[
            ev(PageView, 10),
            ev(PageView, 5),
            Tick(14 * d + 9),
            Tick(14 * d + 10),
            ev(PageView, 7),
            Tick(100 * d),
        ],
        &[("c", 14 * d + 10, None)],
    );
}

#[test]
fn simultaneous_triggers_come_out_highest_priority_first() {
    let r = RuleSet::parse(
        "tier_count = 4\n\
         [[campaign]]\nname = \"low\"\npriority = 1\nwhen = { tier_reached = 3 }\n\
         [[campaign]]\nname = \"high\"\npriority = 9\nwhen = { churn_risk_at_least = 0.5 }\n\
         [[campaign]]\nname = \"also_high\"\npriority = 9\nwhen = { first_purchase = true }\n",
    )
    .unwrap();
    let mut state = RuleState::default();
    let event = click("e0", EventType::Purchase, at(0));
    let scores = Scores {
        tier_probabilities: vec![0.0, 0.0, 0.0, 1.0],
        churn_risk: 0.9,
        expected_value: 100.0,
    };
    let fired = r.on_update(
        &mut state,
        &Update {
            user_id: "u1",
            event: &event,
            from_tier: Some(2),
            to_tier: 3,
            scores: &scores,
            at: at(0),
        },
    );
    let names: Vec<&str> = fired.iter().map(|c| c.campaign.as_str()).collect();
    assert_eq!(names, ["also_high", "high", "low"]);
    assert_eq!(fired[2].rule, "tier_reached = 3");
    assert_eq!(fired[2].priority, 1);
    assert_eq!(fired[2].expires_at, at(0).plus_millis(DAY));
    assert_eq!(fired[2].idempotency_key("u1"), format!("ct/u1/low/{T0}/e0"));
}

#[test]
fn next_due_is_the_earliest_deadline() {
    use EventType::*;
    let r = RuleSet::parse(
        "tier_count = 4\n\
         [[campaign]]\nname = \"away\"\nwhen = { inactive_for = \"7d\" }\n\
         [[campaign]]\nname = \"cart\"\nwhen = { cart_abandoned = \"30m\" }\n",
    )
    .unwrap();
    let mut state = RuleState::default();
    assert_eq!(state.next_due(), None);
    run(&r, &mut state, &[ev(AddToCart, 0)]);
    assert_eq!(state.next_due(), Some(at(30)));
    run(&r, &mut state, &[Tick(30)]);
    assert_eq!(state.next_due(), Some(at(7 * DAY / MINUTE)));
    run(&r, &mut state, &[Tick(7 * DAY / MINUTE)]);
    assert_eq!(state.next_due(), None);
}

#[test]
fn a_reload_forgets_what_belongs_to_removed_or_changed_campaigns() {
    use EventType::*;
    let old = RuleSet::parse(
        "tier_count = 4\n\
         [[campaign]]\nname = \"cart\"\nwhen = { cart_abandoned = \"30m\" }\n\
         [[campaign]]\nname = \"risk\"\nwhen = { churn_risk_at_least = 0.5 }\n",
    )
    .unwrap();
    let mut state = RuleState::default();
    let add_at_risk = Step::Event {
        kind: AddToCart,
        minute: 1,
        tier: 1,
        churn: 0.9,
    };
    run(&old, &mut state, &[risk(0, 1, 0.9), add_at_risk]);
    assert_eq!(state.timers.len(), 1);
    assert_eq!(state.thresholds_held, ["risk"]);
    // "cart" is now a browse rule and "risk" is gone.
    let new = RuleSet::parse(
        "tier_count = 4\n[[campaign]]\nname = \"cart\"\nwhen = { browse_abandoned = \"1h\" }\n",
    )
    .unwrap();
    assert!(new.on_time(&mut state, at(100)).is_empty());
    assert_eq!(
        state,
        RuleState {
            timers: vec![],
            thresholds_held: vec![],
            ..state.clone()
        }
    );
}

#[test]
fn state_round_trips_through_bincode() {
    use EventType::*;
    let r = RuleSet::parse(include_str!("../../../deploy/rules.toml")).unwrap();
    let mut state = RuleState::default();
    run(
        &r,
        &mut state,
        &[
            ev(ProductView, 0),
            ev(AddToCart, 1),
            risk(2, 3, 0.9),
            ev(Purchase, 3),
            ev(ProductView, 4),
        ],
    );
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&state, config).unwrap();
    let (back, _): (RuleState, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(back, state);
    assert!(bytes.len() < 200, "{} bytes", bytes.len());
}

fn any_kind() -> impl Strategy<Value = EventType> {
    prop::sample::select(EventType::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whether time is advanced between updates or only at the end, the same candidates fire:
    /// replays with other batch boundaries and watermarks decide the same.
    #[test]
    fn candidates_do_not_depend_on_when_time_is_advanced(
        steps in prop::collection::vec((any_kind(), 0i64..3_000, 0u8..4, 0.0f32..1.0, any::<Option<u8>>()), 1..40),
    ) {
        let r = RuleSet::parse(include_str!("../../../deploy/rules.toml")).unwrap();
        let mut events: Vec<(EventType, i64, u8, f32, Option<u8>)> = steps;
        // Mostly in order, with gaps of up to ~2 days between events.
        let mut minute = 0;
        for e in &mut events {
            minute += e.1;
            e.1 = minute;
        }
        let end = minute + 30 * DAY / MINUTE;
        let mut quiet = Vec::new();
        let mut ticking = Vec::new();
        for (i, (kind, minute, tier, churn, tick)) in events.iter().copied().enumerate() {
            let step = Step::Event { kind, minute, tier, churn };
            quiet.push(step);
            ticking.push(step);
            // A watermark strictly before the next event.
            if let (Some(fraction), Some(next)) = (tick, events.get(i + 1)) {
                let gap = next.1 - minute;
                if gap > 0 {
                    ticking.push(Tick(minute + i64::from(fraction) * (gap - 1) / 255));
                }
            }
        }
        quiet.push(Tick(end));
        ticking.push(Tick(end));
        let (mut a, mut b) = (RuleState::default(), RuleState::default());
        let mut quiet_fired = run(&r, &mut a, &quiet);
        let mut ticking_fired = run(&r, &mut b, &ticking);
        let key = |c: &Candidate| (c.fired_at, c.campaign.clone());
        quiet_fired.sort_by_key(key);
        ticking_fired.sort_by_key(key);
        prop_assert_eq!(quiet_fired, ticking_fired);
        prop_assert_eq!(a, b);
    }

    /// However many events, the state holds at most one timer per timer campaign and one
    /// threshold entry per threshold campaign; every timer fires by its due time.
    #[test]
    fn state_stays_bounded(
        steps in prop::collection::vec((any_kind(), -60i64..600, 0u8..4, 0.0f32..1.0), 1..200),
    ) {
        let r = RuleSet::parse(include_str!("../../../deploy/rules.toml")).unwrap();
        let script: Vec<Step> = steps
            .iter()
            .scan(0i64, |minute, &(kind, delta, tier, churn)| {
                *minute = (*minute + delta).max(0);
                Some(Step::Event { kind, minute: *minute, tier, churn })
            })
            .collect();
        let mut state = RuleState::default();
        run(&r, &mut state, &script);
        prop_assert!(state.timers.len() <= 3, "{:?}", state.timers);
        prop_assert!(state.thresholds_held.len() <= 1);
        if let Some(due) = state.next_due() {
            r.on_time(&mut state, due);
            prop_assert!(state.next_due().is_none_or(|next| next > due));
        }
    }
}
