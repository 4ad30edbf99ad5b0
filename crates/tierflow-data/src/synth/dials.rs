//! Real producers are messy: the dials delay, duplicate and corrupt a fraction of the
//! event-time-ordered stream, the way retries, offline apps and broken clients do.
//!
//! Delayed records wait in a small buffer keyed by emission time, so only the affected
//! records move; they keep their original `ts`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use tierflow_events::{ClickEvent, EventTime};

use super::merge::Merge;
use super::sample::{self, Purpose, SimRng};
use super::{Record, SynthConfigError};

const SECOND_MS: f64 = EventTime::MILLIS_PER_SECOND as f64;
const MINUTE_MS: f64 = EventTime::MILLIS_PER_MINUTE as f64;

/// Out-of-order records are emitted 2 s to 5 min after their event time (log-uniform).
pub const OUT_OF_ORDER_DELAY_MS: Range<i64> =
    2 * EventTime::MILLIS_PER_SECOND..5 * EventTime::MILLIS_PER_MINUTE;
/// Late records are emitted 1 h to 3 days after their event time (log-uniform).
pub const LATE_DELAY_MS: Range<i64> = EventTime::MILLIS_PER_HOUR..3 * EventTime::MILLIS_PER_DAY;

pub(crate) const MISSING_REVENUE: &str = "missing revenue";
pub(crate) const BAD_TS: &str = "bad ts";
pub(crate) const TRUNCATED_JSON: &str = "truncated json";
pub(crate) const PRICE_AS_STRING: &str = "price as string";
pub(crate) const UNKNOWN_EVENT_TYPE: &str = "unknown event type";
pub(crate) const NOT_UTF8: &str = "not utf-8";

/// Every `defect` a [`Record::Malformed`] can name.
pub const MALFORMED_DEFECTS: [&str; 6] = [
    MISSING_REVENUE,
    BAD_TS,
    TRUNCATED_JSON,
    PRICE_AS_STRING,
    UNKNOWN_EVENT_TYPE,
    NOT_UTF8,
];

/// How messy the emitted stream is. Each dial is a probability per source event, from 0 to
/// 1; the default is a clean stream.
///
/// An event is late with probability `late`, otherwise out of order with probability
/// `out_of_order` (so the two must not sum above 1); independently it is malformed with
/// probability `malformed`, and, if not malformed, emitted twice with probability
/// `duplicate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dials {
    /// Emitted a little after its event time: see [`OUT_OF_ORDER_DELAY_MS`].
    pub out_of_order: f64,
    /// Emitted much later, like an offline app syncing: see [`LATE_DELAY_MS`].
    pub late: f64,
    /// The identical record emitted again, 1 s to 2 min after the first.
    pub duplicate: f64,
    /// A corrupted record in place of the event; see [`MALFORMED_DEFECTS`].
    pub malformed: f64,
}

impl Dials {
    pub fn validate(&self) -> Result<(), SynthConfigError> {
        for (dial, value) in self.named() {
            if !(0.0..=1.0).contains(&value) {
                return Err(SynthConfigError::DialOutOfRange { dial, value });
            }
        }
        if self.late + self.out_of_order > 1.0 {
            return Err(SynthConfigError::DelaysExceedOne {
                late: self.late,
                out_of_order: self.out_of_order,
            });
        }
        Ok(())
    }

    /// `true` when the stream is emitted exactly in event-time order, untouched.
    pub fn is_clean(&self) -> bool {
        let clean = self.sanitised();
        clean.out_of_order == 0.0
            && clean.late == 0.0
            && clean.duplicate == 0.0
            && clean.malformed == 0.0
    }

    fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("out_of_order", self.out_of_order),
            ("late", self.late),
            ("duplicate", self.duplicate),
            ("malformed", self.malformed),
        ]
    }

    /// What the generator uses when [`Dials::validate`] was skipped: NaN counts as 0, values
    /// are clamped to 0–1, and `out_of_order` gives way to `late` beyond a sum of 1.
    fn sanitised(&self) -> Self {
        let probability = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        let late = probability(self.late);
        Self {
            out_of_order: probability(self.out_of_order).min(1.0 - late),
            late,
            duplicate: probability(self.duplicate),
            malformed: probability(self.malformed),
        }
    }
}

/// What the dials did so far: counts of source events and of each decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialStats {
    /// Events taken from the event-time-ordered merge.
    pub source_events: u64,
    pub out_of_order: u64,
    pub late: u64,
    /// Extra copies emitted.
    pub duplicates: u64,
    pub malformed: u64,
}

/// A record waiting for its emission time.
#[derive(Debug)]
struct Delayed {
    emit_ms: i64,
    /// Insertion order: equal emission times leave in the order they were delayed.
    sequence: u64,
    record: Record,
}

impl Delayed {
    fn key(&self) -> (i64, u64) {
        (self.emit_ms, self.sequence)
    }
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    /// Reversed, so that the max-heap pops the earliest emission first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// Applies the dials between the merge and the caller.
#[derive(Debug)]
pub(crate) struct DialStage {
    dials: Dials,
    clean: bool,
    rng: SimRng,
    delayed: BinaryHeap<Delayed>,
    sequence: u64,
    stats: DialStats,
}

impl DialStage {
    pub(crate) fn new(dials: &Dials, seed: u64) -> Self {
        Self {
            dials: dials.sanitised(),
            clean: dials.is_clean(),
            rng: sample::rng_for(seed, Purpose::Dials, 0),
            delayed: BinaryHeap::new(),
            sequence: 0,
            stats: DialStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> DialStats {
        self.stats
    }

    /// Records waiting in the delay buffer.
    pub(crate) fn delayed(&self) -> usize {
        self.delayed.len()
    }

    /// The next record in emission order.
    pub(crate) fn next(&mut self, merge: &mut Merge) -> Option<Record> {
        loop {
            if let Some(first) = self.delayed.peek()
                && merge.peek_ts().is_none_or(|ts| first.emit_ms <= ts)
            {
                return self.delayed.pop().map(|d| d.record);
            }
            let event = merge.pop()?;
            if let Some(record) = self.apply(event) {
                return Some(record);
            }
        }
    }

    /// The record to emit now, or `None` when the dials delayed it.
    fn apply(&mut self, event: ClickEvent) -> Option<Record> {
        self.stats.source_events += 1;
        if self.clean {
            return Some(Record::Event(event));
        }
        let ts = event.ts.unix_millis();
        let malformed = sample::chance(&mut self.rng, self.dials.malformed);
        let delay_draw = sample::unit(&mut self.rng);
        let duplicate = sample::chance(&mut self.rng, self.dials.duplicate) && !malformed;
        let delay_ms = if delay_draw < self.dials.late {
            self.stats.late += 1;
            self.delay_between(LATE_DELAY_MS)
        } else if delay_draw < self.dials.late + self.dials.out_of_order {
            self.stats.out_of_order += 1;
            self.delay_between(OUT_OF_ORDER_DELAY_MS)
        } else {
            0
        };
        let emit_ms = ts.saturating_add(delay_ms);
        let record = if malformed {
            self.stats.malformed += 1;
            corrupt(event, &mut self.rng)
        } else {
            Record::Event(event)
        };
        if duplicate {
            self.stats.duplicates += 1;
            let again = sample::log_uniform(&mut self.rng, SECOND_MS, 2.0 * MINUTE_MS) as i64;
            self.delay(emit_ms.saturating_add(again), record.clone());
        }
        if delay_ms > 0 {
            self.delay(emit_ms, record);
            None
        } else {
            Some(record)
        }
    }

    fn delay_between(&mut self, range: Range<i64>) -> i64 {
        sample::log_uniform(&mut self.rng, range.start as f64, range.end as f64) as i64
    }

    fn delay(&mut self, emit_ms: i64, record: Record) {
        self.sequence += 1;
        self.delayed.push(Delayed {
            emit_ms,
            sequence: self.sequence,
            record,
        });
    }
}

/// The event as a broken producer would have sent it. Every defect makes
/// `ClickEvent::from_json` fail, and none adds a newline (JSON-lines sinks stay line-true).
fn corrupt(event: ClickEvent, rng: &mut SimRng) -> Record {
    let applicable = [
        (MISSING_REVENUE, event.event_type.requires_revenue()),
        (PRICE_AS_STRING, event.price.is_some()),
        (BAD_TS, true),
        (TRUNCATED_JSON, true),
        (UNKNOWN_EVENT_TYPE, true),
        (NOT_UTF8, true),
    ];
    let count = applicable.iter().filter(|(_, applies)| *applies).count();
    let choice = pick_index(rng, count);
    let defect = applicable
        .iter()
        .filter(|(_, applies)| *applies)
        .nth(choice)
        .map_or(TRUNCATED_JSON, |(defect, _)| defect);
    let json = String::from_utf8(event.to_json()).expect("serde_json writes UTF-8");
    let (bytes, defect) = corrupt_json(&json, defect, &event, rng);
    Record::Malformed {
        user_id: event.user_id,
        bytes,
        defect,
    }
}

/// The corrupted bytes and the defect they really carry (truncation when the field to edit
/// is missing, which the callers rule out).
fn corrupt_json(
    json: &str,
    defect: &'static str,
    event: &ClickEvent,
    rng: &mut SimRng,
) -> (Vec<u8>, &'static str) {
    let edited = match defect {
        MISSING_REVENUE => value_span(json, "revenue").map(|span| {
            let field = span.start - ",\"revenue\":".len();
            [&json[..field], &json[span.end..]].concat().into_bytes()
        }),
        PRICE_AS_STRING => value_span(json, "price").map(|span| {
            let quoted = format!("\"{}\"", &json[span.clone()]);
            replace(json, span, &quoted)
        }),
        BAD_TS => value_span(json, "ts").map(|span| {
            let text = event.ts.to_rfc3339();
            let bad = match pick_index(rng, 3) {
                // Epoch seconds as a number.
                0 => (event.ts.unix_millis() / 1_000).to_string(),
                // No offset.
                1 => format!("\"{}\"", text.trim_end_matches('Z')),
                // A local, human format: "31/01/2026 18:05".
                _ => format!(
                    "\"{}/{}/{} {}\"",
                    &text[8..10],
                    &text[5..7],
                    &text[..4],
                    &text[11..16]
                ),
            };
            replace(json, span, &bad)
        }),
        UNKNOWN_EVENT_TYPE => value_span(json, "event_type").map(|span| {
            let names = [
                "\"click\"",
                "\"PageView\"",
                "\"purchase_v2\"",
                "\"add-to-cart\"",
            ];
            replace(json, span, names[pick_index(rng, names.len())])
        }),
        NOT_UTF8 => value_span(json, "user_id").map(|span| {
            // A Latin-1 "ü" where UTF-8 was expected.
            let mut bytes = json.as_bytes().to_vec();
            bytes.insert(span.start + 1, 0xFC);
            bytes
        }),
        _ => None,
    };
    match edited {
        Some(bytes) => (bytes, defect),
        None => {
            // Cut anywhere before the closing brace.
            let cut = 1 + pick_index(rng, json.len().saturating_sub(1));
            (
                json.as_bytes()[..cut.min(json.len())].to_vec(),
                TRUNCATED_JSON,
            )
        }
    }
}

/// Uniform in `0..count` (0 when `count` is 0).
fn pick_index(rng: &mut SimRng, count: usize) -> usize {
    ((sample::unit(rng) * count as f64) as usize).min(count.saturating_sub(1))
}

/// Where the value of `key` sits in the compact JSON serde writes for a [`ClickEvent`]
/// (strings there never contain quotes: the generator writes ids and names only).
fn value_span(json: &str, key: &str) -> Option<Range<usize>> {
    let needle = format!("\"{key}\":");
    let start = json.find(&needle)? + needle.len();
    let rest = &json[start..];
    let len = if let Some(text) = rest.strip_prefix('"') {
        text.find('"')? + 2
    } else {
        rest.find([',', '}'])?
    };
    Some(start..start + len)
}

fn replace(json: &str, span: Range<usize>, with: &str) -> Vec<u8> {
    [&json[..span.start], with, &json[span.end..]]
        .concat()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> ClickEvent {
        ClickEvent::from_json(json.as_bytes()).unwrap()
    }

    const PURCHASE: &str = r#"{"schema_version":1,"event_id":"e1-1","user_id":"u1","event_type":"purchase","ts":"2026-01-31T18:05:00.000Z","session_id":"s1-1","quantity":2,"currency":"EUR","order_id":"o1-1","revenue":24.98,"channel":"web","device":"mobile"}"#;
    const VIEW: &str = r#"{"schema_version":1,"event_id":"e1-2","user_id":"u1","event_type":"product_view","ts":"2026-01-31T18:05:00.000Z","session_id":"s1-1","product_id":"p010001","category":"books","price":12.49,"currency":"EUR","channel":"app","device":"tablet"}"#;

    #[test]
    fn every_defect_fails_to_decode_and_names_itself() {
        let mut rng = sample::rng_for(9, Purpose::Dials, 0);
        for source in [PURCHASE, VIEW] {
            let event = event(source);
            assert_eq!(String::from_utf8(event.to_json()).unwrap(), source);
            for defect in MALFORMED_DEFECTS {
                for _ in 0..20 {
                    let (bytes, named) = corrupt_json(source, defect, &event, &mut rng);
                    let applies = match defect {
                        MISSING_REVENUE => event.revenue.is_some(),
                        PRICE_AS_STRING => event.price.is_some(),
                        _ => true,
                    };
                    assert_eq!(named, if applies { defect } else { TRUNCATED_JSON });
                    assert!(!bytes.contains(&b'\n'));
                    let text = String::from_utf8_lossy(&bytes);
                    let err = ClickEvent::from_json(&bytes).expect_err(&text);
                    let expected = match named {
                        MISSING_REVENUE => "`revenue` missing",
                        PRICE_AS_STRING => "`price` invalid type",
                        BAD_TS => "`ts`",
                        TRUNCATED_JSON => "not JSON",
                        UNKNOWN_EVENT_TYPE => "`event_type`",
                        _ => "not UTF-8",
                    };
                    assert!(
                        err.reason.starts_with(expected),
                        "{named}: {text} → {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn corrupt_only_picks_defects_that_apply() {
        let mut rng = sample::rng_for(1, Purpose::Dials, 0);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            if let Record::Malformed {
                defect, user_id, ..
            } = corrupt(event(VIEW), &mut rng)
            {
                assert_eq!(user_id, "u1");
                seen.insert(defect);
            }
        }
        assert!(!seen.contains(MISSING_REVENUE));
        assert_eq!(seen.len(), 5, "{seen:?}");
    }

    #[test]
    fn sanitised_dials_are_probabilities() {
        let wild = Dials {
            out_of_order: 0.9,
            late: 0.5,
            duplicate: f64::NAN,
            malformed: 7.0,
        };
        assert!(wild.validate().is_err());
        let tame = wild.sanitised();
        assert_eq!(tame.late, 0.5);
        assert_eq!(tame.out_of_order, 0.5);
        assert_eq!(tame.duplicate, 0.0);
        assert_eq!(tame.malformed, 1.0);
        assert!(tame.validate().is_ok());
        assert!(Dials::default().is_clean());
    }

    #[test]
    fn delayed_records_leave_by_emission_time_then_arrival() {
        let record = |n: u64| Record::Malformed {
            user_id: n.to_string(),
            bytes: Vec::new(),
            defect: TRUNCATED_JSON,
        };
        let mut heap = BinaryHeap::new();
        for (emit_ms, sequence) in [(5, 1), (3, 2), (5, 3), (1, 4)] {
            heap.push(Delayed {
                emit_ms,
                sequence,
                record: record(sequence),
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop())
            .map(|d| d.sequence)
            .collect();
        assert_eq!(order, [4, 2, 1, 3]);
    }
}
