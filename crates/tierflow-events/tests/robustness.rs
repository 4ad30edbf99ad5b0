//! The clickstream decoder's robustness property (`tierflow_events::robustness`) on the
//! committed fuzz seeds, on the crashes fuzzing found, and on arbitrary and mutated bytes: the
//! stable counterpart of `just fuzz`.

use std::path::PathBuf;

use proptest::prelude::*;
use tierflow_events::{DecodeErrorKind, check_click_record};

/// The `click_record` fuzz target's committed seeds.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tierflow-fuzz/seeds/click_record");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("seed entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("seed reads"))
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn seeds_hold_the_property() {
    let seeds = seeds();
    assert!(seeds.len() >= 10, "seed corpus missing");
    let accepted = seeds
        .iter()
        .filter(|(_, bytes)| check_click_record(bytes).is_ok())
        .count();
    // Both sides of the decoder are exercised.
    assert!(
        accepted >= 3 && accepted < seeds.len(),
        "{accepted} accepted"
    );
}

#[test]
fn seeds_decode_as_named() {
    let expect = |name: &str, kind: Option<DecodeErrorKind>| {
        let (_, bytes) = seeds().into_iter().find(|(n, _)| n == name).expect(name);
        assert_eq!(
            check_click_record(&bytes).err().map(|e| e.kind),
            kind,
            "{name}"
        );
    };
    expect("purchase.json", None);
    expect("purchase_every_field.json", None);
    expect("missing_revenue.json", Some(DecodeErrorKind::MissingField));
    expect("unknown_field.json", Some(DecodeErrorKind::UnknownField));
    expect("not_utf8.bin", Some(DecodeErrorKind::Malformed));
    expect("version_2.json", Some(DecodeErrorKind::UnsupportedVersion));
    expect("ts_year_edge.json", Some(DecodeErrorKind::InvalidValue));
    expect("ts_year_10000.json", Some(DecodeErrorKind::InvalidValue));
    expect("revenue_long_decimal.json", None);
    expect(
        "unknown_field_empty_name.json",
        Some(DecodeErrorKind::UnknownField),
    );
    expect(
        "unknown_field_control_chars.json",
        Some(DecodeErrorKind::UnknownField),
    );
}

/// What fuzzing found, fixed in `EventTime::parse_rfc3339`: an offset that moves a valid
/// timestamp outside years 0000–9999 in UTC was accepted, yet the event could not be written
/// back (its `to_json` did not decode, nor would the outputs carrying its time).
#[test]
fn crashes_found_by_fuzzing_stay_fixed() {
    for ts in ["0000-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999-00:01"] {
        let record = format!(
            r#"{{"schema_version":1,"event_id":"e1","user_id":"u1","event_type":"page_view","ts":"{ts}","session_id":"s1"}}"#
        );
        let err = check_click_record(record.as_bytes()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("ts"), "{ts}");
        assert_eq!(err.kind, DecodeErrorKind::InvalidValue, "{ts}");
    }
}

/// Found by fuzzing: a key may be empty or hold control characters; the reason names it
/// escaped, on one line (fixed in `DecodeError::from_json`), and `field` keeps it as sent.
#[test]
fn odd_unknown_keys_are_named_escaped() {
    let check = |record: &[u8], reason: &str, field: &str| {
        let err = check_click_record(record).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::UnknownField);
        assert_eq!(err.reason, reason);
        assert_eq!(err.field.as_deref(), Some(field));
    };
    check(br#"{"schema_version": 1, "":1}"#, "unknown field ``", "");
    check(
        br#"{"schema_version":1,"a\u001b[31m\nb":1}"#,
        r"unknown field `a\u{1b}[31m\nb`",
        "a\u{1b}[31m\nb",
    );
}

/// Also found by fuzzing, not a decoder bug: serde_json reads some long decimals one unit in
/// the last place off, so an amount written back and read again may move by one ulp. The
/// property allows exactly that (enabling serde_json's `float_roundtrip` would remove it).
#[test]
fn long_decimal_amounts_round_trip_within_one_ulp() {
    let record = br#"{"schema_version": 1, "event_id": "e1", "user_id": "u1", "event_type": "purchase", "ts": "2026-11-28T12:00:00Z", "session_id": "s1", "revenue": 19999999999399999999999999999999992.5, "currency": "EUR", "price": -0}"#;
    let event = check_click_record(record).expect("accepted");
    let revenue = event.revenue.expect("revenue");
    assert!(
        (revenue / 1.999_999_999_94e34 - 1.0).abs() < 1e-15,
        "{revenue:e}"
    );
}

#[test]
fn oversized_records_are_refused_with_a_reason() {
    let big = vec![b'{'; tierflow_events::click::MAX_RECORD_BYTES + 1];
    let err = check_click_record(&big).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::TooLarge);
}

/// A seed with a few bytes overwritten, inserted or removed.
fn mutated_seed() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seeds().into_iter().map(|(_, b)| b).collect();
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, op, byte) in edits {
                let i = if bytes.is_empty() {
                    0
                } else {
                    at.index(bytes.len())
                };
                match op {
                    0 if !bytes.is_empty() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if !bytes.is_empty() => {
                        bytes.remove(i);
                    }
                    _ => bytes.push(byte),
                }
            }
            bytes
        })
}

/// A JSON object with the contract's keys (and a stray one) holding arbitrary JSON scalars.
fn json_shaped() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "schema_version",
        "event_id",
        "user_id",
        "event_type",
        "ts",
        "session_id",
        "product_id",
        "category",
        "price",
        "quantity",
        "currency",
        "order_id",
        "revenue",
        "channel",
        "device",
        "extra",
    ]);
    let value = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
            .prop_map(|s| format!("{s:?}")),
        "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).expect("string")),
        prop::sample::select(vec!["\"purchase\"", "\"page_view\"", "\"EUR\"", "1", "[]", "{}"])
            .prop_map(str::to_owned),
    ];
    prop::collection::vec((key, value), 0..16).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_hold_the_property(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = check_click_record(&bytes);
    }

    #[test]
    fn mutated_seeds_hold_the_property(bytes in mutated_seed()) {
        let _ = check_click_record(&bytes);
    }

    #[test]
    fn json_shaped_records_hold_the_property(bytes in json_shaped()) {
        let _ = check_click_record(&bytes);
    }
}
