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
use std::time::Duration;

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
        timers: &BatchWrites<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).store_raw(states, scores, timers)
    }

    fn due_users(
        &self,
        index: &str,
        up_to: &[(i32, i64)],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Vec<String>>, StoreError>> + Send {
        (**self).due_users(index, up_to, limit)
    }

    fn clocks(
        &self,
        index: &str,
        partitions: &[i32],
    ) -> impl Future<Output = Result<Vec<Option<StoredClock>>, StoreError>> + Send {
        (**self).clocks(index, partitions)
    }

    fn latest_scores(
        &self,
        users: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send {
        (**self).latest_scores(users)
    }

    fn history(&self, user: &str) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send {
        (**self).history(user)
    }

    fn round_trips(&self) -> u64 {
        (**self).round_trips()
    }

    fn claim_leases(
        &self,
        owner: &str,
        names: &[String],
        ttl: Duration,
        force: bool,
    ) -> impl Future<Output = Result<Vec<Option<String>>, StoreError>> + Send {
        (**self).claim_leases(owner, names, ttl, force)
    }

    fn release_leases(
        &self,
        owner: &str,
        names: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).release_leases(owner, names)
    }
}

/// What a batch writes beside its states, in the same round trip.
///
/// For campaign timers: each partition's index of users by next timer deadline
/// (`{prefix}:due:{index}:{partition}`, a sorted set) and each partition's event-time clock
/// (`{prefix}:clock:{index}:{partition}`), so a new owner of the partition (after a restart
/// or rebalance) fires the timers of users who send nothing more, at the time the stream had
/// reached.
///
/// For people: each user's recent decisions (`{prefix}:h:{user}`, a list, newest first, at
/// most [`HISTORY_LEN`], with the state's TTL), what `tierflow inspect` and the live view
/// show as tier history and triggers.
#[derive(Debug, Clone, Default)]
pub struct BatchWrites<'a> {
    /// Names the indexes (the input topic).
    pub index: &'a str,
    /// `(partition, user, next deadline in ms)`; `None` removes the user from the index.
    pub due: Vec<(i32, &'a str, Option<i64>)>,
    /// Each partition's clock as of this batch.
    pub clocks: Vec<(i32, StoredClock)>,
    /// `(user, entry)` appended to the user's history, oldest first. A batch replayed after
    /// a crash may append an entry again: readers dedupe (entries carry idempotency keys).
    pub history: Vec<(&'a str, &'a [u8])>,
}

/// Entries a user's history keeps (the newest).
pub const HISTORY_LEN: usize = 32;

/// A partition's event-time clock as stored with a batch: before and after the batch, so a
/// new owner that re-reads the batch (stored but not committed when its owner died) starts
/// from the clock its first record saw, exactly as the offline reference does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredClock {
    /// Newest event time read before the batch's first record of the partition.
    pub before_ms: i64,
    /// Offset of that first record.
    pub first_offset: i64,
    /// Newest event time read after the batch.
    pub after_ms: i64,
    /// The offset after the batch's last record of the partition.
    pub next_offset: i64,
}

impl StoredClock {
    /// The clock a reader starting at `offset` begins with.
    pub fn at(&self, offset: i64) -> i64 {
        if offset < self.next_offset {
            self.before_ms
        } else {
            self.after_ms
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.before_ms, self.first_offset, self.after_ms, self.next_offset
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(':').map(str::parse::<i64>);
        let clock = Self {
            before_ms: parts.next()?.ok()?,
            first_offset: parts.next()?.ok()?,
            after_ms: parts.next()?.ok()?,
            next_offset: parts.next()?.ok()?,
        };
        parts.next().is_none().then_some(clock)
    }
}

impl BatchWrites<'_> {
    pub fn is_empty(&self) -> bool {
        self.due.is_empty() && self.clocks.is_empty() && self.history.is_empty()
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
    /// latest-score record (both with the configured TTL) and the timer writes, all in one
    /// round trip.
    fn store_raw(
        &self,
        states: &[(&str, &[u8])],
        scores: &[(&str, &[u8])],
        timers: &BatchWrites<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// For each `(partition, up_to)`: users of that partition's timer index due at or
    /// before `up_to` (ms), earliest first, at most `limit`; one round trip for all.
    fn due_users(
        &self,
        index: &str,
        up_to: &[(i32, i64)],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Vec<String>>, StoreError>> + Send;

    /// The stored event-time clocks of `partitions`, in order, in one round trip (an
    /// unreadable one counts as absent).
    fn clocks(
        &self,
        index: &str,
        partitions: &[i32],
    ) -> impl Future<Output = Result<Vec<Option<StoredClock>>, StoreError>> + Send;

    /// The latest-score records of `users`, in order, in one round trip.
    fn latest_scores(
        &self,
        users: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StoreError>> + Send;

    /// A user's history entries (see [`BatchWrites::history`]), newest first.
    fn history(&self, user: &str) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// Round trips made so far (for metrics and for tests that hold the batching promise).
    fn round_trips(&self) -> u64;

    /// Takes or renews the leases `names` for `owner`, each for `ttl`, in one round trip. A
    /// lease that is free, expired or already `owner`'s becomes `owner`'s; with `force`,
    /// any lease does (taking it from an owner that stopped handing it over). Returns, per
    /// name, the other owner still holding it (`None`: `owner` holds it now).
    ///
    /// The pipeline leases the partitions it owns, so the next owner of a partition starts
    /// only after the previous one has stored and committed its last batch, even when the
    /// broker hands the partition over before the previous owner has let go of it.
    fn claim_leases(
        &self,
        owner: &str,
        names: &[String],
        ttl: Duration,
        force: bool,
    ) -> impl Future<Output = Result<Vec<Option<String>>, StoreError>> + Send;

    /// Gives up `owner`'s leases `names` in one round trip; leases held by another owner
    /// are left alone, so releasing twice or late is harmless.
    fn release_leases(
        &self,
        owner: &str,
        names: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

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
        async move {
            self.store_batch(states, scores, &BatchWrites::default())
                .await
        }
    }

    /// Stores states, latest-score records and timer writes in one round trip.
    fn store_batch(
        &self,
        states: &[(&str, &UserState)],
        scores: &[(&str, &[u8])],
        timers: &BatchWrites<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let encoded: Vec<(&str, Vec<u8>)> = states
            .iter()
            .map(|(user, state)| (*user, tierflow_features::encode_state(state)))
            .collect();
        async move {
            let refs: Vec<(&str, &[u8])> =
                encoded.iter().map(|(u, b)| (*u, b.as_slice())).collect();
            self.store_raw(&refs, scores, timers).await
        }
    }
}
