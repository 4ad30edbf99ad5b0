//! UCI Online Retail (line items of a UK online shop, 2010-12 to 2011-12) to one `purchase`
//! per invoice and one `refund` per cancellation invoice, emitted in time order.
//!
//! Decisions, each visible in the report:
//! - **Time zone.** `InvoiceDate` is UK wall-clock time without a zone; it is read as UTC.
//!   During British Summer Time that is one hour late; the data set does not say more.
//!   An invoice whose rows straddle a minute takes its earliest row's time.
//! - **Grouping.** Rows are grouped by `InvoiceNo` over the whole file (an invoice's rows are
//!   not always contiguous: 542806 is split), then events are sorted by (time, invoice). One
//!   small record per invoice is held, not the rows. An invoice whose rows name different
//!   customers is rejected whole (`invoice rows disagree on CustomerID`; none in the data).
//! - **Money.** `revenue` = Σ Quantity × UnitPrice, summed exactly in millionths; refunds carry
//!   the absolute value. `quantity` = Σ Quantity (absolute for refunds), **capped** at the
//!   contract's 10,000 (counted under `adjusted`); revenue keeps the full amount.
//!   `price` and `product_id` stay absent: an invoice holds many products.
//! - **Zero-price lines** (free samples, manual lines) are rejected (`UnitPrice is 0 (free
//!   line)`): they add no revenue, and an invoice made only of them is no purchase.
//! - **Rejected rows**, first failing check wins, in this order: field count; `InvoiceNo`
//!   (missing, `A…` bad-debt adjustments, other shapes); `CustomerID` (missing, not whole);
//!   unreadable Quantity, UnitPrice, InvoiceDate; Quantity 0; UnitPrice negative or 0; sign
//!   against the invoice kind (negative on a sale, positive on a cancellation).
//! - Ids: `event_id` = `online-retail-{InvoiceNo}`, `session_id` = `order_id` = `InvoiceNo`,
//!   `user_id` = `CustomerID` without its `.0`; `currency` GBP, `channel` web.
//!
//! Column names are matched by header (also the "Online Retail II" spellings `Invoice`,
//! `Price`, `Customer ID`), and `InvoiceDate` may also be `M/D/YYYY H:MM` as in the
//! spreadsheet export.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;

use tierflow_events::click::MAX_QUANTITY;
use tierflow_events::{ClickEvent, EventTime, EventType};
use time::PrimitiveDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use super::report::Emitter;
use super::rows::{Reason, Row, Rows};
use super::{ImportError, bare_event, wire_time_of};

const EVENT_ID_PREFIX: &str = "online-retail-";
const CURRENCY: &str = "GBP";
const CHANNEL: &str = "web";
/// Longest `InvoiceNo` accepted, so that the event id stays within the contract's 128.
const MAX_INVOICE_CHARS: usize = 64;
/// UnitPrice is summed as an integer count of these.
const MICROS_PER_UNIT: i128 = 1_000_000;
const QUANTITY_CAPPED: &str = "quantity capped at 10000";
const CUSTOMER_CONFLICT: &str = "invoice rows disagree on CustomerID";

const ISO_DATE: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
const SPREADSHEET_DATE: &[BorrowedFormatItem<'static>] = format_description!(
    "[month padding:none]/[day padding:none]/[year] [hour padding:none]:[minute]"
);

pub(super) fn import<R: Read>(input: R, out: &mut Emitter<'_>) -> Result<(), ImportError> {
    let mut rows = Rows::new(input, b',', true);
    let columns = Columns::find(rows.header()?)?;
    let mut invoices: HashMap<String, Invoice> = HashMap::new();
    while let Some(row) = rows.next_row()? {
        out.row_read();
        let item = match LineItem::parse(row, &columns) {
            Ok(item) => item,
            Err(reason) => {
                out.reject(&reason, row.line, 1);
                continue;
            }
        };
        match invoices.entry(item.invoice.to_owned()) {
            Entry::Occupied(mut entry) => entry.get_mut().add(&item, row.line),
            Entry::Vacant(entry) => {
                entry.insert(Invoice::new(&item, row.line));
            }
        }
    }
    let mut invoices: Vec<(String, Invoice)> = invoices.into_iter().collect();
    invoices.sort_unstable_by(|(a_no, a), (b_no, b)| (a.ts, a_no).cmp(&(b.ts, b_no)));
    for (number, invoice) in invoices {
        if invoice.customer_conflict {
            out.reject(CUSTOMER_CONFLICT, invoice.first_line, invoice.rows);
            continue;
        }
        let (first_line, rows) = (invoice.first_line, invoice.rows);
        let (event, capped) = invoice.into_event(number);
        if out.emit(event, first_line, rows)? && capped {
            out.adjusted(QUANTITY_CAPPED);
        }
    }
    Ok(())
}

/// Where the needed columns are in this file.
#[derive(Debug)]
struct Columns {
    invoice: usize,
    quantity: usize,
    date: usize,
    price: usize,
    customer: usize,
    width: usize,
}

impl Columns {
    fn find(header: Option<Vec<String>>) -> Result<Self, ImportError> {
        let header = header.ok_or_else(|| {
            ImportError::Header(
                "the input is empty; Online Retail starts with the header \
                 InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
                    .to_owned(),
            )
        })?;
        let find = |names: &[&str]| {
            header
                .iter()
                .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
                .ok_or_else(|| {
                    ImportError::Header(format!(
                        "Online Retail needs a column {} but the header is {:?}",
                        names.join(" or "),
                        header.join(",")
                    ))
                })
        };
        Ok(Self {
            invoice: find(&["InvoiceNo", "Invoice"])?,
            quantity: find(&["Quantity"])?,
            date: find(&["InvoiceDate"])?,
            price: find(&["UnitPrice", "Price"])?,
            customer: find(&["CustomerID", "Customer ID"])?,
            width: header.len(),
        })
    }
}

/// One row that passed every row-level check.
#[derive(Debug)]
struct LineItem<'r> {
    invoice: &'r str,
    cancellation: bool,
    customer: &'r str,
    quantity: i64,
    price_micros: i64,
    ts: EventTime,
}

impl<'r> LineItem<'r> {
    fn parse(row: Row<'r>, columns: &Columns) -> Result<Self, Reason> {
        if row.len() != columns.width {
            return Err(
                format!("wrong number of fields (the header has {})", columns.width).into(),
            );
        }
        let invoice = row.text(columns.invoice, "InvoiceNo")?;
        let digits = match invoice.as_bytes().first() {
            None => return Err("InvoiceNo missing".into()),
            Some(b'A') => return Err("InvoiceNo starts with A (bad-debt adjustment)".into()),
            Some(b'C') => &invoice[1..],
            Some(_) => invoice,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("InvoiceNo not digits with an optional C prefix".into());
        }
        if invoice.len() > MAX_INVOICE_CHARS {
            return Err(format!("InvoiceNo longer than {MAX_INVOICE_CHARS} characters").into());
        }
        let customer = row.text(columns.customer, "CustomerID")?;
        if customer.is_empty() {
            return Err("CustomerID missing".into());
        }
        let customer = whole_number(customer).ok_or("CustomerID not a whole number")?;
        let quantity: i64 = row
            .text(columns.quantity, "Quantity")?
            .parse()
            .map_err(|_| "Quantity not an integer")?;
        let price_micros = parse_micros(row.text(columns.price, "UnitPrice")?)
            .ok_or("UnitPrice not a decimal number (at most 6 places)")?;
        let ts = parse_date(row.text(columns.date, "InvoiceDate")?)
            .ok_or("InvoiceDate not YYYY-MM-DD HH:MM:SS")?;
        let cancellation = invoice.starts_with('C');
        if quantity == 0 {
            return Err("Quantity is 0".into());
        }
        if price_micros < 0 {
            return Err("UnitPrice negative".into());
        }
        if price_micros == 0 {
            return Err("UnitPrice is 0 (free line)".into());
        }
        if !cancellation && quantity < 0 {
            return Err("Quantity negative on a sale invoice".into());
        }
        if cancellation && quantity > 0 {
            return Err("Quantity positive on a cancellation invoice".into());
        }
        Ok(Self {
            invoice,
            cancellation,
            customer,
            quantity,
            price_micros,
            ts,
        })
    }
}

/// The accepted rows of one invoice so far.
#[derive(Debug)]
struct Invoice {
    customer: String,
    customer_conflict: bool,
    cancellation: bool,
    ts: EventTime,
    first_line: u64,
    rows: u64,
    quantity: i128,
    revenue_micros: i128,
}

impl Invoice {
    fn new(item: &LineItem<'_>, line: u64) -> Self {
        let mut invoice = Self {
            customer: item.customer.to_owned(),
            customer_conflict: false,
            cancellation: item.cancellation,
            ts: item.ts,
            first_line: line,
            rows: 0,
            quantity: 0,
            revenue_micros: 0,
        };
        invoice.add(item, line);
        invoice
    }

    fn add(&mut self, item: &LineItem<'_>, line: u64) {
        self.customer_conflict |= item.customer != self.customer;
        self.ts = self.ts.min(item.ts);
        self.first_line = self.first_line.min(line);
        self.rows += 1;
        self.quantity = self.quantity.saturating_add(i128::from(item.quantity));
        self.revenue_micros = self
            .revenue_micros
            .saturating_add(i128::from(item.quantity) * i128::from(item.price_micros));
    }

    /// The invoice as its event, and whether the quantity had to be capped.
    fn into_event(self, number: String) -> (ClickEvent, bool) {
        let event_type = if self.cancellation {
            EventType::Refund
        } else {
            EventType::Purchase
        };
        let units = self.quantity.unsigned_abs();
        let capped = units > u128::from(MAX_QUANTITY);
        let quantity = if capped {
            MAX_QUANTITY
        } else {
            // `units` ≤ MAX_QUANTITY here, and every line has a non-zero quantity of the
            // invoice's sign, so the sum is at least 1.
            u32::try_from(units).unwrap_or(MAX_QUANTITY)
        };
        let revenue = self.revenue_micros.unsigned_abs() as f64 / MICROS_PER_UNIT as f64;
        let mut event = bare_event(
            format!("{EVENT_ID_PREFIX}{number}"),
            self.customer,
            event_type,
            self.ts,
            number.clone(),
        );
        event.quantity = Some(quantity);
        event.currency = Some(CURRENCY.to_owned());
        event.order_id = Some(number);
        event.revenue = Some(revenue);
        event.channel = Some(CHANNEL.to_owned());
        (event, capped)
    }
}

/// `17850.0` or `17850` as `17850`; anything else (fractions, signs, exponents) is refused.
fn whole_number(text: &str) -> Option<&str> {
    let (int, frac) = text.split_once('.').unwrap_or((text, "0"));
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (is_digits(int) && is_digits(frac) && frac.bytes().all(|b| b == b'0')).then_some(int)
}

/// A decimal such as `2.55`, `-11062.06` or `.5` in millionths, exactly; at most 6 places.
fn parse_micros(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    if frac.len() > 6 {
        return None;
    }
    let int: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>().ok()? * 10_i64.pow(6 - frac.len() as u32)
    };
    let magnitude = int.checked_mul(1_000_000)?.checked_add(frac)?;
    Some(if negative { -magnitude } else { magnitude })
}

/// `2010-12-01 08:26:00` (or `12/1/2010 8:26`) read as UTC.
fn parse_date(text: &str) -> Option<EventTime> {
    PrimitiveDateTime::parse(text, ISO_DATE)
        .or_else(|_| PrimitiveDateTime::parse(text, SPREADSHEET_DATE))
        .ok()
        .and_then(|t| wire_time_of(t.assume_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_lose_their_float_tail() {
        for (text, expected) in [
            ("17850.0", Some("17850")),
            ("17850", Some("17850")),
            ("17850.00", Some("17850")),
            ("17850.5", None),
            ("1.785e4", None),
            ("-1", None),
            (".0", None),
            ("17850.", None),
            ("", None),
        ] {
            assert_eq!(whole_number(text), expected, "{text}");
        }
    }

    #[test]
    fn prices_are_exact_millionths() {
        for (text, expected) in [
            ("2.55", Some(2_550_000)),
            ("0.001", Some(1_000)),
            ("-11062.06", Some(-11_062_060_000)),
            ("+3", Some(3_000_000)),
            (".5", Some(500_000)),
            ("1.", Some(1_000_000)),
            ("0.0000001", None),
            ("1e3", None),
            ("", None),
            ("-", None),
            (".", None),
            ("NaN", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(parse_micros(text), expected, "{text}");
        }
    }

    #[test]
    fn both_date_spellings_read_as_utc() {
        let expected = EventTime::parse_rfc3339("2010-12-01T08:26:00Z").ok();
        assert_eq!(parse_date("2010-12-01 08:26:00"), expected);
        assert_eq!(parse_date("12/1/2010 8:26"), expected);
        assert_eq!(parse_date("2010-13-01 08:26:00"), None);
        assert_eq!(parse_date("2010-12-01"), None);
    }
}
