//! A seeded clickstream simulator whose future customer value can be learned: users with
//! latent segments walk purchase funnels in a daily and weekly rhythm; their streams are
//! merged lazily in event time, then roughened by dials the way real producers roughen them.
//!
//! Layout, in the order data flows: `segment` (who a user is) → `session` (one user's lazy
//! event stream) → `merge` (k-way merge in event time) → `dials` (emission order and
//! corruption). `catalogue` and `rhythm` are the shared world, `sample` the seeded draws.
//!
//! Determinism: each user draws from their own ChaCha8 stream keyed by `(seed, user index)`,
//! the catalogue and the dials from streams keyed by the seed, so the same config gives the
//! same bytes and a user's events do not depend on how many other users there are.
//!
//! Memory: one small generator per user plus the records the dials hold back; never the
//! whole stream. Time comes in as [`SynthConfig::start`]; nothing here reads a clock.

mod catalogue;
mod dials;
mod merge;
mod rhythm;
mod sample;
mod segment;
mod session;

use std::fmt;
use std::iter::FusedIterator;

use serde::{Deserialize, Serialize};
use tierflow_events::{ClickEvent, EventTime};

pub use dials::{DialStats, Dials, LATE_DELAY_MS, MALFORMED_DEFECTS, OUT_OF_ORDER_DELAY_MS};
pub use segment::{Segment, SegmentMix};

use dials::DialStage;
use merge::Merge;
use sample::Purpose;
use segment::Life;

/// The last instant RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// What to simulate. Unknown fields are refused when read from TOML or JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Number of users; user indices are `0..users`.
    pub users: u64,
    pub seed: u64,
    /// Simulation start (event time). Events fall in `[start, start + days)`.
    pub start: EventTime,
    /// Simulated span in days.
    pub days: u32,
    pub dials: Dials,
    pub mix: SegmentMix,
}

impl SynthConfig {
    /// 2026-01-01T00:00:00Z.
    pub const DEFAULT_START: EventTime = EventTime::from_unix_seconds(1_767_225_600);

    /// The end of the span (exclusive).
    pub fn end(&self) -> EventTime {
        self.start
            .plus_millis(i64::from(self.days) * EventTime::MILLIS_PER_DAY)
    }

    /// Refuses what the generator would otherwise quietly repair (see [`Dials`] and
    /// [`SegmentMix`]) and spans that RFC 3339 cannot write.
    pub fn validate(&self) -> Result<(), SynthConfigError> {
        self.dials.validate()?;
        for segment in Segment::ALL {
            let value = self.mix.weight(segment);
            if !(value.is_finite() && value >= 0.0) {
                return Err(SynthConfigError::MixWeight { segment, value });
            }
        }
        if Segment::ALL.iter().all(|&s| self.mix.weight(s) == 0.0) {
            return Err(SynthConfigError::EmptyMix);
        }
        let last_emission = self.end().plus_millis(LATE_DELAY_MS.end).unix_millis();
        if self.start.unix_millis() < 0 || last_emission > LAST_RFC3339_MS {
            return Err(SynthConfigError::SpanOutOfRange {
                start: self.start,
                days: self.days,
            });
        }
        Ok(())
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            users: 1_000,
            seed: 42,
            start: Self::DEFAULT_START,
            days: 90,
            dials: Dials::default(),
            mix: SegmentMix::default(),
        }
    }
}

/// A [`SynthConfig`] the generator would have to repair.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthConfigError {
    #[error("dial `{dial}` must be a probability from 0 to 1, got {value}")]
    DialOutOfRange { dial: &'static str, value: f64 },
    #[error("dials `late` ({late}) and `out_of_order` ({out_of_order}) must not sum above 1")]
    DelaysExceedOne { late: f64, out_of_order: f64 },
    #[error("segment mix weight `{segment}` must be a finite number ≥ 0, got {value}")]
    MixWeight { segment: Segment, value: f64 },
    #[error("segment mix weights are all 0")]
    EmptyMix,
    #[error(
        "the span from {start} over {days} days (plus late emissions) must lie between 1970 and 9999"
    )]
    SpanOutOfRange { start: EventTime, days: u32 },
}

/// One record for the clickstream topic: an event, or what a broken producer sent instead.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "almost every record is an event; boxing it would cost an allocation per event"
)]
pub enum Record {
    Event(ClickEvent),
    /// Bytes that [`ClickEvent::from_json`] refuses, still keyed by the user they came from.
    Malformed {
        user_id: String,
        bytes: Vec<u8>,
        /// One of [`MALFORMED_DEFECTS`].
        defect: &'static str,
    },
}

impl Record {
    /// The Kafka key: the user id.
    pub fn key(&self) -> &str {
        match self {
            Self::Event(event) => &event.user_id,
            Self::Malformed { user_id, .. } => user_id,
        }
    }

    /// The Kafka value: the event's JSON, or the corrupted bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Event(event) => event.to_json(),
            Self::Malformed { bytes, .. } => bytes.clone(),
        }
    }

    pub fn event(&self) -> Option<&ClickEvent> {
        match self {
            Self::Event(event) => Some(event),
            Self::Malformed { .. } => None,
        }
    }
}

/// The simulated stream, in emission order. With clean [`Dials`] that is event-time order
/// (ties by user index); the dials move only the records they touch.
pub struct Generator {
    merge: Merge,
    dials: DialStage,
}

impl Generator {
    /// What the dials did to the records emitted so far (and to those they still hold).
    pub fn stats(&self) -> DialStats {
        self.dials.stats()
    }
}

impl Iterator for Generator {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        self.dials.next(&mut self.merge)
    }
}

impl FusedIterator for Generator {}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("users", &self.merge.users())
            .field("active_users", &self.merge.active_users())
            .field("delayed_records", &self.dials.delayed())
            .field("stats", &self.dials.stats())
            .finish()
    }
}

/// Starts the simulation. Costs O(users) up front; events are made as they are pulled.
///
/// The config is not validated: out-of-range dials and mixes are repaired as [`Dials`] and
/// [`SegmentMix`] describe. Call [`SynthConfig::validate`] first to refuse them instead.
pub fn generate(config: &SynthConfig) -> Generator {
    Generator {
        merge: Merge::new(config),
        dials: DialStage::new(&config.dials, config.seed),
    }
}

/// The latent segment of a user: ground truth for evaluating what a model learns.
pub fn segment_of(config: &SynthConfig, user_index: u64) -> Segment {
    Life::segment(
        &mut sample::rng_for(config.seed, Purpose::User, user_index),
        config,
    )
}

/// The user id of a user index: `u00000042`.
pub fn user_id(user_index: u64) -> String {
    format!("u{user_index:08}")
}

/// What the simulation knows about a user and a model must infer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub user_index: u64,
    pub user_id: String,
    pub segment: Segment,
    /// No visit before this (part-way through the span for new users).
    pub active_from: EventTime,
    /// The user churns here: no visit starts at or after it. `None` when the user stays to
    /// the end of the span (decaying users may still fade to nearly nothing).
    pub churns_at: Option<EventTime>,
}

/// The ground truth of one user; a few dozen random draws, no events.
pub fn ground_truth(config: &SynthConfig, user_index: u64) -> GroundTruth {
    let life = Life::draw(
        &mut sample::rng_for(config.seed, Purpose::User, user_index),
        config,
    );
    GroundTruth {
        user_index,
        user_id: user_id(user_index),
        segment: life.segment,
        active_from: EventTime::from_unix_millis(life.active_from_ms),
        churns_at: life.stops_at_ms.map(EventTime::from_unix_millis),
    }
}

/// The ground truth of every user, lazily.
pub fn ground_truths(config: &SynthConfig) -> impl Iterator<Item = GroundTruth> + '_ {
    (0..config.users).map(|user| ground_truth(config, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_start_is_2026() {
        assert_eq!(
            SynthConfig::DEFAULT_START,
            EventTime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap()
        );
        assert_eq!(user_id(42), "u00000042");
    }

    #[test]
    fn ground_truth_agrees_with_the_cheap_segment() {
        let config = SynthConfig::default();
        for truth in ground_truths(&config).take(200) {
            assert_eq!(truth.segment, segment_of(&config, truth.user_index));
            assert!(truth.active_from >= config.start && truth.active_from < config.end());
            assert!(truth.churns_at.is_none_or(|at| at < config.end()));
        }
    }
}
