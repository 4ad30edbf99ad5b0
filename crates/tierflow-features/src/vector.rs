//! From a user's state to the feature vector, evaluated at a given time. Online scoring and
//! the offline dataset builder both call `write_features`, so the numbers are identical.

use tierflow_events::{EventTime, EventType};

use crate::spec::{CART_EXPIRY_MS, FEATURE_COUNT, HORIZONS, LEVELS, MAX_DAYS, PER_WINDOW};
use crate::state::{Bucket, UserState};

const DAY_MS: f64 = EventTime::MILLIS_PER_DAY as f64;
const MINUTE_MS: f64 = EventTime::MILLIS_PER_MINUTE as f64;

/// Sums of one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowTotals {
    pub counts: [u64; EventType::ALL.len()],
    pub revenue_cents: i64,
    pub refund_cents: i64,
    pub sessions: u64,
    pub categories: u32,
}

impl WindowTotals {
    pub fn count(&self, event_type: EventType) -> u64 {
        self.counts[event_type.index()]
    }

    /// Estimated distinct categories (linear counting over a 32-bit sketch; exact enough
    /// for the handful of categories one user browses, saturating near 32 ln 32 ≈ 111).
    pub fn distinct_categories(&self) -> f32 {
        let zeros = self.categories.count_zeros();
        if zeros == 0 {
            return 32.0 * 32f32.ln();
        }
        -32.0 * (zeros as f32 / 32.0).ln()
    }
}

/// Totals of horizon `horizon` (index into `HORIZONS`) as of `as_of`.
pub fn window_totals(state: &UserState, horizon: usize, as_of: EventTime) -> WindowTotals {
    let horizon = HORIZONS[horizon];
    let level = LEVELS[horizon.level];
    let newest = level.bucket_of(as_of);
    let oldest = newest - horizon.buckets + 1;
    let mut totals = WindowTotals::default();
    for bucket in state.levels[horizon.level]
        .iter()
        .filter(|b| (oldest..=newest).contains(&b.index))
    {
        add(&mut totals, bucket);
    }
    totals
}

fn add(totals: &mut WindowTotals, bucket: &Bucket) {
    for (total, count) in totals.counts.iter_mut().zip(bucket.counts) {
        *total += u64::from(count);
    }
    totals.revenue_cents = totals.revenue_cents.saturating_add(bucket.revenue_cents);
    totals.refund_cents = totals.refund_cents.saturating_add(bucket.refund_cents);
    totals.sessions += u64::from(bucket.sessions);
    totals.categories |= bucket.categories;
}

/// The feature vector of `state` at `as_of`, in `FeatureSpec::current()` order.
pub fn features(state: &UserState, as_of: EventTime) -> Vec<f32> {
    let mut out = vec![0.0; FEATURE_COUNT];
    write_features(state, as_of, &mut out);
    out
}

/// Writes the feature vector into `out` (length `FEATURE_COUNT`), without allocating.
///
/// `as_of` should not be before the user's newest event; buckets after `as_of` are ignored.
pub fn write_features(state: &UserState, as_of: EventTime, out: &mut [f32]) {
    assert_eq!(out.len(), FEATURE_COUNT, "feature buffer length");
    let mut totals_90d = WindowTotals::default();
    for (h, chunk) in out
        .chunks_exact_mut(PER_WINDOW)
        .take(HORIZONS.len())
        .enumerate()
    {
        let totals = window_totals(state, h, as_of);
        let n = EventType::ALL.len();
        for (slot, count) in chunk[..n].iter_mut().zip(totals.counts) {
            *slot = count as f32;
        }
        chunk[n] = cents(totals.revenue_cents);
        chunk[n + 1] = cents(totals.refund_cents);
        chunk[n + 2] = totals.sessions as f32;
        chunk[n + 3] = totals.distinct_categories();
        if h == HORIZONS.len() - 1 {
            totals_90d = totals;
        }
    }

    let now = as_of.unix_millis();
    let scalars = &mut out[HORIZONS.len() * PER_WINDOW..];
    let cart_open = now.saturating_sub(state.cart_updated_ms) <= CART_EXPIRY_MS;
    scalars[0] = if cart_open {
        cents(state.open_cart_cents)
    } else {
        0.0
    };

    let current = state.sessions.iter().max_by_key(|s| (s.last_ms, s.hash));
    scalars[1] = current.map_or(0.0, |s| minutes(s.last_ms - s.first_ms));
    scalars[2] = if state.sessions.is_empty() {
        0.0
    } else {
        let total: i64 = state.sessions.iter().map(|s| s.last_ms - s.first_ms).sum();
        minutes(total) / state.sessions.len() as f32
    };
    scalars[3] = state
        .newest_ms
        .map_or(MAX_DAYS, |t| days(now.saturating_sub(t)));
    let last_purchase = state.purchases_ms.last().copied();
    let since_purchase = last_purchase.map_or(MAX_DAYS, |t| days(now.saturating_sub(t)));
    scalars[4] = since_purchase;
    scalars[5] = if last_purchase.is_some() { 1.0 } else { 0.0 };
    scalars[6] = state
        .newest_ms
        .map_or(0.0, |_| days(now.saturating_sub(state.first_seen_ms)));
    let (gap_mean, gap_std) = gap_stats(&state.purchases_ms);
    scalars[7] = gap_mean;
    scalars[8] = gap_std;
    scalars[9] = since_purchase;
    scalars[10] = totals_90d.count(EventType::Purchase) as f32;
    scalars[11] = cents(
        totals_90d
            .revenue_cents
            .saturating_sub(totals_90d.refund_cents),
    );
    scalars[12] = state.lifetime.orders as f32;
    scalars[13] = state.lifetime.purchase_days as f32;
    scalars[14] = cents(state.lifetime.net_spend_cents);
    // Uncapped (unlike the other "days since"): a long history is the point of it.
    scalars[15] = state.lifetime.first_purchase_ms.map_or(0.0, |t| {
        (now.saturating_sub(t).max(0) as f64 / DAY_MS) as f32
    });
}

fn cents(value: i64) -> f32 {
    (value as f64 / 100.0) as f32
}

fn days(ms: i64) -> f32 {
    ((ms.max(0) as f64) / DAY_MS).min(f64::from(MAX_DAYS)) as f32
}

fn minutes(ms: i64) -> f32 {
    (ms.max(0) as f64 / MINUTE_MS) as f32
}

/// Mean and standard deviation of the gaps between remembered purchases, in days. Two passes
/// over the (at most 16) times; no allocation.
fn gap_stats(purchases: &[i64]) -> (f32, f32) {
    if purchases.len() < 2 {
        return (0.0, 0.0);
    }
    let gaps = || {
        purchases
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as f64 / DAY_MS)
    };
    let n = (purchases.len() - 1) as f64;
    let mean = gaps().sum::<f64>() / n;
    let variance = gaps().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, variance.sqrt() as f32)
}
