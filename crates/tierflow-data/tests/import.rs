//! The importers end to end: the real Online Retail and Taobao files against counts computed
//! independently (a Python script, numbers quoted below), the generic CSV fixture, mapping
//! errors, and malformed input that must never panic. Test paths start with `import_` so
//! that `cargo test -p tierflow-data import` runs them with the unit tests.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Result;
use flate2::read::GzDecoder;
use proptest::prelude::*;
use tierflow_data::import::{self, CsvMapping, ImportError, ImportReport, Source, TaobaoOptions};
use tierflow_events::{ClickEvent, EventTime, EventType};

/// The shared real data sets: `$TIERFLOW_DATA_DIR`, else `shared/data` beside the checkout.
fn data_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("TIERFLOW_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "this test needs the real data set {} (absent; set TIERFLOW_DATA_DIR to the folder \
         holding {name})",
        path.display()
    );
    path
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Imports everything into memory.
fn run(source: &Source, input: impl Read) -> Result<(ImportReport, Vec<ClickEvent>), ImportError> {
    let mut events = Vec::new();
    let report = import::import(source, input, &mut |event| {
        events.push(event);
        Ok(())
    })?;
    Ok((report, events))
}

fn run_gz(source: &Source, name: &str) -> Result<(ImportReport, Vec<ClickEvent>)> {
    let file = File::open(data_file(name))?;
    Ok(run(source, GzDecoder::new(file))?)
}

fn ts(text: &str) -> EventTime {
    EventTime::parse_rfc3339(text).expect("a valid RFC 3339 literal")
}

fn counts<const N: usize>(pairs: [(&str, u64); N]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// What every import must hold: each event decodes as the contract says, ids are unique,
/// and each row is either in an event or rejected.
fn check_invariants(report: &ImportReport, events: &[ClickEvent]) {
    for event in events {
        let decoded = ClickEvent::from_json(&event.to_json())
            .unwrap_or_else(|e| panic!("invalid event {event:?}: {e}"));
        assert_eq!(&decoded, event);
    }
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are not unique");
    assert_eq!(report.events, events.len() as u64);
    assert_eq!(
        report.rows_read,
        report.rows_in_events + report.rows_rejected(),
        "{report}"
    );
    let users: HashSet<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(report.users, users.len() as u64);
    let mut by_type = BTreeMap::new();
    for event in events {
        *by_type.entry(event.event_type).or_insert(0) += 1;
    }
    assert_eq!(report.events_by_type, by_type);
    assert_eq!(report.first_ts, events.iter().map(|e| e.ts).min());
    assert_eq!(report.last_ts, events.iter().map(|e| e.ts).max());
}

fn revenue_of(events: &[ClickEvent], event_type: EventType) -> f64 {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .filter_map(|e| e.revenue)
        .sum()
}

fn fixture_mapping() -> CsvMapping {
    let text = std::fs::read_to_string(fixture("orders_mapping.toml")).expect("the fixture");
    CsvMapping::from_toml(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// UCI Online Retail: invoices to purchases and refunds.
mod import_online_retail {
    use super::*;

    /// Expected numbers from an independent Python script (its csv module and
    /// `decimal.Decimal`, the same rules written separately), run once on
    /// online_retail.csv.gz; its output:
    ///   rows_read 541909; events 22186 purchases 18532 refunds 3654; rows in events 406789;
    ///   users 4371; rejected CustomerID missing 135077, InvoiceNo starts with A 3,
    ///   UnitPrice is 0 (free line) 40 (total 135120); purchase revenue 8911407.904;
    ///   refund revenue 611342.09; quantity capped 13; first 2010-12-01 08:26 536365,
    ///   last 2011-12-09 12:50 581587; first rejected lines 624, 299984, 9304.
    #[test]
    fn real_file_matches_the_independent_count() -> Result<()> {
        let (report, events) = run_gz(&Source::OnlineRetail, "online_retail.csv.gz")?;
        check_invariants(&report, &events);
        assert_eq!(report.rows_read, 541_909);
        assert_eq!(report.rows_in_events, 406_789);
        assert_eq!(report.events, 22_186);
        assert_eq!(
            report.events_by_type,
            BTreeMap::from([(EventType::Purchase, 18_532), (EventType::Refund, 3_654)])
        );
        assert_eq!(report.users, 4_371);
        assert_eq!(
            report.rejected_rows,
            counts([
                ("CustomerID missing", 135_077),
                ("InvoiceNo starts with A (bad-debt adjustment)", 3),
                ("UnitPrice is 0 (free line)", 40),
            ])
        );
        assert_eq!(
            report.first_rejected_line,
            counts([
                ("CustomerID missing", 624),
                ("InvoiceNo starts with A (bad-debt adjustment)", 299_984),
                ("UnitPrice is 0 (free line)", 9_304),
            ])
        );
        assert_eq!(report.adjusted, counts([("quantity capped at 10000", 13)]));
        assert_eq!(report.first_ts, Some(ts("2010-12-01T08:26:00Z")));
        assert_eq!(report.last_ts, Some(ts("2011-12-09T12:50:00Z")));
        let purchases = revenue_of(&events, EventType::Purchase);
        assert!(
            (purchases - 8_911_407.904).abs() < 0.01,
            "Σ purchase revenue {purchases}"
        );
        let refunds = revenue_of(&events, EventType::Refund);
        assert!(
            (refunds - 611_342.09).abs() < 0.01,
            "Σ refund revenue {refunds}"
        );

        // Sorted by (time, invoice).
        let keys: Vec<(EventTime, &str)> = events
            .iter()
            .map(|e| (e.ts, e.order_id.as_deref().unwrap_or_default()))
            .collect();
        assert!(keys.is_sorted(), "events are not in (ts, invoice) order");

        let by_invoice: BTreeMap<&str, &ClickEvent> = events
            .iter()
            .map(|e| (e.order_id.as_deref().unwrap_or_default(), e))
            .collect();
        let first = by_invoice["536365"];
        assert_eq!(first.event_id, "online-retail-536365");
        assert_eq!(first.user_id, "17850");
        assert_eq!(first.session_id, "536365");
        assert_eq!(first.ts, ts("2010-12-01T08:26:00Z"));
        assert_eq!(
            (first.quantity, first.revenue, first.currency.as_deref()),
            (Some(40), Some(139.12), Some("GBP"))
        );
        assert_eq!(first.channel.as_deref(), Some("web"));
        let refund = by_invoice["C536379"];
        assert_eq!(
            (refund.event_type, refund.quantity, refund.revenue),
            (EventType::Refund, Some(1), Some(27.5))
        );
        // The largest order of the data set: quantity capped, revenue kept.
        let big = by_invoice["581483"];
        assert_eq!((big.quantity, big.revenue), (Some(10_000), Some(168_469.6)));
        // 542806's 39 rows are not contiguous in the file; they still make one event.
        let split = by_invoice["542806"];
        assert_eq!((split.quantity, split.revenue), (Some(260), Some(846.69)));
        assert_eq!(split.ts, ts("2011-02-01T11:19:00Z"), "earliest row's time");
        Ok(())
    }

    #[test]
    fn is_deterministic() -> Result<()> {
        let (first_report, first) = run_gz(&Source::OnlineRetail, "online_retail.csv.gz")?;
        let (second_report, second) = run_gz(&Source::OnlineRetail, "online_retail.csv.gz")?;
        assert_eq!(first_report, second_report);
        assert!(first == second, "two imports of one file differ");
        Ok(())
    }

    /// Each rule on a file small enough to read.
    #[test]
    fn rules_on_a_small_file() -> Result<()> {
        let input = b"\xEF\xBB\xBFInvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536366,22633,HAND WARMER,6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom
536365,71053,LANTERN \xA3,6,2010-12-01 08:27:00,3.39,17850.0,United Kingdom
C536379,D,Discount,-1,2010-12-01 09:41:00,27.50,14527.0,United Kingdom
536380,22961,JAM,4,2010-12-01 09:45:00,0.0,12345.0,United Kingdom
536381,22961,JAM,4,2010-12-01 09:45:00,1.0,,United Kingdom
A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,11062.06,,United Kingdom
536382,22961,JAM,-4,2010-12-01 09:45:00,1.0,12345.0,United Kingdom
C536383,22961,JAM,4,2010-12-01 09:45:00,1.0,12345.0,United Kingdom
536384,22961,JAM,four,2010-12-01 09:45:00,1.0,12345.0,United Kingdom
536385,22961,JAM,4,2010-12-01 09:45:00,1.0.0,12345.0,United Kingdom
536386,22961,JAM,4,yesterday,1.0,12345.0,United Kingdom
536387,22961,JAM,4,2010-12-01 09:45:00,1.0,12345.5,United Kingdom
536388,22961,JAM,4,2010-12-01 09:45:00,1.0,12345.0
536389,22961,JAM,4,2010-12-01 09:45:00,-1.0,12345.0,United Kingdom
536390,22961,JAM,0,2010-12-01 09:45:00,1.0,12345.0,United Kingdom
X536391,22961,JAM,1,2010-12-01 09:45:00,1.0,12345.0,United Kingdom
536392,22961,JAM,1,2010-12-01 09:45:00,1.0,\xFF,United Kingdom
536393,22961,JAM,1,2010-12-01 09:50:00,1.0,111.0,United Kingdom
536393,22962,JAM,2,2010-12-01 09:50:00,1.0,222.0,United Kingdom
536394,22961,JAM,3,12/1/2010 9:55,0.5,333,United Kingdom
";
        let (report, events) = run(&Source::OnlineRetail, &input[..])?;
        check_invariants(&report, &events);
        assert_eq!(report.rows_read, 21);
        assert_eq!(
            report.rejected_rows,
            counts([
                ("CustomerID missing", 1),
                ("CustomerID not UTF-8", 1),
                ("CustomerID not a whole number", 1),
                ("InvoiceDate not YYYY-MM-DD HH:MM:SS", 1),
                ("InvoiceNo not digits with an optional C prefix", 1),
                ("InvoiceNo starts with A (bad-debt adjustment)", 1),
                ("Quantity is 0", 1),
                ("Quantity negative on a sale invoice", 1),
                ("Quantity not an integer", 1),
                ("Quantity positive on a cancellation invoice", 1),
                ("UnitPrice is 0 (free line)", 1),
                ("UnitPrice negative", 1),
                ("UnitPrice not a decimal number (at most 6 places)", 1),
                ("invoice rows disagree on CustomerID", 2),
                ("wrong number of fields (the header has 8)", 1),
            ])
        );
        assert_eq!(
            report.first_rejected_line["invoice rows disagree on CustomerID"],
            20
        );
        type Summary<'a> = (
            &'a str,
            EventType,
            &'a str,
            Option<u32>,
            Option<f64>,
            EventTime,
        );
        let summary: Vec<Summary<'_>> = events
            .iter()
            .map(|e| {
                (
                    e.event_id.as_str(),
                    e.event_type,
                    e.user_id.as_str(),
                    e.quantity,
                    e.revenue,
                    e.ts,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                // Lines 2 and 4 (Description not UTF-8 does not matter): earliest time.
                (
                    "online-retail-536365",
                    EventType::Purchase,
                    "17850",
                    Some(12),
                    Some(35.64),
                    ts("2010-12-01T08:26:00Z")
                ),
                (
                    "online-retail-536366",
                    EventType::Purchase,
                    "17850",
                    Some(6),
                    Some(11.1),
                    ts("2010-12-01T08:28:00Z")
                ),
                (
                    "online-retail-C536379",
                    EventType::Refund,
                    "14527",
                    Some(1),
                    Some(27.5),
                    ts("2010-12-01T09:41:00Z")
                ),
                (
                    "online-retail-536394",
                    EventType::Purchase,
                    "333",
                    Some(3),
                    Some(1.5),
                    ts("2010-12-01T09:55:00Z")
                ),
            ]
        );
        Ok(())
    }

    #[test]
    fn refuses_a_foreign_header() {
        for (input, expected) in [
            (&b""[..], "the input is empty"),
            (b"user,item\n1,2\n", "needs a column InvoiceNo or Invoice"),
        ] {
            match run(&Source::OnlineRetail, input) {
                Err(ImportError::Header(message)) => {
                    assert!(message.contains(expected), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

/// Taobao UserBehavior: behaviours to events, sessions by inactivity.
mod import_taobao {
    use super::*;

    /// Expected numbers from an independent Python script (its csv module, the same session
    /// rule written separately), run once on taobao_user_behavior.csv.gz; its output: rows_read 110300, events 110300 {product_view 98361,
    /// purchase 2493, add_to_cart 6063, wishlist_add 3383}; users 66454; sessions 70977 (30-minute
    /// gap); rejected none; never steps back in time; first 1511658000, last 1511665811.
    /// The event mix is also the data set's published one.
    #[test]
    fn real_file_matches_the_published_mix() -> Result<()> {
        let options = TaobaoOptions {
            unit_price: 2.5,
            ..TaobaoOptions::default()
        };
        let (report, events) = run_gz(&Source::Taobao(options), "taobao_user_behavior.csv.gz")?;
        check_invariants(&report, &events);
        assert_eq!(report.rows_read, 110_300);
        assert_eq!(report.events, 110_300);
        assert_eq!(
            report.events_by_type,
            BTreeMap::from([
                (EventType::ProductView, 98_361),
                (EventType::AddToCart, 6_063),
                (EventType::WishlistAdd, 3_383),
                (EventType::Purchase, 2_493),
            ])
        );
        assert_eq!(report.users, 66_454);
        assert!(report.rejected_rows.is_empty(), "{report}");
        assert!(report.adjusted.is_empty(), "{report}");
        assert_eq!(report.first_ts, Some(ts("2017-11-26T01:00:00Z")));
        assert_eq!(report.last_ts, Some(ts("2017-11-26T03:10:11Z")));
        let sessions: HashSet<&str> = events.iter().map(|e| e.session_id.as_str()).collect();
        assert_eq!(sessions.len(), 70_977);
        let revenue = revenue_of(&events, EventType::Purchase);
        assert!((revenue - 2_493.0 * 2.5).abs() < 1e-6, "{revenue}");

        let first = &events[0];
        assert_eq!(first.event_id, "taobao-543462-1511658000-1");
        assert_eq!(
            (
                first.user_id.as_str(),
                first.event_type,
                first.product_id.as_deref(),
                first.category.as_deref(),
                first.session_id.as_str(),
            ),
            (
                "543462",
                EventType::ProductView,
                Some("1715"),
                Some("1464116"),
                "543462-1"
            )
        );
        let buy = events
            .iter()
            .find(|e| e.event_type == EventType::Purchase)
            .expect("a purchase");
        assert_eq!(
            (
                buy.price,
                buy.quantity,
                buy.revenue,
                buy.currency.as_deref()
            ),
            (Some(2.5), Some(1), Some(2.5), Some("CNY"))
        );
        // Input order: the line number ends every id.
        let lines: Vec<u64> = events
            .iter()
            .map(|e| e.event_id.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        assert!(lines.is_sorted());

        let (again_report, again) = run_gz(
            &Source::Taobao(TaobaoOptions {
                unit_price: 2.5,
                ..TaobaoOptions::default()
            }),
            "taobao_user_behavior.csv.gz",
        )?;
        assert_eq!(again_report, report);
        assert!(again == events, "two imports of one file differ");
        Ok(())
    }

    #[test]
    fn rules_on_a_small_file() -> Result<()> {
        let input = b"1,10,100,pv,1511658000
1,11,100,cart,1511658600
1,11,100,buy,1511660400
2,12,101,fav,1511658000
1,13,100,pv,1511662201
3,14,102,click,1511658000
3,14,102,,1511658000
x,14,102,pv,1511658000
3,,102,pv,1511658000
3,14,-1,pv,1511658000
3,14,102,pv,soon
3,14,102,pv,
3,14,102,pv,999999999999
3,14,102
\xFF,14,102,pv,1511658000
";
        let (report, events) = run(&Source::Taobao(TaobaoOptions::default()), &input[..])?;
        check_invariants(&report, &events);
        assert_eq!(
            report.rejected_rows,
            counts([
                ("behavior missing", 1),
                ("behavior unknown", 1),
                ("category_id not an integer", 1),
                ("item_id missing", 1),
                ("timestamp missing", 1),
                ("timestamp not an integer", 1),
                ("timestamp out of range (years 0000 to 9999)", 1),
                ("user_id not UTF-8", 1),
                ("user_id not an integer", 1),
                ("wrong number of fields (expected 5)", 1),
            ])
        );
        let sessions: Vec<(&str, EventType)> = events
            .iter()
            .map(|e| (e.session_id.as_str(), e.event_type))
            .collect();
        assert_eq!(
            sessions,
            [
                ("1-1", EventType::ProductView),
                ("1-1", EventType::AddToCart),
                // 30 minutes after the cart: still the session.
                ("1-1", EventType::Purchase),
                ("2-1", EventType::WishlistAdd),
                // 30 minutes and 1 second after the buy: a new session.
                ("1-2", EventType::ProductView),
            ]
        );
        Ok(())
    }

    #[test]
    fn refuses_bad_options() {
        let options = TaobaoOptions {
            unit_price: -1.0,
            ..TaobaoOptions::default()
        };
        let err = run(&Source::Taobao(options), &b""[..]).unwrap_err();
        assert!(
            err.to_string()
                .contains("unit price must be a finite number ≥ 0"),
            "{err}"
        );
    }
}

/// Generic CSV with a TOML mapping.
mod import_generic {
    use super::*;

    #[test]
    fn fixture_maps_every_row_or_says_why() -> Result<()> {
        let source = Source::Generic(fixture_mapping());
        let (report, events) = run(&source, File::open(fixture("orders.csv"))?)?;
        check_invariants(&report, &events);
        assert_eq!(report.rows_read, 12);
        assert_eq!(
            report.rejected_rows,
            counts([
                ("event_type unknown", 1),
                ("price not a number", 1),
                ("ts does not match `ts.format`", 1),
                ("user_id missing", 1),
                ("wrong number of fields (the header has 10)", 1),
            ])
        );
        assert_eq!(
            report.first_rejected_line,
            counts([
                ("event_type unknown", 8),
                ("price not a number", 7),
                ("ts does not match `ts.format`", 10),
                ("user_id missing", 6),
                ("wrong number of fields (the header has 10)", 13),
            ])
        );
        assert_eq!(report.adjusted, counts([("quantity capped at 10000", 1)]));
        assert_eq!(report.users, 4);

        type Row<'a> = (
            &'a str,
            EventType,
            &'a str,
            &'a str,
            Option<f64>,
            Option<u32>,
            Option<f64>,
            Option<&'a str>,
        );
        let rows: Vec<Row<'_>> = events
            .iter()
            .map(|e| {
                (
                    e.event_id.as_str(),
                    e.event_type,
                    e.user_id.as_str(),
                    e.session_id.as_str(),
                    e.price,
                    e.quantity,
                    e.revenue,
                    e.currency.as_deref(),
                )
            })
            .collect();
        let p = EventType::Purchase;
        assert_eq!(
            rows,
            vec![
                // revenue = 12.50 × 2; `eur` raised to EUR; session = order_no.
                (
                    "shop-2024-03-2",
                    p,
                    "c-17",
                    "1001",
                    Some(12.5),
                    Some(2),
                    Some(25.0),
                    Some("EUR")
                ),
                // A refund written negative.
                (
                    "shop-2024-03-3",
                    EventType::Refund,
                    "c-17",
                    "1002",
                    Some(12.5),
                    Some(1),
                    Some(12.5),
                    Some("EUR")
                ),
                // An explicit total wins over price × quantity.
                (
                    "shop-2024-03-4",
                    p,
                    "c-42",
                    "1003",
                    Some(80.0),
                    Some(1),
                    Some(75.0),
                    Some("EUR")
                ),
                // No order: the session falls back to the line.
                (
                    "shop-2024-03-5",
                    EventType::ProductView,
                    "c-99",
                    "shop-2024-03-5",
                    None,
                    None,
                    None,
                    None
                ),
                // Quantity capped; revenue from the full quantity.
                (
                    "shop-2024-03-9",
                    p,
                    "c-42",
                    "1007",
                    Some(2.0),
                    Some(10_000),
                    Some(24_000.0),
                    Some("EUR")
                ),
                // Not a purchase: no revenue computed.
                (
                    "shop-2024-03-11",
                    EventType::AddToCart,
                    "c-42",
                    "1009",
                    Some(19.99),
                    Some(1),
                    None,
                    Some("EUR")
                ),
                // `purchase` is not in the value map but is an event type name.
                (
                    "shop-2024-03-12",
                    p,
                    "c-7",
                    "1010",
                    Some(5.0),
                    Some(2),
                    Some(10.0),
                    None
                ),
            ]
        );
        let first = &events[0];
        assert_eq!(first.ts, ts("2024-03-01T08:15:00Z"), "+01:00 assumed");
        assert_eq!(
            (
                first.order_id.as_deref(),
                first.product_id.as_deref(),
                first.category.as_deref(),
                first.channel.as_deref(),
            ),
            (Some("1001"), Some("SKU-1"), Some("mugs"), Some("web"))
        );
        assert_eq!(events[6].product_id.as_deref(), Some("SKU-8, gift-wrapped"));
        assert_eq!(events[6].category, None, "an empty cell is absent");

        let (again_report, again) = run(&source, File::open(fixture("orders.csv"))?)?;
        assert_eq!(again_report, report);
        assert!(again == events, "two imports of one file differ");
        Ok(())
    }

    #[test]
    fn each_ts_format_reads_the_same_instant() -> Result<()> {
        let expected = ts("2024-03-01T08:15:00.250Z");
        for (format, cell) in [
            (r#"format = "rfc3339""#, "2024-03-01T09:15:00.250+01:00"),
            (r#"format = "unix_seconds""#, "1709280900.25"),
            (r#"format = "unix_millis""#, "1709280900250"),
            (
                r#"format = "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]", utc_offset = "+01:00""#,
                "2024-03-01 09:15:00.25",
            ),
            (
                r#"format = "[day]/[month]/[year] [hour]:[minute]:[second].[subsecond] [offset_hour]:[offset_minute]""#,
                "01/03/2024 03:15:00.250 -05:00",
            ),
        ] {
            let mapping = CsvMapping::from_toml(&format!(
                "id_prefix = \"f\"\nuser_id = {{ column = \"who\" }}\nevent_type = {{ value = \"page_view\" }}\nts = {{ column = \"when\", {format} }}\n"
            ))?;
            let input = format!("who,when\nalice,{cell}\n");
            let (report, events) = run(&Source::Generic(mapping), input.as_bytes())?;
            assert!(report.rejected_rows.is_empty(), "{format}: {report}");
            assert_eq!(events[0].ts, expected, "{format}");
        }
        Ok(())
    }

    #[test]
    fn without_header_uses_column_numbers_and_a_constant_type() -> Result<()> {
        let mapping = CsvMapping::from_toml(
            r#"
        delimiter = "\t"
        header = false
        user_id = { column = 2 }
        ts = { column = 1, format = "unix_seconds" }
        event_type = { value = "purchase" }
        event_id = { column = 3 }
        session_id = { value = "one-visit" }
        revenue = { column = 4 }
        currency = { value = "usd" }
        "#,
        )?;
        let input = "1709280900\tu1\te-1\t9.99\n1709280960\tu2\te-2\t\n";
        let (report, events) = run(&Source::Generic(mapping), input.as_bytes())?;
        check_invariants(&report, &events);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (
                events[0].event_id.as_str(),
                events[0].session_id.as_str(),
                events[0].revenue,
                events[0].currency.as_deref()
            ),
            ("e-1", "one-visit", Some(9.99), Some("USD"))
        );
        // A purchase with neither revenue nor price: the contract's own reason.
        assert_eq!(
            report.rejected_rows,
            counts([("`revenue` missing for purchase", 1)])
        );
        Ok(())
    }

    #[test]
    fn mapping_errors_are_clear() {
        let fixture_text =
            std::fs::read_to_string(fixture("orders_mapping.toml")).expect("fixture");
        let cases = [
            (
                fixture_text.replace("user_id = ", "usr_id = "),
                vec!["unknown field `usr_id`", "expected one of"],
            ),
            (
                fixture_text.replace("user_id = { column = \"customer\" }", ""),
                vec!["missing field `user_id`"],
            ),
            (
                fixture_text.replace("format = ", "fromat = "),
                vec!["unknown field `fromat`"],
            ),
            (
                fixture_text.replace("id_prefix = \"shop-2024-03\"", ""),
                vec!["`id_prefix` is required"],
            ),
            (
                fixture_text.replace("cart = \"add_to_cart\"", "cart = \"basket\""),
                vec!["unknown variant `basket`", "add_to_cart"],
            ),
            (
                fixture_text.replace("header = true", "header = false"),
                vec!["`user_id` names the column \"customer\" but `header = false`"],
            ),
            ("user_id = [".to_owned(), vec!["TOML parse error at line 1"]),
        ];
        for (text, expected) in cases {
            let err = CsvMapping::from_toml(&text).expect_err("a bad mapping");
            let message = err.to_string();
            assert!(matches!(err, ImportError::Mapping(_)), "{err:?}");
            assert!(message.starts_with("bad column mapping: "), "{message}");
            for part in expected {
                assert!(message.contains(part), "{part:?} not in {message}");
            }
        }
    }

    #[test]
    fn header_that_does_not_fit_the_mapping() {
        let source = Source::Generic(fixture_mapping());
        let err = run(&source, &b"order_no,client,kind\n"[..]).expect_err("customer is missing");
        assert!(
            matches!(&err, ImportError::Header(m) if m.contains("the column \"customer\" for `user_id` is not in the header")),
            "{err:?}"
        );
        let err = run(&source, &b""[..]).expect_err("no header");
        assert!(matches!(err, ImportError::Header(_)), "{err:?}");
    }
}

/// What holds for every source: sink errors, the report, malformed input.
mod import_any_source {
    use super::*;

    #[test]
    fn a_failing_sink_stops_the_import_with_the_event_named() {
        let mut calls = 0;
        let result = import::import(
            &Source::Taobao(TaobaoOptions::default()),
            &b"1,10,100,pv,1511658000\n1,11,100,pv,1511658001\n1,12,100,pv,1511658002\n"[..],
            &mut |_event| {
                calls += 1;
                if calls == 2 {
                    Err("disk full".into())
                } else {
                    Ok(())
                }
            },
        );
        match result {
            Err(ImportError::Sink { event_id, source }) => {
                assert_eq!(event_id, "taobao-1-1511658001-2");
                assert_eq!(source.to_string(), "disk full");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(calls, 2, "nothing is sent after the refusal");
    }

    #[test]
    fn reports_display_every_reason() -> Result<()> {
        let (report, _) = run(
            &Source::Generic(fixture_mapping()),
            File::open(fixture("orders.csv"))?,
        )?;
        let text = report.to_string();
        for part in [
            "read 12 rows: 7 events for 4 users, 5 rows rejected",
            "4  purchase",
            "1  user_id missing — first at line 6",
            "1  quantity capped at 10000",
        ] {
            assert!(text.contains(part), "{part:?} not in\n{text}");
        }
        Ok(())
    }

    /// Windows line ends change nothing, ids included (the csv crate alone would number the
    /// first two CRLF rows alike).
    #[test]
    fn crlf_files_give_the_same_events() -> Result<()> {
        let orders = std::fs::read(fixture("orders.csv"))?;
        let taobao = b"1,10,100,pv,1511658000\n1,11,100,cart,1511658600\n2,12,101,fav,1511658000\n";
        for (source, lf) in [
            (Source::Generic(fixture_mapping()), orders),
            (Source::Taobao(TaobaoOptions::default()), taobao.to_vec()),
        ] {
            let crlf = String::from_utf8(lf.clone())?.replace('\n', "\r\n");
            let (lf_report, lf_events) = run(&source, &lf[..])?;
            let (crlf_report, crlf_events) = run(&source, crlf.as_bytes())?;
            check_invariants(&crlf_report, &crlf_events);
            assert_eq!(crlf_report, lf_report);
            assert!(crlf_events == lf_events, "{crlf_events:#?}");
        }
        Ok(())
    }

    fn sources() -> Vec<Source> {
        vec![
            Source::OnlineRetail,
            Source::Taobao(TaobaoOptions::default()),
            Source::Generic(fixture_mapping()),
        ]
    }

    /// Valid rows of each source, which the strategy below mutates.
    const TEMPLATE_ROWS: [&str; 3] = [
        "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
        "543462,1715,1464116,pv,1511658000",
        "1001,c-17,order,SKU-1,mugs,12.50,2,,eur,2024-03-01 09:15:00",
    ];

    /// Fields that break things: signs, zeros, huge numbers, quotes, separators inside quotes,
    /// line breaks, bytes that are not UTF-8, a byte-order mark.
    fn odd_field() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                &b""[..],
                b"C536379",
                b"A563185",
                b"-3",
                b"0",
                b"0.0",
                b"20000",
                b"99999999999999999999",
                b"1e300",
                b"NaN",
                b"buy",
                b"cart",
                b"return",
                b"gift",
                b"2011-12-09 12:50:00",
                b"12/1/2010 8:26",
                b"9999-12-31 23:59:59",
                b"-62167219201",
                b"\"",
                b"\"a,\nb\"",
                b"\xFF\xFE",
                b"\xEF\xBB\xBF",
            ])
            .prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 0..8),
        ]
    }

    /// CSV that is mostly right: template rows with a few fields replaced, added or cut off,
    /// under one of the headers (or none).
    fn csv_like() -> impl Strategy<Value = Vec<u8>> {
        let row = (
            0..TEMPLATE_ROWS.len(),
            prop::collection::vec((0..11usize, odd_field()), 0..3),
            prop::option::weighted(0.15, 0..11usize),
        )
            .prop_map(|(template, edits, keep)| {
                let mut fields: Vec<Vec<u8>> = TEMPLATE_ROWS[template]
                    .split(',')
                    .map(|f| f.as_bytes().to_vec())
                    .collect();
                for (index, field) in edits {
                    match fields.get_mut(index) {
                        Some(slot) => *slot = field,
                        None => fields.push(field),
                    }
                }
                if let Some(keep) = keep {
                    fields.truncate(keep);
                }
                fields.join(&b',')
            });
        let header = prop::sample::select(vec![
            "",
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
            "order_no,customer,kind,sku,category,unit_price,qty,total,currency,created_at",
        ]);
        let line_end = prop::sample::select(vec![&b"\n"[..], b"\r\n"]);
        (header, prop::collection::vec(row, 0..12), line_end).prop_map(|(header, rows, end)| {
            let mut bytes = Vec::new();
            if !header.is_empty() {
                bytes.extend_from_slice(header.as_bytes());
                bytes.extend_from_slice(end);
            }
            for row in rows {
                bytes.extend_from_slice(&row);
                bytes.extend_from_slice(end);
            }
            bytes
        })
    }

    fn never_panics(input: &[u8]) {
        for source in sources() {
            if let Ok((report, events)) = run(&source, input) {
                check_invariants(&report, &events);
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..600)) {
            never_panics(&input);
        }

        #[test]
        fn csv_like_input_never_panics(input in csv_like()) {
            never_panics(&input);
        }
    }

    /// The mutation strategy must reach past the header into events and rejections of every
    /// source, or the property above proves little.
    #[test]
    fn csv_like_inputs_reach_events_and_rejections_of_every_source() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, TestRng, TestRunner};

        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
        );
        let strategy = csv_like();
        let sources = sources();
        let mut events = vec![0u64; sources.len()];
        let mut rejected = vec![0u64; sources.len()];
        for _ in 0..300 {
            let input = strategy.new_tree(&mut runner).expect("a value").current();
            for (i, source) in sources.iter().enumerate() {
                if let Ok((report, _)) = run(source, &input[..]) {
                    events[i] += report.events;
                    rejected[i] += report.rows_rejected();
                }
            }
        }
        assert!(
            events.iter().chain(&rejected).all(|n| *n > 0),
            "events {events:?}, rejected {rejected:?}"
        );
    }
}
