//! Event time on the wire: RFC 3339 text in JSON, milliseconds since the Unix epoch inside.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time with millisecond precision, UTC.
///
/// JSON carries it as RFC 3339 text with an offset (`2026-11-28T12:00:00.250Z`); any offset
/// is accepted and normalised to UTC, sub-millisecond digits are truncated. Binary encodings
/// (bincode) carry the `i64` millisecond count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventTime(i64);

/// RFC 3339 text that could not be read as an [`EventTime`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not RFC 3339 (expected e.g. 2026-11-28T12:00:00Z): {0:?}")]
pub struct EventTimeParseError(pub String);

impl EventTime {
    pub const MILLIS_PER_SECOND: i64 = 1_000;
    pub const MILLIS_PER_MINUTE: i64 = 60 * Self::MILLIS_PER_SECOND;
    pub const MILLIS_PER_HOUR: i64 = 60 * Self::MILLIS_PER_MINUTE;
    pub const MILLIS_PER_DAY: i64 = 24 * Self::MILLIS_PER_HOUR;

    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    pub const fn from_unix_seconds(seconds: i64) -> Self {
        Self(seconds.saturating_mul(Self::MILLIS_PER_SECOND))
    }

    /// The wall clock. Only edges (binaries, I/O stages) call this; pure code takes time as a value.
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Self((nanos / 1_000_000) as i64)
    }

    pub const fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    pub fn parse_rfc3339(text: &str) -> Result<Self, EventTimeParseError> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|_| EventTimeParseError(text.to_owned()))?;
        let millis = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(millis)
            .ok()
            .map(Self)
            // An offset can carry a valid text outside years 0000–9999 in UTC (e.g.
            // `0000-01-01T00:00:00+01:00`), where it has no RFC 3339 text to be written as.
            .filter(|t| t.utc_year().is_some_and(|year| (0..=9999).contains(&year)))
            .ok_or_else(|| EventTimeParseError(text.to_owned()))
    }

    /// The UTC year, when `time` can represent it.
    fn utc_year(self) -> Option<i32> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .map(OffsetDateTime::year)
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-28T12:00:00.250Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
            // Outside the years time can represent: show the raw count rather than fail.
            Err(_) => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = Cow::<'de, str>::deserialize(deserializer)?;
            EventTime::parse_rfc3339(&text).map_err(de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(EventTime)
        }
    }
}

impl JsonSchema for EventTime {
    fn schema_name() -> Cow<'static, str> {
        "EventTime".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 date-time with an offset, e.g. 2026-11-28T12:00:00.250Z; stored with millisecond precision in UTC."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected_millis: Option<i64>) {
        assert_eq!(
            EventTime::parse_rfc3339(text)
                .ok()
                .map(EventTime::unix_millis),
            expected_millis,
            "{text}"
        );
    }

    #[test]
    fn parses_rfc3339_variants() {
        check("1970-01-01T00:00:00Z", Some(0));
        check("1970-01-01T00:00:01.250Z", Some(1_250));
        check("1970-01-01T01:00:00+01:00", Some(0));
        check("1969-12-31T23:59:59.999Z", Some(-1));
        check("1970-01-01T00:00:00.0009Z", Some(0));
        check("1970-01-01 00:00:00", None);
        check("yesterday", None);
        check("", None);
        check("1970-01-01T00:00:00", None);
        // Valid text, but outside years 0000–9999 once in UTC: it could not be written back.
        check("0000-01-01T00:00:00+01:00", None);
        check("9999-12-31T23:59:59-01:00", None);
        check("0000-01-01T00:00:00-01:00", Some(-62_167_215_600_000));
    }

    #[test]
    fn display_round_trips() {
        for millis in [0, 1, 999, 1_764_331_200_123, -1, 253_402_300_799_999] {
            let t = EventTime::from_unix_millis(millis);
            assert_eq!(EventTime::parse_rfc3339(&t.to_rfc3339()), Ok(t));
        }
    }
}
