//! Offline, point-in-time training data: feature vectors at chosen cutoffs built only from
//! events at or before each cutoff (in log order, through the same `UserState::apply` the
//! online path uses), labelled with what each user did in the following horizon.

use std::collections::{BinaryHeap, HashMap, HashSet};

use tierflow_events::{ClickEvent, EventTime, EventType};

use crate::spec::{STATE_RETENTION_MS, fnv1a};
use crate::state::{Applied, UserState, to_cents};
use crate::vector::features;

/// What a user did in `(cutoff, cutoff + horizon]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Label {
    /// Purchases minus refunds, in currency units.
    pub future_spend: f64,
    pub future_orders: u32,
    /// At least one purchase in the horizon (its absence is churn).
    pub purchased: bool,
    /// Value tier of `future_spend` under the builder's tier thresholds, if it has any:
    /// the number of thresholds the spend reaches (0 = lowest tier).
    pub future_tier: Option<u8>,
}

/// A user's whole purchase history before a cutoff, in the shape the classic baselines
/// (RFM, last-period spend, BG/NBD + Gamma-Gamma) need. Not a model input: the feature
/// vector only sees what the online windows keep; this sees everything before the cutoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// First event of any kind.
    pub first_seen_ms: i64,
    /// Purchases (orders), after dedupe.
    pub orders: u32,
    /// Distinct UTC days with a purchase (BG/NBD counts repeat purchase days).
    pub purchase_days: u32,
    pub first_purchase_ms: Option<i64>,
    pub last_purchase_ms: Option<i64>,
    /// Purchases minus refunds over the whole history, in cents.
    pub spend_cents: i64,
    /// Purchase revenue only (no refunds), in cents: the Gamma-Gamma monetary value.
    pub purchase_cents: i64,
    /// Purchases minus refunds in `(cutoff - horizon, cutoff]`, in cents.
    pub last_period_spend_cents: i64,
}

/// One training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub user_id: String,
    pub cutoff: EventTime,
    pub features: Vec<f32>,
    pub label: Label,
    pub history: History,
}

/// Counts of what the builder saw, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildStats {
    pub events: u64,
    /// Applications skipped as duplicates (summed over cutoffs).
    pub duplicates: u64,
    /// Applications refused as too late (summed over cutoffs).
    pub too_late: u64,
    /// Users left out at a cutoff because their state would have expired online.
    pub expired_users: u64,
}

#[derive(Default)]
struct Tracked {
    state: UserState,
    history: History,
    /// Distinct purchase days (UTC day numbers), sorted.
    purchase_days: Vec<i32>,
}

struct Cutoff {
    at: EventTime,
    states: HashMap<String, Tracked>,
    labels: HashMap<String, LabelSums>,
    label_ids: HashSet<u64>,
}

#[derive(Default)]
struct LabelSums {
    spend_cents: i64,
    orders: u32,
}

/// Builds a dataset in one pass over an event log, for several cutoffs at once. Memory is
/// one state per user per cutoff.
pub struct DatasetBuilder {
    cutoffs: Vec<Cutoff>,
    horizon_ms: i64,
    tier_thresholds: Vec<f64>,
    stats: BuildStats,
    sample: EventSample,
}

/// A bounded, order-independent sample of the feature vectors the *online* path computes:
/// one per applied event before the last cutoff, as of the user's newest event (what
/// `tierflow run` scores for that event). The rows kept are those whose event ids hash
/// lowest (bottom-k), so the sample is the same whatever order the log is read in. It is the
/// reference population for drift monitoring: cutoff rows describe users at arbitrary
/// instants, the pipeline sees them right after each event.
#[derive(Debug, Default)]
struct EventSample {
    capacity: usize,
    /// Max-heap by hash: the top is the first to go.
    kept: BinaryHeap<Kept>,
}

/// A sampled row, ordered by its event-id hash alone.
#[derive(Debug)]
struct Kept {
    hash: u64,
    row: Vec<f32>,
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}

impl Eq for Kept {}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.cmp(&other.hash)
    }
}

impl EventSample {
    fn wants(&self, hash: u64) -> bool {
        self.capacity > 0
            && (self.kept.len() < self.capacity
                || self.kept.peek().is_some_and(|top| hash < top.hash))
    }

    fn keep(&mut self, hash: u64, row: Vec<f32>) {
        self.kept.push(Kept { hash, row });
        if self.kept.len() > self.capacity {
            self.kept.pop();
        }
    }
}

impl std::fmt::Debug for DatasetBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetBuilder")
            .field(
                "cutoffs",
                &self.cutoffs.iter().map(|c| c.at).collect::<Vec<_>>(),
            )
            .field("horizon_ms", &self.horizon_ms)
            .field("stats", &self.stats)
            .finish()
    }
}

impl DatasetBuilder {
    pub fn new(cutoffs: &[EventTime], label_horizon_ms: i64) -> Self {
        let mut sorted = cutoffs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        Self {
            cutoffs: sorted
                .into_iter()
                .map(|at| Cutoff {
                    at,
                    states: HashMap::new(),
                    labels: HashMap::new(),
                    label_ids: HashSet::new(),
                })
                .collect(),
            horizon_ms: label_horizon_ms,
            tier_thresholds: Vec::new(),
            stats: BuildStats::default(),
            sample: EventSample::default(),
        }
    }

    /// Only the event sample: `rows` online-shaped feature vectors of the events up to
    /// `up_to` (every event without it), no cutoff rows worth keeping (the one cutoff lies
    /// past every event, so its users are expired and dropped by `finish`).
    pub fn event_sample_only(up_to: Option<EventTime>, rows: usize) -> Self {
        let cutoff = up_to.unwrap_or(EventTime::from_unix_millis(i64::MAX / 4));
        Self::new(&[cutoff], 0).with_event_sample(rows)
    }

    /// Also keeps up to `rows` online-shaped feature vectors (see [`DatasetBuilder::finish_with_sample`]).
    pub fn with_event_sample(mut self, rows: usize) -> Self {
        self.sample.capacity = rows;
        self
    }

    /// Business tier thresholds on future spend (ascending), e.g. `[1.0, 100.0, 500.0]` gives
    /// four tiers. Without them, `Label::future_tier` is `None` (the model fits its own).
    pub fn with_tier_thresholds(mut self, mut thresholds: Vec<f64>) -> Self {
        thresholds.retain(|t| t.is_finite());
        thresholds.sort_by(f64::total_cmp);
        self.tier_thresholds = thresholds;
        self
    }

    /// Feeds the next event of the log (log order = arrival order).
    pub fn push(&mut self, event: &ClickEvent) {
        self.stats.events += 1;
        let last = self.cutoffs.len().saturating_sub(1);
        for (c, cutoff) in self.cutoffs.iter_mut().enumerate() {
            let is_last = c == last;
            if event.ts <= cutoff.at {
                let tracked = cutoff
                    .states
                    .entry(event.user_id.clone())
                    .or_insert_with(|| Tracked {
                        history: History {
                            first_seen_ms: event.ts.unix_millis(),
                            ..History::default()
                        },
                        ..Tracked::default()
                    });
                match tracked.state.apply(event) {
                    Applied::Updated => {
                        record_history(tracked, event, cutoff.at, self.horizon_ms);
                        if is_last {
                            let hash = fnv1a(event.event_id.as_bytes());
                            if self.sample.wants(hash) {
                                let as_of = tracked.state.newest().unwrap_or(event.ts);
                                self.sample.keep(hash, features(&tracked.state, as_of));
                            }
                        }
                    }
                    Applied::Duplicate => self.stats.duplicates += 1,
                    Applied::TooLate { .. } => self.stats.too_late += 1,
                }
            } else if event.ts.unix_millis() <= cutoff.at.unix_millis() + self.horizon_ms {
                let sign = match event.event_type {
                    EventType::Purchase => 1,
                    EventType::Refund => -1,
                    _ => continue,
                };
                if !cutoff.label_ids.insert(fnv1a(event.event_id.as_bytes())) {
                    continue; // a duplicate must not count twice in a label either
                }
                let sums = cutoff.labels.entry(event.user_id.clone()).or_default();
                sums.spend_cents += sign * to_cents(event.revenue.unwrap_or(0.0));
                if sign > 0 {
                    sums.orders += 1;
                }
            }
        }
    }

    /// Rows for every user known at each cutoff whose state would still be alive online,
    /// sorted by cutoff then user.
    /// [`DatasetBuilder::finish`], plus the event sample (row-major, ordered by event-id
    /// hash; empty without [`DatasetBuilder::with_event_sample`]).
    pub fn finish_with_sample(mut self) -> (Vec<Row>, BuildStats, Vec<f32>) {
        let kept = std::mem::take(&mut self.sample.kept).into_sorted_vec();
        let sample = kept.into_iter().flat_map(|k| k.row).collect();
        let (rows, stats) = self.finish();
        (rows, stats, sample)
    }

    pub fn finish(mut self) -> (Vec<Row>, BuildStats) {
        let mut rows = Vec::new();
        for cutoff in &self.cutoffs {
            let mut users: Vec<&String> = cutoff.states.keys().collect();
            users.sort_unstable();
            for user in users {
                let Tracked { state, history, .. } = &cutoff.states[user];
                let newest = state.newest_ms.unwrap_or(i64::MIN);
                if cutoff.at.unix_millis().saturating_sub(newest) > STATE_RETENTION_MS {
                    self.stats.expired_users += 1;
                    continue;
                }
                let sums = cutoff.labels.get(user);
                let future_spend = sums.map_or(0.0, |s| s.spend_cents as f64 / 100.0);
                let future_tier = (!self.tier_thresholds.is_empty()).then(|| {
                    self.tier_thresholds
                        .iter()
                        .filter(|t| future_spend >= **t)
                        .count()
                        .min(usize::from(u8::MAX)) as u8
                });
                let label = Label {
                    future_spend,
                    future_orders: sums.map_or(0, |s| s.orders),
                    purchased: sums.is_some_and(|s| s.orders > 0),
                    future_tier,
                };
                rows.push(Row {
                    user_id: user.clone(),
                    cutoff: cutoff.at,
                    features: features(state, cutoff.at),
                    label,
                    history: *history,
                });
            }
        }
        (rows, self.stats)
    }
}

fn record_history(tracked: &mut Tracked, event: &ClickEvent, cutoff: EventTime, horizon_ms: i64) {
    let history = &mut tracked.history;
    const DAY: i64 = EventTime::MILLIS_PER_DAY;
    let ts = event.ts.unix_millis();
    history.first_seen_ms = history.first_seen_ms.min(ts);
    let cents = to_cents(event.revenue.unwrap_or(0.0));
    let in_last_period = ts > cutoff.unix_millis() - horizon_ms;
    match event.event_type {
        EventType::Purchase => {
            history.orders += 1;
            history.spend_cents = history.spend_cents.saturating_add(cents);
            history.purchase_cents = history.purchase_cents.saturating_add(cents);
            if in_last_period {
                history.last_period_spend_cents =
                    history.last_period_spend_cents.saturating_add(cents);
            }
            let day = ts.div_euclid(DAY) as i32;
            if let Err(at) = tracked.purchase_days.binary_search(&day) {
                tracked.purchase_days.insert(at, day);
                history.purchase_days += 1;
            }
            history.first_purchase_ms = Some(history.first_purchase_ms.map_or(ts, |t| t.min(ts)));
            history.last_purchase_ms = Some(history.last_purchase_ms.map_or(ts, |t| t.max(ts)));
        }
        EventType::Refund => {
            history.spend_cents = history.spend_cents.saturating_sub(cents);
            if in_last_period {
                history.last_period_spend_cents =
                    history.last_period_spend_cents.saturating_sub(cents);
            }
        }
        _ => {}
    }
}
