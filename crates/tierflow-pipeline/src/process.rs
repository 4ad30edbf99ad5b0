//! The deterministic core of a micro-batch, with no I/O: apply each event to its user's state,
//! score every update (one forward pass per chunk of rows), run the tier policy in event
//! order, and build the outputs. Scores are taken as of each user's newest event time, never
//! the wall clock, and each event's update is scored on its own, so the decisions do not
//! depend on how the stream was cut into batches: a replay after a crash produces the same
//! records with the same idempotency keys.

use std::collections::HashMap;

use tierflow_events::output::OUTPUT_SCHEMA_VERSION;
use tierflow_events::{ClickEvent, ErrorClass, EventTime, ReasonCode, TierChanged, UserScore};
use tierflow_features::{Applied, UserState, spec::ALLOWED_LATENESS_MS, write_features};
use tierflow_model::{ScoreBatch, ScoreError, Scorer};
use tierflow_store::Loaded;

use tierflow_rules::{RuleSet, RuleState, Update};

use crate::campaigns::{self, Fired};
use crate::config::PipelineConfig;
use crate::policy::take_score_slot;

/// A decoded input record and where it came from.
#[derive(Debug, Clone)]
pub struct Input {
    pub partition: i32,
    pub offset: i64,
    pub event: ClickEvent,
}

/// An input the core refused (a dead letter for the runner to send with the original bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index into the batch's inputs.
    pub input: usize,
    pub class: ErrorClass,
    pub reason: String,
}

/// Counts of what happened to a batch's inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub applied: u64,
    pub duplicates: u64,
    /// Already in the stored state (a replay after a crash or rebalance): skipped.
    pub replayed: u64,
    pub too_late: u64,
    pub corrupt_state: u64,
    /// Feature rows scored.
    pub scored: u64,
}

/// Everything a batch produces, in input order.
#[derive(Debug, Clone, Default)]
pub struct Processed {
    pub model_version: String,
    pub tier_changes: Vec<TierChanged>,
    /// `user_score` records for the compacted topic (after throttling).
    pub user_scores: Vec<UserScore>,
    pub rejected: Vec<Rejected>,
    /// New state of every user whose state changed, in order of first appearance.
    pub states: Vec<(String, UserState)>,
    /// Each scored user's latest score in this batch (for the request-time lookup in Redis).
    pub latest: Vec<UserScore>,
    pub counts: BatchCounts,
    /// Published tier of each scored row (for the tier-distribution metric).
    pub scored_tiers: Vec<u8>,
    /// Campaign rules that fired, in the order they fired (before governance).
    pub fired: Vec<Fired>,
}

/// The distinct users of a batch in order of first appearance, and each input's user slot.
pub fn users_of(inputs: &[Input]) -> (Vec<&str>, Vec<usize>) {
    let mut slot_of: HashMap<&str, usize> = HashMap::with_capacity(inputs.len());
    let mut users = Vec::new();
    let slots = inputs
        .iter()
        .map(|input| {
            let user = input.event.user_id.as_str();
            *slot_of.entry(user).or_insert_with(|| {
                users.push(user);
                users.len() - 1
            })
        })
        .collect();
    (users, slots)
}

/// The idempotency key of the `tier_changed` an event causes: the same on every replay.
pub fn tier_change_key(user_id: &str, event_id: &str) -> String {
    format!("tc/{user_id}/{event_id}")
}

/// One row to score: which input caused it, for which user slot, as of when.
#[derive(Debug, Clone, Copy)]
struct RowMeta {
    input: usize,
    slot: usize,
    as_of_ms: i64,
}

/// Processes one batch. `loaded` holds the stored state of `users_of(inputs).0`, in order.
/// With `rules`, each scored update also runs the campaign rules (their state travels in
/// the user's state) and `Processed::fired` lists what fired, for governance.
pub fn process(
    scorer: &Scorer,
    config: &PipelineConfig,
    rules: Option<&RuleSet>,
    inputs: &[Input],
    loaded: Vec<Loaded>,
    now: EventTime,
) -> Result<Processed, ScoreError> {
    let (users, slots) = users_of(inputs);
    debug_assert_eq!(users.len(), loaded.len());
    let mut states: Vec<Result<UserState, String>> = loaded
        .into_iter()
        .map(|l| l.map(Option::unwrap_or_default).map_err(|e| e.to_string()))
        .collect();
    // Rule state as stored, before this batch's events (a first purchase must still look
    // like one).
    let mut rule_states: Vec<Option<RuleState>> = states
        .iter()
        .zip(&users)
        .map(|(state, user)| match (rules, state) {
            (Some(_), Ok(state)) => {
                let (rule_state, unreadable) = campaigns::rule_state(state);
                if let Some(reason) = unreadable {
                    tracing::warn!(user = %user, %reason, "rule state unreadable; starting afresh");
                }
                Some(rule_state)
            }
            _ => None,
        })
        .collect();
    let mut fired: Vec<Fired> = Vec::new();
    let mut dirty = vec![false; users.len()];
    let mut counts = BatchCounts::default();
    let mut rejected = Vec::new();
    let width = scorer.width();
    let mut rows: Vec<f32> = Vec::with_capacity(inputs.len() * width);
    let mut meta: Vec<RowMeta> = Vec::with_capacity(inputs.len());

    for (i, input) in inputs.iter().enumerate() {
        let slot = slots[i];
        let state = match &mut states[slot] {
            Err(reason) => {
                counts.corrupt_state += 1;
                rejected.push(Rejected {
                    input: i,
                    class: ErrorClass::Processing,
                    reason: format!(
                        "the stored state of user {:?} cannot be read ({reason}); it is left in place for an operator",
                        input.event.user_id
                    ),
                });
                continue;
            }
            Ok(state) => state,
        };
        if state.already_applied(input.partition, input.offset) {
            counts.replayed += 1;
            continue;
        }
        match state.apply(&input.event) {
            Applied::Updated => {
                counts.applied += 1;
                let as_of = state.newest().unwrap_or(input.event.ts);
                let at = rows.len();
                rows.resize(at + width, 0.0);
                write_features(state, as_of, &mut rows[at..]);
                meta.push(RowMeta {
                    input: i,
                    slot,
                    as_of_ms: as_of.unix_millis(),
                });
            }
            Applied::Duplicate => counts.duplicates += 1,
            Applied::TooLate { newest } => {
                counts.too_late += 1;
                rejected.push(Rejected {
                    input: i,
                    class: ErrorClass::TooLate,
                    reason: format!(
                        "event time {} is more than {} h older than the user's newest event {newest}",
                        input.event.ts,
                        ALLOWED_LATENESS_MS / 3_600_000
                    ),
                });
            }
        }
        state.mark_applied(input.partition, input.offset);
        dirty[slot] = true;
    }

    let model_version = scorer.version().to_owned();
    let mut tier_changes = Vec::new();
    let mut change_rows: Vec<(usize, Option<u8>, u8)> = Vec::new();
    let mut user_scores = Vec::new();
    let mut latest_row: Vec<Option<(usize, u8)>> = vec![None; users.len()];
    let mut scored_tiers = Vec::with_capacity(meta.len());
    let chunk = config.score_chunk_rows.max(1);
    let mut scored: Vec<ScoreBatch> = Vec::new();
    for (c, row_chunk) in rows.chunks(chunk * width).enumerate() {
        scored.push(scorer.score(row_chunk)?);
        let batch = &scored[c];
        for r in 0..batch.len() {
            let row = c * chunk + r;
            let m = meta[row];
            let Ok(state) = &mut states[m.slot] else {
                unreachable!("rows are only made for readable states")
            };
            let decision =
                config
                    .policy
                    .decide(&mut state.published, batch.probabilities(r), m.as_of_ms);
            let tier = decision.tier();
            scored_tiers.push(tier);
            if let (Some(rules), Some(rule_state)) = (rules, &mut rule_states[m.slot]) {
                let scores = batch.scores(r);
                let event = &inputs[m.input].event;
                let from_tier = match decision.change() {
                    Some((from, _)) => from,
                    None => Some(tier),
                };
                let update = Update {
                    user_id: &event.user_id,
                    event,
                    from_tier,
                    to_tier: tier,
                    scores: &scores,
                    at: EventTime::from_unix_millis(m.as_of_ms),
                };
                for candidate in rules.on_update(rule_state, &update) {
                    fired.push(Fired {
                        user_id: event.user_id.clone(),
                        candidate,
                        tier,
                        scores: scores.clone(),
                    });
                }
            }
            latest_row[m.slot] = Some((row, tier));
            if let Some((from, to)) = decision.change() {
                change_rows.push((row, from, to));
            }
            if take_score_slot(
                &mut state.published,
                m.as_of_ms,
                config.score_min_interval_secs,
                decision,
            ) {
                user_scores.push(user_score(
                    &inputs[m.input].event,
                    tier,
                    batch.scores(r),
                    &model_version,
                    m.as_of_ms,
                    now,
                ));
            }
        }
    }
    counts.scored = meta.len() as u64;

    // Reason codes for the rows that changed tier: one backward pass for all of them.
    let reasons: Vec<Vec<ReasonCode>> = if config.reason_codes > 0 && !change_rows.is_empty() {
        let mut features = Vec::with_capacity(change_rows.len() * width);
        for (row, _, _) in &change_rows {
            features.extend_from_slice(&rows[row * width..(row + 1) * width]);
        }
        scorer.explain(&features, config.reason_codes)?
    } else {
        vec![Vec::new(); change_rows.len()]
    };
    let scores_of = |row: usize| scored[row / chunk].scores(row % chunk);
    for ((row, from, to), reason_codes) in change_rows.iter().zip(reasons) {
        let event = &inputs[meta[*row].input].event;
        tier_changes.push(TierChanged {
            schema_version: OUTPUT_SCHEMA_VERSION,
            idempotency_key: tier_change_key(&event.user_id, &event.event_id),
            user_id: event.user_id.clone(),
            from_tier: *from,
            to_tier: *to,
            scores: scores_of(*row),
            model_version: model_version.clone(),
            reason_codes,
            causing_event_id: event.event_id.clone(),
            event_time: EventTime::from_unix_millis(meta[*row].as_of_ms),
            processing_time: now,
        });
    }
    let latest = latest_row
        .iter()
        .flatten()
        .map(|(row, tier)| {
            let m = meta[*row];
            user_score(
                &inputs[m.input].event,
                *tier,
                scores_of(*row),
                &model_version,
                m.as_of_ms,
                now,
            )
        })
        .collect();

    let states = users
        .iter()
        .zip(states)
        .zip(&dirty)
        .zip(rule_states)
        .filter_map(|(((user, state), dirty), rule_state)| match state {
            Ok(mut state) if *dirty => {
                if let Some(rule_state) = rule_state {
                    campaigns::keep_rule_state(&mut state, &rule_state);
                }
                Some(((*user).to_owned(), state))
            }
            _ => None,
        })
        .collect();
    Ok(Processed {
        model_version,
        tier_changes,
        user_scores,
        rejected,
        states,
        latest,
        counts,
        scored_tiers,
        fired,
    })
}

fn user_score(
    event: &ClickEvent,
    tier: u8,
    scores: tierflow_events::Scores,
    model_version: &str,
    as_of_ms: i64,
    now: EventTime,
) -> UserScore {
    UserScore {
        schema_version: OUTPUT_SCHEMA_VERSION,
        user_id: event.user_id.clone(),
        tier,
        scores,
        model_version: model_version.to_owned(),
        last_event_id: event.event_id.clone(),
        event_time: EventTime::from_unix_millis(as_of_ms),
        processing_time: now,
    }
}
