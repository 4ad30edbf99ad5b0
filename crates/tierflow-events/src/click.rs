//! The clickstream input contract: one JSON object per Kafka record, validated field by field.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::time::EventTime;

/// The clickstream schema version this build reads and writes.
pub const CLICK_SCHEMA_VERSION: u32 = 1;
/// Records larger than this are dead-lettered unparsed.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Longest identifier (`event_id`, `user_id`, `session_id`, `product_id`, `category`, `order_id`).
pub const MAX_ID_CHARS: usize = 128;
/// Longest `channel` / `device` label.
pub const MAX_LABEL_CHARS: usize = 64;
/// Largest `quantity` on one event.
pub const MAX_QUANTITY: u32 = 10_000;

/// What the user did.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    PageView,
    ProductView,
    Search,
    AddToCart,
    RemoveFromCart,
    WishlistAdd,
    CheckoutStart,
    Purchase,
    Refund,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        Self::PageView,
        Self::ProductView,
        Self::Search,
        Self::AddToCart,
        Self::RemoveFromCart,
        Self::WishlistAdd,
        Self::CheckoutStart,
        Self::Purchase,
        Self::Refund,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PageView => "page_view",
            Self::ProductView => "product_view",
            Self::Search => "search",
            Self::AddToCart => "add_to_cart",
            Self::RemoveFromCart => "remove_from_cart",
            Self::WishlistAdd => "wishlist_add",
            Self::CheckoutStart => "checkout_start",
            Self::Purchase => "purchase",
            Self::Refund => "refund",
        }
    }

    /// Position in [`EventType::ALL`]; handy for per-type counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Purchases and refunds move money and must carry `revenue`.
    pub const fn requires_revenue(self) -> bool {
        matches!(self, Self::Purchase | Self::Refund)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown event type {s:?}"))
    }
}

/// One clickstream event, valid by construction when it comes from [`ClickEvent::from_json`].
///
/// `revenue` is the order total for `purchase` and the refunded amount (positive) for
/// `refund`, in `currency`; both event types require it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Clickstream event",
    description = "One user interaction on the clickstream topic. Kafka key: user_id. Encoding: JSON, one object per record."
)]
pub struct ClickEvent {
    /// Contract version; this file describes version 1.
    #[schemars(schema_with = "schema_version_1")]
    pub schema_version: u32,
    /// Unique per event; replays and duplicates carry the same id.
    #[schemars(length(min = 1, max = 128))]
    pub event_id: String,
    #[schemars(length(min = 1, max = 128))]
    pub user_id: String,
    pub event_type: EventType,
    /// When the event happened (event time), RFC 3339 with an offset.
    pub ts: EventTime,
    #[schemars(length(min = 1, max = 128))]
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub product_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub category: Option<String>,
    /// Unit price in `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub quantity: Option<u32>,
    /// ISO 4217 code, e.g. `EUR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub order_id: Option<String>,
    /// Order total (purchase) or refunded amount (refund), never negative. Required for both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revenue: Option<f64>,
    /// Acquisition or traffic channel, e.g. `web`, `app`, `email`, `ads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub channel: Option<String>,
    /// Device class, e.g. `desktop`, `mobile`, `tablet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub device: Option<String>,
}

fn schema_version_1(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "const": 1 })
}

/// Every field optional and loosely typed, so that the validator, not serde, names what is
/// wrong. Unknown fields are still refused here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClickEvent<'a> {
    schema_version: Option<f64>,
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    product_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    price: Option<f64>,
    quantity: Option<f64>,
    #[serde(borrow)]
    currency: Option<Cow<'a, str>>,
    #[serde(borrow)]
    order_id: Option<Cow<'a, str>>,
    revenue: Option<f64>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    device: Option<Cow<'a, str>>,
}

impl ClickEvent {
    /// Decodes and validates one record. Never panics; the error names the field and the
    /// problem.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::new(
                DecodeErrorKind::TooLarge,
                None,
                format!(
                    "record is {} bytes; the limit is {MAX_RECORD_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            DecodeError::new(DecodeErrorKind::Malformed, None, format!("not UTF-8: {e}"))
        })?;
        if !text.trim_start().starts_with('{') {
            return Err(not_an_object(text));
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let raw: RawClickEvent<'_> =
            serde_path_to_error::deserialize(&mut de).map_err(DecodeError::from_json)?;
        de.end().map_err(|e| {
            DecodeError::new(
                DecodeErrorKind::Malformed,
                None,
                format!("not JSON: {e} (trailing data after the object)"),
            )
        })?;
        raw.validate()
    }

    /// JSON text of this event (absent optional fields are omitted).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ClickEvent always serialises")
    }

    /// Runs the same checks as [`ClickEvent::from_json`] on a value built in code, so that
    /// producers (generator, importers) cannot emit what consumers would refuse.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let json = self.to_json();
        Self::from_json(&json).map(|_| ())
    }
}

impl RawClickEvent<'_> {
    fn validate(self) -> Result<ClickEvent, DecodeError> {
        let schema_version = match self.schema_version {
            None => return Err(DecodeError::missing("schema_version", "")),
            Some(v) if v.fract() != 0.0 => {
                return Err(DecodeError::invalid(
                    "schema_version",
                    format!("must be an integer, got {v}"),
                ));
            }
            Some(v) if v == f64::from(CLICK_SCHEMA_VERSION) => CLICK_SCHEMA_VERSION,
            Some(v) => {
                return Err(DecodeError::new(
                    DecodeErrorKind::UnsupportedVersion,
                    Some("schema_version"),
                    format!(
                        "`schema_version` {v} is not supported; this build reads version {CLICK_SCHEMA_VERSION}"
                    ),
                ));
            }
        };
        let event_id = required_id("event_id", self.event_id, MAX_ID_CHARS)?;
        let user_id = required_id("user_id", self.user_id, MAX_ID_CHARS)?;
        let event_type = match self.event_type {
            None => return Err(DecodeError::missing("event_type", "")),
            Some(text) => text.parse::<EventType>().map_err(|_| {
                DecodeError::invalid(
                    "event_type",
                    format!(
                        "{text:?} is not one of {}",
                        EventType::ALL.map(EventType::as_str).join(", ")
                    ),
                )
            })?,
        };
        let ts = match self.ts {
            None => return Err(DecodeError::missing("ts", "")),
            Some(text) => {
                EventTime::parse_rfc3339(&text).map_err(|e| DecodeError::invalid("ts", e))?
            }
        };
        let session_id = required_id("session_id", self.session_id, MAX_ID_CHARS)?;
        let product_id = optional_id("product_id", self.product_id, MAX_ID_CHARS)?;
        let category = optional_id("category", self.category, MAX_ID_CHARS)?;
        let price = non_negative("price", self.price)?;
        let quantity = match self.quantity {
            None => None,
            Some(q) if q.fract() == 0.0 && (1.0..=f64::from(MAX_QUANTITY)).contains(&q) => {
                Some(q as u32)
            }
            Some(q) => {
                return Err(DecodeError::invalid(
                    "quantity",
                    format!("must be a whole number from 1 to {MAX_QUANTITY}, got {q}"),
                ));
            }
        };
        let currency = match self.currency {
            None => None,
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
                Some(c.into_owned())
            }
            Some(c) => {
                return Err(DecodeError::invalid(
                    "currency",
                    format!("must be a three-letter ISO 4217 code such as EUR, got {c:?}"),
                ));
            }
        };
        let order_id = optional_id("order_id", self.order_id, MAX_ID_CHARS)?;
        let revenue = non_negative("revenue", self.revenue)?;
        if revenue.is_none() && event_type.requires_revenue() {
            return Err(DecodeError::missing(
                "revenue",
                &format!(" for {event_type}"),
            ));
        }
        let channel = optional_id("channel", self.channel, MAX_LABEL_CHARS)?;
        let device = optional_id("device", self.device, MAX_LABEL_CHARS)?;
        Ok(ClickEvent {
            schema_version,
            event_id,
            user_id,
            event_type,
            ts,
            session_id,
            product_id,
            category,
            price,
            quantity,
            currency,
            order_id,
            revenue,
            channel,
            device,
        })
    }
}

/// Serde would read a JSON array into a struct by position; the contract is an object.
fn not_an_object(text: &str) -> DecodeError {
    let found = match serde_json::from_str::<serde_json::Value>(text) {
        Err(e) => {
            return DecodeError::new(DecodeErrorKind::Malformed, None, format!("not JSON: {e}"));
        }
        Ok(serde_json::Value::Array(_)) => "an array",
        Ok(serde_json::Value::String(_)) => "a string",
        Ok(serde_json::Value::Number(_)) => "a number",
        Ok(serde_json::Value::Bool(_)) => "a boolean",
        Ok(serde_json::Value::Null) => "null",
        Ok(serde_json::Value::Object(_)) => "an object",
    };
    DecodeError::new(
        DecodeErrorKind::Malformed,
        None,
        format!("not a JSON object: the record is {found}"),
    )
}

fn required_id(
    field: &str,
    value: Option<Cow<'_, str>>,
    max_chars: usize,
) -> Result<String, DecodeError> {
    match value {
        None => Err(DecodeError::missing(field, "")),
        Some(v) => checked_len(field, v, max_chars),
    }
}

fn optional_id(
    field: &str,
    value: Option<Cow<'_, str>>,
    max_chars: usize,
) -> Result<Option<String>, DecodeError> {
    value.map(|v| checked_len(field, v, max_chars)).transpose()
}

fn checked_len(field: &str, value: Cow<'_, str>, max_chars: usize) -> Result<String, DecodeError> {
    if value.is_empty() {
        return Err(DecodeError::invalid(field, "is empty"));
    }
    // Count characters only when the byte length could exceed the limit.
    if value.len() > max_chars && value.chars().count() > max_chars {
        return Err(DecodeError::invalid(
            field,
            format!("is longer than {max_chars} characters"),
        ));
    }
    Ok(value.into_owned())
}

fn non_negative(field: &str, value: Option<f64>) -> Result<Option<f64>, DecodeError> {
    match value {
        Some(v) if v < 0.0 => Err(DecodeError::invalid(field, format!("must be ≥ 0, got {v}"))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"schema_version":1,"event_id":"e1","user_id":"u1","event_type":"purchase","ts":"2026-11-28T12:00:00Z","session_id":"s1","revenue":12.5,"currency":"EUR"}"#;

    fn check(json: &str, expected: Result<(), &str>) {
        let got = ClickEvent::from_json(json.as_bytes()).map(|_| ());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(reason)) => assert_eq!(e.reason, reason, "{json}"),
            _ => panic!("{json}: expected {expected:?}, got {got:?}"),
        }
    }

    fn with(key: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn without(key: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
        v.as_object_mut().unwrap().remove(key);
        v.to_string()
    }

    #[test]
    fn reasons_name_the_field_and_the_problem() {
        check(VALID, Ok(()));
        check(&without("revenue"), Err("`revenue` missing for purchase"));
        check(
            &with("revenue", "null"),
            Err("`revenue` missing for purchase"),
        );
        check(
            &with("event_type", r#""page_view""#)
                .replace(r#""revenue":12.5,"#, "")
                .replace(r#","revenue":12.5"#, ""),
            Ok(()),
        );
        check(
            &with("ts", r#""yesterday""#),
            Err(r#"`ts` not RFC 3339 (expected e.g. 2026-11-28T12:00:00Z): "yesterday""#),
        );
        check(&with("price", "-1"), Err("`price` must be ≥ 0, got -1"));
        check(
            &with("price", r#""3""#),
            Err(r#"`price` invalid type: string "3", expected f64"#),
        );
        check(
            &with("quantity", "0"),
            Err("`quantity` must be a whole number from 1 to 10000, got 0"),
        );
        check(&with("quantity", "2.0"), Ok(()));
        check(
            &with("currency", r#""eur""#),
            Err(r#"`currency` must be a three-letter ISO 4217 code such as EUR, got "eur""#),
        );
        check(&with("user_id", r#""""#), Err("`user_id` is empty"));
        check(&without("user_id"), Err("`user_id` missing"));
        check(&with("reveune", "1"), Err("unknown field `reveune`"));
        check(
            &with("schema_version", "2"),
            Err("`schema_version` 2 is not supported; this build reads version 1"),
        );
        check("[1,2]", Err("not a JSON object: the record is an array"));
        check(" 7", Err("not a JSON object: the record is a number"));
        check(
            "",
            Err("not JSON: EOF while parsing a value at line 1 column 0"),
        );
        check(
            "{",
            Err("not JSON: EOF while parsing an object at line 1 column 1"),
        );
    }

    #[test]
    fn escaped_strings_decode() {
        let json = with("user_id", r#""u\u00e9\n""#);
        let event = ClickEvent::from_json(json.as_bytes()).unwrap();
        assert_eq!(event.user_id, "ué\n");
    }

    #[test]
    fn too_large_is_refused_unparsed() {
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        let err = ClickEvent::from_json(&big).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::TooLarge);
    }

    #[test]
    fn round_trips_through_json() {
        let event = ClickEvent::from_json(VALID.as_bytes()).unwrap();
        assert_eq!(ClickEvent::from_json(&event.to_json()).unwrap(), event);
    }
}
