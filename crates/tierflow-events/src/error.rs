//! Why a record could not be decoded: a class for metrics and dead letters, the field, and a
//! sentence a person can act on.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The class of a decode failure. Stable names: they are metric label values and dead-letter
/// fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecodeErrorKind {
    /// Larger than the record size limit; not parsed at all.
    TooLarge,
    /// Not UTF-8, not JSON, or not a JSON object.
    Malformed,
    /// A required field is absent (or `null`).
    MissingField,
    /// A field the schema does not know.
    UnknownField,
    /// A field is present but its value breaks the schema (type, range, format, length).
    InvalidValue,
    /// `schema_version` names a version this build does not read.
    UnsupportedVersion,
    /// Binary payload that does not decode as the expected type.
    BadBinary,
}

impl DecodeErrorKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::MissingField => "missing_field",
            Self::UnknownField => "unknown_field",
            Self::InvalidValue => "invalid_value",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadBinary => "bad_binary",
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that could not be decoded. `Display` gives the precise reason, naming the field,
/// e.g. "`revenue` missing for purchase" or "`ts` not RFC 3339 ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    /// The offending field (a JSON path such as `price`), when one is to blame.
    pub field: Option<String>,
    pub reason: String,
}

impl DecodeError {
    pub fn new(kind: DecodeErrorKind, field: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            kind,
            field: field.map(str::to_owned),
            reason: reason.into(),
        }
    }

    pub fn missing(field: &str, context: &str) -> Self {
        Self::new(
            DecodeErrorKind::MissingField,
            Some(field),
            format!("`{field}` missing{context}"),
        )
    }

    pub fn invalid(field: &str, problem: impl fmt::Display) -> Self {
        Self::new(
            DecodeErrorKind::InvalidValue,
            Some(field),
            format!("`{field}` {problem}"),
        )
    }

    /// Maps a serde_json error with its path onto a precise, stable reason.
    pub(crate) fn from_json(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = strip_position(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return Self::new(
                DecodeErrorKind::Malformed,
                None,
                format!("not JSON: {inner}"),
            );
        }
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let field = join_path(&path, name);
            return Self::new(
                DecodeErrorKind::UnknownField,
                Some(&field),
                // Escaped: the name is the producer's text and the reason is one log line.
                format!("unknown field `{}`", field.escape_debug()),
            );
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let field = join_path(&path, name);
            return Self::missing(&field, "");
        }
        if let Some(rest) = message.strip_prefix("duplicate field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let field = join_path(&path, name);
            return Self::new(
                DecodeErrorKind::Malformed,
                Some(&field),
                format!("`{}` appears more than once", field.escape_debug()),
            );
        }
        if path == "." || path.is_empty() {
            return Self::new(
                DecodeErrorKind::Malformed,
                None,
                format!("not a JSON object of the expected shape: {message}"),
            );
        }
        Self::invalid(&path, message)
    }
}

fn join_path(path: &str, name: &str) -> String {
    if path == name || path.ends_with(&format!(".{name}")) {
        path.to_owned()
    } else if path == "." || path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// serde_json appends " at line L column C"; the field path says more, so drop it.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
