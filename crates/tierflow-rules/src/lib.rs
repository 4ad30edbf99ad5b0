//! Campaign rules as pure state machines: the rules file, per-user rule state and timers,
//! deterministic control groups, governance decisions, attribution and uplift statistics. No I/O, no
//! clock: time comes in as [`tierflow_events::EventTime`] values, so replays decide the same.
//!
//! # The rules file
//!
//! TOML, every key checked: unknown keys, bad durations, values out of range, duplicate
//! campaign names and campaigns with no or several conditions are refused with the line and
//! column of the offending key or value ([`RulesError`], e.g.
//! `rules.toml:12:12: unknown duration unit "w" in cooldown (use s, m, h, d)`).
//! `deploy/rules.toml` is a commented example with every trigger kind.
//!
//! ```toml
//! tier_count = 4            # required: tiers are 0..tier_count (must match the model)
//!
//! [defaults]                # all optional; the values shown are the defaults
//! cooldown = "1d"           # per user per campaign, in event time; "0s" = none
//! daily_cap = 3             # sends per user per event-time day (UTC), across campaigns
//! trigger_ttl = "1d"        # a trigger's expires_at = fired_at + trigger_ttl
//! max_simultaneous = 1      # sends per user from triggers that fire at the same instant
//! attribution_window = "7d" # purchases this long after a trigger are attributed to it
//!
//! [[campaign]]
//! name = "vip_welcome"      # 1-64 of a-z 0-9 _ -, unique
//! priority = 10             # default 0; higher wins when several fire at once
//! control_fraction = 0.1    # default 0; [0, 1): share held out by hash(user, campaign)
//! budget_per_hour = 1000    # default unlimited; sends per event-time hour (UTC)
//! cooldown = "30d"          # overrides [defaults]
//! trigger_ttl = "2d"        # overrides [defaults]
//! attribution_window = "1d" # overrides [defaults]
//! when = { tier_reached = 3 }
//! ```
//!
//! `when` holds exactly one condition:
//!
//! | condition | fires |
//! | --- | --- |
//! | `tier_reached = N` (1..tier_count−1) | on a tier change from below N (or from no tier) to N or above |
//! | `tier_dropped_by = N` (1..tier_count−1) | on a tier change down by N tiers or more |
//! | `churn_risk_at_least = x` (0..1), optionally `tier_at_least = N` | when churn risk ≥ x (and tier ≥ N) starts to hold: once per crossing, not on every update |
//! | `cart_abandoned = "30m"` | `add_to_cart` and no `checkout_start`/`purchase` within the duration of the newest add |
//! | `browse_abandoned = "1h"` | `product_view` and no cart activity within the duration of the newest view |
//! | `first_purchase = true` | on the first `purchase` the rule state sees for the user |
//! | `inactive_for = "14d"` | no event at all for the duration; once, re-armed by the next event |
//!
//! Durations are a whole number and one unit: `s`, `m`, `h` or `d` (`"45s"`, `"30m"`, `"24h"`,
//! `"7d"`).
//!
//! # Evaluation
//!
//! [`RuleSet::on_update`] takes a user's [`RuleState`] and an [`Update`] (the event and the
//! tier decision it led to) and returns the [`Candidate`]s that fired; [`RuleSet::on_time`]
//! fires the timers (cart, browse, inactivity) that are due, for users who send nothing.
//! [`RuleState::next_due`] is the earliest deadline, by which the pipeline indexes users. A
//! timer fires at its due time whichever of the two discovers it, so candidates depend only
//! on the user's events.
//!
//! # Governance
//!
//! Rule state holds no cooldowns or caps: they span campaigns, users and partitions and live
//! in Redis (`tierflow_store::governance`). [`govern`] is the same decision over an in-memory
//! [`Ledger`]: suppression list, cooldown, simultaneous limit, daily cap, hourly budget, then
//! the control group ([`in_control`]), in that order.
//!
//! # Measurement
//!
//! [`attribution`] credits each purchase, per campaign, to the campaign's latest trigger
//! (sent or held out) before it, within `attribution_window`: [`Exposures`] is the bounded
//! per-user memory for the pipeline, [`measure`] the batch over whole streams behind
//! `tierflow campaigns report`. [`uplift`] compares a treated and a control [`Arm`]:
//! conversion uplift with Newcombe's interval, revenue per user with Welch's.

pub mod attribution;
mod control;
mod error;
mod evaluate;
mod govern;
pub mod robustness;
mod ruleset;
mod uplift;

pub use attribution::{
    Attribution, CampaignMeasurement, Exposure, Exposures, MAX_EXPOSURES_PER_CAMPAIGN,
    MIN_USERS_PER_ARM, Measurement, UserExposure, attribute_all, measure,
};
pub use control::{in_control, unit};
pub use error::{Diagnostic, RulesError};
pub use evaluate::{Candidate, RuleState, Timer, TimerKind, Update};
pub use govern::{
    Decision, GovernContext, Ledger, SuppressReason, Terms, Verdict, day_of, govern, hour_of,
};
pub use robustness::check_rules_text;
pub use ruleset::{
    Campaign, DEFAULT_ATTRIBUTION_WINDOW_MS, DEFAULT_COOLDOWN_MS, DEFAULT_DAILY_CAP,
    DEFAULT_MAX_SIMULTANEOUS, DEFAULT_TRIGGER_TTL_MS, Limits, MAX_CAMPAIGNS, MAX_CAP,
    MAX_NAME_CHARS, RuleSet, Trigger, format_duration,
};
pub use uplift::{Arm, Interval, Uplift, Z_95, student_t_cdf, student_t_quantile, uplift, wilson};
