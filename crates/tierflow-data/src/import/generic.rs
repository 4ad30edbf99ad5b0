//! Any CSV export to events, one per row, as a [`CsvMapping`] says; rows stream through in
//! input order.
//!
//! Rules beyond the mapping's own documentation:
//! - An empty cell is an absent value; for `user_id`, `ts` and `event_type` that rejects the
//!   row (`user_id missing`).
//! - Refund exports often write amounts negative: on a `refund`, negative `price`,
//!   `quantity` and `revenue` are taken as their absolute value. On other events a negative
//!   number rejects the row.
//! - `revenue`, when absent on a purchase or refund, is `price` × `quantity` (1 when absent),
//!   rounded to millionths; without a price the validator rejects the row
//!   (`` `revenue` missing for purchase ``).
//! - `quantity` above 10,000 is capped (counted under `adjusted`); computed revenue uses the
//!   full quantity.
//! - Rejection reasons name the event field and the problem, never the cell's value, so the
//!   report stays short; `first_rejected_line` points at an example.

use std::io::Read;

use tierflow_events::click::MAX_QUANTITY;
use tierflow_events::{ClickEvent, EventTime, EventType};
use time::parsing::Parsed;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use super::mapping::{EventTypeRule, IdRule, Number, Plan, SessionRule, Text, TimeFormat};
use super::report::Emitter;
use super::rows::{Reason, Row, Rows};
use super::{CsvMapping, ImportError, bare_event, is_currency_code, wire_time, wire_time_of};

const QUANTITY_CAPPED: &str = "quantity capped at 10000";

pub(super) fn import<R: Read>(
    mapping: &CsvMapping,
    input: R,
    out: &mut Emitter<'_>,
) -> Result<(), ImportError> {
    // Mapping mistakes are reported before the header is even read.
    let unresolved = Plan::compile(mapping, None)?;
    let mut rows = Rows::new(input, unresolved.delimiter, mapping.header);
    let plan = if mapping.header {
        let header = rows.header()?.ok_or_else(|| {
            ImportError::Header(
                "the input is empty, but the mapping says it starts with a header line".to_owned(),
            )
        })?;
        Plan::compile(mapping, Some(&header))?
    } else {
        unresolved
    };
    while let Some(row) = rows.next_row()? {
        out.row_read();
        match plan.event(row) {
            Ok((event, capped)) => {
                if out.emit(event, row.line, 1)? && capped {
                    out.adjusted(QUANTITY_CAPPED);
                }
            }
            Err(reason) => out.reject(&reason, row.line, 1),
        }
    }
    Ok(())
}

impl Plan {
    /// The row's event, and whether its quantity was capped.
    fn event(&self, row: Row<'_>) -> Result<(ClickEvent, bool), Reason> {
        if let Some(width) = self.header_width
            && row.len() != width
        {
            return Err(format!("wrong number of fields (the header has {width})").into());
        }
        if row.len() < self.min_width {
            return Err(format!(
                "too few fields (the mapping reads column {})",
                self.min_width
            )
            .into());
        }
        let user_id = text(row, Some(&self.user_id), "user_id")?.ok_or("user_id missing")?;
        let ts = match row.text(self.ts.0, "ts")? {
            "" => return Err("ts missing".into()),
            cell => read_time(&self.ts.1, cell)?,
        };
        let event_type = self.event_type(row)?;
        let refund = event_type == EventType::Refund;
        let price = number(row, self.price.as_ref(), "price", refund)?;
        let quantity = match number(row, self.quantity.as_ref(), "quantity", refund)? {
            Some(q) if q.fract() != 0.0 => return Err("quantity not a whole number".into()),
            // Negatives were refused (or made positive) above; what is left below 1 is 0.
            Some(q) if q < 1.0 => return Err("quantity is 0".into()),
            other => other,
        };
        let revenue = match number(row, self.revenue.as_ref(), "revenue", refund)? {
            None if event_type.requires_revenue() => match price {
                None => None,
                Some(p) => match round_micros(p * quantity.unwrap_or(1.0)) {
                    r if r.is_finite() => Some(r),
                    _ => return Err("revenue (price × quantity) too large".into()),
                },
            },
            other => other,
        };
        let currency = match text(row, self.currency.as_ref(), "currency")? {
            None => None,
            Some(code) => {
                let code = code.to_ascii_uppercase();
                if !is_currency_code(&code) {
                    return Err("currency not a three-letter code".into());
                }
                Some(code)
            }
        };
        let order_id = owned(text(row, self.order_id.as_ref(), "order_id")?);
        let event_id = match &self.event_id {
            IdRule::Column(index) => match row.text(*index, "event_id")? {
                "" => return Err("event_id missing".into()),
                id => id.to_owned(),
            },
            IdRule::Line(prefix) => format!("{prefix}-{}", row.line),
        };
        let session_id = match &self.session_id {
            SessionRule::Mapped(rule) => text(row, Some(rule), "session_id")?
                .ok_or("session_id missing")?
                .to_owned(),
            SessionRule::OrderElseLine(prefix) => order_id
                .clone()
                .unwrap_or_else(|| format!("{prefix}-{}", row.line)),
        };
        let capped = quantity.is_some_and(|q| q > f64::from(MAX_QUANTITY));
        let mut event = bare_event(event_id, user_id.to_owned(), event_type, ts, session_id);
        event.product_id = owned(text(row, self.product_id.as_ref(), "product_id")?);
        event.category = owned(text(row, self.category.as_ref(), "category")?);
        event.price = price;
        // Whole, ≥ 1 and capped: the conversion is exact.
        event.quantity = quantity.map(|q| q.min(f64::from(MAX_QUANTITY)) as u32);
        event.currency = currency;
        event.order_id = order_id;
        event.revenue = revenue;
        event.channel = owned(text(row, self.channel.as_ref(), "channel")?);
        event.device = owned(text(row, self.device.as_ref(), "device")?);
        Ok((event, capped))
    }

    fn event_type(&self, row: Row<'_>) -> Result<EventType, Reason> {
        match &self.event_type {
            EventTypeRule::Value(event_type) => Ok(*event_type),
            EventTypeRule::Column { index, values } => match row.text(*index, "event_type")? {
                "" => Err("event_type missing".into()),
                cell => values
                    .get(cell)
                    .copied()
                    .or_else(|| cell.parse().ok())
                    .ok_or_else(|| "event_type unknown".into()),
            },
        }
    }
}

/// A text field's value on this row; `None` when the cell is empty.
fn text<'a>(row: Row<'a>, rule: Option<&'a Text>, field: &str) -> Result<Option<&'a str>, Reason> {
    let value = match rule {
        None => return Ok(None),
        Some(Text::Value(value)) => value.as_str(),
        Some(Text::Column(index)) => row.text(*index, field)?,
    };
    Ok((!value.is_empty()).then_some(value))
}

fn owned(text: Option<&str>) -> Option<String> {
    text.map(str::to_owned)
}

/// A number field's value on this row (absolute on a refund); `None` when the cell is empty.
fn number(
    row: Row<'_>,
    rule: Option<&Number>,
    field: &str,
    refund: bool,
) -> Result<Option<f64>, Reason> {
    let value = match rule {
        None => return Ok(None),
        Some(Number::Value(value)) => *value,
        Some(Number::Column(index)) => match row.text(*index, field)? {
            "" => return Ok(None),
            cell => match cell.parse::<f64>() {
                Ok(v) if v.is_finite() => v,
                _ => return Err(format!("{field} not a number").into()),
            },
        },
    };
    match value {
        v if refund => Ok(Some(v.abs())),
        v if v < 0.0 => Err(format!("{field} negative").into()),
        v => Ok(Some(v)),
    }
}

/// Floating-point noise off a computed amount (`2.55 × 6` is 15.299999999999999).
fn round_micros(amount: f64) -> f64 {
    (amount * 1e6).round() / 1e6
}

fn read_time(format: &TimeFormat, cell: &str) -> Result<EventTime, Reason> {
    const OUT_OF_RANGE: &str = "ts out of range (years 0000 to 9999)";
    match format {
        TimeFormat::Rfc3339 => EventTime::parse_rfc3339(cell).map_err(|_| "ts not RFC 3339".into()),
        TimeFormat::UnixSeconds => {
            let millis = unix_millis(cell, EventTime::MILLIS_PER_SECOND)
                .ok_or("ts not a number of Unix seconds")?;
            millis.and_then(wire_time).ok_or(OUT_OF_RANGE.into())
        }
        TimeFormat::UnixMillis => {
            let millis = unix_millis(cell, 1).ok_or("ts not a number of Unix milliseconds")?;
            millis.and_then(wire_time).ok_or(OUT_OF_RANGE.into())
        }
        TimeFormat::Described { items, offset } => {
            let mut parsed = Parsed::new();
            let rest = parsed
                .parse_item(cell.as_bytes(), items)
                .map_err(|_| "ts does not match `ts.format`")?;
            if !rest.is_empty() {
                return Err("ts does not match `ts.format`".into());
            }
            let t = if parsed.offset_hour().is_some() || parsed.unix_timestamp_nanos().is_some() {
                OffsetDateTime::try_from(parsed)
            } else if parsed.hour_24().is_some() || parsed.hour_12().is_some() {
                PrimitiveDateTime::try_from(parsed).map(|t| t.assume_offset(*offset))
            } else {
                Date::try_from(parsed).map(|d| d.midnight().assume_offset(*offset))
            };
            let t = t.map_err(|_| "ts not a complete, valid date and time")?;
            wire_time_of(t).ok_or(OUT_OF_RANGE.into())
        }
    }
}

/// `cell` (an integer or decimal count of units of `millis_per_unit` ms) in milliseconds.
/// `None`: not a number; `Some(None)`: a number beyond what milliseconds in an i64 hold.
fn unix_millis(cell: &str, millis_per_unit: i64) -> Option<Option<i64>> {
    if let Ok(units) = cell.parse::<i64>() {
        return Some(units.checked_mul(millis_per_unit));
    }
    let units: f64 = cell.parse().ok().filter(|u: &f64| u.is_finite())?;
    let millis = (units * millis_per_unit as f64).round();
    // i64::MAX as f64 rounds up to 2^63, which is already out of range.
    Some((millis >= i64::MIN as f64 && millis < i64::MAX as f64).then_some(millis as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::CsvMapping;

    fn described(format: &str, offset: &str) -> TimeFormat {
        let mapping = CsvMapping::from_toml(&format!(
            "id_prefix = \"t\"\nuser_id = {{ column = \"u\" }}\nevent_type = {{ value = \"search\" }}\nts = {{ column = \"t\", format = \"{format}\", utc_offset = \"{offset}\" }}"
        ))
        .unwrap();
        Plan::compile(&mapping, None).unwrap().ts.1
    }

    fn millis(text: &str) -> i64 {
        EventTime::parse_rfc3339(text).unwrap().unix_millis()
    }

    #[test]
    fn every_time_format() {
        let check = |format: &TimeFormat, cell: &str, expected: Result<i64, &'static str>| {
            let got = read_time(format, cell).map(EventTime::unix_millis);
            assert_eq!(got, expected.map_err(Reason::from), "{cell}");
        };
        let noon = millis("2024-03-01T12:00:00Z");
        check(&TimeFormat::Rfc3339, "2024-03-01T13:00:00+01:00", Ok(noon));
        check(
            &TimeFormat::Rfc3339,
            "2024-03-01 12:00:00",
            Err("ts not RFC 3339"),
        );
        check(&TimeFormat::UnixSeconds, "1709294400", Ok(noon));
        check(&TimeFormat::UnixSeconds, "1709294400.25", Ok(noon + 250));
        check(&TimeFormat::UnixSeconds, "-1", Ok(-1_000));
        check(
            &TimeFormat::UnixSeconds,
            "soon",
            Err("ts not a number of Unix seconds"),
        );
        check(
            &TimeFormat::UnixSeconds,
            "9223372036854775807",
            Err("ts out of range (years 0000 to 9999)"),
        );
        check(
            &TimeFormat::UnixSeconds,
            "1e300",
            Err("ts out of range (years 0000 to 9999)"),
        );
        check(&TimeFormat::UnixMillis, "1709294400123", Ok(noon + 123));
        check(
            &TimeFormat::UnixMillis,
            "NaN",
            Err("ts not a number of Unix milliseconds"),
        );
        let local = described("[year]-[month]-[day] [hour]:[minute]:[second]", "+01:00");
        check(&local, "2024-03-01 13:00:00", Ok(noon));
        check(
            &local,
            "2024-03-01 13:00",
            Err("ts does not match `ts.format`"),
        );
        check(
            &local,
            "2024-03-01 13:00:00 extra",
            Err("ts does not match `ts.format`"),
        );
        check(
            &local,
            "2024-02-30 13:00:00",
            Err("ts not a complete, valid date and time"),
        );
        let zoned = described(
            "[year]-[month]-[day]T[hour]:[minute][offset_hour sign:mandatory]:[offset_minute]",
            "+05:00",
        );
        // The row's own offset wins over the assumed one.
        check(&zoned, "2024-03-01T14:00+02:00", Ok(noon));
        let date = described("[day].[month].[year]", "-01:00");
        check(&date, "01.03.2024", Ok(millis("2024-03-01T01:00:00Z")));
        let twelve = described("[hour repr:12]:[minute] [period] [month]/[day]/[year]", "Z");
        check(&twelve, "12:00 PM 03/01/2024", Ok(noon));
        let partial = described("[year]-[month]", "Z");
        check(
            &partial,
            "2024-03",
            Err("ts not a complete, valid date and time"),
        );
    }

    #[test]
    fn refunds_take_absolute_amounts_others_refuse_negatives() {
        let plan_row = |cells: &str| {
            let mapping = CsvMapping::from_toml(
                r#"
                id_prefix = "t"
                header = false
                user_id = { column = 1 }
                event_type = { column = 2 }
                ts = { column = 3, format = "unix_seconds" }
                price = { column = 4 }
                quantity = { column = 5 }
                "#,
            )
            .unwrap();
            let plan = Plan::compile(&mapping, None).unwrap();
            let mut rows = Rows::new(cells.as_bytes(), b',', false);
            let row = rows.next_row().unwrap().unwrap();
            plan.event(row)
                .map(|(event, _)| (event.price, event.quantity, event.revenue))
        };
        assert_eq!(
            plan_row("u,refund,0,-2.55,-6"),
            Ok((Some(2.55), Some(6), Some(15.3)))
        );
        assert_eq!(
            plan_row("u,purchase,0,2.55,"),
            Ok((Some(2.55), None, Some(2.55)))
        );
        assert_eq!(
            plan_row("u,purchase,0,-2.55,6"),
            Err("price negative".into())
        );
        assert_eq!(
            plan_row("u,purchase,0,2.55,-6"),
            Err("quantity negative".into())
        );
        assert_eq!(plan_row("u,purchase,0,2.55,0"), Err("quantity is 0".into()));
        assert_eq!(
            plan_row("u,purchase,0,2.55,1.5"),
            Err("quantity not a whole number".into())
        );
        assert_eq!(
            plan_row("u,purchase,0,inf,1"),
            Err("price not a number".into())
        );
        assert_eq!(plan_row("u,product_view,0,,"), Ok((None, None, None)));
        assert_eq!(
            plan_row("u,purchase,0,1e305,10000"),
            Err("revenue (price × quantity) too large".into())
        );
        assert_eq!(
            plan_row("u,purchase"),
            Err("too few fields (the mapping reads column 5)".into())
        );
    }

    #[test]
    fn unix_millis_edges() {
        assert_eq!(unix_millis("12", 1_000), Some(Some(12_000)));
        assert_eq!(unix_millis("x", 1_000), None);
        assert_eq!(unix_millis("inf", 1_000), None);
        assert_eq!(unix_millis("9223372036854775807", 1_000), Some(None));
        assert_eq!(unix_millis("9223372036854775807.0", 1), Some(None));
    }
}
