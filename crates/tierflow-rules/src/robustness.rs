//! The robustness property of the rules-file parser, checked by the `rules_file` fuzz target
//! (`crates/tierflow-fuzz`, `just fuzz`) and by `tests/robustness.rs` on the same seeds and on
//! arbitrary text: whatever an operator saves as `rules.toml`, [`RuleSet::parse`] (what
//! `tierflow run` and the hot reload call) returns, never panics, and either hands over rules
//! that hold every documented limit or says where and why it refused the file.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::error::RulesError;
use crate::ruleset::{
    Campaign, MAX_CAMPAIGNS, MAX_CAP, MAX_NAME_CHARS, RuleSet, Trigger, format_duration,
};

/// Longest duration the rules file accepts (`100000d`).
const MAX_DURATION_MS: i64 = 100_000 * tierflow_events::EventTime::MILLIS_PER_DAY;

/// Parses one rules file as the pipeline does and panics if the result breaks the parser's
/// contract:
///
/// - a refused file has at least one diagnostic, each with a 1-based line and column inside
///   the text and a non-empty message, and displays as one `rules.toml:line:column: message`
///   line per diagnostic;
/// - accepted rules hold every limit the module documents (tier count, names, ranges,
///   durations, one condition within the tiers), and, written back as a rules file, parse to
///   equal rules.
///
/// Returns the parser's result, so callers can count what was accepted.
pub fn check_rules_text(text: &str) -> Result<RuleSet, RulesError> {
    let parsed = RuleSet::parse(text);
    match &parsed {
        Ok(rules) => check_accepted(rules),
        Err(error) => check_refused(text, error),
    }
    parsed
}

fn check_refused(text: &str, error: &RulesError) {
    assert!(!error.diagnostics.is_empty(), "refused with no diagnostic");
    let lines = text.split('\n').count();
    for d in &error.diagnostics {
        assert!(!d.message.trim().is_empty(), "empty message in {error:?}");
        assert!(
            (1..=lines).contains(&d.line) && d.column >= 1,
            "position {}:{} outside a text of {lines} lines: {error:?}",
            d.line,
            d.column
        );
    }
    let shown = error.to_string();
    assert_eq!(
        shown
            .lines()
            .filter(|l| l.starts_with("rules.toml:"))
            .count(),
        error.diagnostics.len(),
        "not one `rules.toml:line:column:` line per diagnostic: {shown:?}"
    );
}

fn check_accepted(rules: &RuleSet) {
    assert!(
        rules.tier_count >= 2,
        "accepted tier_count {}",
        rules.tier_count
    );
    assert!(
        (1..=MAX_CAP).contains(&rules.limits.daily_cap)
            && (1..=MAX_CAP).contains(&rules.limits.max_simultaneous),
        "accepted limits {:?}",
        rules.limits
    );
    assert!(
        (1..=MAX_DURATION_MS).contains(&rules.attribution_window_ms),
        "accepted attribution_window {}",
        rules.attribution_window_ms
    );
    assert!(
        rules.campaigns.len() <= MAX_CAMPAIGNS,
        "accepted {} campaigns",
        rules.campaigns.len()
    );
    let mut names = HashSet::new();
    for c in &rules.campaigns {
        assert!(names.insert(c.name.as_str()), "duplicate name {:?}", c.name);
        check_campaign(c, rules.tier_count);
    }
    let text = to_rules_file(rules);
    match RuleSet::parse(&text) {
        Ok(again) => assert_eq!(&again, rules, "rules change when written back:\n{text}"),
        Err(e) => panic!("accepted rules written back are refused ({e}):\n{text}"),
    }
}

fn check_campaign(c: &Campaign, tier_count: u8) {
    let name_ok = (1..=MAX_NAME_CHARS).contains(&c.name.chars().count())
        && c.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    assert!(name_ok, "accepted campaign name {:?}", c.name);
    assert!(
        (0.0..1.0).contains(&c.control_fraction),
        "accepted control_fraction {}",
        c.control_fraction
    );
    assert_ne!(c.budget_per_hour, Some(0), "accepted budget_per_hour 0");
    assert!(
        (0..=MAX_DURATION_MS).contains(&c.cooldown_ms)
            && (1..=MAX_DURATION_MS).contains(&c.trigger_ttl_ms)
            && (1..=MAX_DURATION_MS).contains(&c.attribution_window_ms),
        "accepted durations of {c:?}"
    );
    let top = tier_count - 1;
    let ok = match c.trigger {
        Trigger::TierReached { tier } => (1..=top).contains(&tier),
        Trigger::TierDroppedBy { tiers } => (1..=top).contains(&tiers),
        Trigger::ChurnRisk {
            at_least,
            tier_at_least,
        } => (0.0..=1.0).contains(&at_least) && tier_at_least.is_none_or(|t| t <= top),
        Trigger::CartAbandoned { after_ms }
        | Trigger::BrowseAbandoned { after_ms }
        | Trigger::InactiveFor { after_ms } => (1..=MAX_DURATION_MS).contains(&after_ms),
        Trigger::FirstPurchase => true,
    };
    assert!(
        ok,
        "accepted trigger {:?} with {tier_count} tiers",
        c.trigger
    );
}

/// The rules as a rules file, every value explicit; [`Trigger`]'s `Display` is the `when`
/// condition as written in the file.
fn to_rules_file(rules: &RuleSet) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "tier_count = {}", rules.tier_count);
    let _ = writeln!(out, "[defaults]");
    let _ = writeln!(out, "daily_cap = {}", rules.limits.daily_cap);
    let _ = writeln!(out, "max_simultaneous = {}", rules.limits.max_simultaneous);
    let _ = writeln!(
        out,
        "attribution_window = \"{}\"",
        format_duration(rules.attribution_window_ms)
    );
    for c in &rules.campaigns {
        let _ = writeln!(out, "[[campaign]]");
        let _ = writeln!(out, "name = \"{}\"", c.name);
        let _ = writeln!(out, "priority = {}", c.priority);
        // `{:?}` is the shortest text that reads back as the same f64, always with a point
        // or an exponent, so TOML reads a float.
        let _ = writeln!(out, "control_fraction = {:?}", c.control_fraction);
        if let Some(budget) = c.budget_per_hour {
            let _ = writeln!(out, "budget_per_hour = {budget}");
        }
        let _ = writeln!(out, "cooldown = \"{}\"", format_duration(c.cooldown_ms));
        let _ = writeln!(
            out,
            "trigger_ttl = \"{}\"",
            format_duration(c.trigger_ttl_ms)
        );
        let _ = writeln!(
            out,
            "attribution_window = \"{}\"",
            format_duration(c.attribution_window_ms)
        );
        let _ = writeln!(out, "when = {{ {} }}", c.trigger);
    }
    out
}
