//! Where users' state lives between events: Redis (one node or a Cluster) in production, an
//! in-memory map for the embedded demo and unit tests, both behind [`StateStore`]. A batch of
//! events for many users costs one round trip to load and one to store, never one per event.

mod apply;
mod config;
pub mod governance;
mod memory;
mod redis_store;

pub use apply::{BatchOutcome, EventOutcome, SourceEvent, apply_batch};
pub use config::{RedisConfig, default_ttl};
pub use governance::{GovernCandidate, GovernRequest, GovernVerdict, Governor};
pub use memory::MemoryStore;
pub use redis_store::{Forgotten, RedisStore};

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

/// A shared store is a store: several pipeline members in one process (the demo) share one
/// in-memory store this way.
impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
    fn load_raw(
        &self,
        users: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send {
        (**self).load_raw(users)
    }

    fn store_raw(
        &self,
        states: &[(&str, &[u8])],
        scores: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).store_raw(states, scores)
    }

    fn latest_scores(
        &self,
        users: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send {
        (**self).latest_scores(users)
    }

    fn round_trips(&self) -> u64 {
        (**self).round_trips()
    }
}

/// A stored state with its undo image, as the transactional pipeline reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub state: UserState,
    /// `Some` when the value was written with an undo image: the state before that write
    /// (`Some(None)`: the user had none).
    pub undo: Option<Option<UserState>>,
}

/// Per-user state storage with batched operations. Implementations move encoded bytes; the
/// provided methods encode and decode.
pub trait StateStore: Send + Sync {
    /// The stored values of `users`, in order, in one round trip.
    fn load_raw(
        &self,
        users: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send;

    /// Stores every `(user, encoded state)` pair and, beside them, each `(user, record)`
    /// latest-score record, all in one round trip, with the configured TTL.
    fn store_raw(
        &self,
        states: &[(&str, &[u8])],
        scores: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest-score records of `users`, in order, in one round trip.
    fn latest_scores(
        &self,
        users: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send;

    /// Round trips made so far (for metrics and for tests that hold the batching promise).
    fn round_trips(&self) -> u64;

    /// Loads the states of `users`, in order, in one round trip.
    fn load(&self, users: &[&str]) -> impl Future<Output = Result<Vec<Loaded>, StoreError>> + Send {
        async move {
            Ok(self
                .load_raw(users)
                .await?
                .into_iter()
                .map(|value| {
                    value
                        .map(|bytes| tierflow_features::decode_state(&bytes))
                        .transpose()
                })
                .collect())
        }
    }

    /// Loads the states of `users` with their undo images, in one round trip.
    #[allow(clippy::type_complexity)]
    fn load_with_undo(
        &self,
        users: &[&str],
    ) -> impl Future<Output = Result<Vec<Result<Option<Versioned>, StateDecodeError>>, StoreError>> + Send
    {
        async move {
            Ok(self
                .load_raw(users)
                .await?
                .into_iter()
                .map(|value| {
                    value
                        .map(|bytes| {
                            tierflow_features::decode_with_undo(&bytes)
                                .map(|(state, undo)| Versioned { state, undo })
                        })
                        .transpose()
                })
                .collect())
        }
    }

    /// Stores every `(user, state)` pair in one round trip, each with the configured TTL.
    fn store(
        &self,
        states: &[(&str, &UserState)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.store_with_scores(states, &[])
    }

    /// Stores states and, beside them, latest-score records (readable with
    /// [`StateStore::latest_scores`] for request-time lookups), in one round trip.
    fn store_with_scores(
        &self,
        states: &[(&str, &UserState)],
        scores: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let encoded: Vec<(&str, Vec<u8>)> = states
            .iter()
            .map(|(user, state)| (*user, tierflow_features::encode_state(state)))
            .collect();
        async move {
            let refs: Vec<(&str, &[u8])> =
                encoded.iter().map(|(u, b)| (*u, b.as_slice())).collect();
            self.store_raw(&refs, scores).await
        }
    }
}
