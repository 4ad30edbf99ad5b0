//! An in-memory [`StateStore`] for the embedded demo and unit tests. It stores the encoded
//! bytes, so the codec runs exactly as it does against Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{StateStore, StoreError};

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
    async fn load_raw(&self, users: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let states = self.states.lock().expect("memory store lock");
        Ok(users
            .iter()
            .map(|user| states.get(*user).cloned())
            .collect())
    }

    async fn store_raw(
        &self,
        batch: &[(&str, &[u8])],
        scores: &[(&str, &[u8])],
    ) -> Result<(), StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut states = self.states.lock().expect("memory store lock");
        for (user, bytes) in batch {
            states.insert((*user).to_owned(), bytes.to_vec());
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
