//! The TOML column mapping for generic CSV files: for each event field, the column it is read
//! from or a constant. Parsed by serde (unknown keys refused), then compiled into a [`Plan`]
//! whose column names are resolved against the file's header.
//!
//! The example with every key explained: `crates/tierflow-data/tests/fixtures/orders_mapping.toml`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tierflow_events::EventType;
use tierflow_events::click::{MAX_ID_CHARS, MAX_LABEL_CHARS, MAX_QUANTITY};
use time::UtcOffset;
use time::format_description::OwnedFormatItem;
use time::macros::format_description;

use super::{ImportError, is_currency_code};

/// How to read a CSV export as clickstream events, one event per row.
///
/// Required: `user_id`, `ts`, `event_type`, and `id_prefix` unless both `event_id` and
/// `session_id` are mapped. Everything else is optional; an empty cell means "absent".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvMapping {
    /// Field separator, one ASCII character (`","`, `";"`, `"\t"`, `"|"`). Default `","`.
    #[serde(default = "CsvMapping::default_delimiter")]
    pub delimiter: char,
    /// Whether the first line names the columns. Default `true`. Without a header, columns
    /// are referred to by number (1 = first).
    #[serde(default = "CsvMapping::default_header")]
    pub header: bool,
    /// The file's tag in generated ids: `event_id` = `{id_prefix}-{line}` when no column
    /// gives it, and `session_id` falls back to the same. Give each file its own prefix:
    /// events with equal ids are duplicates downstream. At most 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_prefix: Option<String>,
    pub user_id: TextField,
    pub ts: TimeField,
    pub event_type: EventTypeField,
    /// A column only (a constant would make every event a duplicate of the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<TextField>,
    /// Else `order_id`, else `{id_prefix}-{line}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<TextField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<TextField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<TextField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<TextField>,
    /// Three letters; lower case is raised (`eur` → `EUR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<TextField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<TextField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<TextField>,
    /// Unit price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<NumberField>,
    /// Whole units, 1 to 10,000 (larger values are capped and counted under `adjusted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<NumberField>,
    /// Order total. For purchases and refunds without it: `price` × `quantity` (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<NumberField>,
}

/// A text field: read from `column`, or the constant `value` on every row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<Column>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A number field: read from `column`, or the constant `value` on every row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<Column>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// The event time: a column and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeField {
    pub column: Column,
    /// `rfc3339` (the default), `unix_seconds`, `unix_millis` (both may have decimals), or
    /// a `time` crate format description such as
    /// `[year]-[month]-[day] [hour]:[minute]:[second]` (a date alone means midnight).
    #[serde(default = "TimeField::default_format")]
    pub format: String,
    /// The offset of a format description without `[offset_hour]`, e.g. `+01:00`, `-05:00`,
    /// `Z`. Default UTC. A fixed offset: daylight saving time is not followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<String>,
}

/// The event type: from `column` (translated by `values`, e.g. `{ order = "purchase" }`;
/// cells not in `values` must be event type names themselves), or the constant `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<Column>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<EventType>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, EventType>,
}

/// A column by header name (`"customer"`) or by number counted from 1 (`3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Name(String),
    Number(usize),
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => write!(f, "{name:?}"),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Column {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Name(name) => serializer.serialize_str(name),
            Self::Number(n) => serializer.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Column {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnVisitor;

        impl Visitor<'_> for ColumnVisitor {
            type Value = Column;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column name (text) or a column number counted from 1")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Column, E> {
                if name.is_empty() {
                    return Err(E::custom("a column name cannot be empty"));
                }
                Ok(Column::Name(name.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Column, E> {
                match usize::try_from(n) {
                    Ok(n) if n >= 1 => Ok(Column::Number(n)),
                    _ => Err(E::custom(format!(
                        "column numbers count from 1 (the first column), got {n}"
                    ))),
                }
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Column, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "column numbers count from 1 (the first column), got {n}"
                    ))),
                }
            }
        }

        deserializer.deserialize_any(ColumnVisitor)
    }
}

impl CsvMapping {
    /// Reads a mapping and checks everything that can be checked without the file.
    pub fn from_toml(text: &str) -> Result<Self, ImportError> {
        let mapping: Self =
            toml::from_str(text).map_err(|e| ImportError::Mapping(e.to_string()))?;
        Plan::compile(&mapping, None)?;
        Ok(mapping)
    }

    fn default_delimiter() -> char {
        ','
    }

    fn default_header() -> bool {
        true
    }
}

impl TimeField {
    fn default_format() -> String {
        "rfc3339".to_owned()
    }
}

/// A mapping made ready for rows: columns as 0-based indexes, formats parsed, constants checked.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) delimiter: u8,
    /// Every row must have this many fields (the header's count), when there is a header.
    pub(super) header_width: Option<usize>,
    /// Every row must have at least this many fields (the highest column read).
    pub(super) min_width: usize,
    pub(super) user_id: Text,
    pub(super) ts: (usize, TimeFormat),
    pub(super) event_type: EventTypeRule,
    pub(super) event_id: IdRule,
    pub(super) session_id: SessionRule,
    pub(super) product_id: Option<Text>,
    pub(super) category: Option<Text>,
    pub(super) order_id: Option<Text>,
    pub(super) currency: Option<Text>,
    pub(super) channel: Option<Text>,
    pub(super) device: Option<Text>,
    pub(super) price: Option<Number>,
    pub(super) quantity: Option<Number>,
    pub(super) revenue: Option<Number>,
}

#[derive(Debug)]
pub(super) enum Text {
    Column(usize),
    Value(String),
}

#[derive(Debug)]
pub(super) enum Number {
    Column(usize),
    Value(f64),
}

#[derive(Debug)]
pub(super) enum EventTypeRule {
    Column {
        index: usize,
        values: BTreeMap<String, EventType>,
    },
    Value(EventType),
}

#[derive(Debug)]
pub(super) enum IdRule {
    Column(usize),
    /// `{prefix}-{line}`.
    Line(String),
}

#[derive(Debug)]
pub(super) enum SessionRule {
    Mapped(Text),
    /// The row's `order_id`, else `{prefix}-{line}`.
    OrderElseLine(String),
}

#[derive(Debug)]
pub(super) enum TimeFormat {
    Rfc3339,
    UnixSeconds,
    UnixMillis,
    Described {
        items: OwnedFormatItem,
        /// For descriptions without an offset.
        offset: UtcOffset,
    },
}

const MAX_PREFIX_CHARS: usize = 64;

impl Plan {
    /// Compiles `mapping` for a file whose header is `header` (`None`: not known yet, names
    /// are accepted as they are; for a mapping with `header = false` it is ignored).
    pub(super) fn compile(
        mapping: &CsvMapping,
        header: Option<&[String]>,
    ) -> Result<Self, ImportError> {
        let delimiter = match u8::try_from(mapping.delimiter) {
            Ok(b) if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => b,
            _ => {
                return Err(mapping_error(format!(
                    "`delimiter` must be one ASCII character other than a quote or a line \
                     break, got {:?}",
                    mapping.delimiter
                )));
            }
        };
        let mut columns = Columns {
            has_header: mapping.header,
            names: if mapping.header { header } else { None },
            min_width: 0,
        };
        let prefix = id_prefix(mapping)?;
        let needs_prefix = || {
            prefix.clone().ok_or_else(|| {
                mapping_error(
                    "`id_prefix` is required unless both `event_id` and `session_id` are \
                     mapped: generated ids are `<id_prefix>-<line>`, so give each file its own \
                     prefix (e.g. id_prefix = \"shop-2024-03\")",
                )
            })
        };
        let event_id = match &mapping.event_id {
            None => IdRule::Line(needs_prefix()?),
            Some(TextField {
                column: Some(column),
                value: None,
            }) => IdRule::Column(columns.index("event_id", column)?),
            Some(_) => {
                return Err(mapping_error(
                    "`event_id` must be read from a `column` (a constant `value` would make \
                     every event a duplicate of the first); leave it out to generate ids",
                ));
            }
        };
        let session_id = match &mapping.session_id {
            None => SessionRule::OrderElseLine(needs_prefix()?),
            Some(field) => SessionRule::Mapped(columns.text("session_id", field, MAX_ID_CHARS)?),
        };
        let plan = Self {
            delimiter,
            header_width: columns.names.map(<[String]>::len),
            min_width: 0,
            user_id: columns.text("user_id", &mapping.user_id, MAX_ID_CHARS)?,
            ts: (
                columns.index("ts", &mapping.ts.column)?,
                TimeFormat::compile(&mapping.ts)?,
            ),
            event_type: columns.event_type(&mapping.event_type)?,
            event_id,
            session_id,
            product_id: columns.optional_text("product_id", &mapping.product_id, MAX_ID_CHARS)?,
            category: columns.optional_text("category", &mapping.category, MAX_ID_CHARS)?,
            order_id: columns.optional_text("order_id", &mapping.order_id, MAX_ID_CHARS)?,
            currency: match columns.optional_text("currency", &mapping.currency, 3)? {
                Some(Text::Value(code)) => {
                    let code = code.to_ascii_uppercase();
                    if !is_currency_code(&code) {
                        return Err(mapping_error(format!(
                            "`currency.value` must be a three-letter code such as EUR, got {code:?}"
                        )));
                    }
                    Some(Text::Value(code))
                }
                other => other,
            },
            channel: columns.optional_text("channel", &mapping.channel, MAX_LABEL_CHARS)?,
            device: columns.optional_text("device", &mapping.device, MAX_LABEL_CHARS)?,
            price: columns.number("price", &mapping.price, |v| v >= 0.0, "a number ≥ 0")?,
            quantity: columns.number(
                "quantity",
                &mapping.quantity,
                |v| v.fract() == 0.0 && (1.0..=f64::from(MAX_QUANTITY)).contains(&v),
                "a whole number from 1 to 10000",
            )?,
            revenue: columns.number("revenue", &mapping.revenue, |v| v >= 0.0, "a number ≥ 0")?,
        };
        Ok(Self {
            min_width: columns.min_width,
            ..plan
        })
    }
}

fn id_prefix(mapping: &CsvMapping) -> Result<Option<String>, ImportError> {
    match &mapping.id_prefix {
        Some(prefix) if prefix.is_empty() || prefix.chars().count() > MAX_PREFIX_CHARS => {
            Err(mapping_error(format!(
                "`id_prefix` must have 1 to {MAX_PREFIX_CHARS} characters, got {prefix:?}"
            )))
        }
        other => Ok(other.clone()),
    }
}

/// Resolves columns against the header and remembers the widest one read.
#[derive(Debug)]
struct Columns<'h> {
    has_header: bool,
    names: Option<&'h [String]>,
    min_width: usize,
}

impl Columns<'_> {
    fn index(&mut self, field: &str, column: &Column) -> Result<usize, ImportError> {
        let index = match column {
            Column::Number(n) => {
                if let Some(names) = self.names
                    && *n > names.len()
                {
                    return Err(ImportError::Header(format!(
                        "`{field}` reads column {n} but the header has {} columns",
                        names.len()
                    )));
                }
                n.saturating_sub(1)
            }
            Column::Name(name) if !self.has_header => {
                return Err(mapping_error(format!(
                    "`{field}` names the column {name:?} but `header = false`: refer to \
                     columns by number (1 = first)"
                )));
            }
            Column::Name(name) => match self.names {
                None => 0,
                Some(names) => {
                    let mut found = names.iter().enumerate().filter(|(_, h)| *h == name);
                    match (found.next(), found.next()) {
                        (Some((i, _)), None) => i,
                        (Some(_), Some(_)) => {
                            return Err(ImportError::Header(format!(
                                "the column {name:?} for `{field}` appears more than once in \
                                 the header; refer to it by number"
                            )));
                        }
                        (None, _) => {
                            return Err(ImportError::Header(format!(
                                "the column {name:?} for `{field}` is not in the header \
                                 (columns: {})",
                                names.join(", ")
                            )));
                        }
                    }
                }
            },
        };
        self.min_width = self.min_width.max(index + 1);
        Ok(index)
    }

    fn text(
        &mut self,
        field: &str,
        spec: &TextField,
        max_chars: usize,
    ) -> Result<Text, ImportError> {
        match (&spec.column, &spec.value) {
            (Some(column), None) => Ok(Text::Column(self.index(field, column)?)),
            (None, Some(value)) if value.is_empty() || value.chars().count() > max_chars => {
                Err(mapping_error(format!(
                    "`{field}.value` must have 1 to {max_chars} characters, got {value:?}"
                )))
            }
            (None, Some(value)) => Ok(Text::Value(value.clone())),
            (column, value) => Err(one_of(field, column.is_some() && value.is_some())),
        }
    }

    fn optional_text(
        &mut self,
        field: &str,
        spec: &Option<TextField>,
        max_chars: usize,
    ) -> Result<Option<Text>, ImportError> {
        spec.as_ref()
            .map(|spec| self.text(field, spec, max_chars))
            .transpose()
    }

    fn number(
        &mut self,
        field: &str,
        spec: &Option<NumberField>,
        allowed: impl Fn(f64) -> bool,
        expected: &str,
    ) -> Result<Option<Number>, ImportError> {
        let Some(spec) = spec else { return Ok(None) };
        match (&spec.column, spec.value) {
            (Some(column), None) => Ok(Some(Number::Column(self.index(field, column)?))),
            (None, Some(value)) if value.is_finite() && allowed(value) => {
                Ok(Some(Number::Value(value)))
            }
            (None, Some(value)) => Err(mapping_error(format!(
                "`{field}.value` must be {expected}, got {value}"
            ))),
            (column, value) => Err(one_of(field, column.is_some() && value.is_some())),
        }
    }

    fn event_type(&mut self, spec: &EventTypeField) -> Result<EventTypeRule, ImportError> {
        match (&spec.column, spec.value) {
            (Some(column), None) => Ok(EventTypeRule::Column {
                index: self.index("event_type", column)?,
                values: spec.values.clone(),
            }),
            (None, Some(_)) if !spec.values.is_empty() => Err(mapping_error(
                "`event_type.values` translates a column's cells; it has no use with `value`",
            )),
            (None, Some(value)) => Ok(EventTypeRule::Value(value)),
            (column, value) => Err(one_of("event_type", column.is_some() && value.is_some())),
        }
    }
}

fn one_of(field: &str, both: bool) -> ImportError {
    mapping_error(if both {
        format!("`{field}` has both `column` and `value`; give one")
    } else {
        format!("`{field}` needs `column` (read from the file) or `value` (a constant)")
    })
}

fn mapping_error(message: impl Into<String>) -> ImportError {
    ImportError::Mapping(message.into())
}

impl TimeFormat {
    fn compile(spec: &TimeField) -> Result<Self, ImportError> {
        let fixed = match spec.format.as_str() {
            "rfc3339" => Some(Self::Rfc3339),
            "unix_seconds" => Some(Self::UnixSeconds),
            "unix_millis" => Some(Self::UnixMillis),
            _ => None,
        };
        if let Some(fixed) = fixed {
            if spec.utc_offset.is_some() {
                return Err(mapping_error(format!(
                    "`ts.utc_offset` is for format descriptions without an offset; {} times \
                     carry their own",
                    spec.format
                )));
            }
            return Ok(fixed);
        }
        let items = time::format_description::parse_owned::<2>(&spec.format).map_err(|e| {
            mapping_error(format!(
                "`ts.format` {:?} is neither rfc3339, unix_seconds, unix_millis nor a format \
                 description such as \"[year]-[month]-[day] [hour]:[minute]:[second]\": {e}",
                spec.format
            ))
        })?;
        let offset = match &spec.utc_offset {
            None => UtcOffset::UTC,
            Some(text) => parse_offset(text).ok_or_else(|| {
                mapping_error(format!(
                    "`ts.utc_offset` must look like +01:00, -05:00 or Z, got {text:?}"
                ))
            })?,
        };
        Ok(Self::Described { items, offset })
    }
}

fn parse_offset(text: &str) -> Option<UtcOffset> {
    if matches!(text, "Z" | "UTC" | "utc") {
        return Some(UtcOffset::UTC);
    }
    let with_minutes = format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    let hours_only = format_description!("[offset_hour sign:mandatory]");
    UtcOffset::parse(text, with_minutes)
        .or_else(|_| UtcOffset::parse(text, hours_only))
        .ok()
}

/// For tests: the offset in seconds east of UTC, via a fixed instant.
#[cfg(test)]
fn offset_seconds(offset: UtcOffset) -> i32 {
    time::OffsetDateTime::UNIX_EPOCH
        .to_offset(offset)
        .offset()
        .whole_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        id_prefix = "t"
        user_id = { column = "u" }
        ts = { column = "t" }
        event_type = { value = "page_view" }
    "#;

    fn error_of(toml_text: &str) -> String {
        match CsvMapping::from_toml(toml_text) {
            Ok(mapping) => panic!("accepted: {mapping:?}"),
            Err(ImportError::Mapping(message)) => message,
            Err(other) => panic!("not a mapping error: {other:?}"),
        }
    }

    #[test]
    fn minimal_mapping_has_defaults() {
        let mapping = CsvMapping::from_toml(MINIMAL).unwrap();
        assert_eq!(mapping.delimiter, ',');
        assert!(mapping.header);
        assert_eq!(mapping.ts.format, "rfc3339");
        let plan = Plan::compile(&mapping, Some(&["t".to_owned(), "u".to_owned()])).unwrap();
        assert!(matches!(plan.user_id, Text::Column(1)));
        assert_eq!((plan.header_width, plan.min_width), (Some(2), 2));
    }

    #[test]
    fn contradictions_are_named() {
        let check = |extra: &str, expected: &str| {
            let message = error_of(&format!("{MINIMAL}\n{extra}"));
            assert!(message.contains(expected), "{extra}: {message}");
        };
        check(r#"price = { column = "p", value = 1 }"#, "`price` has both");
        check("price = { }", "`price` needs `column`");
        check(
            "price = { value = -1 }",
            "`price.value` must be a number ≥ 0",
        );
        check(
            "quantity = { value = 0.5 }",
            "`quantity.value` must be a whole",
        );
        check(
            r#"currency = { value = "euro" }"#,
            "`currency.value` must have 1 to 3",
        );
        check(r#"currency = { value = "e1r" }"#, "three-letter code");
        check(
            r#"event_id = { value = "x" }"#,
            "`event_id` must be read from a `column`",
        );
        check(
            r#"channel = { value = "" }"#,
            "`channel.value` must have 1 to 64",
        );
        check(
            r#"delimiter = "\"""#,
            "`delimiter` must be one ASCII character",
        );
        check(
            r#"delimiter = "€""#,
            "`delimiter` must be one ASCII character",
        );
    }

    #[test]
    fn ts_formats_and_offsets() {
        let with_ts = |ts: &str| {
            format!(
                "id_prefix = \"t\"\nuser_id = {{ column = 1 }}\nevent_type = {{ value = \"search\" }}\nheader = false\nts = {ts}"
            )
        };
        for ok in [
            r#"{ column = 2 }"#,
            r#"{ column = 2, format = "unix_seconds" }"#,
            r#"{ column = 2, format = "unix_millis" }"#,
            r#"{ column = 2, format = "[day].[month].[year]", utc_offset = "+02:00" }"#,
            r#"{ column = 2, format = "[year]-[month]-[day] [hour]:[minute]", utc_offset = "-05" }"#,
        ] {
            CsvMapping::from_toml(&with_ts(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, expected) in [
            (r#"{ column = 2, format = "[yaer]" }"#, "is neither rfc3339"),
            (
                r#"{ column = 2, format = "rfc3339", utc_offset = "+01:00" }"#,
                "carry their own",
            ),
            (
                r#"{ column = 2, format = "[year]", utc_offset = "CET" }"#,
                "must look like +01:00",
            ),
            (r#"{ column = "when" }"#, "`header = false`"),
            (r#"{ column = 0 }"#, "count from 1"),
        ] {
            let message = error_of(&with_ts(bad));
            assert!(message.contains(expected), "{bad}: {message}");
        }
        assert_eq!(parse_offset("+01:00").map(offset_seconds), Some(3_600));
        assert_eq!(parse_offset("-05").map(offset_seconds), Some(-18_000));
        assert_eq!(parse_offset("Z").map(offset_seconds), Some(0));
    }

    #[test]
    fn header_mismatches_are_header_errors() {
        let mapping = CsvMapping::from_toml(MINIMAL).unwrap();
        let header = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        for (names, expected) in [
            (
                header(&["t", "user"]),
                "the column \"u\" for `user_id` is not in the header",
            ),
            (header(&["t", "u", "u"]), "appears more than once"),
        ] {
            match Plan::compile(&mapping, Some(&names)) {
                Err(ImportError::Header(message)) => {
                    assert!(message.contains(expected), "{message}")
                }
                other => panic!("{names:?}: {other:?}"),
            }
        }
    }
}
