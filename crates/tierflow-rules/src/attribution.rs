//! Attribution: which purchases a campaign trigger is credited with, for the treated arm (sent
//! triggers) and the control arm (held-out triggers) alike, so the two can be compared.
//!
//! # The rule: last touch per campaign, within the window
//!
//! A user's `purchase` at time `t` is attributed, for each campaign separately, to that
//! campaign's **latest exposure before it** — the user's trigger of the campaign with the
//! greatest `fired_at < t` (ties broken by the greater trigger key) — if `t` lies within its
//! window, `fired_at < t ≤ fired_at + attribution_window`. So:
//!
//! - a purchase counts **at most once per campaign**, and may count for several campaigns
//!   (each campaign is measured against its own control group, so crediting it to both is
//!   what each experiment needs);
//! - a purchase at the very instant a trigger fired is not attributed to it (it caused the
//!   trigger, e.g. `first_purchase`, or raced it);
//! - an earlier exposure never takes the purchase from a later one, even if both windows
//!   cover it;
//! - refunds and other events are not attributed; revenue is the purchase's `revenue`.
//!
//! Treated and control exposures follow the same rule, which is what makes the arms
//! comparable: the control group's "would have triggered" records carry the same `fired_at`.
//!
//! Everything depends only on event times, never on arrival order: [`measure`] gives the same
//! result for any order of its inputs, duplicates included (exposures dedupe on the trigger
//! key, purchases on `(user_id, event_id)`).
//!
//! # Streaming and batch
//!
//! [`Exposures`] is the bounded per-user memory the pipeline can keep in a user's state:
//! [`Exposures::expose`] on each trigger, [`Exposures::attribute`] on each purchase,
//! [`Exposures::prune`] with an event-time horizon. It gives the same attributions as the
//! batch [`attribute_all`] as long as no campaign had more than
//! [`MAX_EXPOSURES_PER_CAMPAIGN`] newer exposures of the user than the one a purchase belongs
//! to. [`measure`] turns whole streams into per-campaign [`Arm`]s and their [`Uplift`] for
//! `tierflow campaigns report`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use tierflow_events::output::OUTPUT_SCHEMA_VERSION;
use tierflow_events::{
    CampaignArm, CampaignOutcome, CampaignTriggered, ClickEvent, EventTime, EventType,
};

use crate::ruleset::RuleSet;
use crate::uplift::{Arm, Uplift, uplift};

/// Exposures [`Exposures`] keeps per campaign (the newest). Cooldowns make more than one or
/// two per attribution window rare; four keeps a user's memory small whatever the rules say.
pub const MAX_EXPOSURES_PER_CAMPAIGN: usize = 4;

/// Below this many users in an arm, a campaign's result is marked "not enough data": the
/// intervals are still computed, but Welch's interval leans on the central limit theorem,
/// which skewed revenue needs dozens of users to approach.
pub const MIN_USERS_PER_ARM: u64 = 30;

/// A trigger a user received (treated) or was held out from (control).
///
/// Ordered by campaign, then `fired_at`, then trigger key: within a campaign, the greatest is
/// the latest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Exposure {
    pub campaign: String,
    /// Event time at which the trigger fired.
    pub fired_at: EventTime,
    /// The trigger's idempotency key (`ct/{user}/{campaign}/{fired_at}/{cause}`).
    pub trigger_key: String,
    pub arm: CampaignArm,
}

impl Exposure {
    /// The exposure a `campaign_triggered` (treated) or `campaign_control` (control) record
    /// stands for.
    pub fn from_trigger(record: &CampaignTriggered, arm: CampaignArm) -> Self {
        Self {
            campaign: record.campaign.clone(),
            fired_at: record.event_time,
            trigger_key: record.idempotency_key.clone(),
            arm,
        }
    }

    /// Whether a purchase at `at` falls in this exposure's window: `fired_at < at ≤ fired_at +
    /// window_ms`.
    pub fn covers(&self, window_ms: i64, at: EventTime) -> bool {
        let delay = i128::from(at.unix_millis()) - i128::from(self.fired_at.unix_millis());
        delay > 0 && delay <= i128::from(window_ms)
    }

    /// The last instant a purchase can be attributed to it.
    fn window_end(&self, window_ms: i64) -> EventTime {
        EventTime::from_unix_millis(self.fired_at.unix_millis().saturating_add(window_ms))
    }
}

/// One user's exposure, as the batch functions take them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserExposure {
    pub user_id: String,
    pub exposure: Exposure,
}

impl UserExposure {
    pub fn from_trigger(record: &CampaignTriggered, arm: CampaignArm) -> Self {
        Self {
            user_id: record.user_id.clone(),
            exposure: Exposure::from_trigger(record, arm),
        }
    }
}

/// A purchase credited to one exposure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub user_id: String,
    pub campaign: String,
    pub arm: CampaignArm,
    pub trigger_key: String,
    pub fired_at: EventTime,
    pub purchase_event_id: String,
    pub purchased_at: EventTime,
    /// The purchase's `revenue`, in `currency`.
    pub revenue: f64,
    pub currency: Option<String>,
}

impl Attribution {
    fn new(exposure: &Exposure, purchase: &ClickEvent) -> Self {
        Self {
            user_id: purchase.user_id.clone(),
            campaign: exposure.campaign.clone(),
            arm: exposure.arm,
            trigger_key: exposure.trigger_key.clone(),
            fired_at: exposure.fired_at,
            purchase_event_id: purchase.event_id.clone(),
            purchased_at: purchase.ts,
            revenue: purchase.revenue.unwrap_or(0.0),
            currency: purchase.currency.clone(),
        }
    }

    /// `co/{trigger key}/{purchase event_id}`: the same on every re-run, so republishing is
    /// harmless for readers that dedupe.
    pub fn idempotency_key(&self) -> String {
        CampaignOutcome::key_for(&self.trigger_key, &self.purchase_event_id)
    }

    /// `purchased_at − fired_at`; at least 1 ms by the attribution rule.
    pub fn delay_ms(&self) -> i64 {
        self.purchased_at.unix_millis() - self.fired_at.unix_millis()
    }

    /// Revenue in whole cents (rounded), as [`Arm`] sums it exactly.
    pub fn revenue_cents(&self) -> i64 {
        cents(self.revenue)
    }

    /// The `campaign_outcome` record. Deterministic (no processing time): a re-run publishes
    /// the same bytes.
    pub fn to_outcome(&self) -> CampaignOutcome {
        CampaignOutcome {
            schema_version: OUTPUT_SCHEMA_VERSION,
            idempotency_key: self.idempotency_key(),
            user_id: self.user_id.clone(),
            campaign: self.campaign.clone(),
            arm: self.arm,
            trigger_idempotency_key: self.trigger_key.clone(),
            fired_at: self.fired_at,
            purchase_event_id: self.purchase_event_id.clone(),
            purchased_at: self.purchased_at,
            revenue: self.revenue,
            currency: self.currency.clone(),
            delay_ms: self.delay_ms(),
        }
    }
}

/// Money in whole cents, rounded half away from zero (`revenue` is validated finite and ≥ 0).
fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// A user's recent exposures, bounded: at most [`MAX_EXPOSURES_PER_CAMPAIGN`] per campaign
/// (the newest), and [`Exposures::prune`] drops those whose window has closed. Small enough
/// to ride in the user's stored state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposures {
    /// Sorted (by campaign, then `fired_at`, then key); trigger keys unique.
    exposures: Vec<Exposure>,
}

impl Exposures {
    /// Remembers an exposure. Returns `false` when it changes nothing: its trigger key is
    /// known already (a replay), or the campaign already holds
    /// [`MAX_EXPOSURES_PER_CAMPAIGN`] newer exposures.
    pub fn expose(&mut self, exposure: Exposure) -> bool {
        if self
            .exposures
            .iter()
            .any(|e| e.trigger_key == exposure.trigger_key)
        {
            return false;
        }
        let at = self.exposures.partition_point(|e| *e < exposure);
        self.exposures.insert(at, exposure);
        let campaign = &self.exposures[at].campaign;
        let start = self.exposures.partition_point(|e| e.campaign < *campaign);
        let end = self.exposures.partition_point(|e| e.campaign <= *campaign);
        if end - start > MAX_EXPOSURES_PER_CAMPAIGN {
            // The oldest of the campaign goes; that is the new one if it is the oldest.
            self.exposures.remove(start);
            return at != start;
        }
        true
    }

    /// The attributions of one event of this user: for a `purchase`, one per campaign whose
    /// latest exposure before it covers it (see the module docs); nothing for other events.
    pub fn attribute(&self, rules: &RuleSet, purchase: &ClickEvent) -> Vec<Attribution> {
        if purchase.event_type != EventType::Purchase {
            return Vec::new();
        }
        by_campaign(&self.exposures)
            .filter_map(|exposures| last_touch(rules, exposures, purchase.ts))
            .map(|exposure| Attribution::new(exposure, purchase))
            .collect()
    }

    /// Forgets the exposures no purchase at or after `horizon` can be attributed to (their
    /// window ended before it). The caller picks the horizon in event time — e.g. the user's
    /// newest event minus the lateness the pipeline still accepts — so that late purchases
    /// still find their exposure. Campaigns no longer in `rules` keep `[defaults]`' window.
    pub fn prune(&mut self, rules: &RuleSet, horizon: EventTime) {
        self.exposures
            .retain(|e| e.window_end(rules.attribution_window_ms(&e.campaign)) >= horizon);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Exposure> {
        self.exposures.iter()
    }

    pub fn len(&self) -> usize {
        self.exposures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exposures.is_empty()
    }
}

/// Runs of one campaign each, from exposures sorted by campaign.
fn by_campaign(sorted: &[Exposure]) -> impl Iterator<Item = &[Exposure]> {
    sorted.chunk_by(|a, b| a.campaign == b.campaign)
}

/// The exposure of one campaign (`sorted` by `fired_at`, then key) a purchase at `at` is
/// attributed to, if any: the latest one before `at`, if its window covers `at`.
fn last_touch<'a>(rules: &RuleSet, sorted: &'a [Exposure], at: EventTime) -> Option<&'a Exposure> {
    let before = sorted.partition_point(|e| e.fired_at < at);
    let latest = sorted[..before].last()?;
    latest
        .covers(rules.attribution_window_ms(&latest.campaign), at)
        .then_some(latest)
}

/// Every attribution in whole streams of exposures and events (events other than purchases
/// are ignored), in any order, with duplicates: exposures count once per trigger key,
/// purchases once per `(user_id, event_id)`. Sorted by user, purchase time, purchase event
/// and campaign.
pub fn attribute_all<'a>(
    rules: &RuleSet,
    exposures: impl IntoIterator<Item = UserExposure>,
    events: impl IntoIterator<Item = &'a ClickEvent>,
) -> Vec<Attribution> {
    let by_user = exposures_by_user(exposures);
    let mut attributions = Vec::new();
    for purchase in unique_purchases(events) {
        if let Some(exposures) = by_user.get(purchase.user_id.as_str()) {
            for exposure in by_campaign(exposures).filter_map(|e| last_touch(rules, e, purchase.ts))
            {
                attributions.push(Attribution::new(exposure, purchase));
            }
        }
    }
    attributions.sort_by(|a, b| {
        (
            &a.user_id,
            a.purchased_at,
            &a.purchase_event_id,
            &a.campaign,
        )
            .cmp(&(
                &b.user_id,
                b.purchased_at,
                &b.purchase_event_id,
                &b.campaign,
            ))
    });
    attributions
}

/// Each user's exposures, deduplicated by trigger key (keeping the least, so that
/// conflicting duplicates resolve the same in any order) and sorted.
fn exposures_by_user(
    exposures: impl IntoIterator<Item = UserExposure>,
) -> BTreeMap<String, Vec<Exposure>> {
    let mut by_key: HashMap<String, UserExposure> = HashMap::new();
    for e in exposures {
        match by_key.get_mut(&e.exposure.trigger_key) {
            Some(kept) if *kept <= e => {}
            Some(kept) => *kept = e,
            None => {
                by_key.insert(e.exposure.trigger_key.clone(), e);
            }
        }
    }
    let mut by_user: BTreeMap<String, Vec<Exposure>> = BTreeMap::new();
    for e in by_key.into_values() {
        by_user.entry(e.user_id).or_default().push(e.exposure);
    }
    for exposures in by_user.values_mut() {
        exposures.sort();
    }
    by_user
}

/// Purchases, one per `(user_id, event_id)`: of conflicting duplicates the earliest, then the
/// smallest revenue, then currency, so the choice does not depend on order.
fn unique_purchases<'a>(events: impl IntoIterator<Item = &'a ClickEvent>) -> Vec<&'a ClickEvent> {
    let rank = |e: &ClickEvent| (e.ts, cents(e.revenue.unwrap_or(0.0)), e.currency.clone());
    let mut unique: HashMap<(&str, &str), &ClickEvent> = HashMap::new();
    for event in events {
        if event.event_type != EventType::Purchase {
            continue;
        }
        let key = (event.user_id.as_str(), event.event_id.as_str());
        match unique.get_mut(&key) {
            Some(kept) if rank(kept) <= rank(event) => {}
            Some(kept) => *kept = event,
            None => {
                unique.insert(key, event);
            }
        }
    }
    unique.into_values().collect()
}

/// One campaign, treated against control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignMeasurement {
    pub campaign: String,
    /// The window the attribution used.
    pub attribution_window_ms: i64,
    /// `false`: the campaign is not in the rules file (any more); `[defaults]`' window applied.
    pub in_rules: bool,
    /// Users with at least one sent trigger; converters have at least one attributed purchase;
    /// revenue is each user's attributed revenue in cents.
    pub treated: Arm,
    /// The same for users with at least one held-out trigger.
    pub control: Arm,
    /// Attributed purchases in each arm (a converter may have several).
    pub treated_purchases: u64,
    pub control_purchases: u64,
    /// Users with triggers in both arms (the control fraction changed while the campaign
    /// ran); they count in both, each arm with its own attributions.
    pub users_in_both_arms: u64,
    /// Currencies of the attributed purchases, sorted; revenue is summed as is, so more than
    /// one means the revenue figures mix currencies.
    pub currencies: Vec<String>,
    pub uplift: Uplift,
}

impl CampaignMeasurement {
    /// Why the result cannot be trusted yet, if it cannot.
    pub fn not_enough_data(&self) -> Option<String> {
        let (treated, control) = (self.treated.users, self.control.users);
        if treated == 0 && control == 0 {
            Some("no triggers".to_owned())
        } else if treated == 0 {
            Some("no treated users".to_owned())
        } else if control == 0 {
            Some("no control users (control_fraction = 0?)".to_owned())
        } else if treated < MIN_USERS_PER_ARM || control < MIN_USERS_PER_ARM {
            Some(format!(
                "fewer than {MIN_USERS_PER_ARM} users in an arm ({treated} treated, {control} control)"
            ))
        } else if self.treated.converters + self.control.converters == 0 {
            Some("no conversions in either arm".to_owned())
        } else {
            None
        }
    }
}

/// What whole streams say about every campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The campaigns of the rules file in file order (with or without triggers), then those
    /// found only in the triggers, by name.
    pub campaigns: Vec<CampaignMeasurement>,
    /// Every attribution, as [`attribute_all`] sorts them.
    pub attributions: Vec<Attribution>,
}

/// Attributes whole streams (any order, duplicates allowed) and sums each campaign's arms.
pub fn measure<'a>(
    rules: &RuleSet,
    exposures: impl IntoIterator<Item = UserExposure>,
    events: impl IntoIterator<Item = &'a ClickEvent>,
) -> Measurement {
    let exposures: Vec<UserExposure> = exposures.into_iter().collect();
    // Per campaign and arm: every exposed user, with (attributed purchases, cents).
    let mut users: BTreeMap<(&str, CampaignArm), ArmUsers<'_>> = BTreeMap::new();
    for e in &exposures {
        users
            .entry((e.exposure.campaign.as_str(), e.exposure.arm))
            .or_default()
            .entry(e.user_id.as_str())
            .or_default();
    }
    let attributions = attribute_all(rules, exposures.iter().cloned(), events);
    let mut currencies: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in &attributions {
        let outcome = users
            .get_mut(&(a.campaign.as_str(), a.arm))
            .and_then(|u| u.get_mut(a.user_id.as_str()))
            .expect("an attribution's exposure is among the exposures");
        outcome.0 += 1;
        outcome.1 += a.revenue_cents();
        if let Some(currency) = &a.currency {
            currencies
                .entry(a.campaign.as_str())
                .or_default()
                .insert(currency);
        }
    }

    let mut names: Vec<&str> = rules.campaigns.iter().map(|c| c.name.as_str()).collect();
    let mut others: BTreeSet<&str> = users.keys().map(|(c, _)| *c).collect();
    others.retain(|c| rules.campaign(c).is_none());
    names.extend(others);
    let empty = BTreeMap::new();
    let campaigns = names
        .into_iter()
        .map(|name| {
            let treated_users = users.get(&(name, CampaignArm::Treated)).unwrap_or(&empty);
            let control_users = users.get(&(name, CampaignArm::Control)).unwrap_or(&empty);
            let (treated, treated_purchases) = arm(treated_users);
            let (control, control_purchases) = arm(control_users);
            CampaignMeasurement {
                campaign: name.to_owned(),
                attribution_window_ms: rules.attribution_window_ms(name),
                in_rules: rules.campaign(name).is_some(),
                treated,
                control,
                treated_purchases,
                control_purchases,
                users_in_both_arms: treated_users
                    .keys()
                    .filter(|u| control_users.contains_key(*u))
                    .count() as u64,
                currencies: currencies
                    .get(name)
                    .map(|c| c.iter().map(|c| (*c).to_owned()).collect())
                    .unwrap_or_default(),
                uplift: uplift(treated, control),
            }
        })
        .collect();
    Measurement {
        campaigns,
        attributions,
    }
}

/// One arm's users, each with (attributed purchases, attributed cents).
type ArmUsers<'a> = BTreeMap<&'a str, (u64, i64)>;

/// An arm's totals and its attributed purchases.
fn arm(users: &ArmUsers<'_>) -> (Arm, u64) {
    let mut arm = Arm::default();
    let mut purchases = 0;
    for (n, revenue_cents) in users.values() {
        arm.record(*n > 0, *revenue_cents);
        purchases += n;
    }
    (arm, purchases)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HOUR: i64 = EventTime::MILLIS_PER_HOUR;
    const DAY: i64 = EventTime::MILLIS_PER_DAY;
    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;

    /// Campaign `a` with a 1-day window, `b` with the default 7 days, defaults 2 days.
    fn rules() -> RuleSet {
        RuleSet::parse(
            r#"
tier_count = 3
[defaults]
attribution_window = "2d"
[[campaign]]
name = "a"
attribution_window = "1d"
when = { first_purchase = true }
[[campaign]]
name = "b"
attribution_window = "7d"
when = { inactive_for = "14d" }
"#,
        )
        .unwrap()
    }

    fn at(ms: i64) -> EventTime {
        EventTime::from_unix_millis(T0 + ms)
    }

    fn exposure(campaign: &str, arm: CampaignArm, fired_ms: i64) -> Exposure {
        Exposure {
            campaign: campaign.to_owned(),
            fired_at: at(fired_ms),
            trigger_key: format!("ct/u/{campaign}/{}/-", T0 + fired_ms),
            arm,
        }
    }

    fn user_exposure(user: &str, campaign: &str, arm: CampaignArm, fired_ms: i64) -> UserExposure {
        let mut exposure = exposure(campaign, arm, fired_ms);
        exposure.trigger_key = format!("ct/{user}/{campaign}/{}/-", T0 + fired_ms);
        UserExposure {
            user_id: user.to_owned(),
            exposure,
        }
    }

    fn purchase(user: &str, id: &str, ms: i64, revenue: f64) -> ClickEvent {
        event(user, id, EventType::Purchase, ms, Some(revenue))
    }

    fn event(
        user: &str,
        id: &str,
        event_type: EventType,
        ms: i64,
        revenue: Option<f64>,
    ) -> ClickEvent {
        ClickEvent {
            schema_version: 1,
            event_id: id.to_owned(),
            user_id: user.to_owned(),
            event_type,
            ts: at(ms),
            session_id: "s".to_owned(),
            product_id: None,
            category: None,
            price: None,
            quantity: None,
            currency: revenue.map(|_| "EUR".to_owned()),
            order_id: None,
            revenue,
            channel: None,
            device: None,
        }
    }

    /// `(campaign, trigger fired at)` of each attribution of `purchase`.
    fn check(exposures: &[Exposure], purchase: &ClickEvent, expected: &[(&str, i64)]) {
        let mut memory = Exposures::default();
        for e in exposures {
            memory.expose(e.clone());
        }
        let got: Vec<(String, EventTime)> = memory
            .attribute(&rules(), purchase)
            .into_iter()
            .map(|a| (a.campaign, a.fired_at))
            .collect();
        let expected: Vec<(String, EventTime)> = expected
            .iter()
            .map(|(c, ms)| ((*c).to_owned(), at(*ms)))
            .collect();
        assert_eq!(got, expected, "{exposures:?} / purchase at {}", purchase.ts);
    }

    #[test]
    fn the_window_is_open_at_the_trigger_and_closed_at_its_end() {
        use CampaignArm::Treated;
        let a = [exposure("a", Treated, 0)];
        check(&a, &purchase("u", "p", 0, 10.0), &[]);
        check(&a, &purchase("u", "p", 1, 10.0), &[("a", 0)]);
        check(&a, &purchase("u", "p", DAY, 10.0), &[("a", 0)]);
        check(&a, &purchase("u", "p", DAY + 1, 10.0), &[]);
        check(&a, &purchase("u", "p", -HOUR, 10.0), &[]);
    }

    #[test]
    fn last_touch_per_campaign_and_every_campaign_once() {
        use CampaignArm::{Control, Treated};
        let exposures = [
            exposure("a", Treated, 0),
            exposure("a", Treated, 2 * HOUR),
            exposure("b", Control, HOUR),
        ];
        // Both campaigns; `a` to its latest trigger before the purchase.
        check(
            &exposures,
            &purchase("u", "p", 3 * HOUR, 10.0),
            &[("a", 2 * HOUR), ("b", HOUR)],
        );
        // Between a's two triggers: the earlier one.
        check(
            &exposures,
            &purchase("u", "p", 90 * 60_000, 10.0),
            &[("a", 0), ("b", HOUR)],
        );
        // a's latest trigger before it is out of its window: an older one does not step in.
        check(
            &exposures,
            &purchase("u", "p", 2 * HOUR + DAY + 1, 10.0),
            &[("b", HOUR)],
        );
    }

    #[test]
    fn only_purchases_are_attributed() {
        let exposures = [exposure("a", CampaignArm::Treated, 0)];
        check(
            &exposures,
            &event("u", "r", EventType::Refund, HOUR, Some(5.0)),
            &[],
        );
        check(
            &exposures,
            &event("u", "v", EventType::ProductView, HOUR, None),
            &[],
        );
    }

    #[test]
    fn retired_campaigns_use_the_default_window() {
        let exposures = [exposure("gone", CampaignArm::Treated, 0)];
        check(
            &exposures,
            &purchase("u", "p", 2 * DAY, 1.0),
            &[("gone", 0)],
        );
        check(&exposures, &purchase("u", "p", 2 * DAY + 1, 1.0), &[]);
    }

    #[test]
    fn outcome_records_carry_the_keys_and_the_delay() {
        let memory = {
            let mut m = Exposures::default();
            m.expose(exposure("a", CampaignArm::Control, 0));
            m
        };
        let attributions = memory.attribute(&rules(), &purchase("u", "p-9", HOUR, 12.345));
        let attribution = &attributions[0];
        let outcome = attribution.to_outcome();
        let trigger_key = format!("ct/u/a/{T0}/-");
        assert_eq!(outcome.idempotency_key, format!("co/{trigger_key}/p-9"));
        assert_eq!(outcome.trigger_idempotency_key, trigger_key);
        assert_eq!(outcome.arm, CampaignArm::Control);
        assert_eq!(outcome.delay_ms, HOUR);
        assert_eq!(outcome.revenue, 12.345);
        assert_eq!(outcome.currency.as_deref(), Some("EUR"));
        assert_eq!(attribution.revenue_cents(), 1235);
        // The record passes the contract's own checks.
        let bytes = tierflow_events::encode(&outcome, tierflow_events::Encoding::Json);
        let back: CampaignOutcome =
            tierflow_events::decode(&bytes, tierflow_events::Encoding::Json).unwrap();
        assert_eq!(back, outcome);
    }

    #[test]
    fn memory_keeps_the_newest_per_campaign_and_ignores_replays() {
        let mut memory = Exposures::default();
        for i in 0..6 {
            assert!(memory.expose(exposure("a", CampaignArm::Treated, i * HOUR)));
        }
        assert!(!memory.expose(exposure("a", CampaignArm::Treated, 5 * HOUR)));
        // Older than the four kept: not taken.
        assert!(!memory.expose(exposure("a", CampaignArm::Treated, -HOUR)));
        assert!(memory.expose(exposure("b", CampaignArm::Treated, 0)));
        let kept: Vec<(&str, EventTime)> = memory
            .iter()
            .map(|e| (e.campaign.as_str(), e.fired_at))
            .collect();
        assert_eq!(
            kept,
            [
                ("a", at(2 * HOUR)),
                ("a", at(3 * HOUR)),
                ("a", at(4 * HOUR)),
                ("a", at(5 * HOUR)),
                ("b", at(0)),
            ]
        );
    }

    #[test]
    fn prune_drops_closed_windows_only() {
        let mut memory = Exposures::default();
        memory.expose(exposure("a", CampaignArm::Treated, 0)); // open until DAY
        memory.expose(exposure("b", CampaignArm::Treated, 0)); // open until 7 DAY
        memory.prune(&rules(), at(DAY));
        assert_eq!(memory.len(), 2);
        memory.prune(&rules(), at(DAY + 1));
        assert_eq!(
            memory
                .iter()
                .map(|e| e.campaign.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        memory.prune(&rules(), at(7 * DAY + 1));
        assert!(memory.is_empty());
    }

    #[test]
    fn measure_counts_users_conversions_and_revenue_per_arm() {
        use CampaignArm::{Control, Treated};
        let exposures = vec![
            user_exposure("t1", "a", Treated, 0),
            user_exposure("t2", "a", Treated, 0),
            user_exposure("t3", "a", Treated, 0),
            user_exposure("c1", "a", Control, 0),
            user_exposure("c2", "a", Control, 0),
            // Both arms (the fraction changed).
            user_exposure("t1", "a", Control, -2 * DAY),
            user_exposure("x", "gone", Treated, 0),
        ];
        let events = vec![
            purchase("t1", "p1", HOUR, 10.0),
            purchase("t1", "p2", 2 * HOUR, 5.5),
            purchase("t1", "p2", 2 * HOUR, 5.5), // a duplicate
            purchase("t2", "p3", 2 * DAY, 99.0), // outside a's window
            purchase("c1", "p4", HOUR, 20.0),
            event("c2", "r1", EventType::Refund, HOUR, Some(3.0)),
            purchase("x", "p5", HOUR, 1.0),
            purchase("nobody", "p6", HOUR, 1.0),
        ];
        let m = measure(&rules(), exposures, &events);
        let names: Vec<&str> = m.campaigns.iter().map(|c| c.campaign.as_str()).collect();
        assert_eq!(names, ["a", "b", "gone"]);
        let a = &m.campaigns[0];
        assert_eq!(
            (
                a.treated.users,
                a.treated.converters,
                a.treated.revenue_cents_sum
            ),
            (3, 1, 1550)
        );
        assert_eq!(a.treated.revenue_cents_sum_sq, 1550 * 1550);
        assert_eq!(
            (
                a.control.users,
                a.control.converters,
                a.control.revenue_cents_sum
            ),
            (3, 1, 2000)
        );
        assert_eq!((a.treated_purchases, a.control_purchases), (2, 1));
        assert_eq!(a.users_in_both_arms, 1);
        assert_eq!(a.currencies, ["EUR"]);
        assert_eq!(a.attribution_window_ms, DAY);
        assert!(a.in_rules);
        assert!(a.not_enough_data().unwrap().contains("fewer than 30"));
        let b = &m.campaigns[1];
        assert_eq!(b.not_enough_data().as_deref(), Some("no triggers"));
        let gone = &m.campaigns[2];
        assert!(!gone.in_rules);
        assert_eq!(gone.attribution_window_ms, 2 * DAY);
        assert_eq!(
            gone.not_enough_data().as_deref(),
            Some("no control users (control_fraction = 0?)")
        );
        assert_eq!(m.attributions.len(), 4);
    }

    // -- Properties --------------------------------------------------------------------------

    const USERS: [&str; 3] = ["u0", "u1", "u2"];
    const CAMPAIGNS: [&str; 3] = ["a", "b", "gone"];

    /// Exposures of up to [`MAX_EXPOSURES_PER_CAMPAIGN`] per user and campaign, on an
    /// hour-ish grid over ten days so that windows overlap and times collide.
    fn arb_exposures() -> impl Strategy<Value = Vec<UserExposure>> {
        prop::collection::vec(
            (
                0..USERS.len(),
                0..CAMPAIGNS.len(),
                prop::collection::vec((0i64..240, any::<bool>()), 0..=MAX_EXPOSURES_PER_CAMPAIGN),
            ),
            0..8,
        )
        .prop_map(|groups| {
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for (user, campaign, times) in groups {
                // One group per user and campaign keeps the per-campaign bound.
                if !seen.insert((user, campaign)) {
                    continue;
                }
                // One arm per trigger key (time), as in real streams.
                let times: BTreeMap<i64, bool> = times.into_iter().rev().collect();
                for (hours, control) in times {
                    let arm = if control {
                        CampaignArm::Control
                    } else {
                        CampaignArm::Treated
                    };
                    out.push(user_exposure(
                        USERS[user],
                        CAMPAIGNS[campaign],
                        arm,
                        hours * HOUR,
                    ));
                }
            }
            out
        })
    }

    fn arb_events() -> impl Strategy<Value = Vec<ClickEvent>> {
        prop::collection::vec(
            (
                0..USERS.len(),
                0u32..40,
                -24i64..300,
                0u32..3,
                0u32..100_000,
            ),
            0..40,
        )
        .prop_map(|events| {
            events
                .into_iter()
                .map(|(user, id, hours, kind, cents)| {
                    let kind = [EventType::Purchase, EventType::Refund, EventType::PageView]
                        [kind as usize];
                    let revenue = kind.requires_revenue().then(|| f64::from(cents) / 100.0);
                    // Ids repeat across users on purpose: only (user, id) identifies.
                    let mut e = event(USERS[user], &format!("e{id}"), kind, hours * HOUR, revenue);
                    // Half a minute off the grid now and then: instants next to a window's end.
                    if id % 3 == 0 {
                        e.ts = e.ts.plus_millis(if id % 2 == 0 { 1 } else { -1 });
                    }
                    e
                })
                .collect()
        })
    }

    /// A deterministic shuffle with duplicates: `seed` picks the order and which records
    /// appear twice.
    fn scrambled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
        let mut out: Vec<T> = items.to_vec();
        out.extend(
            items
                .iter()
                .enumerate()
                .filter(|(i, _)| (seed >> (i % 64)) & 1 == 1)
                .map(|(_, x)| x.clone()),
        );
        let mut state = seed | 1;
        for i in (1..out.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.swap(i, (state % (i as u64 + 1)) as usize);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every attribution is inside its campaign's window, follows the exposure it names,
        /// and is the latest exposure of that campaign before the purchase; every purchase
        /// covered by an exposure of a campaign is attributed to that campaign exactly once.
        #[test]
        fn attributions_are_the_last_touch_inside_the_window(
            exposures in arb_exposures(),
            events in arb_events(),
        ) {
            let rules = rules();
            let attributions = attribute_all(&rules, exposures.clone(), &events);
            let mut seen = BTreeSet::new();
            for a in &attributions {
                let window = rules.attribution_window_ms(&a.campaign);
                prop_assert!(a.delay_ms() > 0 && a.delay_ms() <= window, "{a:?}");
                prop_assert!(
                    seen.insert((a.user_id.clone(), a.purchase_event_id.clone(), a.campaign.clone())),
                    "attributed twice to one campaign: {a:?}"
                );
                let latest = exposures
                    .iter()
                    .filter(|e| e.user_id == a.user_id && e.exposure.campaign == a.campaign)
                    .map(|e| &e.exposure)
                    .filter(|e| e.fired_at < a.purchased_at)
                    .max()
                    .unwrap();
                prop_assert_eq!(&latest.trigger_key, &a.trigger_key);
                prop_assert_eq!(latest.arm, a.arm);
            }
            // Completeness: a purchase whose latest exposure of a campaign covers it is there.
            for p in unique_purchases(&events) {
                for campaign in CAMPAIGNS {
                    let latest = exposures
                        .iter()
                        .filter(|e| e.user_id == p.user_id && e.exposure.campaign == campaign)
                        .map(|e| &e.exposure)
                        .filter(|e| e.fired_at < p.ts)
                        .max();
                    let covered = latest
                        .is_some_and(|e| e.covers(rules.attribution_window_ms(campaign), p.ts));
                    let key = (p.user_id.clone(), p.event_id.clone(), campaign.to_owned());
                    prop_assert_eq!(covered, seen.contains(&key), "{:?} {}", p, campaign);
                }
            }
        }

        /// Shuffled and partly duplicated inputs give the same report, to the bit.
        #[test]
        fn order_and_duplicates_do_not_change_the_report(
            exposures in arb_exposures(),
            events in arb_events(),
            seed in any::<u64>(),
        ) {
            let rules = rules();
            let reference = measure(&rules, exposures.clone(), &events);
            let scrambled_events = scrambled(&events, seed.rotate_left(17));
            let other = measure(&rules, scrambled(&exposures, seed), &scrambled_events);
            prop_assert_eq!(&reference, &other);
            // And the arms add up: converters ≤ users, purchases ≥ converters.
            for c in &reference.campaigns {
                prop_assert!(c.treated.converters <= c.treated.users);
                prop_assert!(c.treated_purchases >= c.treated.converters);
                prop_assert!(c.control_purchases >= c.control.converters);
            }
        }

        /// The per-user memory attributes exactly as the batch does (within its bound), in
        /// any order of exposure.
        #[test]
        fn the_streaming_memory_agrees_with_the_batch(
            exposures in arb_exposures(),
            events in arb_events(),
            seed in any::<u64>(),
        ) {
            let rules = rules();
            let mut memories: BTreeMap<String, Exposures> = BTreeMap::new();
            for e in scrambled(&exposures, seed) {
                memories.entry(e.user_id.clone()).or_default().expose(e.exposure);
            }
            let mut streamed: Vec<Attribution> = unique_purchases(&events)
                .into_iter()
                .flat_map(|p| {
                    memories.get(&p.user_id).map(|m| m.attribute(&rules, p)).unwrap_or_default()
                })
                .collect();
            streamed.sort_by(|a, b| {
                (&a.user_id, a.purchased_at, &a.purchase_event_id, &a.campaign)
                    .cmp(&(&b.user_id, b.purchased_at, &b.purchase_event_id, &b.campaign))
            });
            prop_assert_eq!(streamed, attribute_all(&rules, exposures, &events));
        }

        /// Pruning at a horizon changes nothing for purchases at or after it, and the memory
        /// stays within its bound whatever is exposed.
        #[test]
        fn pruning_keeps_what_later_purchases_need(
            exposures in arb_exposures(),
            events in arb_events(),
            horizon_hours in 0i64..300,
            extra in prop::collection::vec(0i64..240, 0..12),
        ) {
            let rules = rules();
            let horizon = at(horizon_hours * HOUR);
            for user in USERS {
                let mut memory = Exposures::default();
                for e in exposures.iter().filter(|e| e.user_id == user) {
                    memory.expose(e.exposure.clone());
                }
                let mut pruned = memory.clone();
                pruned.prune(&rules, horizon);
                for p in events.iter().filter(|e| e.user_id == user && e.ts >= horizon) {
                    prop_assert_eq!(memory.attribute(&rules, p), pruned.attribute(&rules, p));
                }
                // Bound: never more than the cap per campaign, and the newest are kept.
                for hours in &extra {
                    memory.expose(exposure("a", CampaignArm::Treated, hours * HOUR + 7));
                }
                let a: Vec<&Exposure> = memory.iter().filter(|e| e.campaign == "a").collect();
                prop_assert!(a.len() <= MAX_EXPOSURES_PER_CAMPAIGN);
                prop_assert!(a.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
