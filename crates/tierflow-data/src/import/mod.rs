//! Real data sets to clickstream events: UCI Online Retail, Taobao UserBehavior and any CSV
//! with a TOML column mapping. Pure: the caller hands in a reader (already decompressed) and
//! a sink; every row ends up in an emitted event or counted under a precise rejection reason.
//!
//! Architecture invariants:
//! - No file is opened here and no clock is read; event time comes from the data.
//! - Every emitted event has passed [`ClickEvent::validate`]; a row whose event would not is
//!   rejected with the validator's reason instead.
//! - Event ids are a function of the input alone (data set, line number, invoice), so
//!   importing the same file twice yields the same ids and downstream dedupe works.
//! - `rows_read == rows_in_events + rejected rows` for every source ([`ImportReport`]).

mod error;
mod generic;
mod mapping;
mod online_retail;
mod report;
mod rows;
mod taobao;

use std::io::Read;

use tierflow_events::click::CLICK_SCHEMA_VERSION;
use tierflow_events::{ClickEvent, EventTime, EventType};

pub use error::ImportError;
pub use mapping::{Column, CsvMapping, EventTypeField, NumberField, TextField, TimeField};
pub use report::ImportReport;
pub use taobao::TaobaoOptions;

/// What the sink may answer: any error stops the import ([`ImportError::Sink`]).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// The data set a reader holds, with what its importer needs to know.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one Source per import; boxing the mapping would only clutter the API"
)]
pub enum Source {
    /// UCI Online Retail line items: one `purchase` or `refund` per invoice, sorted by time.
    OnlineRetail,
    /// Taobao UserBehavior (no header): views, carts, wishlists and buys in input order.
    Taobao(TaobaoOptions),
    /// Any CSV, one event per row, described by a TOML column mapping.
    Generic(CsvMapping),
}

/// Reads `reader` as `source` and hands each event to `sink`, in the source's order (time
/// order for Online Retail, input order otherwise).
///
/// Bad rows never fail the import: they are counted in [`ImportReport::rejected_rows`]. The
/// import fails only when the input cannot be read at all (I/O), does not fit the source
/// (header), the mapping or options are wrong, or the sink refuses an event.
pub fn import<R: Read>(
    source: &Source,
    reader: R,
    sink: &mut dyn FnMut(ClickEvent) -> Result<(), SinkError>,
) -> Result<ImportReport, ImportError> {
    let mut out = report::Emitter::new(sink);
    match source {
        Source::OnlineRetail => online_retail::import(reader, &mut out)?,
        Source::Taobao(options) => taobao::import(options, reader, &mut out)?,
        Source::Generic(mapping) => generic::import(mapping, reader, &mut out)?,
    }
    Ok(out.finish())
}

/// An event with the required fields set and every optional field absent.
fn bare_event(
    event_id: String,
    user_id: String,
    event_type: EventType,
    ts: EventTime,
    session_id: String,
) -> ClickEvent {
    ClickEvent {
        schema_version: CLICK_SCHEMA_VERSION,
        event_id,
        user_id,
        event_type,
        ts,
        session_id,
        product_id: None,
        category: None,
        price: None,
        quantity: None,
        currency: None,
        order_id: None,
        revenue: None,
        channel: None,
        device: None,
    }
}

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the instants RFC 3339 can write.
const FIRST_RFC3339_MILLIS: i64 = -62_167_219_200_000;
const LAST_RFC3339_MILLIS: i64 = 253_402_300_799_999;

/// `millis` as an event time, if RFC 3339 (four-digit years) can carry it on the wire.
fn wire_time(millis: i64) -> Option<EventTime> {
    (FIRST_RFC3339_MILLIS..=LAST_RFC3339_MILLIS)
        .contains(&millis)
        .then_some(EventTime::from_unix_millis(millis))
}

/// A `time` value as an event time (milliseconds, truncated), if RFC 3339 can carry it.
fn wire_time_of(t: time::OffsetDateTime) -> Option<EventTime> {
    let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(millis).ok().and_then(wire_time)
}

/// The contract's currency shape: three ASCII capital letters.
fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_time_stops_where_rfc3339_stops() {
        for millis in [FIRST_RFC3339_MILLIS, 0, LAST_RFC3339_MILLIS] {
            let t = wire_time(millis).unwrap();
            assert_eq!(EventTime::parse_rfc3339(&t.to_rfc3339()), Ok(t), "{millis}");
        }
        assert_eq!(wire_time(FIRST_RFC3339_MILLIS - 1), None);
        assert_eq!(wire_time(LAST_RFC3339_MILLIS + 1), None);
    }

    #[test]
    fn currency_codes() {
        assert!(is_currency_code("GBP"));
        for bad in ["gbp", "GB", "GBPX", "G1P", "", "ÉUR"] {
            assert!(!is_currency_code(bad), "{bad}");
        }
    }
}
