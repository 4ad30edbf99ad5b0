//! The feature spec: which windows exist, which features a vector holds and in what order,
//! and a stable hash of all of it. Model artifacts record the spec id; a scorer refuses a
//! model built for another spec.

use tierflow_events::{EventTime, EventType};

const MINUTE: i64 = EventTime::MILLIS_PER_MINUTE;
const HOUR: i64 = EventTime::MILLIS_PER_HOUR;
const DAY: i64 = EventTime::MILLIS_PER_DAY;
pub(crate) const DAY_MS: i64 = DAY;

/// A ring of equal, epoch-aligned time buckets. Each event lands in one bucket per level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub name: &'static str,
    pub bucket_ms: i64,
    /// Buckets kept, counting the one holding the user's newest event.
    pub buckets: i64,
}

impl Level {
    pub const fn bucket_of(&self, ts: EventTime) -> i64 {
        ts.unix_millis().div_euclid(self.bucket_ms)
    }
}

/// Bucket levels, finest first: 5 min × 12, 1 h × 24, 1 d × 30, 10 d × 9.
pub const LEVELS: [Level; 4] = [
    Level {
        name: "5m",
        bucket_ms: 5 * MINUTE,
        buckets: 12,
    },
    Level {
        name: "1h",
        bucket_ms: HOUR,
        buckets: 24,
    },
    Level {
        name: "1d",
        bucket_ms: DAY,
        buckets: 30,
    },
    Level {
        name: "10d",
        bucket_ms: 10 * DAY,
        buckets: 9,
    },
];

/// A window: the newest `buckets` buckets of one level, up to and including the bucket of
/// the evaluation time. "24h" therefore spans between 23 and 24 hours, aligned to the hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    pub name: &'static str,
    pub level: usize,
    pub buckets: i64,
}

pub const HORIZONS: [Horizon; 5] = [
    Horizon {
        name: "1h",
        level: 0,
        buckets: 12,
    },
    Horizon {
        name: "24h",
        level: 1,
        buckets: 24,
    },
    Horizon {
        name: "7d",
        level: 2,
        buckets: 7,
    },
    Horizon {
        name: "30d",
        level: 2,
        buckets: 30,
    },
    Horizon {
        name: "90d",
        level: 3,
        buckets: 9,
    },
];

/// Events older than a user's newest event by more than this are refused as too late
/// (dead-lettered by the pipeline with class `too_late`): the per-user dedupe memory is
/// bounded, so much later arrivals could not be told apart from duplicates.
pub const ALLOWED_LATENESS_MS: i64 = 7 * DAY;

/// How long a user's state lives after their newest event: the longest window, plus the
/// allowed lateness, plus a day of margin. The store's TTL; the offline builder leaves out
/// users whose state would have expired.
pub const STATE_RETENTION_MS: i64 = 90 * DAY + ALLOWED_LATENESS_MS + DAY;

/// Event ids remembered per user for dedupe.
pub const DEDUPE_MEMORY: usize = 16;
/// Sessions remembered per user (distinct-session counting and session lengths).
pub const SESSION_MEMORY: usize = 8;
/// Purchase times remembered per user (inter-arrival statistics).
pub const PURCHASE_MEMORY: usize = 16;
/// A cart untouched for this long counts as abandoned (value 0).
pub const CART_EXPIRY_MS: i64 = 7 * DAY;
/// Caps for "days since" features when there is nothing to measure from.
pub const MAX_DAYS: f32 = 365.0;

/// Per-window aggregate features, in vector order, after the per-type counts.
pub const WINDOW_AGGREGATES: [&str; 4] = ["revenue", "refunds", "sessions", "categories"];

/// Whole-history features, in vector order, after all window features.
pub const SCALARS: [&str; 16] = [
    "open_cart_value",
    "session_length_current_min",
    "session_length_mean_min",
    "days_since_last_visit",
    "days_since_last_purchase",
    "has_purchased",
    "tenure_days",
    "purchase_gap_mean_days",
    "purchase_gap_std_days",
    "rfm_recency_days",
    "rfm_frequency_90d",
    "rfm_monetary_90d",
    "lifetime_orders",
    "lifetime_purchase_days",
    "lifetime_net_spend",
    "days_since_first_purchase",
];

/// Features per window: one count per event type, then the aggregates.
pub const PER_WINDOW: usize = EventType::ALL.len() + WINDOW_AGGREGATES.len();
/// Length of a feature vector.
pub const FEATURE_COUNT: usize = HORIZONS.len() * PER_WINDOW + SCALARS.len();

/// Version of the feature definitions; bump when a formula changes without a name changing.
const SPEC_REVISION: u32 = 1;

/// The named, ordered, versioned list of features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSpec {
    names: Vec<String>,
    id: String,
}

impl FeatureSpec {
    /// The spec this build computes.
    pub fn current() -> Self {
        let mut names = Vec::with_capacity(FEATURE_COUNT);
        for horizon in HORIZONS {
            for event_type in EventType::ALL {
                names.push(format!("{}_{}", event_type.as_str(), horizon.name));
            }
            for aggregate in WINDOW_AGGREGATES {
                names.push(format!("{aggregate}_{}", horizon.name));
            }
        }
        names.extend(SCALARS.iter().map(|s| (*s).to_owned()));
        let id = spec_id(&names);
        Self { names, id }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Stable identifier, e.g. `fs1-3f9a...`: changes whenever names, order, windows or
    /// formulas change.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// FNV-1a over everything that defines the numbers: stable across builds and platforms.
fn spec_id(names: &[String]) -> String {
    let mut text = format!("tierflow-features|rev={SPEC_REVISION}|lateness={ALLOWED_LATENESS_MS}|");
    for level in LEVELS {
        text.push_str(&format!(
            "{}:{}x{}|",
            level.name, level.bucket_ms, level.buckets
        ));
    }
    for horizon in HORIZONS {
        text.push_str(&format!(
            "{}:{}x{}|",
            horizon.name, horizon.level, horizon.buckets
        ));
    }
    text.push_str(&format!(
        "dedupe={DEDUPE_MEMORY}|sessions={SESSION_MEMORY}|purchases={PURCHASE_MEMORY}|cart={CART_EXPIRY_MS}|"
    ));
    text.push_str(&names.join(","));
    format!("fs{SPEC_REVISION}-{:016x}", fnv1a(text.as_bytes()))
}

/// 64-bit FNV-1a: tiny, stable, good enough for ids and sketches (not for adversaries).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_ordered_named_and_stable() {
        let spec = FeatureSpec::current();
        assert_eq!(spec.len(), FEATURE_COUNT);
        assert_eq!(spec.names()[0], "page_view_1h");
        assert_eq!(spec.names()[PER_WINDOW], "page_view_24h");
        assert_eq!(spec.names().last().unwrap(), "days_since_first_purchase");
        assert_eq!(spec, FeatureSpec::current());
        let unique: std::collections::HashSet<_> = spec.names().iter().collect();
        assert_eq!(unique.len(), spec.len());
        assert!(spec.id().starts_with("fs1-"));
    }

    #[test]
    fn every_horizon_fits_its_level() {
        for horizon in HORIZONS {
            assert!(
                horizon.buckets <= LEVELS[horizon.level].buckets,
                "{horizon:?}"
            );
        }
        assert!(ALLOWED_LATENESS_MS < LEVELS[3].bucket_ms * LEVELS[3].buckets);
        let longest = HORIZONS
            .iter()
            .map(|h| LEVELS[h.level].bucket_ms * h.buckets)
            .max()
            .unwrap();
        assert!(STATE_RETENTION_MS >= longest + ALLOWED_LATENESS_MS);
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
