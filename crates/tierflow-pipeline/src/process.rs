//! The deterministic core of a micro-batch, with no I/O: apply each event to its user's state,
//! score every update (one forward pass per chunk of rows), run the tier policy in event
//! order, and build the outputs. Scores are taken as of each user's newest event time, never
//! the wall clock, and each event's update is scored on its own, so the decisions do not
//! depend on how the stream was cut into batches: a replay after a crash produces the same
//! records with the same idempotency keys.

use std::collections::{BTreeMap, HashMap};

use tierflow_events::output::OUTPUT_SCHEMA_VERSION;
use tierflow_events::{
    ClickEvent, DecodeError, DecodeErrorKind, ErrorClass, EventTime, EventType, ReasonCode,
    TierChanged, UserScore,
};
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
    /// The timer index entry of every user whose state was written or who was loaded for a
    /// timer: `(partition, user, next deadline ms)`.
    pub due: Vec<(i32, String, Option<i64>)>,
    /// With rules: the inputs (indices) that are purchases applied by this batch, for
    /// attribution once governance has decided the batch's triggers.
    pub purchases: Vec<usize>,
    /// The scored feature vectors, row-major, in scoring order (for the drift monitor; the
    /// runner takes them before the batch moves on).
    pub rows: Vec<f32>,
    /// Their scores, one batch per forward pass (`score_chunk_rows` rows each).
    pub scores: Vec<ScoreBatch>,
}

/// Each partition's campaign clock: the newest event time read from it (in offset order).
/// Timers of a partition's users fire once the clock minus `timer_slack_ms` passes their
/// deadline, so a user who sends nothing more is still reached, and a straggler up to the
/// slack late is still counted before the deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clocks {
    newest: BTreeMap<i32, i64>,
}

impl Clocks {
    pub fn get(&self, partition: i32) -> Option<i64> {
        self.newest.get(&partition).copied()
    }

    /// Moves the clock of `partition` to `ms` if that is later.
    pub fn advance(&mut self, partition: i32, ms: i64) {
        let clock = self.newest.entry(partition).or_insert(ms);
        *clock = (*clock).max(ms);
    }

    /// Forgets partitions this member no longer owns.
    pub fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.newest.remove(p);
        }
    }

    pub fn knows(&self, partition: i32) -> bool {
        self.newest.contains_key(&partition)
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.newest.iter().map(|(p, c)| (*p, *c))
    }

    /// The instant up to which timers of `partition` fire: its clock minus the slack.
    pub fn horizon(&self, partition: i32, slack_ms: i64) -> Option<EventTime> {
        self.get(partition)
            .map(|c| EventTime::from_unix_millis(c.saturating_sub(slack_ms)))
    }
}

/// Campaign timers around a batch.
#[derive(Debug)]
pub struct Timers<'a> {
    /// The partitions' clocks before the batch; the batch's records advance them.
    pub clocks: &'a mut Clocks,
    /// Users loaded only because their timers may be due, with their partition; their
    /// states follow the batch's users in `loaded`. None of them is a user of the batch.
    pub due_users: &'a [(String, i32)],
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

/// Refuses an event stamped more than `max_ahead_ms` after its record's Kafka timestamp
/// (`record_ms`; no timestamp or `max_ahead_ms` 0: no check), as a decode error on `ts`.
pub fn check_event_time(
    event: ClickEvent,
    record_ms: Option<i64>,
    max_ahead_ms: i64,
) -> Result<ClickEvent, DecodeError> {
    match record_ms {
        Some(record_ms)
            if max_ahead_ms > 0
                && event.ts.unix_millis() > record_ms.saturating_add(max_ahead_ms) =>
        {
            Err(DecodeError::new(
                DecodeErrorKind::InvalidValue,
                Some("ts"),
                format!(
                    "event time {} is more than {} s after the record's Kafka timestamp {} \
                     (producer clock skew; pipeline.max_event_ahead_secs)",
                    event.ts,
                    max_ahead_ms / 1000,
                    EventTime::from_unix_millis(record_ms)
                ),
            ))
        }
        _ => Ok(event),
    }
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
    /// The timer horizon of the input's partition before the input.
    horizon: Option<EventTime>,
}

/// Processes one batch. `loaded` holds the stored state of `users_of(inputs).0`, in order,
/// then of `timers.due_users`. With `rules`, each scored update also runs the campaign rules
/// (their state travels in the user's state) and `Processed::fired` lists what fired, for
/// governance.
///
/// Timers fire by the partition clock as the offline reference fires them: before each
/// update, those due by the horizon before its record (or before the update itself);
/// after the batch, those of every loaded user due by the partition's horizon. A timer that
/// fires reports the scores of the user's last update and the tier before this one.
pub fn process(
    scorer: &Scorer,
    config: &PipelineConfig,
    rules: Option<&RuleSet>,
    inputs: &[Input],
    loaded: Vec<Loaded>,
    now: EventTime,
    timers: Timers<'_>,
) -> Result<Processed, ScoreError> {
    let slack_ms = config.timer_slack_ms as i64;
    let (mut users, slots) = users_of(inputs);
    // Each user's partition: of its first record, or the one its timer index named.
    let mut partition_of: Vec<i32> = vec![0; users.len()];
    for (input, slot) in inputs.iter().zip(&slots).rev() {
        partition_of[*slot] = input.partition;
    }
    let batch_users = users.len();
    for (user, partition) in timers.due_users {
        users.push(user.as_str());
        partition_of.push(*partition);
    }
    debug_assert_eq!(users.len(), loaded.len());
    let clocks = timers.clocks;
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
    let due_before: Vec<Option<EventTime>> = rule_states
        .iter()
        .map(|r| r.as_ref().and_then(RuleState::next_due))
        .collect();
    let mut fired: Vec<Fired> = Vec::new();
    // Numbers each evaluation that fired something (see `Fired::group`).
    let mut group: u64 = 0;
    let mut dirty = vec![false; users.len()];
    // Users with a record already applied (a replay): their index entry is written again,
    // in case the write that applied it stored the state but not the entry.
    let mut replayed = vec![false; users.len()];
    let mut counts = BatchCounts::default();
    let mut rejected = Vec::new();
    let mut purchases = Vec::new();
    let width = scorer.width();
    let mut rows: Vec<f32> = Vec::with_capacity(inputs.len() * width);
    let mut meta: Vec<RowMeta> = Vec::with_capacity(inputs.len());

    for (i, input) in inputs.iter().enumerate() {
        let slot = slots[i];
        let horizon = clocks.horizon(input.partition, slack_ms);
        clocks.advance(input.partition, input.event.ts.unix_millis());
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
            replayed[slot] = true;
            continue;
        }
        match state.apply(&input.event) {
            Applied::Updated => {
                counts.applied += 1;
                if rules.is_some() && input.event.event_type == EventType::Purchase {
                    purchases.push(i);
                }
                let as_of = state.newest().unwrap_or(input.event.ts);
                let at = rows.len();
                rows.resize(at + width, 0.0);
                write_features(state, as_of, &mut rows[at..]);
                meta.push(RowMeta {
                    input: i,
                    slot,
                    as_of_ms: as_of.unix_millis(),
                    horizon,
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
            let tier_before = state.published.tier;
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
                // Timers due before this update fire first, as the user was before it.
                let due_by = EventTime::from_unix_millis(m.as_of_ms - 1);
                let due_by = m.horizon.map_or(due_by, |h| h.max(due_by));
                let last_scores = rule_state.last_scores.clone();
                group += 1;
                for candidate in rules.on_time(rule_state, due_by) {
                    fired.push(Fired {
                        user_id: event.user_id.clone(),
                        candidate,
                        tier: tier_before.unwrap_or(tier),
                        scores: last_scores.clone().unwrap_or_else(|| scores.clone()),
                        group,
                    });
                }
                let update = Update {
                    user_id: &event.user_id,
                    event,
                    from_tier,
                    to_tier: tier,
                    scores: &scores,
                    at: EventTime::from_unix_millis(m.as_of_ms),
                };
                group += 1;
                for candidate in rules.on_update(rule_state, &update) {
                    fired.push(Fired {
                        user_id: event.user_id.clone(),
                        candidate,
                        tier,
                        scores: scores.clone(),
                        group,
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

    // After the batch: every loaded user's timers due by its partition's horizon.
    let mut due = Vec::new();
    if let Some(rules) = rules {
        for slot in 0..users.len() {
            let partition = partition_of[slot];
            let (Ok(state), Some(rule_state)) = (&states[slot], &mut rule_states[slot]) else {
                if slot >= batch_users {
                    // Unreadable: its timers cannot fire; keep it out of the index.
                    due.push((partition, users[slot].to_owned(), None));
                }
                continue;
            };
            if let Some(horizon) = clocks.horizon(partition, slack_ms) {
                let last_scores = rule_state.last_scores.clone();
                let fired_now = rules.on_time(rule_state, horizon);
                if !fired_now.is_empty() {
                    dirty[slot] = true;
                }
                group += 1;
                for candidate in fired_now {
                    fired.push(Fired {
                        user_id: users[slot].to_owned(),
                        candidate,
                        tier: state.published.tier.unwrap_or(0),
                        scores: last_scores.clone().unwrap_or_else(unknown_scores),
                        group,
                    });
                }
            }
            // The index follows the state: written with every state write of a user who has
            // or had a timer, and for every user loaded for one.
            let next = rule_state.next_due();
            let touched = dirty[slot] || replayed[slot];
            if slot >= batch_users || (touched && (next.is_some() || due_before[slot].is_some())) {
                due.push((
                    partition,
                    users[slot].to_owned(),
                    next.map(EventTime::unix_millis),
                ));
            }
        }
    }

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
                if let (Some(rules), Some(mut rule_state)) = (rules, rule_state) {
                    campaigns::prune_exposures(rules, &mut rule_state, &state);
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
        due,
        purchases,
        rows,
        scores: scored,
    })
}

/// Scores for a timer of a rule state written before rule states remembered the last
/// scores (an upgrade): none known, so none claimed.
fn unknown_scores() -> tierflow_events::Scores {
    tierflow_events::Scores {
        tier_probabilities: Vec::new(),
        churn_risk: 0.0,
        expected_value: 0.0,
    }
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
