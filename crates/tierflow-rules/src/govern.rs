//! Governance as a pure decision: which candidates are sent, held out or suppressed, given the
//! counters so far. [`Ledger`] keeps those counters in memory; it is the reference the Redis
//! governor (`tierflow_store::governance`, one Lua script) must agree with, and what
//! `rules test` simulates with.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use tierflow_events::EventTime;

use crate::control::in_control;
use crate::evaluate::Candidate;
use crate::ruleset::RuleSet;

/// Why a candidate was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuppressReason {
    /// The user is on the suppression list.
    OptedOut,
    /// The campaign fired for the user less than its cooldown ago (or will, in event time).
    Cooldown,
    /// `max_simultaneous` higher-priority triggers were already sent at the same instant.
    LowerPriority,
    /// The user already had `daily_cap` sends that event-time day.
    DailyCap,
    /// The campaign already spent `budget_per_hour` that event-time hour.
    Budget,
    /// The campaign is not in the rules any more.
    Retired,
}

/// What happens to one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Send,
    /// Eligible but in the campaign's control group: recorded as `would_have_triggered`,
    /// never sent.
    ControlHoldout,
    Suppressed(SuppressReason),
}

impl Verdict {
    pub const ALL: [Verdict; 8] = [
        Self::Send,
        Self::ControlHoldout,
        Self::Suppressed(SuppressReason::OptedOut),
        Self::Suppressed(SuppressReason::Cooldown),
        Self::Suppressed(SuppressReason::LowerPriority),
        Self::Suppressed(SuppressReason::DailyCap),
        Self::Suppressed(SuppressReason::Budget),
        Self::Suppressed(SuppressReason::Retired),
    ];

    /// Stable names, shared with the Redis governor's script and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::ControlHoldout => "control_holdout",
            Self::Suppressed(SuppressReason::OptedOut) => "opted_out",
            Self::Suppressed(SuppressReason::Cooldown) => "cooldown",
            Self::Suppressed(SuppressReason::LowerPriority) => "lower_priority",
            Self::Suppressed(SuppressReason::DailyCap) => "daily_cap",
            Self::Suppressed(SuppressReason::Budget) => "budget",
            Self::Suppressed(SuppressReason::Retired) => "retired",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown verdict {s:?}"))
    }
}

/// The verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub campaign: String,
    pub idempotency_key: String,
    pub verdict: Verdict,
}

/// What governance needs to know about one candidate, from its campaign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Terms {
    pub cooldown_ms: i64,
    pub budget_per_hour: Option<u32>,
    pub in_control: bool,
}

impl RuleSet {
    /// The governance terms of `candidate` for `user_id`; `None` when its campaign is gone.
    pub fn terms(&self, user_id: &str, candidate: &Candidate) -> Option<Terms> {
        self.campaign(&candidate.campaign).map(|c| Terms {
            cooldown_ms: c.cooldown_ms,
            budget_per_hour: c.budget_per_hour,
            in_control: in_control(user_id, &c.name, c.control_fraction),
        })
    }
}

/// Event-time day and hour numbers (UTC) that counters are kept per.
pub fn day_of(t: EventTime) -> i64 {
    t.unix_millis().div_euclid(EventTime::MILLIS_PER_DAY)
}

pub fn hour_of(t: EventTime) -> i64 {
    t.unix_millis().div_euclid(EventTime::MILLIS_PER_HOUR)
}

/// Governance counters in memory, for every user and campaign. Unbounded: for tests and
/// simulations; production keeps the same counters in Redis with TTLs.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// The suppression list.
    pub opted_out: HashSet<String>,
    /// Newest `fired_at` sent or held out, per (user, campaign): the cooldown reference.
    last_fired: HashMap<(String, String), EventTime>,
    /// Sends per (user, event-time day).
    sends_per_day: HashMap<(String, i64), u32>,
    /// Sends per (campaign, event-time hour).
    sends_per_hour: HashMap<(String, i64), u32>,
    /// Every decision taken, by idempotency key: a replay gets the same answer and consumes
    /// nothing.
    decided: HashMap<String, Verdict>,
}

impl Ledger {
    pub fn sends_on_day(&self, user_id: &str, day: i64) -> u32 {
        self.sends_per_day
            .get(&(user_id.to_owned(), day))
            .copied()
            .unwrap_or(0)
    }

    pub fn sends_in_hour(&self, campaign: &str, hour: i64) -> u32 {
        self.sends_per_hour
            .get(&(campaign.to_owned(), hour))
            .copied()
            .unwrap_or(0)
    }
}

/// One user's governance call.
#[derive(Debug)]
pub struct GovernContext<'a> {
    pub rules: &'a RuleSet,
    pub user_id: &'a str,
    pub ledger: &'a mut Ledger,
}

/// Decides every candidate of one user; `decisions[i]` is about `candidates[i]`.
///
/// Candidates are taken in event-time order, and at the same instant highest priority first
/// (then by campaign name), so the outcome does not depend on how updates were batched. For
/// each, in this order of checks:
///
/// 1. a candidate decided before (same idempotency key) gets the earlier verdict again and
///    consumes nothing;
/// 2. `opted_out` if the user is on the suppression list;
/// 3. `cooldown` if the campaign fired (sent or held out) for the user less than its cooldown
///    before or after `fired_at`;
/// 4. `lower_priority` if `max_simultaneous` triggers were already sent at this `fired_at`;
/// 5. `daily_cap` if the user already had `daily_cap` sends that day (all campaigns);
/// 6. `budget` if the campaign already sent `budget_per_hour` that hour;
/// 7. `control_holdout` if the user is in the campaign's control group: it starts the
///    cooldown (so the control arm is recorded at the treated arm's cadence) but takes no
///    daily, budget or simultaneous slot — holding a user out must leave them exactly what
///    they would get without this campaign;
/// 8. otherwise `send`, which starts the cooldown and takes one daily, one budget and one
///    simultaneous slot.
pub fn govern(candidates: &[Candidate], ctx: GovernContext<'_>) -> Vec<Decision> {
    let GovernContext {
        rules,
        user_id,
        ledger,
    } = ctx;
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        (a.fired_at, std::cmp::Reverse(a.priority), &a.campaign).cmp(&(
            b.fired_at,
            std::cmp::Reverse(b.priority),
            &b.campaign,
        ))
    });
    let opted_out = ledger.opted_out.contains(user_id);
    let mut sent_at: HashMap<EventTime, u32> = HashMap::new();
    let mut verdicts = vec![Verdict::Send; candidates.len()];
    for i in order {
        let candidate = &candidates[i];
        let key = candidate.idempotency_key(user_id);
        let verdict = match ledger.decided.get(&key) {
            Some(earlier) => *earlier,
            None => {
                let verdict = decide(rules, user_id, candidate, opted_out, &sent_at, ledger);
                ledger.decided.insert(key, verdict);
                verdict
            }
        };
        if verdict == Verdict::Send {
            *sent_at.entry(candidate.fired_at).or_default() += 1;
        }
        verdicts[i] = verdict;
    }
    candidates
        .iter()
        .zip(verdicts)
        .map(|(candidate, verdict)| Decision {
            campaign: candidate.campaign.clone(),
            idempotency_key: candidate.idempotency_key(user_id),
            verdict,
        })
        .collect()
}

/// Checks and reserves for one new candidate.
fn decide(
    rules: &RuleSet,
    user_id: &str,
    candidate: &Candidate,
    opted_out: bool,
    sent_at: &HashMap<EventTime, u32>,
    ledger: &mut Ledger,
) -> Verdict {
    use SuppressReason::*;
    let Some(terms) = rules.terms(user_id, candidate) else {
        return Verdict::Suppressed(Retired);
    };
    let at = candidate.fired_at;
    let cooldown_key = (user_id.to_owned(), candidate.campaign.clone());
    let day_key = (user_id.to_owned(), day_of(at));
    let hour_key = (candidate.campaign.clone(), hour_of(at));
    let last = ledger.last_fired.get(&cooldown_key).copied();
    let verdict = if opted_out {
        Verdict::Suppressed(OptedOut)
    } else if last
        .is_some_and(|last| (at.unix_millis() - last.unix_millis()).abs() < terms.cooldown_ms)
    {
        Verdict::Suppressed(Cooldown)
    } else if sent_at.get(&at).copied().unwrap_or(0) >= rules.limits.max_simultaneous {
        Verdict::Suppressed(LowerPriority)
    } else if ledger.sends_per_day.get(&day_key).copied().unwrap_or(0) >= rules.limits.daily_cap {
        Verdict::Suppressed(DailyCap)
    } else if terms
        .budget_per_hour
        .is_some_and(|budget| ledger.sends_per_hour.get(&hour_key).copied().unwrap_or(0) >= budget)
    {
        Verdict::Suppressed(Budget)
    } else if terms.in_control {
        Verdict::ControlHoldout
    } else {
        Verdict::Send
    };
    if matches!(verdict, Verdict::Send | Verdict::ControlHoldout) {
        let newest = last.map_or(at, |last| last.max(at));
        ledger.last_fired.insert(cooldown_key, newest);
    }
    if verdict == Verdict::Send {
        *ledger.sends_per_day.entry(day_key).or_default() += 1;
        *ledger.sends_per_hour.entry(hour_key).or_default() += 1;
    }
    verdict
}
