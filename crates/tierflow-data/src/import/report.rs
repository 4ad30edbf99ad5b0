//! What an import did, row by row accounted for; and the one gate every event passes on its
//! way to the sink (validation, counting, distinct users).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Serialize;
use tierflow_events::{ClickEvent, EventTime, EventType};

use super::{ImportError, SinkError};

/// The account of one import. Every row read is either part of an emitted event
/// (`rows_in_events`) or counted under a reason in `rejected_rows`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ImportReport {
    /// Data rows read (the header line is not a row).
    pub rows_read: u64,
    /// Rows that went into emitted events (Online Retail: all line items of the invoice).
    pub rows_in_events: u64,
    /// Events handed to the sink.
    pub events: u64,
    pub events_by_type: BTreeMap<EventType, u64>,
    /// Rows that could not be mapped, by reason (`"CustomerID missing"`, ...).
    pub rejected_rows: BTreeMap<String, u64>,
    /// The 1-based input line of the first row rejected for each reason, to go and look.
    pub first_rejected_line: BTreeMap<String, u64>,
    /// Emitted events that needed a documented adjustment, by adjustment
    /// (e.g. `"quantity capped at 10000"`).
    pub adjusted: BTreeMap<String, u64>,
    /// Distinct `user_id`s among emitted events.
    pub users: u64,
    /// Earliest and latest `ts` among emitted events.
    pub first_ts: Option<EventTime>,
    pub last_ts: Option<EventTime>,
}

impl ImportReport {
    /// Rows counted in [`ImportReport::rejected_rows`], all reasons together.
    pub fn rows_rejected(&self) -> u64 {
        self.rejected_rows.values().sum()
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "read {} rows: {} events for {} users, {} rows rejected",
            grouped(self.rows_read),
            grouped(self.events),
            grouped(self.users),
            grouped(self.rows_rejected()),
        )?;
        if let (Some(first), Some(last)) = (self.first_ts, self.last_ts) {
            writeln!(f, "  time span: {first} to {last}")?;
        }
        if !self.events_by_type.is_empty() {
            writeln!(f, "  events by type:")?;
            let width = column_width(self.events_by_type.values());
            for (event_type, n) in &self.events_by_type {
                writeln!(f, "    {:>width$}  {event_type}", grouped(*n))?;
            }
        }
        if !self.rejected_rows.is_empty() {
            writeln!(f, "  rejected rows by reason:")?;
            let width = column_width(self.rejected_rows.values());
            for (reason, n) in &self.rejected_rows {
                write!(f, "    {:>width$}  {reason}", grouped(*n))?;
                match self.first_rejected_line.get(reason) {
                    Some(line) => writeln!(f, " — first at line {line}")?,
                    None => writeln!(f)?,
                }
            }
        }
        if !self.adjusted.is_empty() {
            writeln!(f, "  adjusted events:")?;
            let width = column_width(self.adjusted.values());
            for (what, n) in &self.adjusted {
                writeln!(f, "    {:>width$}  {what}", grouped(*n))?;
            }
        }
        Ok(())
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn column_width<'a>(counts: impl Iterator<Item = &'a u64>) -> usize {
    counts.map(|n| grouped(*n).len()).max().unwrap_or(0)
}

/// Between the importers and the sink: validates each event, keeps the report.
pub(super) struct Emitter<'s> {
    sink: &'s mut dyn FnMut(ClickEvent) -> Result<(), SinkError>,
    report: ImportReport,
    users: HashSet<String>,
}

impl fmt::Debug for Emitter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl<'s> Emitter<'s> {
    pub(super) fn new(sink: &'s mut dyn FnMut(ClickEvent) -> Result<(), SinkError>) -> Self {
        Self {
            sink,
            report: ImportReport::default(),
            users: HashSet::new(),
        }
    }

    /// One more data row read.
    pub(super) fn row_read(&mut self) {
        self.report.rows_read += 1;
    }

    /// `rows` rows (the first at `line`) could not be mapped, for `reason`.
    pub(super) fn reject(&mut self, reason: &str, line: u64, rows: u64) {
        match self.report.rejected_rows.get_mut(reason) {
            Some(n) => *n += rows,
            None => {
                self.report.rejected_rows.insert(reason.to_owned(), rows);
                self.report
                    .first_rejected_line
                    .insert(reason.to_owned(), line);
            }
        }
    }

    /// The next emitted event carries a documented adjustment.
    pub(super) fn adjusted(&mut self, what: &str) {
        match self.report.adjusted.get_mut(what) {
            Some(n) => *n += 1,
            None => {
                self.report.adjusted.insert(what.to_owned(), 1);
            }
        }
    }

    /// Validates `event` (made of `rows` rows, the first at `line`) and hands it to the sink;
    /// an event the contract refuses is counted as rejected under the validator's reason.
    /// Returns whether the event was emitted.
    pub(super) fn emit(
        &mut self,
        event: ClickEvent,
        line: u64,
        rows: u64,
    ) -> Result<bool, ImportError> {
        if let Err(invalid) = event.validate() {
            self.reject(&invalid.reason, line, rows);
            return Ok(false);
        }
        let report = &mut self.report;
        report.rows_in_events += rows;
        report.events += 1;
        *report.events_by_type.entry(event.event_type).or_default() += 1;
        report.first_ts = Some(report.first_ts.map_or(event.ts, |t| t.min(event.ts)));
        report.last_ts = Some(report.last_ts.map_or(event.ts, |t| t.max(event.ts)));
        if !self.users.contains(&event.user_id) {
            self.users.insert(event.user_id.clone());
        }
        let event_id = event.event_id.clone();
        (self.sink)(event).map_err(|source| ImportError::Sink { event_id, source })?;
        Ok(true)
    }

    pub(super) fn finish(mut self) -> ImportReport {
        self.report.users = self.users.len() as u64;
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (541_909, "541,909"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(grouped(n), text);
        }
    }

    #[test]
    fn display_lists_types_reasons_and_adjustments() {
        let mut report = ImportReport {
            rows_read: 1_204,
            rows_in_events: 1_200,
            events: 3,
            users: 2,
            first_ts: Some(EventTime::from_unix_seconds(0)),
            last_ts: Some(EventTime::from_unix_seconds(60)),
            ..ImportReport::default()
        };
        report.events_by_type.insert(EventType::Purchase, 2);
        report.events_by_type.insert(EventType::Refund, 1);
        report.rejected_rows.insert("CustomerID missing".into(), 4);
        report
            .first_rejected_line
            .insert("CustomerID missing".into(), 17);
        report.adjusted.insert("quantity capped at 10000".into(), 1);
        let text = report.to_string();
        assert_eq!(
            text,
            "read 1,204 rows: 3 events for 2 users, 4 rows rejected\n\
             \x20 time span: 1970-01-01T00:00:00.000Z to 1970-01-01T00:01:00.000Z\n\
             \x20 events by type:\n\
             \x20   2  purchase\n\
             \x20   1  refund\n\
             \x20 rejected rows by reason:\n\
             \x20   4  CustomerID missing — first at line 17\n\
             \x20 adjusted events:\n\
             \x20   1  quantity capped at 10000\n"
        );
    }

    #[test]
    fn an_empty_report_still_says_rejected() {
        assert!(
            ImportReport::default()
                .to_string()
                .contains("0 rows rejected")
        );
    }
}
