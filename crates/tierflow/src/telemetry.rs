//! Structured logs to stderr (text for people, JSON for log pipelines); stdout stays free
//! for data. While a terminal dashboard owns the screen, logs go to a file instead
//! ([`logs_to_file`]), so they cannot tear through its frames.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Where log lines go instead of stderr, when set.
static LOG_FILE: Mutex<Option<File>> = Mutex::new(None);

pub(crate) fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info,librdkafka=warn,rdkafka=warn",
        1 => "debug,librdkafka=info,rdkafka=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogTarget)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Sends log lines to `file` (appended; colour codes stripped) until [`logs_to_stderr`].
pub(crate) fn logs_to_file(file: File) {
    *LOG_FILE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(file);
}

/// Sends log lines to stderr again.
pub(crate) fn logs_to_stderr() {
    *LOG_FILE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
}

/// stderr, or the file set by [`logs_to_file`].
#[derive(Debug, Clone, Copy)]
struct LogTarget;

impl<'a> MakeWriter<'a> for LogTarget {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

#[derive(Debug)]
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut file = LOG_FILE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match file.as_mut() {
            Some(file) => {
                file.write_all(&strip_ansi(buf))?;
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match LOG_FILE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            Some(file) => file.flush(),
            None => std::io::stderr().flush(),
        }
    }
}

/// `buf` without ANSI escape sequences (`ESC [ ... final byte`): the colours chosen for a
/// terminal do not belong in a file.
fn strip_ansi(buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut bytes = buf.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b == 0x1b && bytes.peek() == Some(&b'[') {
            bytes.next();
            for c in bytes.by_ref() {
                if (0x40..=0x7e).contains(&c) {
                    break;
                }
            }
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn colour_codes_are_stripped_for_files() {
        assert_eq!(
            strip_ansi(b"\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m ok\n"),
            b"2026  INFO ok\n"
        );
        assert_eq!(strip_ansi(b"plain"), b"plain");
    }
}
