//! Rule evaluation as a pure state machine: a user's small [`RuleState`] plus an update (or
//! the passing of time) in, the triggers that fired out.
//!
//! Candidates depend only on the user's updates in event time, never on when `on_time` is
//! called: a timer fires at its due time whether a later update of the user or the
//! partition's watermark discovers it, so replays with other batch boundaries reproduce the
//! same candidates and idempotency keys.

use serde::{Deserialize, Serialize};
use tierflow_events::{ClickEvent, EventTime, EventType, Scores, Tier};

use crate::attribution::Exposures;
use crate::ruleset::{Campaign, RuleSet, Trigger};

/// What the pipeline learned about one user from one event: the event and the tier decision
/// it led to.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// Whose update this is. Evaluation does not read it (candidates are per user already);
    /// it travels with the update to governance and idempotency keys.
    pub user_id: &'a str,
    pub event: &'a ClickEvent,
    /// Tier before this update; `None` for a user without one yet.
    pub from_tier: Option<Tier>,
    /// Tier after this update (after hysteresis); equal to `from_tier` when nothing changed.
    pub to_tier: Tier,
    pub scores: &'a Scores,
    /// Event time of the decision: the user's newest event time once this event is applied
    /// (equal to `event.ts` unless the event arrived late). Event-driven triggers fire at it.
    pub at: EventTime,
}

/// A rule that fired for a user, before governance decides whether to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub campaign: String,
    /// The condition as written in the rules file, e.g. `cart_abandoned = "30m"`.
    pub rule: String,
    /// Event time at which the rule fired: the update's time, or a timer's due time.
    pub fired_at: EventTime,
    /// `fired_at` plus the campaign's `trigger_ttl`.
    pub expires_at: EventTime,
    /// The event that caused it: the update's event, or the event that armed a cart or
    /// browse timer; `None` for inactivity.
    pub causing_event_id: Option<String>,
    pub priority: i32,
}

impl Candidate {
    /// Deterministic: the same trigger for the same user always has the same key, so a replay
    /// is recognised by governance and by readers of `campaign_triggered`.
    pub fn idempotency_key(&self, user_id: &str) -> String {
        format!(
            "ct/{user_id}/{}/{}/{}",
            self.campaign,
            self.fired_at.unix_millis(),
            self.causing_event_id.as_deref().unwrap_or("-")
        )
    }
}

/// Which sequence a timer belongs to; a timer whose campaign changed kind on a reload is
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerKind {
    Cart,
    Browse,
    Inactivity,
}

/// A pending deadline of one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub campaign: String,
    pub kind: TimerKind,
    /// Event time of the event that (last) armed it.
    pub armed_at: EventTime,
    pub due: EventTime,
    /// `event_id` of the arming event (cart and browse); `None` for inactivity.
    pub cause: Option<String>,
}

/// Everything the rules remember about one user. Small and bounded: at most one timer per
/// timer campaign and one entry per threshold campaign (names ≤ 64 characters, causes ≤ 128),
/// so its size depends on the rules file, never on what the user does.
///
/// Cooldowns, caps and budgets are not here: they are governance, kept in Redis by the
/// governor (or in a [`crate::Ledger`]), because they span campaigns, users and partitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// Armed timers, sorted by `(due, campaign)`.
    pub timers: Vec<Timer>,
    /// Threshold campaigns whose condition held at the previous update (edge detection),
    /// sorted.
    pub thresholds_held: Vec<String>,
    /// A `purchase` was seen. For users whose purchases predate their rule state, the
    /// pipeline seeds it from `UserState::lifetime.orders > 0`, so that they are not welcomed
    /// as first-time buyers.
    pub first_purchase_seen: bool,
    /// Newest event time seen: any event is a visit.
    pub last_visit: Option<EventTime>,
    /// Newest `add_to_cart`.
    pub last_cart_add: Option<EventTime>,
    /// Newest `checkout_start` or `purchase`.
    pub last_checkout: Option<EventTime>,
    /// The scores of the newest update: what a trigger fired by the passing of time reports
    /// (the user sent nothing since).
    pub last_scores: Option<Scores>,
    /// The user's recent triggers, sent or held out, that a later purchase can be
    /// attributed to (bounded; see [`Exposures`]). Kept with the rest of the rule state, so
    /// attribution survives restarts and rebalances and a replay neither loses nor repeats
    /// one.
    pub exposures: Exposures,
}

impl RuleState {
    /// The earliest pending deadline: [`RuleSet::on_time`] with this instant (or later) fires
    /// something. The pipeline indexes users by it.
    pub fn next_due(&self) -> Option<EventTime> {
        self.timers.iter().map(|t| t.due).min()
    }

    fn arm(
        &mut self,
        campaign: &Campaign,
        kind: TimerKind,
        after_ms: i64,
        at: EventTime,
        cause: Option<&str>,
    ) {
        match self.timers.iter_mut().find(|t| t.campaign == campaign.name) {
            // A newer arming moves the deadline later; a late one leaves it.
            Some(timer) if timer.kind == kind && timer.armed_at >= at => {}
            Some(timer) => {
                timer.kind = kind;
                timer.armed_at = at;
                timer.due = at.plus_millis(after_ms);
                timer.cause = cause.map(str::to_owned);
            }
            None => self.timers.push(Timer {
                campaign: campaign.name.clone(),
                kind,
                armed_at: at,
                due: at.plus_millis(after_ms),
                cause: cause.map(str::to_owned),
            }),
        }
    }

    /// Removes timers of `kind` armed at or before `at`.
    fn disarm(&mut self, kind: TimerKind, at: EventTime) {
        self.timers.retain(|t| t.kind != kind || t.armed_at > at);
    }

    fn sort(&mut self) {
        self.timers
            .sort_by(|a, b| (a.due, &a.campaign).cmp(&(b.due, &b.campaign)));
    }
}

fn max_time(a: Option<EventTime>, b: EventTime) -> EventTime {
    a.map_or(b, |a| a.max(b))
}

impl RuleSet {
    /// Applies one update: first fires the timers due strictly before `update.at` (an event
    /// at exactly the deadline still counts as in time), then the event-driven rules, then
    /// arms and disarms timers. Candidates come out ordered by `(fired_at, priority desc,
    /// campaign)`.
    ///
    /// - `add_to_cart` arms cart abandonment (deadline from the newest add); `checkout_start`
    ///   or `purchase` at or after the arming disarms it. An add older than the newest
    ///   checkout arms nothing.
    /// - `product_view` arms browse abandonment unless a cart timer is pending (cart
    ///   abandonment then speaks for the user) or the view is older than the newest cart add
    ///   or checkout; `add_to_cart`, `checkout_start` and `purchase` disarm it.
    /// - Any event newer than the last visit re-arms every inactivity timer from its time.
    pub fn on_update(&self, state: &mut RuleState, update: &Update<'_>) -> Vec<Candidate> {
        self.reconcile(state);
        let event = update.event;
        let ts = event.ts;
        // `at` is never before the event itself.
        let now = update.at.max(ts);
        let mut fired = self.fire_due(state, |due| due < now);
        let cause = Some(event.event_id.as_str());

        for campaign in &self.campaigns {
            let fires = match campaign.trigger {
                Trigger::TierReached { tier } => {
                    update.to_tier >= tier && update.from_tier.is_none_or(|from| from < tier)
                }
                Trigger::TierDroppedBy { tiers } => update
                    .from_tier
                    .is_some_and(|from| from >= update.to_tier.saturating_add(tiers)),
                Trigger::ChurnRisk {
                    at_least,
                    tier_at_least,
                } => {
                    let holds = update.scores.churn_risk >= at_least
                        && tier_at_least.is_none_or(|t| update.to_tier >= t);
                    let position = state.thresholds_held.binary_search(&campaign.name);
                    match (holds, position) {
                        (true, Err(i)) => {
                            state.thresholds_held.insert(i, campaign.name.clone());
                            true
                        }
                        (false, Ok(i)) => {
                            state.thresholds_held.remove(i);
                            false
                        }
                        _ => false,
                    }
                }
                Trigger::FirstPurchase => {
                    event.event_type == EventType::Purchase && !state.first_purchase_seen
                }
                Trigger::CartAbandoned { .. }
                | Trigger::BrowseAbandoned { .. }
                | Trigger::InactiveFor { .. } => false,
            };
            if fires {
                fired.push(candidate(campaign, now, cause));
            }
        }
        if event.event_type == EventType::Purchase {
            state.first_purchase_seen = true;
        }

        match event.event_type {
            EventType::AddToCart => {
                state.disarm(TimerKind::Browse, ts);
                if state.last_checkout.is_none_or(|c| ts > c) {
                    for campaign in &self.campaigns {
                        if let Trigger::CartAbandoned { after_ms } = campaign.trigger {
                            state.arm(campaign, TimerKind::Cart, after_ms, ts, cause);
                        }
                    }
                }
                state.last_cart_add = Some(max_time(state.last_cart_add, ts));
            }
            EventType::CheckoutStart | EventType::Purchase => {
                state.disarm(TimerKind::Cart, ts);
                state.disarm(TimerKind::Browse, ts);
                state.last_checkout = Some(max_time(state.last_checkout, ts));
            }
            EventType::ProductView => {
                let cart_pending = state.timers.iter().any(|t| t.kind == TimerKind::Cart);
                let after_cart = state.last_cart_add.is_none_or(|a| ts > a)
                    && state.last_checkout.is_none_or(|c| ts > c);
                if !cart_pending && after_cart {
                    for campaign in &self.campaigns {
                        if let Trigger::BrowseAbandoned { after_ms } = campaign.trigger {
                            state.arm(campaign, TimerKind::Browse, after_ms, ts, cause);
                        }
                    }
                }
            }
            _ => {}
        }
        state.last_scores = Some(update.scores.clone());
        if state.last_visit.is_none_or(|v| ts > v) {
            state.last_visit = Some(ts);
            for campaign in &self.campaigns {
                if let Trigger::InactiveFor { after_ms } = campaign.trigger {
                    state.arm(campaign, TimerKind::Inactivity, after_ms, ts, None);
                }
            }
        }
        state.sort();
        self.order(&mut fired);
        fired
    }

    /// Fires every timer due at or before `now`, each exactly once. The caller promises that
    /// every event of the user with `ts <= now` has been applied (a partition's event-time
    /// watermark minus the allowed lateness is such an instant).
    pub fn on_time(&self, state: &mut RuleState, now: EventTime) -> Vec<Candidate> {
        self.reconcile(state);
        let mut fired = self.fire_due(state, |due| due <= now);
        self.order(&mut fired);
        fired
    }

    fn fire_due(
        &self,
        state: &mut RuleState,
        is_due: impl Fn(EventTime) -> bool,
    ) -> Vec<Candidate> {
        let mut fired = Vec::new();
        state.timers.retain(|timer| {
            if !is_due(timer.due) {
                return true;
            }
            if let Some(campaign) = self.campaign(&timer.campaign) {
                fired.push(candidate(campaign, timer.due, timer.cause.as_deref()));
            }
            false
        });
        fired
    }

    /// Forgets what belongs to campaigns that are gone or changed kind (after a reload), so
    /// the state stays bounded by the current rules.
    fn reconcile(&self, state: &mut RuleState) {
        state.timers.retain(|timer| {
            self.campaign(&timer.campaign).is_some_and(|c| {
                matches!(
                    (c.trigger, timer.kind),
                    (Trigger::CartAbandoned { .. }, TimerKind::Cart)
                        | (Trigger::BrowseAbandoned { .. }, TimerKind::Browse)
                        | (Trigger::InactiveFor { .. }, TimerKind::Inactivity)
                )
            })
        });
        state.thresholds_held.retain(|name| {
            self.campaign(name)
                .is_some_and(|c| matches!(c.trigger, Trigger::ChurnRisk { .. }))
        });
    }

    fn order(&self, fired: &mut [Candidate]) {
        fired.sort_by(|a, b| {
            (a.fired_at, std::cmp::Reverse(a.priority), &a.campaign).cmp(&(
                b.fired_at,
                std::cmp::Reverse(b.priority),
                &b.campaign,
            ))
        });
    }
}

fn candidate(campaign: &Campaign, fired_at: EventTime, cause: Option<&str>) -> Candidate {
    let cause = match campaign.trigger {
        Trigger::InactiveFor { .. } => None,
        _ => cause.map(str::to_owned),
    };
    Candidate {
        campaign: campaign.name.clone(),
        rule: campaign.trigger.to_string(),
        fired_at,
        expires_at: fired_at.plus_millis(campaign.trigger_ttl_ms),
        causing_event_id: cause,
        priority: campaign.priority,
    }
}
