//! Applying a batch of events to users' state: one load and one store for the whole batch,
//! skipping records already applied (replays after a crash) by their source offset.

use std::collections::HashMap;

use tierflow_events::{ClickEvent, EventTime};
use tierflow_features::{Applied, UserState};

use crate::{StateStore, StoreError};

/// An event with its source position.
#[derive(Debug, Clone, Copy)]
pub struct SourceEvent<'a> {
    pub partition: i32,
    pub offset: i64,
    pub event: &'a ClickEvent,
}

/// What happened to one event of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    Applied,
    Duplicate,
    TooLate {
        newest: EventTime,
    },
    /// This offset was applied before (a replay): skipped.
    Replayed,
    /// The user's stored state cannot be read: nothing applied, the state left untouched for
    /// an operator (poison for this user's events).
    CorruptState(String),
}

/// The result of a batch: an outcome per event (same order) and the new state of every user
/// whose state changed, in order of first appearance.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    pub outcomes: Vec<EventOutcome>,
    pub updated: Vec<(String, UserState)>,
}

/// Loads the batch's users, applies the events in order, stores the changed states.
/// Nothing is stored if loading fails; on a store failure nothing is acknowledged and the
/// whole batch can be replayed safely.
pub async fn apply_batch<S: StateStore>(
    store: &S,
    events: &[SourceEvent<'_>],
) -> Result<BatchOutcome, StoreError> {
    let mut slot_of: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    let mut users: Vec<&str> = Vec::new();
    for e in events {
        slot_of.entry(e.event.user_id.as_str()).or_insert_with(|| {
            users.push(e.event.user_id.as_str());
            users.len() - 1
        });
    }
    let loaded = store.load(&users).await?;
    let mut states: Vec<Result<UserState, String>> = loaded
        .into_iter()
        .map(|l| l.map(Option::unwrap_or_default).map_err(|e| e.to_string()))
        .collect();
    let mut dirty = vec![false; users.len()];
    let mut outcomes = Vec::with_capacity(events.len());
    for e in events {
        let slot = slot_of[e.event.user_id.as_str()];
        let outcome = match &mut states[slot] {
            Err(reason) => EventOutcome::CorruptState(reason.clone()),
            Ok(state) if state.already_applied(e.partition, e.offset) => EventOutcome::Replayed,
            Ok(state) => {
                let outcome = match state.apply(e.event) {
                    Applied::Updated => EventOutcome::Applied,
                    Applied::Duplicate => EventOutcome::Duplicate,
                    Applied::TooLate { newest } => EventOutcome::TooLate { newest },
                };
                state.mark_applied(e.partition, e.offset);
                dirty[slot] = true;
                outcome
            }
        };
        outcomes.push(outcome);
    }
    let updated: Vec<(String, UserState)> = users
        .iter()
        .zip(states)
        .zip(&dirty)
        .filter_map(|((user, state), dirty)| match state {
            Ok(state) if *dirty => Some(((*user).to_owned(), state)),
            _ => None,
        })
        .collect();
    let to_store: Vec<(&str, &UserState)> = updated.iter().map(|(u, s)| (u.as_str(), s)).collect();
    store.store(&to_store).await?;
    Ok(BatchOutcome { outcomes, updated })
}
