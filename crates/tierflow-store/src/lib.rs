//! Where users' state lives between events: Redis (one node or a Cluster) in production, an
//! in-memory map for the embedded demo and unit tests, both behind [`StateStore`]. A batch of
//! events for many users costs one round trip to load and one to store, never one per event.

mod apply;
mod config;
mod memory;
mod redis_store;

pub use apply::{BatchOutcome, EventOutcome, SourceEvent, apply_batch};
pub use config::{RedisConfig, default_ttl};
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

use std::future::Future;

use tierflow_features::UserState;
use tierflow_features::codec::StateDecodeError;

/// A user's stored state as loaded: absent, present, or unreadable (poison for that user).
pub type Loaded = Result<Option<UserState>, StateDecodeError>;

/// Failure of a whole store operation, after retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connection lost, timeout, cluster reconfiguring, Redis loading: try again later.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Authentication, wrong key type, bad configuration: stop.
    #[error("state store refused the operation: {0}")]
    Fatal(String),
}

impl StoreError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Per-user state storage with batched operations.
pub trait StateStore: Send + Sync {
    /// Loads the states of `users`, in order, in one round trip.
    fn load(&self, users: &[&str]) -> impl Future<Output = Result<Vec<Loaded>, StoreError>> + Send;

    /// Stores every `(user, state)` pair in one round trip, each with the configured TTL.
    fn store(
        &self,
        states: &[(&str, &UserState)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.store_with_scores(states, &[])
    }

    /// Stores every `(user, state)` pair and, beside them, each `(user, record)` latest-score
    /// record (readable with [`StateStore::latest_scores`] for request-time lookups), all in
    /// one round trip, with the configured TTL.
    fn store_with_scores(
        &self,
        states: &[(&str, &UserState)],
        scores: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest-score records of `users`, in order, in one round trip.
    fn latest_scores(
        &self,
        users: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send;

    /// Round trips made so far (for metrics and for tests that hold the batching promise).
    fn round_trips(&self) -> u64;
}
