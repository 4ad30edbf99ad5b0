//! Campaign triggers inside the pipeline: each user's rule state travels in their stored
//! state (one write with the windows and the applied offsets, so a replay neither loses nor
//! repeats a trigger), the rules run after every tier decision, governance decides in Redis
//! (offline: in memory), and the records campaign engines read are built here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tierflow_events::output::OUTPUT_SCHEMA_VERSION;
use tierflow_events::{CampaignTriggered, EventTime, Scores, Tier};
use tierflow_features::UserState;
use tierflow_rules::{Candidate, Decision, GovernContext, Ledger, RuleSet, RuleState, Verdict};
use tierflow_store::{GovernCandidate, GovernRequest, GovernVerdict, Governor};

/// The campaign layer of one pipeline: the rules and the governance that enforces them.
#[derive(Debug, Clone)]
pub struct Campaigns {
    pub rules: Arc<RuleSet>,
    pub governor: Governance,
}

/// Where cooldowns, caps, budgets and recorded verdicts live.
#[derive(Debug, Clone)]
pub enum Governance {
    /// In Redis, shared by every process of the group: limits hold across partitions and
    /// restarts.
    Redis(Governor),
    /// In this process only (the demo on embedded defaults, with the in-memory state store):
    /// limits hold within the process and are forgotten when it stops.
    Memory(Arc<Mutex<Ledger>>),
}

/// A rule that fired for a user, with the decision it fired on.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub user_id: String,
    pub candidate: Candidate,
    /// The user's tier and scores at the update that fired it (or the last update before a
    /// timer fired).
    pub tier: Tier,
    pub scores: Scores,
}

/// The rule state stored in `state`; a user stored before campaigns existed starts with
/// one, seeded so that existing buyers are not welcomed as first-time buyers. An unreadable
/// one also starts afresh (seeded the same way); the reason comes back for the log.
pub fn rule_state(state: &UserState) -> (RuleState, Option<String>) {
    let fresh = || RuleState {
        first_purchase_seen: state.lifetime.orders > 0,
        ..RuleState::default()
    };
    if state.rules.is_empty() {
        return (fresh(), None);
    }
    match bincode::serde::decode_from_slice(&state.rules, bincode::config::standard()) {
        Ok((rules, _)) => (rules, None),
        Err(e) => (fresh(), Some(format!("rule state does not decode: {e}"))),
    }
}

/// Keeps `rules` in `state` (written with it).
pub fn keep_rule_state(state: &mut UserState, rules: &RuleState) {
    state.rules = bincode::serde::encode_to_vec(rules, bincode::config::standard())
        .expect("rule state always encodes into memory");
}

/// The order governance decides a user's candidates in: event time, then highest priority,
/// then campaign name (the rules crate's order, so Redis and memory agree).
fn decision_order(fired: &mut [&Fired]) {
    fired.sort_by(|a, b| {
        let (a, b) = (&a.candidate, &b.candidate);
        (a.fired_at, std::cmp::Reverse(a.priority), &a.campaign).cmp(&(
            b.fired_at,
            std::cmp::Reverse(b.priority),
            &b.campaign,
        ))
    });
}

/// Groups a batch's fired rules by user (users in order of their first trigger), each user's
/// in decision order.
pub fn by_user(fired: &[Fired]) -> Vec<Vec<&Fired>> {
    let mut slot: HashMap<&str, usize> = HashMap::new();
    let mut users: Vec<Vec<&Fired>> = Vec::new();
    for f in fired {
        let at = *slot.entry(f.user_id.as_str()).or_insert_with(|| {
            users.push(Vec::new());
            users.len() - 1
        });
        users[at].push(f);
    }
    for user in &mut users {
        decision_order(user);
    }
    users
}

/// The governor's request for one user's fired rules (in decision order). Rules of a
/// campaign no longer in `rules` are left out (the caller reports them as retired).
pub fn govern_request(rules: &RuleSet, fired: &[&Fired]) -> Option<GovernRequest> {
    let user_id = fired.first()?.user_id.clone();
    let candidates = fired
        .iter()
        .filter_map(|f| {
            let terms = rules.terms(&f.user_id, &f.candidate)?;
            Some(GovernCandidate {
                campaign: f.candidate.campaign.clone(),
                idempotency_key: f.candidate.idempotency_key(&f.user_id),
                fired_at: f.candidate.fired_at,
                priority: f.candidate.priority,
                cooldown_ms: terms.cooldown_ms,
                budget_per_hour: terms.budget_per_hour,
                in_control: terms.in_control,
            })
        })
        .collect();
    Some(GovernRequest {
        user_id,
        daily_cap: rules.limits.daily_cap,
        max_simultaneous: rules.limits.max_simultaneous,
        candidates,
    })
}

/// What became of one fired rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Published on `campaign_triggered`.
    Sent,
    /// In the campaign's control group: published on the control topic, never sent.
    Held,
    /// Not published; the label names why (`cooldown`, `daily_cap`, …).
    Suppressed(&'static str),
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Sent => "send",
            Self::Held => "control_holdout",
            Self::Suppressed(reason) => reason,
        }
    }
}

impl From<GovernVerdict> for Outcome {
    fn from(verdict: GovernVerdict) -> Self {
        match verdict {
            GovernVerdict::Send => Self::Sent,
            GovernVerdict::ControlHoldout => Self::Held,
            other => Self::Suppressed(other.as_str()),
        }
    }
}

impl From<Verdict> for Outcome {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Send => Self::Sent,
            Verdict::ControlHoldout => Self::Held,
            suppressed @ Verdict::Suppressed(_) => Self::Suppressed(suppressed.as_str()),
        }
    }
}

/// Decides one user's fired rules (in decision order) in memory, as the Redis governor
/// would: the offline reference and `tierflow rules test`.
pub fn govern_offline(rules: &RuleSet, ledger: &mut Ledger, fired: &[&Fired]) -> Vec<Outcome> {
    let Some(first) = fired.first() else {
        return Vec::new();
    };
    let candidates: Vec<Candidate> = fired.iter().map(|f| f.candidate.clone()).collect();
    let decisions: Vec<Decision> = tierflow_rules::govern(
        &candidates,
        GovernContext {
            rules,
            user_id: &first.user_id,
            ledger,
        },
    );
    decisions.into_iter().map(|d| d.verdict.into()).collect()
}

/// The record of a fired rule that governance let through (or held out).
pub fn triggered(fired: &Fired, model_version: &str, now: EventTime) -> CampaignTriggered {
    let c = &fired.candidate;
    CampaignTriggered {
        schema_version: OUTPUT_SCHEMA_VERSION,
        idempotency_key: c.idempotency_key(&fired.user_id),
        campaign: c.campaign.clone(),
        user_id: fired.user_id.clone(),
        rule: c.rule.clone(),
        tier: fired.tier,
        scores: fired.scores.clone(),
        model_version: model_version.to_owned(),
        causing_event_id: c.causing_event_id.clone(),
        event_time: c.fired_at,
        expires_at: c.expires_at,
        processing_time: now,
    }
}
