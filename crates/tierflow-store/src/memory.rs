//! An in-memory [`StateStore`] for the embedded demo and unit tests. It stores the encoded
//! bytes, so the codec runs exactly as it does against Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{BatchWrites, HISTORY_LEN, StateStore, StoreError, StoredClock};

/// State in a map. No TTL: the demo's users never go quiet long enough to matter.
#[derive(Debug, Default)]
pub struct MemoryStore {
    states: Mutex<HashMap<String, Vec<u8>>>,
    scores: Mutex<HashMap<String, Vec<u8>>>,
    /// (index, partition) -> user -> next deadline.
    due: Mutex<HashMap<(String, i32), HashMap<String, i64>>>,
    clocks: Mutex<HashMap<(String, i32), StoredClock>>,
    /// User -> history entries, newest first.
    history: Mutex<HashMap<String, VecDeque<Vec<u8>>>>,
    /// Lease name -> (owner, expiry).
    leases: Mutex<HashMap<String, (String, Instant)>>,
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
        timers: &BatchWrites<'_>,
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
        let mut due = self.due.lock().expect("memory store lock");
        for (partition, user, at) in &timers.due {
            let index = due
                .entry((timers.index.to_owned(), *partition))
                .or_default();
            match at {
                Some(at) => index.insert((*user).to_owned(), *at),
                None => index.remove(*user),
            };
        }
        let mut clocks = self.clocks.lock().expect("memory store lock");
        for (partition, clock) in &timers.clocks {
            clocks.insert((timers.index.to_owned(), *partition), *clock);
        }
        let mut history = self.history.lock().expect("memory store lock");
        for (user, entry) in &timers.history {
            let entries = history.entry((*user).to_owned()).or_default();
            entries.push_front(entry.to_vec());
            entries.truncate(HISTORY_LEN);
        }
        Ok(())
    }

    async fn history(&self, user: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let history = self.history.lock().expect("memory store lock");
        Ok(history
            .get(user)
            .map(|entries| entries.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn due_users(
        &self,
        index: &str,
        up_to: &[(i32, i64)],
        limit: usize,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let due = self.due.lock().expect("memory store lock");
        Ok(up_to
            .iter()
            .map(|(partition, up_to)| {
                let mut users: Vec<(i64, &String)> = due
                    .get(&(index.to_owned(), *partition))
                    .into_iter()
                    .flatten()
                    .filter(|(_, at)| **at <= *up_to)
                    .map(|(user, at)| (*at, user))
                    .collect();
                users.sort();
                users
                    .into_iter()
                    .take(limit)
                    .map(|(_, user)| user.clone())
                    .collect()
            })
            .collect())
    }

    async fn clocks(
        &self,
        index: &str,
        partitions: &[i32],
    ) -> Result<Vec<Option<StoredClock>>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let clocks = self.clocks.lock().expect("memory store lock");
        Ok(partitions
            .iter()
            .map(|p| clocks.get(&(index.to_owned(), *p)).copied())
            .collect())
    }

    async fn latest_scores(&self, users: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let latest = self.scores.lock().expect("memory store lock");
        Ok(users.iter().map(|u| latest.get(*u).cloned()).collect())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn claim_leases(
        &self,
        owner: &str,
        names: &[String],
        ttl: Duration,
        force: bool,
    ) -> Result<Vec<Option<String>>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut leases = self.leases.lock().expect("memory store lock");
        Ok(names
            .iter()
            .map(|name| match leases.get(name) {
                Some((holder, expiry)) if holder != owner && *expiry > now && !force => {
                    Some(holder.clone())
                }
                _ => {
                    leases.insert(name.clone(), (owner.to_owned(), now + ttl));
                    None
                }
            })
            .collect())
    }

    async fn release_leases(&self, owner: &str, names: &[String]) -> Result<(), StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut leases = self.leases.lock().expect("memory store lock");
        for name in names {
            if leases.get(name).is_some_and(|(holder, _)| holder == owner) {
                leases.remove(name);
            }
        }
        Ok(())
    }
}
