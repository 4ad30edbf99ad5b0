//! Each user's recent decisions, kept in the state store beside the state (see
//! [`tierflow_store::BatchWrites::history`]) for people: `tierflow inspect user` and the live
//! view's user search show them as tier history and triggers. Not read by the pipeline.
//!
//! Entries are the output records themselves (JSON, whatever the topics' encoding), tagged
//! with the contract: `{"type": "tier_changed", "record": {…}}`. A batch replayed after a
//! crash may append an entry twice; [`decode_all`] keeps the first of each idempotency key.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tierflow_events::{CampaignOutcome, CampaignTriggered, TierChanged};

/// One remembered decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "record", rename_all = "snake_case")]
pub enum HistoryEntry {
    TierChanged(TierChanged),
    /// Sent to the campaign engines.
    CampaignTriggered(CampaignTriggered),
    /// Held out for the campaign's control group.
    CampaignControl(CampaignTriggered),
    /// A purchase attributed to a trigger.
    CampaignOutcome(CampaignOutcome),
}

impl HistoryEntry {
    pub fn idempotency_key(&self) -> &str {
        match self {
            Self::TierChanged(r) => &r.idempotency_key,
            Self::CampaignTriggered(r) | Self::CampaignControl(r) => &r.idempotency_key,
            Self::CampaignOutcome(r) => &r.idempotency_key,
        }
    }

    pub fn user_id(&self) -> &str {
        match self {
            Self::TierChanged(r) => &r.user_id,
            Self::CampaignTriggered(r) | Self::CampaignControl(r) => &r.user_id,
            Self::CampaignOutcome(r) => &r.user_id,
        }
    }

    /// `(user, encoded entry)`, as the store appends it.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let bytes = serde_json::to_vec(self).expect("output records always serialise to JSON");
        (self.user_id().to_owned(), bytes)
    }
}

/// A batch's entries, in the order they happened: tier changes, then the triggers sent and
/// held, then the attributed purchases.
pub fn entries(
    tier_changes: &[TierChanged],
    sent: &[CampaignTriggered],
    held: &[CampaignTriggered],
    outcomes: &[CampaignOutcome],
) -> Vec<(String, Vec<u8>)> {
    tier_changes
        .iter()
        .map(|r| HistoryEntry::TierChanged(r.clone()).encode())
        .chain(
            sent.iter()
                .map(|r| HistoryEntry::CampaignTriggered(r.clone()).encode()),
        )
        .chain(
            held.iter()
                .map(|r| HistoryEntry::CampaignControl(r.clone()).encode()),
        )
        .chain(
            outcomes
                .iter()
                .map(|r| HistoryEntry::CampaignOutcome(r.clone()).encode()),
        )
        .collect()
}

/// Decodes a stored history (newest first), dropping repeats of an idempotency key (a
/// replayed batch) and entries this build cannot read (counted in the second value).
pub fn decode_all(stored: &[Vec<u8>]) -> (Vec<HistoryEntry>, usize) {
    let mut seen = HashSet::new();
    let mut unreadable = 0;
    let mut entries = Vec::new();
    // Oldest first, so the first append of a repeated entry is the one kept.
    for bytes in stored.iter().rev() {
        match serde_json::from_slice::<HistoryEntry>(bytes) {
            Ok(entry) => {
                if seen.insert(entry.idempotency_key().to_owned()) {
                    entries.push(entry);
                }
            }
            Err(_) => unreadable += 1,
        }
    }
    entries.reverse();
    (entries, unreadable)
}
