//! The robustness property of the clickstream decoder, checked by the `click_record` fuzz
//! target (`crates/tierflow-fuzz`, `just fuzz`) and by `tests/robustness.rs` on the same seeds
//! and on arbitrary bytes: whatever a producer puts on the topic, [`ClickEvent::from_json`]
//! (the decoder `tierflow run` and the offline replay call on every record) returns, never
//! panics, and either hands over a valid event or a reason fit for a dead letter.

use crate::click::{ClickEvent, MAX_ID_CHARS, MAX_LABEL_CHARS, MAX_QUANTITY, MAX_RECORD_BYTES};
use crate::codec::{Encoding, decode, encode};
use crate::error::DecodeError;
use crate::output::{Bytes, DeadLetter, ErrorClass, OUTPUT_SCHEMA_VERSION};
use crate::time::EventTime;

/// Decodes one clickstream record as the pipeline does and panics if the result breaks the
/// decoder's contract:
///
/// - a rejected record has a non-empty reason on one printable line (input text
///   escaped, no control characters), a stable reason code
///   ([`crate::DecodeErrorKind::as_str`], the `reason` metric label), and the dead letter the
///   pipeline writes for it (original bytes, code, field, reason) survives an encode → decode
///   round trip in both encodings;
/// - an accepted event passes [`ClickEvent::validate`], keeps every field within the contract's
///   limits, and decodes again from its own JSON to an equal event.
///
/// Returns the decoder's result, so callers can count what was accepted.
pub fn check_click_record(bytes: &[u8]) -> Result<ClickEvent, DecodeError> {
    let decoded = ClickEvent::from_json(bytes);
    match &decoded {
        Ok(event) => check_accepted(event),
        Err(error) => check_rejected(bytes, error),
    }
    decoded
}

fn check_accepted(event: &ClickEvent) {
    if let Err(e) = event.validate() {
        panic!("accepted event fails its own validation ({e}): {event:?}");
    }
    let mut again = ClickEvent::from_json(&event.to_json()).unwrap_or_else(|e| {
        panic!("accepted event does not decode from its JSON ({e}): {event:?}")
    });
    // serde_json (without its `float_roundtrip` feature) may read a long decimal one unit in
    // the last place off the nearest f64, so an amount may move by that much; no more.
    for (name, before, after) in [
        ("price", event.price, &mut again.price),
        ("revenue", event.revenue, &mut again.revenue),
    ] {
        if let (Some(b), Some(a)) = (before, *after) {
            assert!(within_one_ulp(b, a), "{name} {b:e} reads back as {a:e}");
            *after = Some(b);
        }
    }
    assert_eq!(&again, event, "accepted event changes in a JSON round trip");
    for (name, value) in [
        ("event_id", Some(&event.event_id)),
        ("user_id", Some(&event.user_id)),
        ("session_id", Some(&event.session_id)),
        ("product_id", event.product_id.as_ref()),
        ("category", event.category.as_ref()),
        ("order_id", event.order_id.as_ref()),
    ] {
        check_text(name, value, MAX_ID_CHARS);
    }
    check_text("channel", event.channel.as_ref(), MAX_LABEL_CHARS);
    check_text("device", event.device.as_ref(), MAX_LABEL_CHARS);
    for (name, value) in [("price", event.price), ("revenue", event.revenue)] {
        if let Some(v) = value {
            assert!(v.is_finite() && v >= 0.0, "accepted {name} {v}");
        }
    }
    if let Some(q) = event.quantity {
        assert!((1..=MAX_QUANTITY).contains(&q), "accepted quantity {q}");
    }
    if let Some(c) = &event.currency {
        assert!(
            c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()),
            "accepted currency {c:?}"
        );
    }
    assert!(
        !event.event_type.requires_revenue() || event.revenue.is_some(),
        "accepted {} without revenue",
        event.event_type
    );
    let ts = EventTime::parse_rfc3339(&event.ts.to_rfc3339());
    assert_eq!(ts, Ok(event.ts), "accepted ts does not print as RFC 3339");
}

/// Equal, or neighbouring f64 values of the same sign.
fn within_one_ulp(a: f64, b: f64) -> bool {
    a == b
        || (a.is_sign_negative() == b.is_sign_negative() && a.to_bits().abs_diff(b.to_bits()) <= 1)
}

fn check_text(name: &str, value: Option<&String>, max_chars: usize) {
    if let Some(v) = value {
        let chars = v.chars().count();
        assert!(
            (1..=max_chars).contains(&chars),
            "accepted {name} of {chars} characters"
        );
    }
}

fn check_rejected(bytes: &[u8], error: &DecodeError) {
    assert!(
        !error.reason.trim().is_empty(),
        "empty reason for {error:?}"
    );
    assert_eq!(error.to_string(), error.reason, "Display is not the reason");
    assert!(
        !error.kind.as_str().is_empty(),
        "empty reason code for {error:?}"
    );
    // One line a person can read in a log or a dead-letter viewer: input text is quoted
    // (escaped), never copied in raw.
    assert!(
        !error.reason.chars().any(char::is_control),
        "control character in reason {:?}",
        error.reason
    );
    // Larger records are refused unread and may exceed what a bincode reader accepts.
    if bytes.len() > MAX_RECORD_BYTES {
        return;
    }
    // The dead letter `tierflow run` writes for it (`run.rs`, `dead_letter`).
    let letter = DeadLetter {
        schema_version: OUTPUT_SCHEMA_VERSION,
        source_topic: "clickstream".to_owned(),
        source_partition: 0,
        source_offset: 0,
        source_key: None,
        original: Bytes::from(bytes),
        error_class: ErrorClass::Decode,
        decode_error: Some(error.kind),
        field: error.field.clone(),
        reason: error.reason.clone(),
        failed_at: EventTime::from_unix_millis(0),
    };
    for encoding in [Encoding::Json, Encoding::Bincode] {
        let wire = encode(&letter, encoding);
        match decode::<DeadLetter>(&wire, encoding) {
            Ok(back) => assert_eq!(back, letter, "dead letter changes in {encoding}"),
            Err(e) => panic!("dead letter does not decode in {encoding} ({e}): {letter:?}"),
        }
    }
}
