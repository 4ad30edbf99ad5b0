//! The pure governance decision over an in-memory ledger: cooldowns, daily caps, priorities,
//! suppression, budgets, control holdouts and idempotent replays, each against hand-worked
//! verdicts; plus the property that batching does not change a decision.

use proptest::prelude::*;
use tierflow_events::EventTime;
use tierflow_rules::{
    Candidate, GovernContext, Ledger, RuleSet, SuppressReason, Verdict, day_of, govern, in_control,
};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = EventTime::MILLIS_PER_HOUR;
const DAY: i64 = EventTime::MILLIS_PER_DAY;

use SuppressReason::*;
use Verdict::{ControlHoldout, Send, Suppressed};

const RULES: &str = r#"
tier_count = 4
[defaults]
cooldown = "7d"
daily_cap = 3
max_simultaneous = 1

[[campaign]]
name = "a"
priority = 3
when = { tier_reached = 3 }

[[campaign]]
name = "b"
priority = 2
when = { first_purchase = true }

[[campaign]]
name = "c"
priority = 1
when = { inactive_for = "14d" }

[[campaign]]
name = "d"
when = { tier_dropped_by = 1 }

[[campaign]]
name = "budgeted"
budget_per_hour = 2
cooldown = "0s"
when = { cart_abandoned = "30m" }

[[campaign]]
name = "held"
priority = 9
control_fraction = 0.5
when = { browse_abandoned = "1h" }
"#;

fn rules() -> RuleSet {
    RuleSet::parse(RULES).unwrap()
}

/// A candidate of `campaign` fired at `ms` after T0, with the campaign's priority.
fn cand(rules: &RuleSet, campaign: &str, ms: i64) -> Candidate {
    Candidate {
        campaign: campaign.to_owned(),
        rule: "test".to_owned(),
        fired_at: EventTime::from_unix_millis(T0 + ms),
        expires_at: EventTime::from_unix_millis(T0 + ms + DAY),
        causing_event_id: Some(format!("e{ms}")),
        priority: rules.campaign(campaign).map_or(0, |c| c.priority),
    }
}

fn decide(
    rules: &RuleSet,
    ledger: &mut Ledger,
    user: &str,
    candidates: &[Candidate],
) -> Vec<Verdict> {
    govern(
        candidates,
        GovernContext {
            rules,
            user_id: user,
            ledger,
        },
    )
    .into_iter()
    .map(|d| d.verdict)
    .collect()
}

/// A user id in (or out of) campaign `held`'s control group.
fn user_where_held_is(in_group: bool) -> String {
    (0..)
        .map(|i| format!("user{i}"))
        .find(|u| in_control(u, "held", 0.5) == in_group)
        .unwrap()
}

#[test]
fn cooldown_holds_in_event_time_both_ways() {
    let r = rules();
    let mut ledger = Ledger::default();
    let a = |ms| cand(&r, "a", ms);
    assert_eq!(decide(&r, &mut ledger, "u", &[a(10 * DAY)]), [Send]);
    // Less than 7 days later or earlier: cooling down.
    assert_eq!(
        decide(&r, &mut ledger, "u", &[a(16 * DAY)]),
        [Suppressed(Cooldown)]
    );
    assert_eq!(
        decide(&r, &mut ledger, "u", &[a(5 * DAY)]),
        [Suppressed(Cooldown)]
    );
    // Exactly 7 days later: allowed. Another user or campaign is not affected.
    assert_eq!(decide(&r, &mut ledger, "u", &[a(17 * DAY)]), [Send]);
    assert_eq!(decide(&r, &mut ledger, "v", &[a(17 * DAY + 1)]), [Send]);
    assert_eq!(
        decide(&r, &mut ledger, "u", &[cand(&r, "b", 17 * DAY + 1)]),
        [Send]
    );
}

#[test]
fn daily_cap_counts_across_campaigns_per_event_time_day() {
    let r = rules();
    let mut ledger = Ledger::default();
    let verdicts = decide(
        &r,
        &mut ledger,
        "u",
        &[
            cand(&r, "d", 4 * HOUR),
            cand(&r, "a", HOUR),
            cand(&r, "b", 2 * HOUR),
            cand(&r, "c", 3 * HOUR),
        ],
    );
    // Taken in event-time order: a, b, c are sent; d, the latest that day, is capped.
    assert_eq!(verdicts, [Suppressed(DailyCap), Send, Send, Send]);
    assert_eq!(
        ledger.sends_on_day("u", day_of(EventTime::from_unix_millis(T0))),
        3
    );
    // The next UTC day starts afresh (d is not cooling down: capped triggers start no cooldown).
    assert_eq!(decide(&r, &mut ledger, "u", &[cand(&r, "d", DAY)]), [Send]);
}

#[test]
fn simultaneous_triggers_send_the_highest_priority_only() {
    let r = rules();
    let mut ledger = Ledger::default();
    let verdicts = decide(
        &r,
        &mut ledger,
        "u",
        &[
            cand(&r, "c", 0),
            cand(&r, "a", 0),
            cand(&r, "b", 0),
            cand(&r, "d", 60_000),
        ],
    );
    assert_eq!(
        verdicts,
        [
            Suppressed(LowerPriority),
            Send,
            Suppressed(LowerPriority),
            Send
        ]
    );
}

#[test]
fn a_control_holdout_takes_no_slot_but_starts_the_cooldown() {
    let r = rules();
    let held = user_where_held_is(true);
    let treated = user_where_held_is(false);
    let mut ledger = Ledger::default();
    // "held" (priority 9) outranks "a", but holding it out leaves the slot to "a".
    assert_eq!(
        decide(
            &r,
            &mut ledger,
            &held,
            &[cand(&r, "held", 0), cand(&r, "a", 0)]
        ),
        [ControlHoldout, Send]
    );
    assert_eq!(
        ledger.sends_on_day(&held, day_of(EventTime::from_unix_millis(T0))),
        1
    );
    assert_eq!(
        decide(&r, &mut ledger, &held, &[cand(&r, "held", HOUR)]),
        [Suppressed(Cooldown)]
    );
    assert_eq!(
        decide(
            &r,
            &mut ledger,
            &treated,
            &[cand(&r, "held", 0), cand(&r, "a", 0)]
        ),
        [Send, Suppressed(LowerPriority)]
    );
}

#[test]
fn control_is_only_recorded_for_eligible_users() {
    let r = rules();
    let held = user_where_held_is(true);
    let mut ledger = Ledger::default();
    decide(
        &r,
        &mut ledger,
        &held,
        &[cand(&r, "a", 0), cand(&r, "b", 1), cand(&r, "c", 2)],
    );
    // Capped for the day: the holdout would not have been sent either.
    assert_eq!(
        decide(&r, &mut ledger, &held, &[cand(&r, "held", 3)]),
        [Suppressed(DailyCap)]
    );
}

#[test]
fn opted_out_users_get_nothing() {
    let r = rules();
    let mut ledger = Ledger::default();
    ledger.opted_out.insert("u".to_owned());
    assert_eq!(
        decide(
            &r,
            &mut ledger,
            "u",
            &[cand(&r, "a", 0), cand(&r, "held", 1)]
        ),
        [Suppressed(OptedOut), Suppressed(OptedOut)]
    );
    assert_eq!(decide(&r, &mut ledger, "v", &[cand(&r, "a", 0)]), [Send]);
}

#[test]
fn budget_caps_a_campaign_per_event_time_hour() {
    let r = rules();
    let mut ledger = Ledger::default();
    let b = |ms| cand(&r, "budgeted", ms);
    assert_eq!(decide(&r, &mut ledger, "u1", &[b(0)]), [Send]);
    assert_eq!(decide(&r, &mut ledger, "u2", &[b(1)]), [Send]);
    assert_eq!(
        decide(&r, &mut ledger, "u3", &[b(HOUR - 1)]),
        [Suppressed(Budget)]
    );
    assert_eq!(decide(&r, &mut ledger, "u3", &[b(HOUR)]), [Send]);
    assert_eq!(ledger.sends_in_hour("budgeted", T0 / HOUR), 2);
}

#[test]
fn a_replay_gets_the_earlier_verdicts_and_consumes_nothing() {
    let r = rules();
    let mut ledger = Ledger::default();
    let batch = [cand(&r, "a", 0), cand(&r, "b", 0), cand(&r, "c", HOUR)];
    let first = decide(&r, &mut ledger, "u", &batch);
    assert_eq!(first, [Send, Suppressed(LowerPriority), Send]);
    let day = day_of(EventTime::from_unix_millis(T0));
    assert_eq!(ledger.sends_on_day("u", day), 2);
    assert_eq!(decide(&r, &mut ledger, "u", &batch), first);
    // Replayed together with a new one: the old ones still hold their slot at instant 0.
    assert_eq!(
        decide(&r, &mut ledger, "u", &[cand(&r, "d", 0), batch[0].clone()]),
        [Suppressed(LowerPriority), Send]
    );
    assert_eq!(ledger.sends_on_day("u", day), 2);
}

#[test]
fn retired_campaigns_are_suppressed() {
    let r = rules();
    let mut ledger = Ledger::default();
    assert_eq!(
        decide(&r, &mut ledger, "u", &[cand(&r, "gone", 0)]),
        [Suppressed(Retired)]
    );
}

#[test]
fn verdict_names_round_trip() {
    for v in Verdict::ALL {
        assert_eq!(v.as_str().parse::<Verdict>(), Ok(v));
    }
    assert!("sent".parse::<Verdict>().is_err());
}

proptest! {
    /// Deciding a user's candidates in one call or split into chronological chunks gives the
    /// same verdicts: batch boundaries do not change decisions.
    #[test]
    fn batching_does_not_change_decisions(
        picks in prop::collection::vec((0usize..6, 0i64..(3 * DAY / 60_000)), 1..40),
        split in prop::collection::vec(any::<bool>(), 40),
    ) {
        let r = rules();
        let names = ["a", "b", "c", "d", "budgeted", "held"];
        let mut candidates: Vec<Candidate> = picks
            .iter()
            .map(|&(c, minute)| cand(&r, names[c], minute * 60_000))
            .collect();
        candidates.sort_by_key(|c| c.fired_at);
        candidates.dedup_by(|a, b| a.idempotency_key("u") == b.idempotency_key("u"));

        let mut whole = Ledger::default();
        let all_at_once = decide(&r, &mut whole, "u", &candidates);

        let mut chunked = Ledger::default();
        let mut piecewise = Vec::new();
        let mut start = 0;
        for i in 1..=candidates.len() {
            // Never split between candidates of the same instant (they are decided together).
            let boundary = i == candidates.len()
                || (split[i] && candidates[i].fired_at != candidates[i - 1].fired_at);
            if boundary {
                piecewise.extend(decide(&r, &mut chunked, "u", &candidates[start..i]));
                start = i;
            }
        }
        prop_assert_eq!(all_at_once, piecewise);
    }
}
