//! An in-memory [`StateStore`] for the embedded demo and unit tests. It stores the encoded
//! bytes, so the codec runs exactly as it does against Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tierflow_features::{UserState, decode_state, encode_state};

use crate::{Loaded, StateStore, StoreError};

/// State in a map. No TTL: the demo's users never go quiet long enough to matter.
#[derive(Debug, Default)]
pub struct MemoryStore {
    states: Mutex<HashMap<String, Vec<u8>>>,
    scores: Mutex<HashMap<String, Vec<u8>>>,
    round_trips: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.states.lock().expect("memory store lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encoded size of every stored state, for reports.
    pub fn sizes(&self) -> Vec<usize> {
        self.states
            .lock()
            .expect("memory store lock")
            .values()
            .map(Vec::len)
            .collect()
    }
}

impl StateStore for MemoryStore {
    async fn load(&self, users: &[&str]) -> Result<Vec<Loaded>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let states = self.states.lock().expect("memory store lock");
        Ok(users
            .iter()
            .map(|user| states.get(*user).map(|b| decode_state(b)).transpose())
            .collect())
    }

    async fn store_with_scores(
        &self,
        batch: &[(&str, &UserState)],
        scores: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut states = self.states.lock().expect("memory store lock");
        for (user, state) in batch {
            states.insert((*user).to_owned(), encode_state(state));
        }
        let mut latest = self.scores.lock().expect("memory store lock");
        for (user, record) in scores {
            latest.insert((*user).to_owned(), record.to_vec());
        }
        Ok(())
    }

    async fn latest_scores(&self, users: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let latest = self.scores.lock().expect("memory store lock");
        Ok(users.iter().map(|u| latest.get(*u).cloned()).collect())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
