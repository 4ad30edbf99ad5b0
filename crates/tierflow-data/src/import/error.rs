//! Why an import stopped. Bad rows are not errors (they are counted in the report); these are
//! the conditions under which no further row can be read or mapped.

use super::SinkError;

/// An import that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The reader failed (including a broken gzip stream under it).
    #[error("reading the input failed")]
    Io(#[from] std::io::Error),
    /// The CSV reader gave up at `line` (1-based). Byte-level reading is lenient, so this is
    /// rare; ragged rows and bad UTF-8 are rejected rows instead.
    #[error("malformed CSV at line {line}")]
    Csv {
        line: u64,
        #[source]
        source: csv::Error,
    },
    /// The input's header (or its absence) does not fit the source or the mapping.
    #[error("the input does not fit: {0}")]
    Header(String),
    /// The generic CSV mapping is not usable: TOML syntax, unknown or missing keys, or values
    /// that contradict each other.
    #[error("bad column mapping: {0}")]
    Mapping(String),
    /// The importer options are not usable (e.g. a negative unit price).
    #[error("bad import options: {0}")]
    Options(String),
    /// The sink refused an event; nothing after it was sent.
    #[error("the sink refused event {event_id}")]
    Sink {
        event_id: String,
        #[source]
        source: SinkError,
    },
}

impl From<csv::Error> for ImportError {
    fn from(err: csv::Error) -> Self {
        if !err.is_io_error() {
            let line = err.position().map_or(0, csv::Position::line);
            return Self::Csv { line, source: err };
        }
        match err.into_kind() {
            csv::ErrorKind::Io(io) => Self::Io(io),
            // `is_io_error` said otherwise; keep whatever it is rather than panic.
            other => Self::Io(std::io::Error::other(format!("{other:?}"))),
        }
    }
}
