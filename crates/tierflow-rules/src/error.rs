//! Why a rules file was refused, pointing at the line and column of each problem.

use std::fmt;
use std::ops::Range;

/// One problem in a rules file: where it is (1-based line and column, in characters) and what
/// is wrong, in a sentence that names the key and the allowed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A refused rules file: every problem found, in file order. Syntax and type errors stop the
/// parse at the first one; the semantic checks (durations, ranges, names, conditions) report
/// all of theirs at once.
///
/// Displays one `origin:line:column: message` line per problem, e.g.
/// `rules.toml:12:12: unknown duration unit "w" in cooldown (use s, m, h, d)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    /// The file name shown in front of each position (`rules.toml` unless told otherwise).
    pub origin: String,
    /// At least one.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: {}", self.origin, d.line, d.column, d.message)?;
        }
        Ok(())
    }
}

impl RulesError {
    /// The first problem (there is always one).
    pub fn first(&self) -> &Diagnostic {
        &self.diagnostics[0]
    }
}

/// Collects diagnostics against one source text.
#[derive(Debug)]
pub(crate) struct Diagnostics<'a> {
    text: &'a str,
    found: Vec<(usize, String)>,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            found: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.found.push((span.start, message.into()));
    }

    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub(crate) fn into_error(mut self, origin: &str) -> RulesError {
        // Stable: problems at the same offset keep the order they were found in.
        self.found.sort_by_key(|(offset, _)| *offset);
        let diagnostics = self
            .found
            .into_iter()
            .map(|(offset, message)| {
                let (line, column) = line_column(self.text, offset);
                Diagnostic {
                    line,
                    column,
                    message,
                }
            })
            .collect();
        RulesError {
            origin: origin.to_owned(),
            diagnostics,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
/// character are clamped to the nearest position before them.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "ab\ncé\nx";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        // 'é' is two bytes; the offset after it is column 3.
        assert_eq!(line_column(text, 6), (2, 3));
        // Inside 'é': clamped back to its start.
        assert_eq!(line_column(text, 5), (2, 2));
        assert_eq!(line_column(text, 99), (3, 2));
    }

    #[test]
    fn displays_one_line_per_problem_in_file_order() {
        let mut d = Diagnostics::new("a = 1\nb = 2\n");
        d.push(6..7, "second");
        d.push(0..1, "first");
        assert_eq!(
            d.into_error("r.toml").to_string(),
            "r.toml:1:1: first\nr.toml:2:1: second"
        );
    }
}
