//! CSV records as bytes with their line numbers, so that a ragged or non-UTF-8 row becomes a
//! rejected row with a reason instead of an aborted import.

use std::borrow::Cow;
use std::io::Read;

use csv::ByteRecord;

use super::ImportError;

/// Why a row was rejected: usually a fixed phrase, sometimes built (e.g. naming a column).
pub(super) type Reason = Cow<'static, str>;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A lenient CSV reader: any number of fields per row, fields trimmed, bytes not text.
#[derive(Debug)]
pub(super) struct Rows<R> {
    reader: csv::Reader<R>,
    record: ByteRecord,
    has_header: bool,
    started: bool,
    /// Line of the previous row (or of the header).
    last_line: u64,
}

impl<R: Read> Rows<R> {
    pub(super) fn new(input: R, delimiter: u8, has_header: bool) -> Self {
        let reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(has_header)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(input);
        Self {
            reader,
            record: ByteRecord::new(),
            has_header,
            started: false,
            last_line: 0,
        }
    }

    /// The header's fields as text (a leading byte-order mark dropped, bad UTF-8 replaced),
    /// or `None` when the input is empty. Only for readers made with a header.
    pub(super) fn header(&mut self) -> Result<Option<Vec<String>>, ImportError> {
        let mut header = self.reader.byte_headers()?.clone();
        self.last_line = header.position().map_or(1, csv::Position::line);
        strip_bom(&mut header);
        if header.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            header
                .iter()
                .map(|field| String::from_utf8_lossy(field).into_owned())
                .collect(),
        ))
    }

    /// The next data row, or `None` at the end of the input.
    pub(super) fn next_row(&mut self) -> Result<Option<Row<'_>>, ImportError> {
        if !self.reader.read_byte_record(&mut self.record)? {
            return Ok(None);
        }
        if !self.started && !self.has_header {
            strip_bom(&mut self.record);
        }
        self.started = true;
        // The csv crate takes a record's position before it skips the previous record's
        // line feed (CRLF files) or blank lines, so its line can repeat the previous row's.
        // Rows are on later lines than the rows before them: exact for LF and CRLF files, and
        // always strictly increasing, which ids derived from lines rely on.
        let reported = self.record.position().map_or(0, csv::Position::line);
        let line = reported.max(self.last_line + 1);
        self.last_line = line;
        Ok(Some(Row {
            record: &self.record,
            line,
        }))
    }
}

/// One data row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row<'r> {
    record: &'r ByteRecord,
    /// 1-based line where the row starts; unique and increasing. After blank lines or a
    /// quoted line break in a CRLF file it may be that of a blank line just before the row.
    pub(super) line: u64,
}

impl<'r> Row<'r> {
    pub(super) fn len(self) -> usize {
        self.record.len()
    }

    /// Field `index` (0-based) as text; an absent field reads as empty. `name` is the column
    /// named in the rejection reason when the bytes are not UTF-8.
    pub(super) fn text(self, index: usize, name: &str) -> Result<&'r str, Reason> {
        let bytes = self.record.get(index).unwrap_or_default();
        std::str::from_utf8(bytes).map_err(|_| format!("{name} not UTF-8").into())
    }
}

fn strip_bom(record: &mut ByteRecord) {
    let Some(rest) = record.get(0).and_then(|first| first.strip_prefix(UTF8_BOM)) else {
        return;
    };
    let mut fixed = ByteRecord::new();
    fixed.push_field(rest.trim_ascii());
    for field in record.iter().skip(1) {
        fixed.push_field(field);
    }
    fixed.set_position(record.position().cloned());
    *record = fixed;
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lines = Vec<(u64, Vec<String>)>;

    fn rows_of(input: &[u8], has_header: bool) -> (Option<Vec<String>>, Lines) {
        let mut rows = Rows::new(input, b',', has_header);
        let header = if has_header {
            rows.header().unwrap()
        } else {
            None
        };
        let mut out = Vec::new();
        while let Some(row) = rows.next_row().unwrap() {
            let fields = (0..row.len())
                .map(|i| {
                    row.text(i, "f")
                        .map(str::to_owned)
                        .unwrap_or_else(|e| format!("<{e}>"))
                })
                .collect();
            out.push((row.line, fields));
        }
        (header, out)
    }

    #[test]
    fn lines_bom_ragged_rows_and_bad_utf8() {
        let input = b"\xEF\xBB\xBFa, b\n1,2\n\n\"x\ny\",3,4\n\xFF,5\n";
        let (header, rows) = rows_of(input, true);
        assert_eq!(header, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(
            rows,
            vec![
                (2, vec!["1".into(), "2".into()]),
                // The csv crate counts from the blank line it skipped (line 3), not from 4.
                (3, vec!["x\ny".into(), "3".into(), "4".into()]),
                (6, vec!["<f not UTF-8>".into(), "5".into()]),
            ]
        );
    }

    #[test]
    fn crlf_lines_count_like_lf_lines() {
        let expected = |first: u64| {
            vec![
                (first, vec!["1".to_owned()]),
                (first + 1, vec!["2".to_owned()]),
                (first + 2, vec!["3".to_owned()]),
            ]
        };
        assert_eq!(rows_of(b"h\r\n1\r\n2\r\n3\r\n", true).1, expected(2));
        assert_eq!(rows_of(b"1\r\n2\r\n3", false).1, expected(1));
        // Classic Mac line ends: the csv crate counts no lines at all.
        assert_eq!(rows_of(b"1\r2\r3\r", false).1, expected(1));
    }

    #[test]
    fn bom_on_a_headerless_first_row() {
        let (_, rows) = rows_of(b"\xEF\xBB\xBF 7,pv\n8,buy", false);
        assert_eq!(
            rows,
            vec![
                (1, vec!["7".into(), "pv".into()]),
                (2, vec!["8".into(), "buy".into()])
            ]
        );
    }

    #[test]
    fn empty_input_has_no_header() {
        assert_eq!(rows_of(b"", true), (None, vec![]));
    }
}
