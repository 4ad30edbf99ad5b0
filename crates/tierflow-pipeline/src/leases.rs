//! Partition leases in the state store: a member starts reading a partition only after its
//! previous owner has stored and committed everything it read from it.
//!
//! The group protocol promises that, but not every broker keeps the promise: tansu 0.6.0
//! completes a rebalance for the members that rejoined first, so a partition can have two
//! owners for a moment (seen: ~80 ms after a member left, which replayed 22 records), and on
//! any broker a member that was thrown out of the group (a long pause) may still be storing.
//! Two owners of one partition could race their state writes and lose an update.
//!
//! So each member holds a lease per partition in the store (`{prefix}:lease:{topic}:{p}`),
//! renewed every third of its TTL:
//! - **assigned**: before the consumer fetches the committed offsets, the member waits until
//!   the previous owner released the lease (it does after its last commit) or it expired;
//!   after the longest time a live owner could take to let go, it takes the lease anyway;
//! - **revoked**: after the drain and the final commit, the member releases the lease;
//! - **every batch**: before its outputs and before its store, the durable stage checks that
//!   it still holds the leases of the batch's partitions (a local check while the last
//!   renewal is fresh); a lease another member took is fatal: stop, commit nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tierflow_store::StoreError;

use crate::telemetry;

pub(crate) type Claimed<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Option<String>>, StoreError>> + Send + 'a>>;
pub(crate) type Released<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// The two lease operations of a [`StateStore`], object-safe for the consumer's context.
pub(crate) trait LeaseStore: Send + Sync {
    fn claim<'a>(
        &'a self,
        owner: &'a str,
        names: &'a [String],
        ttl: Duration,
        force: bool,
    ) -> Claimed<'a>;
    fn release<'a>(&'a self, owner: &'a str, names: &'a [String]) -> Released<'a>;
}

/// A lease another member holds: the partition is no longer ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseLost {
    pub(crate) partition: i32,
    pub(crate) holder: String,
}

#[derive(Debug, Default)]
struct Held {
    /// Partitions this member owns, with when its lease on each runs out.
    until: BTreeMap<i32, Instant>,
    /// Partitions whose lease another member took while we owned them.
    lost: BTreeMap<i32, String>,
}

/// One member's leases.
pub(crate) struct Leases {
    store: Box<dyn LeaseStore>,
    owner: String,
    topic: String,
    ttl: Duration,
    /// The longest a live previous owner may take to let go (drain + commit), after which
    /// a new owner takes the lease anyway.
    handover_timeout: Duration,
    held: Mutex<Held>,
    /// A stop request ends a wait for a handover (the member is leaving anyway).
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Leases {
    pub(crate) fn new(
        store: Box<dyn LeaseStore>,
        group: &str,
        topic: &str,
        ttl: Duration,
        handover_timeout: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            owner: member_id(group),
            topic: topic.to_owned(),
            ttl,
            handover_timeout,
            held: Mutex::default(),
            shutdown,
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn name(&self, partition: i32) -> String {
        format!("{}:{partition}", self.topic)
    }

    /// How often the renewal task runs.
    pub(crate) fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(10))
    }

    /// Takes the leases of newly assigned `partitions`, waiting while a previous owner still
    /// holds them (it releases them after its final commit), at most `handover_timeout`;
    /// then takes them anyway. Store outages are waited out the same way.
    pub(crate) async fn acquire(&self, partitions: &[i32]) {
        let started = Instant::now();
        let mut waiting: Vec<i32> = partitions.to_vec();
        let mut logged = false;
        loop {
            let force = started.elapsed() >= self.handover_timeout;
            let names: Vec<String> = waiting.iter().map(|p| self.name(*p)).collect();
            let claimed_at = Instant::now();
            match self.store.claim(&self.owner, &names, self.ttl, force).await {
                Ok(holders) => {
                    let mut held = self.held();
                    let mut still = Vec::new();
                    for (partition, holder) in waiting.iter().zip(holders) {
                        match holder {
                            None => {
                                held.lost.remove(partition);
                                held.until.insert(*partition, claimed_at + self.ttl);
                            }
                            Some(holder) => still.push((*partition, holder)),
                        }
                    }
                    drop(held);
                    if force && !waiting.is_empty() {
                        metrics::counter!(telemetry::LEASE_TAKEOVERS)
                            .increment(waiting.len() as u64);
                        tracing::error!(
                            partitions = ?waiting,
                            waited = ?started.elapsed(),
                            "the previous owner never released these partitions; took them over (its next batch will find the lease gone and stop)"
                        );
                    }
                    if still.is_empty() {
                        if logged {
                            tracing::info!(waited = ?started.elapsed(), "previous owners handed the partitions over");
                        }
                        return;
                    }
                    if !logged {
                        tracing::info!(
                            held_by = ?still,
                            "waiting for the previous owners to store, commit and release these partitions"
                        );
                        logged = true;
                    }
                    waiting = still.into_iter().map(|(p, _)| p).collect();
                }
                Err(e) if force => {
                    tracing::error!(error = %e, partitions = ?waiting, "cannot take the partitions' leases; going on without them");
                    return;
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, "cannot reach the state store to take the partitions' leases; retrying");
                        logged = true;
                    }
                }
            }
            if *self.shutdown.borrow() {
                tracing::info!(partitions = ?waiting, "asked to stop while waiting for a handover");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Gives up the leases of revoked `partitions`. With `handed_over` false (the batches
    /// in flight were not durable in time) the leases are not released but left to expire,
    /// so the next owner waits for the batch still on its way.
    pub(crate) async fn release(&self, partitions: &[i32], handed_over: bool) {
        {
            let mut held = self.held();
            for p in partitions {
                held.until.remove(p);
                held.lost.remove(p);
            }
        }
        if !handed_over {
            return;
        }
        let names: Vec<String> = partitions.iter().map(|p| self.name(*p)).collect();
        if let Err(e) = self.store.release(&self.owner, &names).await {
            tracing::warn!(error = %e, ?partitions, "cannot release the partitions' leases; they expire by themselves");
        }
    }

    /// Renews every held lease; one another member took is recorded as lost.
    pub(crate) async fn renew(&self) -> Result<(), StoreError> {
        let partitions: Vec<i32> = self.held().until.keys().copied().collect();
        if partitions.is_empty() {
            return Ok(());
        }
        self.claim_held(&partitions).await.map(|_| ())
    }

    /// Claims `partitions` (no force) and records the result for those still owned.
    async fn claim_held(&self, partitions: &[i32]) -> Result<Vec<Option<String>>, StoreError> {
        let names: Vec<String> = partitions.iter().map(|p| self.name(*p)).collect();
        let claimed_at = Instant::now();
        let holders = self
            .store
            .claim(&self.owner, &names, self.ttl, false)
            .await?;
        let mut held = self.held();
        for (partition, holder) in partitions.iter().zip(&holders) {
            match holder {
                None => {
                    if let Some(until) = held.until.get_mut(partition) {
                        *until = claimed_at + self.ttl;
                    }
                }
                Some(holder) => {
                    if held.until.remove(partition).is_some() {
                        tracing::error!(partition, %holder, "another member took this partition's lease");
                        held.lost.insert(*partition, holder.clone());
                    }
                }
            }
        }
        Ok(holders)
    }

    /// Before a batch's outputs and store: every partition in it must still be ours. A
    /// fresh lease passes without a round trip; an old one is renewed first.
    pub(crate) async fn ensure(
        &self,
        partitions: impl Iterator<Item = i32>,
    ) -> Result<Result<(), LeaseLost>, StoreError> {
        let fresh_until = Instant::now() + self.ttl / 3;
        let mut stale = BTreeSet::new();
        {
            let held = self.held();
            for partition in partitions {
                if let Some(holder) = held.lost.get(&partition) {
                    return Ok(Err(LeaseLost {
                        partition,
                        holder: holder.clone(),
                    }));
                }
                if held.until.get(&partition).is_none_or(|u| *u < fresh_until) {
                    stale.insert(partition);
                }
            }
        }
        if stale.is_empty() {
            return Ok(Ok(()));
        }
        let stale: Vec<i32> = stale.into_iter().collect();
        let holders = self.claim_held(&stale).await?;
        for (partition, holder) in stale.into_iter().zip(holders) {
            if let Some(holder) = holder {
                return Ok(Err(LeaseLost { partition, holder }));
            }
        }
        Ok(Ok(()))
    }

    /// Renews the leases until `stop` is dropped or turns true.
    pub(crate) async fn keep_renewed(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut every = tokio::time::interval(self.renew_every());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged_failure = false;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
            match self.renew().await {
                Ok(()) => logged_failure = false,
                Err(e) => {
                    if !logged_failure {
                        tracing::warn!(error = %e, "cannot renew the partitions' leases; batches wait until they are renewed");
                        logged_failure = true;
                    }
                }
            }
        }
    }
}

/// A member id unique across processes and restarts: the group, the process id and the
/// clock at start, hashed with a per-process random key.
fn member_id(group: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(group.as_bytes());
    hasher.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{group}/{}/{:016x}", std::process::id(), hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierflow_store::{MemoryStore, StateStore};

    /// Adapts a shared store (the pipeline holds it) to [`LeaseStore`].
    struct StoreLeases<S>(Arc<S>);

    impl<S: StateStore + 'static> LeaseStore for StoreLeases<S> {
        fn claim<'a>(
            &'a self,
            owner: &'a str,
            names: &'a [String],
            ttl: Duration,
            force: bool,
        ) -> Claimed<'a> {
            Box::pin(self.0.claim_leases(owner, names, ttl, force))
        }

        fn release<'a>(&'a self, owner: &'a str, names: &'a [String]) -> Released<'a> {
            Box::pin(self.0.release_leases(owner, names))
        }
    }

    fn leases(store: &Arc<MemoryStore>, ttl_ms: u64, handover_ms: u64) -> Leases {
        Leases::new(
            Box::new(StoreLeases(Arc::clone(store))),
            "g",
            "t",
            Duration::from_millis(ttl_ms),
            Duration::from_millis(handover_ms),
            tokio::sync::watch::channel(false).1,
        )
    }

    // Paused time: the waiter's polls advance the clock instantly, so "still waiting after
    // 200 ms" is many refused claims, not a wall-clock guess. (The memory store's 60 s
    // leases run on the real clock and cannot expire meanwhile.)
    #[tokio::test(start_paused = true)]
    async fn a_new_owner_waits_for_the_release_and_the_old_one_then_fails_its_check() {
        let store = Arc::new(MemoryStore::new());
        let old = Arc::new(leases(&store, 60_000, 60_000));
        let new = Arc::new(leases(&store, 60_000, 60_000));
        old.acquire(&[0, 1]).await;
        assert_eq!(old.ensure([0, 1].into_iter()).await.unwrap(), Ok(()));

        // The new owner of partition 1 waits while the old one still holds it.
        let waiting = tokio::spawn({
            let new = Arc::clone(&new);
            async move { new.acquire(&[1]).await }
        });
        let rounds_before = store.round_trips();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "took a partition still leased");
        assert!(
            store.round_trips() >= rounds_before + 3,
            "the new owner did not keep asking for the lease"
        );
        old.release(&[1], true).await;
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the release did not hand the partition over")
            .unwrap();
        assert_eq!(new.ensure([1].into_iter()).await.unwrap(), Ok(()));
        // The old owner still holds partition 0, and has no claim on 1 any more.
        assert_eq!(old.ensure([0].into_iter()).await.unwrap(), Ok(()));
        let lost = old.ensure([1].into_iter()).await.unwrap().unwrap_err();
        assert_eq!(lost.partition, 1);
        assert_eq!(lost.holder, new.owner);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_owner_that_never_lets_go_is_taken_over_and_learns_it_at_renewal() {
        let store = Arc::new(MemoryStore::new());
        let zombie = leases(&store, 60_000, 60_000);
        let new = leases(&store, 60_000, 300);
        zombie.acquire(&[3]).await;
        let started = Instant::now();
        new.acquire(&[3]).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        zombie.renew().await.unwrap();
        let lost = zombie.ensure([3].into_iter()).await.unwrap().unwrap_err();
        assert_eq!(
            lost,
            LeaseLost {
                partition: 3,
                holder: new.owner.clone()
            }
        );
        assert_eq!(new.ensure([3].into_iter()).await.unwrap(), Ok(()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_lease_of_a_dead_owner_is_taken_without_waiting_for_the_timeout() {
        let store = Arc::new(MemoryStore::new());
        let dead = leases(&store, 100, 60_000);
        dead.acquire(&[2]).await;
        let new = leases(&store, 60_000, 60_000);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), new.acquire(&[2]))
            .await
            .expect("waited past the lease's expiry");
        assert!(started.elapsed() < Duration::from_secs(5));
        // A revocation that was not drained keeps the lease until it expires.
        new.release(&[2], false).await;
        let next = leases(&store, 60_000, 60_000);
        let lost = next.ensure([2].into_iter()).await.unwrap().unwrap_err();
        assert_eq!(lost.holder, new.owner);
    }
}
