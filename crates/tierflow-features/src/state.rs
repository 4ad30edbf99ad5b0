//! One user's rolling state: sparse bucket rings per level plus a few bounded memories.
//! Applying an event is pure; its size is bounded whatever the user does.

use serde::{Deserialize, Serialize};
use tierflow_events::{ClickEvent, EventTime, EventType};

use crate::spec::{
    ALLOWED_LATENESS_MS, DEDUPE_MEMORY, LEVELS, PURCHASE_MEMORY, SESSION_MEMORY, fnv1a,
};

/// Money is kept in integer cents so that sums are exact and independent of arrival order.
pub fn to_cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// Aggregates of the events that fell into one time bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket number at its level: `ts.div_euclid(bucket_ms)`.
    pub index: i64,
    /// Events per type, indexed by `EventType::index`.
    pub counts: [u32; EventType::ALL.len()],
    pub revenue_cents: i64,
    pub refund_cents: i64,
    /// Sessions whose first seen event fell here (approximate under disorder).
    pub sessions: u32,
    /// Linear-counting sketch of categories: bit `hash % 32`.
    pub categories: u32,
}

/// A session recently seen, for distinct counting and lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMark {
    /// Low 32 bits of the session id's hash (a collision only merges two sessions' counts).
    pub hash: u32,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Everything tierflow knows about one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// Newest event time applied (the user's watermark); `None` before the first event.
    pub newest_ms: Option<i64>,
    pub first_seen_ms: i64,
    /// One sparse ring per level in `LEVELS`, sorted by bucket index, at most
    /// `level.buckets` long.
    pub levels: [Vec<Bucket>; LEVELS.len()],
    /// Hashes of the most recent event ids (dedupe), oldest first.
    pub recent_ids: Vec<u64>,
    pub sessions: Vec<SessionMark>,
    /// Most recent purchase times, ascending, unique.
    pub purchases_ms: Vec<i64>,
    pub open_cart_cents: i64,
    pub cart_updated_ms: i64,
    /// Highest source offset applied per partition: replays skip what is already in.
    pub applied: Vec<(i32, i64)>,
    /// Whole-history purchase aggregates (as long as the state lives).
    pub lifetime: Lifetime,
    /// What the pipeline last decided for this user. Kept beside the windows so that a
    /// batch's decisions and its source offsets are stored in one write.
    pub published: Published,
    /// State of the campaign-rules layer (timers, edge memory), encoded by that layer and
    /// opaque here; kept for the same reason as `published`. Empty until rules run.
    pub rules: Vec<u8>,
}

/// The pipeline's decision memory for one user (opaque to the windows): the tier it last
/// published, since when, and when it last published a score. Times are event times, so a
/// replay of the same events reaches the same decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// `None` until the user's first score.
    pub tier: Option<u8>,
    /// Event time at which `tier` was entered.
    pub tier_since_ms: i64,
    /// Event time of the last `user_score` published (throttling).
    pub score_ms: Option<i64>,
}

/// A user's purchase history beyond the windows: what RFM and BG/NBD are built on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifetime {
    pub orders: u32,
    /// Distinct UTC days with a purchase (exact while purchases arrive within the purchase
    /// memory of each other).
    pub purchase_days: u32,
    /// Purchases minus refunds, cents.
    pub net_spend_cents: i64,
    pub first_purchase_ms: Option<i64>,
}

/// What `apply` did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Updated,
    /// Same `event_id` as a recently applied event: ignored.
    Duplicate,
    /// Older than the user's newest event by more than the allowed lateness: ignored; the
    /// caller reports it (dead letter `too_late`).
    TooLate {
        newest: EventTime,
    },
}

impl UserState {
    pub fn newest(&self) -> Option<EventTime> {
        self.newest_ms.map(EventTime::from_unix_millis)
    }

    /// True when the record at `offset` of `partition` was applied before (a replay).
    pub fn already_applied(&self, partition: i32, offset: i64) -> bool {
        self.applied
            .iter()
            .any(|&(p, o)| p == partition && offset <= o)
    }

    /// Records that everything up to `offset` of `partition` is in this state.
    pub fn mark_applied(&mut self, partition: i32, offset: i64) {
        match self.applied.iter_mut().find(|(p, _)| *p == partition) {
            Some(entry) => entry.1 = entry.1.max(offset),
            None => {
                self.applied.push((partition, offset));
                // A user is keyed to one partition; more entries appear only after a
                // repartitioning. Keep the four most recent.
                if self.applied.len() > 4 {
                    self.applied.remove(0);
                }
            }
        }
    }

    /// Folds one event into the state.
    pub fn apply(&mut self, event: &ClickEvent) -> Applied {
        let ts = event.ts.unix_millis();
        if let Some(newest) = self.newest_ms
            && ts < newest.saturating_sub(ALLOWED_LATENESS_MS)
        {
            return Applied::TooLate {
                newest: EventTime::from_unix_millis(newest),
            };
        }
        let id_hash = fnv1a(event.event_id.as_bytes());
        if self.recent_ids.contains(&id_hash) {
            return Applied::Duplicate;
        }
        push_bounded(&mut self.recent_ids, id_hash, DEDUPE_MEMORY);

        match self.newest_ms {
            None => {
                self.newest_ms = Some(ts);
                self.first_seen_ms = ts;
            }
            Some(newest) => {
                self.newest_ms = Some(newest.max(ts));
                self.first_seen_ms = self.first_seen_ms.min(ts);
            }
        }
        let newest = self.newest_ms.unwrap_or(ts);

        let new_session = self.touch_session(fnv1a(event.session_id.as_bytes()) as u32, ts);
        let (revenue, refund) = match event.event_type {
            EventType::Purchase => (to_cents(event.revenue.unwrap_or(0.0)), 0),
            EventType::Refund => (0, to_cents(event.revenue.unwrap_or(0.0))),
            _ => (0, 0),
        };
        let category_bit = event
            .category
            .as_deref()
            .map_or(0, |c| 1u32 << (fnv1a(c.as_bytes()) % 32));

        for (level, ring) in LEVELS.iter().zip(self.levels.iter_mut()) {
            let newest_bucket = level.bucket_of(EventTime::from_unix_millis(newest));
            let oldest_kept = newest_bucket - level.buckets + 1;
            // Evict what the newest event pushed out of the ring.
            let stale = ring.partition_point(|b| b.index < oldest_kept);
            ring.drain(..stale);
            let index = level.bucket_of(event.ts);
            if index < oldest_kept {
                continue; // too old for this level, not for coarser ones
            }
            let bucket = match ring.binary_search_by_key(&index, |b| b.index) {
                Ok(i) => &mut ring[i],
                Err(i) => {
                    ring.insert(
                        i,
                        Bucket {
                            index,
                            ..Bucket::default()
                        },
                    );
                    &mut ring[i]
                }
            };
            // Saturating: absurd inputs (a price of 1e300) must not overflow or panic.
            let count = &mut bucket.counts[event.event_type.index()];
            *count = count.saturating_add(1);
            bucket.revenue_cents = bucket.revenue_cents.saturating_add(revenue);
            bucket.refund_cents = bucket.refund_cents.saturating_add(refund);
            bucket.sessions = bucket.sessions.saturating_add(u32::from(new_session));
            bucket.categories |= category_bit;
        }

        match event.event_type {
            EventType::Purchase => {
                let day = ts.div_euclid(crate::spec::DAY_MS);
                if !self
                    .purchases_ms
                    .iter()
                    .any(|t| t.div_euclid(crate::spec::DAY_MS) == day)
                {
                    self.lifetime.purchase_days = self.lifetime.purchase_days.saturating_add(1);
                }
                self.lifetime.orders = self.lifetime.orders.saturating_add(1);
                self.lifetime.net_spend_cents =
                    self.lifetime.net_spend_cents.saturating_add(revenue);
                self.lifetime.first_purchase_ms =
                    Some(self.lifetime.first_purchase_ms.map_or(ts, |f| f.min(ts)));
                if let Err(i) = self.purchases_ms.binary_search(&ts) {
                    self.purchases_ms.insert(i, ts);
                    if self.purchases_ms.len() > PURCHASE_MEMORY {
                        self.purchases_ms.remove(0);
                    }
                }
                self.set_cart(0, ts);
            }
            EventType::Refund => {
                self.lifetime.net_spend_cents =
                    self.lifetime.net_spend_cents.saturating_sub(refund);
            }
            EventType::AddToCart => {
                let value = line_value(event);
                self.set_cart(self.open_cart_cents.saturating_add(value), ts);
            }
            EventType::RemoveFromCart => {
                let value = line_value(event);
                self.set_cart(self.open_cart_cents.saturating_sub(value).max(0), ts);
            }
            _ => {}
        }
        Applied::Updated
    }

    /// Returns true when the session was not in memory (a new session).
    fn touch_session(&mut self, hash: u32, ts: i64) -> bool {
        if let Some(mark) = self.sessions.iter_mut().find(|s| s.hash == hash) {
            mark.first_ms = mark.first_ms.min(ts);
            mark.last_ms = mark.last_ms.max(ts);
            return false;
        }
        if self.sessions.len() >= SESSION_MEMORY {
            // Forget the session that ended longest ago.
            if let Some(oldest) = self
                .sessions
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| (s.last_ms, s.hash))
                .map(|(i, _)| i)
            {
                self.sessions.remove(oldest);
            }
        }
        self.sessions.push(SessionMark {
            hash,
            first_ms: ts,
            last_ms: ts,
        });
        true
    }

    /// Cart changes apply in event-time order: an older change arriving late does not
    /// overwrite a newer one.
    fn set_cart(&mut self, cents: i64, ts: i64) {
        if ts >= self.cart_updated_ms {
            self.open_cart_cents = cents;
            self.cart_updated_ms = ts;
        }
    }
}

fn line_value(event: &ClickEvent) -> i64 {
    to_cents(event.price.unwrap_or(0.0) * f64::from(event.quantity.unwrap_or(1)))
}

fn push_bounded(ring: &mut Vec<u64>, value: u64, capacity: usize) {
    if ring.len() >= capacity {
        ring.remove(0);
    }
    ring.push(value);
}
