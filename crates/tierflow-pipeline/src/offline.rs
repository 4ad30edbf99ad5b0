//! The offline reference: the same records replayed one at a time, in memory, each update
//! scored on its own. It shares the window code and the tier policy with the pipeline but none
//! of its batching, storage, Kafka or output code, so the pipeline is checked against it (the
//! end-to-end and crash tests) and operators can predict what a stream will produce.

use std::collections::{BTreeMap, HashMap};

use tierflow_events::{CampaignArm, ClickEvent, ErrorClass, EventTime, EventType, Tier};
use tierflow_features::{Applied, UserState, features};
use tierflow_model::{ScoreError, Scorer};
use tierflow_rules::{Attribution, Exposure, Ledger, RuleSet, Update};

use crate::campaigns::{self, Fired, Outcome};
use crate::config::PipelineConfig;
use crate::policy::take_score_slot;
use crate::process::{Clocks, check_event_time, tier_change_key};

/// One source record as it sits in the topic.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record timestamp, ms (`None` for events from a file).
    pub timestamp: Option<i64>,
    pub payload: Vec<u8>,
}

/// A tier change the reference predicts, by idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictedChange {
    pub from: Option<Tier>,
    pub to: Tier,
}

/// What the stream should produce.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Every `tier_changed`, by idempotency key.
    pub tier_changes: BTreeMap<String, PredictedChange>,
    /// Final state per user.
    pub states: HashMap<String, UserState>,
    /// Dead letters as `(partition, offset) → class`.
    pub dead_letters: BTreeMap<(i32, i64), ErrorClass>,
    /// The published tier after each user's last scored update.
    pub latest_tier: HashMap<String, Tier>,
    /// Rows scored.
    pub scored: u64,
    /// Every campaign rule that fired, by idempotency key: its campaign and what governance
    /// (in memory, as the Redis governor decides) made of it.
    pub triggers: BTreeMap<String, PredictedTrigger>,
    /// Every purchase attributed to a trigger (sent or held out), by the `campaign_outcome`
    /// idempotency key.
    pub outcomes: BTreeMap<String, Attribution>,
}

/// A campaign trigger the reference predicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictedTrigger {
    pub user_id: String,
    pub campaign: String,
    /// The condition as written in the rules file.
    pub rule: String,
    pub fired_at: EventTime,
    /// The event that caused it (`None` for inactivity).
    pub causing_event_id: Option<String>,
    /// The tier the user had when it fired.
    pub tier: Tier,
    pub outcome: Outcome,
}

/// Replays `records` (any interleaving of partitions; each partition in offset order).
pub fn replay(
    scorer: &Scorer,
    config: &PipelineConfig,
    records: &[SourceRecord],
) -> Result<Expected, ScoreError> {
    replay_with(scorer, config, None, records)
}

/// [`replay`] with campaign rules: each scored update also runs the rules and governance
/// (in memory, no opt-outs).
pub fn replay_with(
    scorer: &Scorer,
    config: &PipelineConfig,
    rules: Option<&RuleSet>,
    records: &[SourceRecord],
) -> Result<Expected, ScoreError> {
    let mut expected = Expected::default();
    let mut ledger = Ledger::default();
    let slack_ms = config.timer_slack_ms as i64;
    let mut clocks = Clocks::default();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for record in records {
        let event = match ClickEvent::from_json(&record.payload).and_then(|event| {
            check_event_time(
                event,
                record.timestamp,
                config.max_event_ahead_secs as i64 * 1000,
            )
        }) {
            Ok(event) => event,
            Err(_) => {
                expected
                    .dead_letters
                    .insert((record.partition, record.offset), ErrorClass::Decode);
                continue;
            }
        };
        let horizon = clocks.horizon(record.partition, slack_ms);
        clocks.advance(record.partition, event.ts.unix_millis());
        partition_of.insert(event.user_id.clone(), record.partition);
        let state = expected.states.entry(event.user_id.clone()).or_default();
        if state.already_applied(record.partition, record.offset) {
            continue;
        }
        let mut rule_state = rules.map(|_| campaigns::rule_state(state).0);
        let applied = state.apply(&event);
        state.mark_applied(record.partition, record.offset);
        match applied {
            Applied::Duplicate => {}
            Applied::TooLate { .. } => {
                expected
                    .dead_letters
                    .insert((record.partition, record.offset), ErrorClass::TooLate);
            }
            Applied::Updated => {
                let as_of = state.newest().unwrap_or(event.ts);
                let row = features(state, as_of);
                let scores = scorer.score(&row)?;
                expected.scored += 1;
                let tier_before = state.published.tier;
                let decision = config.policy.decide(
                    &mut state.published,
                    scores.probabilities(0),
                    as_of.unix_millis(),
                );
                if let (Some(rules), Some(rule_state)) = (rules, rule_state.as_mut()) {
                    let scores = scores.scores(0);
                    // Timers due before this update, as the user was before it.
                    let due_by = EventTime::from_unix_millis(as_of.unix_millis() - 1);
                    let due_by = horizon.map_or(due_by, |h| h.max(due_by));
                    let last_scores = rule_state.last_scores.clone();
                    let mut fired: Vec<Fired> = rules
                        .on_time(rule_state, due_by)
                        .into_iter()
                        .map(|candidate| Fired {
                            user_id: event.user_id.clone(),
                            candidate,
                            tier: tier_before.unwrap_or(decision.tier()),
                            scores: last_scores.clone().unwrap_or_else(|| scores.clone()),
                            group: 0,
                        })
                        .collect();
                    let update = Update {
                        user_id: &event.user_id,
                        event: &event,
                        from_tier: decision.change().map_or(Some(decision.tier()), |(f, _)| f),
                        to_tier: decision.tier(),
                        scores: &scores,
                        at: EventTime::from_unix_millis(as_of.unix_millis()),
                    };
                    fired.extend(rules.on_update(rule_state, &update).into_iter().map(
                        |candidate| Fired {
                            user_id: event.user_id.clone(),
                            candidate,
                            tier: decision.tier(),
                            scores: scores.clone(),
                            group: 1,
                        },
                    ));
                    let exposures = predict(rules, &mut ledger, &fired, &mut expected.triggers);
                    let purchase = [&event];
                    let purchases: &[&ClickEvent] = if event.event_type == EventType::Purchase {
                        &purchase
                    } else {
                        &[]
                    };
                    for attribution in
                        campaigns::attribute_user(rules, rule_state, state, exposures, purchases)
                    {
                        expected
                            .outcomes
                            .insert(attribution.idempotency_key(), attribution);
                    }
                }
                if let Some((from, to)) = decision.change() {
                    expected.tier_changes.insert(
                        tier_change_key(&event.user_id, &event.event_id),
                        PredictedChange { from, to },
                    );
                }
                take_score_slot(
                    &mut state.published,
                    as_of.unix_millis(),
                    config.score_min_interval_secs,
                    decision,
                );
                expected
                    .latest_tier
                    .insert(event.user_id.clone(), decision.tier());
            }
        }
        if let (Some(rules), Some(mut rule_state)) = (rules, rule_state) {
            campaigns::prune_exposures(rules, &mut rule_state, state);
            campaigns::keep_rule_state(state, &rule_state);
        }
    }
    // The end of the stream: every user's timers due by its partition's horizon.
    if let Some(rules) = rules {
        let mut users: Vec<&String> = partition_of.keys().collect();
        users.sort();
        for user in users {
            let Some(horizon) = clocks.horizon(partition_of[user], slack_ms) else {
                continue;
            };
            let Some(state) = expected.states.get_mut(user) else {
                continue;
            };
            let (mut rule_state, _) = campaigns::rule_state(state);
            let last_scores = rule_state.last_scores.clone();
            let fired: Vec<Fired> = rules
                .on_time(&mut rule_state, horizon)
                .into_iter()
                .map(|candidate| Fired {
                    user_id: user.clone(),
                    candidate,
                    tier: state.published.tier.unwrap_or(0),
                    scores: last_scores
                        .clone()
                        .unwrap_or_else(|| tierflow_events::Scores {
                            tier_probabilities: Vec::new(),
                            churn_risk: 0.0,
                            expected_value: 0.0,
                        }),
                    group: 0,
                })
                .collect();
            if !fired.is_empty() {
                let exposures = predict(rules, &mut ledger, &fired, &mut expected.triggers);
                campaigns::attribute_user(rules, &mut rule_state, state, exposures, &[]);
                campaigns::keep_rule_state(state, &rule_state);
            }
        }
    }
    Ok(expected)
}

/// Governs one update's (or one user's end-of-stream) fired rules and records them; returns
/// the exposures: the triggers sent (treated) or held out (control).
fn predict(
    rules: &RuleSet,
    ledger: &mut Ledger,
    fired: &[Fired],
    triggers: &mut BTreeMap<String, PredictedTrigger>,
) -> Vec<Exposure> {
    let mut exposures = Vec::new();
    for user in campaigns::by_user(fired) {
        let outcomes = campaigns::govern_offline(rules, ledger, &user);
        for (f, outcome) in user.iter().zip(outcomes) {
            let arm = match outcome {
                Outcome::Sent => Some(CampaignArm::Treated),
                Outcome::Held => Some(CampaignArm::Control),
                Outcome::Suppressed(_) => None,
            };
            if let Some(arm) = arm {
                exposures.push(Exposure {
                    campaign: f.candidate.campaign.clone(),
                    fired_at: f.candidate.fired_at,
                    trigger_key: f.candidate.idempotency_key(&f.user_id),
                    arm,
                });
            }
            triggers.insert(
                f.candidate.idempotency_key(&f.user_id),
                PredictedTrigger {
                    user_id: f.user_id.clone(),
                    campaign: f.candidate.campaign.clone(),
                    rule: f.candidate.rule.clone(),
                    fired_at: f.candidate.fired_at,
                    causing_event_id: f.candidate.causing_event_id.clone(),
                    tier: f.tier,
                    outcome,
                },
            );
        }
    }
    exposures
}
