//! The rules file: its TOML shape, the checks that turn it into a [`RuleSet`], and the
//! validated types the evaluator and the governance read.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use tierflow_events::{EventTime, Tier};
use toml::Spanned;

use crate::error::{Diagnostics, RulesError};

/// More campaigns than this are refused: rule state per user grows with the number of timer
/// and threshold campaigns, and must stay small.
pub const MAX_CAMPAIGNS: usize = 256;
/// Longest campaign name; names go into Redis keys and output records.
pub const MAX_NAME_CHARS: usize = 64;
/// Largest `daily_cap` / `max_simultaneous`.
pub const MAX_CAP: u32 = 10_000;

/// Named defaults of `[defaults]`.
pub const DEFAULT_COOLDOWN_MS: i64 = EventTime::MILLIS_PER_DAY;
pub const DEFAULT_DAILY_CAP: u32 = 3;
pub const DEFAULT_TRIGGER_TTL_MS: i64 = EventTime::MILLIS_PER_DAY;
pub const DEFAULT_MAX_SIMULTANEOUS: u32 = 1;
pub const DEFAULT_ATTRIBUTION_WINDOW_MS: i64 = 7 * EventTime::MILLIS_PER_DAY;

/// A validated rules file. Campaigns keep file order; names are unique.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// How many value tiers the model has (tiers are `0..tier_count`).
    pub tier_count: u8,
    pub limits: Limits,
    /// `[defaults] attribution_window`: the window of campaigns that do not set their own, and
    /// of campaigns no longer in the file whose triggers are still being measured.
    pub attribution_window_ms: i64,
    pub campaigns: Vec<Campaign>,
}

/// Limits per user that span campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sends per user per event-time day (UTC), across campaigns.
    pub daily_cap: u32,
    /// Sends per user from triggers that fire at the same instant; the rest, lowest priority
    /// first, are suppressed as `lower_priority`.
    pub max_simultaneous: u32,
}

/// One campaign: when it fires and how it is governed.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub name: String,
    /// Higher wins when several campaigns fire for a user at once.
    pub priority: i32,
    /// Share of eligible users held out (`[0, 1)`), chosen by [`crate::in_control`].
    pub control_fraction: f64,
    /// Sends per campaign per event-time hour (UTC); `None`: unlimited.
    pub budget_per_hour: Option<u32>,
    /// Minimum event time between two triggers of this campaign for one user; `0`: none.
    pub cooldown_ms: i64,
    /// A trigger expires this long after it fired.
    pub trigger_ttl_ms: i64,
    /// Purchases in `(fired_at, fired_at + attribution_window_ms]` are attributed to a trigger
    /// (see [`crate::attribution`]).
    pub attribution_window_ms: i64,
    pub trigger: Trigger,
}

/// What makes a campaign fire. Exactly one per campaign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// A tier change from below `tier` (or from no tier) to `tier` or above.
    TierReached { tier: Tier },
    /// A tier change down by at least `tiers`.
    TierDroppedBy { tiers: u8 },
    /// Churn risk reaches `at_least` (and the tier is at least `tier_at_least`), having not
    /// done so at the user's previous update: edge-triggered, so a user who stays at risk
    /// fires once, and again only after dropping below and coming back.
    ChurnRisk {
        at_least: f32,
        tier_at_least: Option<Tier>,
    },
    /// An `add_to_cart` followed by no `checkout_start` or `purchase` within `after_ms`.
    CartAbandoned { after_ms: i64 },
    /// A `product_view` followed by no `add_to_cart`, `checkout_start` or `purchase` within
    /// `after_ms`.
    BrowseAbandoned { after_ms: i64 },
    /// The first `purchase` the rule state sees for the user.
    FirstPurchase,
    /// No event at all from the user for `after_ms`.
    InactiveFor { after_ms: i64 },
}

impl Trigger {
    /// Timer-driven triggers fire from [`crate::RuleSet::on_time`] as well as from updates.
    pub const fn is_timer(self) -> bool {
        matches!(
            self,
            Self::CartAbandoned { .. } | Self::BrowseAbandoned { .. } | Self::InactiveFor { .. }
        )
    }
}

/// The condition as written in the rules file, e.g. `cart_abandoned = "30m"`; this is the
/// `rule` of every trigger it produces.
impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TierReached { tier } => write!(f, "tier_reached = {tier}"),
            Self::TierDroppedBy { tiers } => write!(f, "tier_dropped_by = {tiers}"),
            Self::ChurnRisk {
                at_least,
                tier_at_least: None,
            } => write!(f, "churn_risk_at_least = {at_least}"),
            Self::ChurnRisk {
                at_least,
                tier_at_least: Some(tier),
            } => write!(
                f,
                "churn_risk_at_least = {at_least}, tier_at_least = {tier}"
            ),
            Self::CartAbandoned { after_ms } => {
                write!(f, "cart_abandoned = \"{}\"", format_duration(after_ms))
            }
            Self::BrowseAbandoned { after_ms } => {
                write!(f, "browse_abandoned = \"{}\"", format_duration(after_ms))
            }
            Self::FirstPurchase => f.write_str("first_purchase = true"),
            Self::InactiveFor { after_ms } => {
                write!(f, "inactive_for = \"{}\"", format_duration(after_ms))
            }
        }
    }
}

impl RuleSet {
    /// Parses and checks a rules file; errors are shown against `rules.toml`.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        Self::parse_named("rules.toml", text)
    }

    /// Parses and checks a rules file; `origin` (usually its path) prefixes error positions.
    pub fn parse_named(origin: &str, text: &str) -> Result<Self, RulesError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let mut d = Diagnostics::new(text);
            d.push(e.span().unwrap_or(0..0), e.message().trim_end().to_owned());
            d.into_error(origin)
        })?;
        let mut d = Diagnostics::new(text);
        let rules = raw.check(&mut d);
        if d.is_empty() {
            Ok(rules)
        } else {
            Err(d.into_error(origin))
        }
    }

    pub fn campaign(&self, name: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.name == name)
    }

    /// The attribution window of `campaign`: its own, or `[defaults]`' for a campaign that is
    /// not (or no longer) in the file.
    pub fn attribution_window_ms(&self, campaign: &str) -> i64 {
        self.campaign(campaign)
            .map_or(self.attribution_window_ms, |c| c.attribution_window_ms)
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written. Every value is `Spanned` so that checks can point at it; numbers are
// read wide and range-checked here, so the messages name the key and its allowed range.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tier_count: Spanned<i64>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default, rename = "campaign")]
    campaigns: Vec<Spanned<RawCampaign>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    cooldown: Option<Spanned<String>>,
    daily_cap: Option<Spanned<i64>>,
    trigger_ttl: Option<Spanned<String>>,
    max_simultaneous: Option<Spanned<i64>>,
    attribution_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    name: Spanned<String>,
    priority: Option<Spanned<i64>>,
    control_fraction: Option<Spanned<f64>>,
    budget_per_hour: Option<Spanned<i64>>,
    cooldown: Option<Spanned<String>>,
    trigger_ttl: Option<Spanned<String>>,
    attribution_window: Option<Spanned<String>>,
    when: Spanned<RawWhen>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    tier_reached: Option<Spanned<i64>>,
    tier_dropped_by: Option<Spanned<i64>>,
    churn_risk_at_least: Option<Spanned<f64>>,
    tier_at_least: Option<Spanned<i64>>,
    cart_abandoned: Option<Spanned<String>>,
    browse_abandoned: Option<Spanned<String>>,
    first_purchase: Option<Spanned<bool>>,
    inactive_for: Option<Spanned<String>>,
}

/// The condition keys, in the order messages list them.
const CONDITIONS: &str = "tier_reached, tier_dropped_by, churn_risk_at_least, cart_abandoned, \
                          browse_abandoned, first_purchase, inactive_for";

impl RawFile {
    fn check(self, d: &mut Diagnostics<'_>) -> RuleSet {
        let tier_count = match int_in(d, "tier_count", &self.tier_count, 2, 255) {
            Some(n) => n as u8,
            // Keep checking the rest against the widest range.
            None => u8::MAX,
        };
        let defaults = &self.defaults;
        let cooldown_ms = defaults
            .cooldown
            .as_ref()
            .and_then(|v| duration_at_least(d, "cooldown", v, 0))
            .unwrap_or(DEFAULT_COOLDOWN_MS);
        let trigger_ttl_ms = defaults
            .trigger_ttl
            .as_ref()
            .and_then(|v| duration_at_least(d, "trigger_ttl", v, 1))
            .unwrap_or(DEFAULT_TRIGGER_TTL_MS);
        let attribution_window_ms = defaults
            .attribution_window
            .as_ref()
            .and_then(|v| duration_at_least(d, "attribution_window", v, 1))
            .unwrap_or(DEFAULT_ATTRIBUTION_WINDOW_MS);
        let limits = Limits {
            daily_cap: defaults
                .daily_cap
                .as_ref()
                .and_then(|v| int_in(d, "daily_cap", v, 1, i64::from(MAX_CAP)))
                .map_or(DEFAULT_DAILY_CAP, |n| n as u32),
            max_simultaneous: defaults
                .max_simultaneous
                .as_ref()
                .and_then(|v| int_in(d, "max_simultaneous", v, 1, i64::from(MAX_CAP)))
                .map_or(DEFAULT_MAX_SIMULTANEOUS, |n| n as u32),
        };

        let mut first_seen: HashMap<String, Range<usize>> = HashMap::new();
        let mut campaigns = Vec::with_capacity(self.campaigns.len());
        for (i, raw) in self.campaigns.into_iter().enumerate() {
            let table_span = raw.span();
            let raw = raw.into_inner();
            if i == MAX_CAMPAIGNS {
                d.push(
                    table_span.clone(),
                    format!("more than {MAX_CAMPAIGNS} campaigns; merge or remove some"),
                );
            }
            let name = raw.name.get_ref().clone();
            check_name(d, &raw.name);
            if let Some(first) = first_seen.get(&name) {
                let (line, column) = crate::error::line_column(d.text(), first.start);
                d.push(
                    raw.name.span(),
                    format!(
                        "duplicate campaign name {name:?} (first defined at line {line}, column {column})"
                    ),
                );
            } else {
                first_seen.insert(name.clone(), raw.name.span());
            }
            let priority = raw
                .priority
                .as_ref()
                .and_then(|v| int_in(d, "priority", v, i64::from(i32::MIN), i64::from(i32::MAX)))
                .map_or(0, |n| n as i32);
            let control_fraction = match &raw.control_fraction {
                None => 0.0,
                Some(v) => {
                    let f = *v.get_ref();
                    if (0.0..1.0).contains(&f) {
                        f
                    } else {
                        d.push(
                            v.span(),
                            format!("control_fraction must be at least 0 and below 1, got {f}"),
                        );
                        0.0
                    }
                }
            };
            let budget_per_hour = raw.budget_per_hour.as_ref().and_then(|v| {
                int_in(d, "budget_per_hour", v, 1, i64::from(u32::MAX)).map(|n| n as u32)
            });
            let campaign_cooldown_ms = raw.cooldown.as_ref().map_or(Some(cooldown_ms), |v| {
                duration_at_least(d, "cooldown", v, 0)
            });
            let campaign_ttl_ms = raw.trigger_ttl.as_ref().map_or(Some(trigger_ttl_ms), |v| {
                duration_at_least(d, "trigger_ttl", v, 1)
            });
            let campaign_window_ms = raw
                .attribution_window
                .as_ref()
                .map_or(Some(attribution_window_ms), |v| {
                    duration_at_least(d, "attribution_window", v, 1)
                });
            let trigger = check_when(d, &name, raw.when, tier_count);
            if let (
                Some(trigger),
                Some(cooldown_ms),
                Some(trigger_ttl_ms),
                Some(attribution_window_ms),
            ) = (
                trigger,
                campaign_cooldown_ms,
                campaign_ttl_ms,
                campaign_window_ms,
            ) {
                campaigns.push(Campaign {
                    name,
                    priority,
                    control_fraction,
                    budget_per_hour,
                    cooldown_ms,
                    trigger_ttl_ms,
                    attribution_window_ms,
                    trigger,
                });
            }
        }
        RuleSet {
            tier_count,
            limits,
            attribution_window_ms,
            campaigns,
        }
    }
}

fn check_name(d: &mut Diagnostics<'_>, name: &Spanned<String>) {
    let text = name.get_ref();
    let valid = !text.is_empty()
        && text.chars().count() <= MAX_NAME_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        d.push(
            name.span(),
            format!(
                "campaign name must be 1 to {MAX_NAME_CHARS} characters of a-z, 0-9, _ and -, got {text:?}"
            ),
        );
    }
}

/// The one trigger of a campaign's `when` table, or `None` after reporting why not.
fn check_when(
    d: &mut Diagnostics<'_>,
    campaign: &str,
    when: Spanned<RawWhen>,
    tier_count: u8,
) -> Option<Trigger> {
    let when_span = when.span();
    let w = when.into_inner();
    let top = i64::from(tier_count) - 1;
    let mut given: Vec<(&str, Range<usize>, Option<Trigger>)> = Vec::new();
    if let Some(v) = &w.tier_reached {
        let t =
            int_in(d, "tier_reached", v, 1, top).map(|n| Trigger::TierReached { tier: n as u8 });
        given.push(("tier_reached", v.span(), t));
    }
    if let Some(v) = &w.tier_dropped_by {
        let t = int_in(d, "tier_dropped_by", v, 1, top)
            .map(|n| Trigger::TierDroppedBy { tiers: n as u8 });
        given.push(("tier_dropped_by", v.span(), t));
    }
    if let Some(v) = &w.churn_risk_at_least {
        let f = *v.get_ref();
        let at_least = if (0.0..=1.0).contains(&f) {
            Some(f as f32)
        } else {
            d.push(
                v.span(),
                format!("churn_risk_at_least must be from 0 to 1, got {f}"),
            );
            None
        };
        let tier_at_least = match &w.tier_at_least {
            None => Some(None),
            Some(t) => int_in(d, "tier_at_least", t, 0, top).map(|n| Some(n as u8)),
        };
        let t = match (at_least, tier_at_least) {
            (Some(at_least), Some(tier_at_least)) => Some(Trigger::ChurnRisk {
                at_least,
                tier_at_least,
            }),
            _ => None,
        };
        given.push(("churn_risk_at_least", v.span(), t));
    } else if let Some(t) = &w.tier_at_least {
        d.push(
            t.span(),
            "tier_at_least only qualifies churn_risk_at_least; add churn_risk_at_least or use tier_reached",
        );
    }
    if let Some(v) = &w.cart_abandoned {
        let t = duration_at_least(d, "cart_abandoned", v, 1)
            .map(|after_ms| Trigger::CartAbandoned { after_ms });
        given.push(("cart_abandoned", v.span(), t));
    }
    if let Some(v) = &w.browse_abandoned {
        let t = duration_at_least(d, "browse_abandoned", v, 1)
            .map(|after_ms| Trigger::BrowseAbandoned { after_ms });
        given.push(("browse_abandoned", v.span(), t));
    }
    if let Some(v) = &w.first_purchase {
        let t = if *v.get_ref() {
            Some(Trigger::FirstPurchase)
        } else {
            d.push(
                v.span(),
                "first_purchase can only be true (remove the campaign to turn it off)",
            );
            None
        };
        given.push(("first_purchase", v.span(), t));
    }
    if let Some(v) = &w.inactive_for {
        let t = duration_at_least(d, "inactive_for", v, 1)
            .map(|after_ms| Trigger::InactiveFor { after_ms });
        given.push(("inactive_for", v.span(), t));
    }
    match given.as_slice() {
        [] => {
            d.push(
                when_span,
                format!("campaign {campaign:?} has no condition: give exactly one of {CONDITIONS}"),
            );
            None
        }
        [(_, _, trigger)] => *trigger,
        [_, (_, second, _), ..] => {
            let names: Vec<&str> = given.iter().map(|(name, _, _)| *name).collect();
            d.push(
                second.clone(),
                format!(
                    "campaign {campaign:?} has several conditions ({}); give exactly one, and make another campaign for the other",
                    names.join(", ")
                ),
            );
            None
        }
    }
}

fn int_in(
    d: &mut Diagnostics<'_>,
    key: &str,
    value: &Spanned<i64>,
    min: i64,
    max: i64,
) -> Option<i64> {
    let n = *value.get_ref();
    if (min..=max).contains(&n) {
        Some(n)
    } else {
        d.push(
            value.span(),
            format!("{key} must be from {min} to {max}, got {n}"),
        );
        None
    }
}

fn duration_at_least(
    d: &mut Diagnostics<'_>,
    key: &str,
    value: &Spanned<String>,
    min_ms: i64,
) -> Option<i64> {
    match parse_duration(value.get_ref()) {
        Err(problem) => {
            d.push(value.span(), problem.message(key, value.get_ref()));
            None
        }
        Ok(ms) if ms < min_ms => {
            d.push(value.span(), format!("{key} must be longer than 0s"));
            None
        }
        Ok(ms) => Some(ms),
    }
}

/// Why a duration text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationProblem {
    Shape,
    MissingUnit,
    UnknownUnit(String),
    TooLong,
}

impl DurationProblem {
    fn message(&self, key: &str, text: &str) -> String {
        match self {
            Self::Shape => format!(
                "{key} must be a whole number and a unit, e.g. \"30m\", \"24h\" or \"7d\"; got {text:?}"
            ),
            Self::MissingUnit => {
                format!("missing duration unit in {key}: {text:?} (use s, m, h, d)")
            }
            Self::UnknownUnit(unit) => {
                format!("unknown duration unit {unit:?} in {key} (use s, m, h, d)")
            }
            Self::TooLong => format!("{key} {text:?} is too long (at most 100000d)"),
        }
    }
}

/// `"45s"`, `"30m"`, `"24h"`, `"7d"` in milliseconds: a whole number of seconds, minutes,
/// hours or days, at most 100 000 days.
pub(crate) fn parse_duration(text: &str) -> Result<i64, DurationProblem> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(DurationProblem::Shape);
    }
    let (number, unit) = text.split_at(digits);
    let unit_ms = match unit {
        "" => return Err(DurationProblem::MissingUnit),
        "s" => EventTime::MILLIS_PER_SECOND,
        "m" => EventTime::MILLIS_PER_MINUTE,
        "h" => EventTime::MILLIS_PER_HOUR,
        "d" => EventTime::MILLIS_PER_DAY,
        other if other.bytes().all(|b| b.is_ascii_alphabetic()) => {
            return Err(DurationProblem::UnknownUnit(other.to_owned()));
        }
        _ => return Err(DurationProblem::Shape),
    };
    let ms = number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or(DurationProblem::TooLong)?;
    if ms > 100_000 * EventTime::MILLIS_PER_DAY {
        return Err(DurationProblem::TooLong);
    }
    Ok(ms)
}

/// The largest unit that divides `ms` exactly: `1_800_000` → `"30m"`; `0` → `"0s"`.
pub fn format_duration(ms: i64) -> String {
    for (unit, unit_ms) in [
        ("d", EventTime::MILLIS_PER_DAY),
        ("h", EventTime::MILLIS_PER_HOUR),
        ("m", EventTime::MILLIS_PER_MINUTE),
        ("s", EventTime::MILLIS_PER_SECOND),
    ] {
        if ms != 0 && ms % unit_ms == 0 {
            return format!("{}{unit}", ms / unit_ms);
        }
    }
    if ms == 0 {
        "0s".to_owned()
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "tier_count = 4\n";

    fn check_err(text: &str, expected: &str) {
        match RuleSet::parse(text) {
            Ok(rules) => panic!("expected {expected:?}, parsed {rules:?}"),
            Err(e) => assert_eq!(e.to_string(), expected, "for:\n{text}"),
        }
    }

    fn campaign(body: &str) -> String {
        format!("{MINIMAL}\n[[campaign]]\nname = \"c\"\n{body}\n")
    }

    #[test]
    fn durations_parse_by_unit() {
        assert_eq!(parse_duration("45s"), Ok(45_000));
        assert_eq!(parse_duration("30m"), Ok(1_800_000));
        assert_eq!(parse_duration("24h"), Ok(86_400_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(
            parse_duration("2w"),
            Err(DurationProblem::UnknownUnit("w".into()))
        );
        assert_eq!(parse_duration("30"), Err(DurationProblem::MissingUnit));
        assert_eq!(parse_duration("m"), Err(DurationProblem::Shape));
        assert_eq!(parse_duration("1.5h"), Err(DurationProblem::Shape));
        assert_eq!(parse_duration(" 1h"), Err(DurationProblem::Shape));
        assert_eq!(parse_duration("100001d"), Err(DurationProblem::TooLong));
        assert_eq!(
            parse_duration("99999999999999999999d"),
            Err(DurationProblem::TooLong)
        );
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit() {
        assert_eq!(format_duration(1_800_000), "30m");
        assert_eq!(format_duration(90 * 60_000), "90m");
        assert_eq!(format_duration(14 * EventTime::MILLIS_PER_DAY), "14d");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(1_500), "1500ms");
    }

    #[test]
    fn minimal_file_takes_the_named_defaults() {
        let rules = RuleSet::parse(MINIMAL).unwrap();
        assert_eq!(rules.tier_count, 4);
        assert_eq!(
            rules.limits,
            Limits {
                daily_cap: DEFAULT_DAILY_CAP,
                max_simultaneous: DEFAULT_MAX_SIMULTANEOUS
            }
        );
        assert!(rules.campaigns.is_empty());
    }

    #[test]
    fn campaign_inherits_and_overrides_defaults() {
        let text = r#"
tier_count = 4
[defaults]
cooldown = "7d"
trigger_ttl = "12h"
daily_cap = 2
max_simultaneous = 2
attribution_window = "3d"

[[campaign]]
name = "a"
when = { tier_reached = 3 }

[[campaign]]
name = "b"
priority = -5
control_fraction = 0.25
budget_per_hour = 100
cooldown = "0s"
trigger_ttl = "30m"
attribution_window = "36h"
when = { churn_risk_at_least = 0.7, tier_at_least = 2 }
"#;
        let rules = RuleSet::parse(text).unwrap();
        assert_eq!(
            rules.limits,
            Limits {
                daily_cap: 2,
                max_simultaneous: 2
            }
        );
        assert_eq!(
            rules.campaigns,
            vec![
                Campaign {
                    name: "a".into(),
                    priority: 0,
                    control_fraction: 0.0,
                    budget_per_hour: None,
                    cooldown_ms: 7 * EventTime::MILLIS_PER_DAY,
                    trigger_ttl_ms: 12 * EventTime::MILLIS_PER_HOUR,
                    attribution_window_ms: 3 * EventTime::MILLIS_PER_DAY,
                    trigger: Trigger::TierReached { tier: 3 },
                },
                Campaign {
                    name: "b".into(),
                    priority: -5,
                    control_fraction: 0.25,
                    budget_per_hour: Some(100),
                    cooldown_ms: 0,
                    trigger_ttl_ms: 30 * EventTime::MILLIS_PER_MINUTE,
                    attribution_window_ms: 36 * EventTime::MILLIS_PER_HOUR,
                    trigger: Trigger::ChurnRisk {
                        at_least: 0.7,
                        tier_at_least: Some(2)
                    },
                },
            ]
        );
        assert_eq!(
            rules.campaigns[1].trigger.to_string(),
            "churn_risk_at_least = 0.7, tier_at_least = 2"
        );
        assert_eq!(rules.attribution_window_ms, 3 * EventTime::MILLIS_PER_DAY);
        assert_eq!(
            rules.attribution_window_ms("b"),
            36 * EventTime::MILLIS_PER_HOUR
        );
        // A campaign no longer in the file is measured with the [defaults] window.
        assert_eq!(
            rules.attribution_window_ms("retired"),
            3 * EventTime::MILLIS_PER_DAY
        );
    }

    #[test]
    fn attribution_window_defaults_to_seven_days_and_is_checked() {
        let rules = RuleSet::parse(&campaign("when = { first_purchase = true }")).unwrap();
        assert_eq!(rules.attribution_window_ms, DEFAULT_ATTRIBUTION_WINDOW_MS);
        assert_eq!(
            rules.campaigns[0].attribution_window_ms,
            7 * EventTime::MILLIS_PER_DAY
        );
        check_err(
            "tier_count = 4\n[defaults]\nattribution_window = \"1w\"\n",
            "rules.toml:3:22: unknown duration unit \"w\" in attribution_window (use s, m, h, d)",
        );
        check_err(
            &campaign("attribution_window = \"0h\"\nwhen = { first_purchase = true }"),
            "rules.toml:5:22: attribution_window must be longer than 0s",
        );
        check_err(
            &campaign("attribution_window = 7\nwhen = { first_purchase = true }"),
            "rules.toml:5:22: invalid type: integer `7`, expected a string",
        );
    }

    #[test]
    fn unknown_keys_point_at_the_key() {
        check_err(
            "tier_count = 4\n[defaults]\ncooldwn = \"7d\"\n",
            "rules.toml:3:1: unknown field `cooldwn`, expected one of `cooldown`, `daily_cap`, `trigger_ttl`, `max_simultaneous`, `attribution_window`",
        );
        check_err(
            &campaign("when = { tier_reached = 3, colour = \"red\" }"),
            "rules.toml:5:28: unknown field `colour`, expected one of `tier_reached`, `tier_dropped_by`, `churn_risk_at_least`, `tier_at_least`, `cart_abandoned`, `browse_abandoned`, `first_purchase`, `inactive_for`",
        );
    }

    #[test]
    fn bad_durations_point_at_the_value() {
        check_err(
            "tier_count = 4\n\n[defaults]\n  cooldown = \"2w\"\n",
            "rules.toml:4:14: unknown duration unit \"w\" in cooldown (use s, m, h, d)",
        );
        check_err(
            &campaign("when = { cart_abandoned = \"30\" }"),
            "rules.toml:5:27: missing duration unit in cart_abandoned: \"30\" (use s, m, h, d)",
        );
        check_err(
            &campaign("when = { inactive_for = \"0d\" }"),
            "rules.toml:5:25: inactive_for must be longer than 0s",
        );
    }

    #[test]
    fn out_of_range_values_name_the_range() {
        check_err(
            &campaign("control_fraction = 1.0\nwhen = { first_purchase = true }"),
            "rules.toml:5:20: control_fraction must be at least 0 and below 1, got 1",
        );
        check_err(
            &campaign("when = { tier_reached = 4 }"),
            "rules.toml:5:25: tier_reached must be from 1 to 3, got 4",
        );
        check_err(
            "tier_count = 1\n",
            "rules.toml:1:14: tier_count must be from 2 to 255, got 1",
        );
        check_err(
            &campaign("budget_per_hour = 0\nwhen = { first_purchase = true }"),
            "rules.toml:5:19: budget_per_hour must be from 1 to 4294967295, got 0",
        );
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once_in_file_order() {
        let text = r#"tier_count = 3
[[campaign]]
name = "Bad Name"
when = { tier_dropped_by = 3 }
[[campaign]]
name = "x"
when = { first_purchase = false }
[[campaign]]
name = "x"
when = { inactive_for = "1y" }
"#;
        check_err(
            text,
            "rules.toml:3:8: campaign name must be 1 to 64 characters of a-z, 0-9, _ and -, got \"Bad Name\"\n\
             rules.toml:4:28: tier_dropped_by must be from 1 to 2, got 3\n\
             rules.toml:7:27: first_purchase can only be true (remove the campaign to turn it off)\n\
             rules.toml:9:8: duplicate campaign name \"x\" (first defined at line 6, column 8)\n\
             rules.toml:10:25: unknown duration unit \"y\" in inactive_for (use s, m, h, d)",
        );
    }

    #[test]
    fn a_campaign_needs_exactly_one_condition() {
        check_err(
            &campaign("when = {}"),
            "rules.toml:5:8: campaign \"c\" has no condition: give exactly one of tier_reached, \
             tier_dropped_by, churn_risk_at_least, cart_abandoned, browse_abandoned, \
             first_purchase, inactive_for",
        );
        check_err(
            &campaign("[campaign.when]\ntier_reached = 2\ninactive_for = \"14d\"\n"),
            "rules.toml:7:16: campaign \"c\" has several conditions (tier_reached, inactive_for); \
             give exactly one, and make another campaign for the other",
        );
        check_err(
            &campaign("when = { tier_at_least = 2 }"),
            "rules.toml:5:8: campaign \"c\" has no condition: give exactly one of tier_reached, \
             tier_dropped_by, churn_risk_at_least, cart_abandoned, browse_abandoned, \
             first_purchase, inactive_for\n\
             rules.toml:5:26: tier_at_least only qualifies churn_risk_at_least; add \
             churn_risk_at_least or use tier_reached",
        );
    }

    #[test]
    fn syntax_and_type_errors_carry_positions() {
        let err = RuleSet::parse("tier_count = 4\n[[campaign]]\nname = 7\n").unwrap_err();
        assert_eq!((err.first().line, err.first().column), (3, 8));
        let err = RuleSet::parse("tier_count = 4\n[defaults\n").unwrap_err();
        assert_eq!(err.first().line, 2);
        let err = RuleSet::parse("[defaults]\n").unwrap_err();
        assert!(
            err.first().message.contains("missing field `tier_count`"),
            "{err}"
        );
    }

    #[test]
    fn origin_prefixes_positions() {
        let err = RuleSet::parse_named("deploy/rules.toml", "tier_count = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "deploy/rules.toml:1:14: tier_count must be from 2 to 255, got 0"
        );
    }

    #[test]
    fn deploy_example_parses_with_every_trigger_kind() {
        let rules = RuleSet::parse(include_str!("../../../deploy/rules.toml")).unwrap();
        let described: Vec<(&str, String)> = rules
            .campaigns
            .iter()
            .map(|c| (c.name.as_str(), c.trigger.to_string()))
            .collect();
        assert_eq!(
            described,
            [
                ("vip_welcome", "tier_reached = 4".to_owned()),
                ("winback", "tier_dropped_by = 2".to_owned()),
                (
                    "retention_offer",
                    "churn_risk_at_least = 0.7, tier_at_least = 2".to_owned()
                ),
                ("cart_reminder", "cart_abandoned = \"30m\"".to_owned()),
                ("browse_reminder", "browse_abandoned = \"1h\"".to_owned()),
                ("first_purchase_thanks", "first_purchase = true".to_owned()),
                ("we_miss_you", "inactive_for = \"14d\"".to_owned()),
            ]
        );
        assert_eq!(
            rules.limits,
            Limits {
                daily_cap: 3,
                max_simultaneous: 1
            }
        );
        let vip = rules.campaign("vip_welcome").unwrap();
        assert_eq!(vip.cooldown_ms, 30 * EventTime::MILLIS_PER_DAY);
        assert_eq!(vip.trigger_ttl_ms, EventTime::MILLIS_PER_DAY);
        assert_eq!(vip.attribution_window_ms, 7 * EventTime::MILLIS_PER_DAY);
        assert_eq!(
            rules
                .campaign("cart_reminder")
                .unwrap()
                .attribution_window_ms,
            EventTime::MILLIS_PER_DAY
        );
        assert_eq!(vip.budget_per_hour, Some(1000));
        assert_eq!(rules.campaign("winback").unwrap().budget_per_hour, None);
    }

    #[test]
    fn too_many_campaigns_are_refused() {
        let mut text = String::from(MINIMAL);
        for i in 0..=MAX_CAMPAIGNS {
            text.push_str(&format!(
                "[[campaign]]\nname = \"c{i}\"\nwhen = {{ first_purchase = true }}\n"
            ));
        }
        let err = RuleSet::parse(&text).unwrap_err();
        assert_eq!(err.diagnostics.len(), 1);
        assert!(err.first().message.starts_with("more than 256 campaigns"));
    }
}
