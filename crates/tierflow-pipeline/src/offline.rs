//! The offline reference: the same records replayed one at a time, in memory, each update
//! scored on its own. It shares the window code and the tier policy with the pipeline but none
//! of its batching, storage, Kafka or output code, so the pipeline is checked against it (the
//! end-to-end and crash tests) and operators can predict what a stream will produce.

use std::collections::{BTreeMap, HashMap};

use tierflow_events::{ClickEvent, ErrorClass, Tier};
use tierflow_features::{Applied, UserState, features};
use tierflow_model::{ScoreError, Scorer};

use crate::config::PipelineConfig;
use crate::policy::take_score_slot;
use crate::process::tier_change_key;

/// One source record as it sits in the topic.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub partition: i32,
    pub offset: i64,
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
}

/// Replays `records` (any interleaving of partitions; each partition in offset order).
pub fn replay(
    scorer: &Scorer,
    config: &PipelineConfig,
    records: &[SourceRecord],
) -> Result<Expected, ScoreError> {
    let mut expected = Expected::default();
    for record in records {
        let event = match ClickEvent::from_json(&record.payload) {
            Ok(event) => event,
            Err(_) => {
                expected
                    .dead_letters
                    .insert((record.partition, record.offset), ErrorClass::Decode);
                continue;
            }
        };
        let state = expected.states.entry(event.user_id.clone()).or_default();
        if state.already_applied(record.partition, record.offset) {
            continue;
        }
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
                let decision = config.policy.decide(
                    &mut state.published,
                    scores.probabilities(0),
                    as_of.unix_millis(),
                );
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
    }
    Ok(expected)
}
